//! The closing summary on stderr: how many hosts succeeded and failed and over which transport,
//! which hosts ended each way (and over which transport), and which hosts fell back from their
//! agent to SSH, and why.

use std::io::{self, Write};
use std::time::Duration;

use volley_common::fold::fold;
use volley_common::outcome::{FallbackReason, HostReport, Outcome, TransportKind};

use super::color::Paint;

/// The label of hosts that never reported; the run should not leave any.
const NO_REPORT: &str = "no_report";

/// Writes the summary of a run. `reports` is indexed like `hosts`; a host without a report
/// counts as failed.
pub fn write_summary(
    out: &mut impl Write,
    hosts: &[String],
    reports: &[Option<HostReport>],
    elapsed: Duration,
    interrupted: bool,
    color: bool,
) -> io::Result<()> {
    let paint = Paint { enabled: color };
    let mut succeeded = 0;
    let mut skipped = 0;
    let mut not_started = 0;
    // Per kind, in the order of `Outcome::KINDS`: the hosts that ended that way and the
    // transport that ran each (none for a host that never started); the last slot is for hosts
    // without a report.
    let mut failures: Vec<Vec<(&str, Option<TransportKind>)>> =
        vec![Vec::new(); Outcome::KINDS.len() + 1];
    let mut transports: Vec<(TransportKind, usize)> = Vec::new();
    let mut fallbacks: Vec<(FallbackReason, Vec<&str>)> = Vec::new();
    for (index, host) in hosts.iter().enumerate() {
        let Some(report) = reports.get(index).and_then(Option::as_ref) else {
            failures[Outcome::KINDS.len()].push((host, None));
            continue;
        };
        let transport = (report.attempts > 0).then_some(report.transport);
        if let Some(transport) = transport {
            match transports.iter_mut().find(|(kind, _)| *kind == transport) {
                Some((_, count)) => *count += 1,
                None => transports.push((transport, 1)),
            }
        }
        if let Some(fallback) = &report.fallback {
            match fallbacks
                .iter_mut()
                .find(|(reason, _)| *reason == fallback.reason)
            {
                Some((_, hosts)) => hosts.push(host),
                None => fallbacks.push((fallback.reason, vec![host])),
            }
        }
        if report.outcome.is_success() {
            succeeded += 1;
            continue;
        }
        if report.outcome == Outcome::Skipped {
            skipped += 1;
        } else if report.never_started() {
            not_started += 1;
        }
        failures[report.outcome.index()].push((host, transport));
    }
    // Skipped hosts, and those an interrupt kept from starting, did not fail: they never ran.
    // They are counted apart.
    let failed = hosts.len() - succeeded - skipped - not_started;

    let noun = if hosts.len() == 1 { "host" } else { "hosts" };
    let succeeded_text = format!("{succeeded} succeeded");
    let failed_text = format!("{failed} failed");
    write!(
        out,
        "volley: {} {noun} in {:.2}s: {}, {}",
        hosts.len(),
        elapsed.as_secs_f64(),
        if succeeded > 0 {
            paint.success(succeeded_text)
        } else {
            succeeded_text
        },
        if failed > 0 {
            paint.failure(failed_text)
        } else {
            failed_text
        },
    )?;
    if skipped > 0 {
        write!(out, ", {skipped} skipped")?;
    }
    if not_started > 0 {
        write!(out, ", {not_started} not started")?;
    }
    if interrupted {
        out.write_all(b", interrupted")?;
    }
    transports.sort();
    let over: Vec<String> = transports
        .iter()
        .map(|(transport, count)| format!("{count} over {transport}"))
        .collect();
    if !over.is_empty() {
        write!(out, "; {}", over.join(", "))?;
    }
    out.write_all(b"\n")?;

    let kinds = Outcome::KINDS.iter().chain([&NO_REPORT]);
    for (kind, hosts) in kinds.zip(&failures).filter(|(_, hosts)| !hosts.is_empty()) {
        // One line per transport within a kind, in a fixed order; hosts that never ran last.
        let mut ways: Vec<Option<TransportKind>> = hosts.iter().map(|(_, way)| *way).collect();
        ways.sort_by_key(|way| (way.is_none(), *way));
        ways.dedup();
        for way in ways {
            let hosts: Vec<&str> = hosts
                .iter()
                .filter(|(_, transport)| *transport == way)
                .map(|(host, _)| *host)
                .collect();
            // The kind is padded outside its colour codes so that the columns line up either
            // way.
            let padding = " ".repeat(18usize.saturating_sub(kind.len()));
            write!(
                out,
                "  {}{padding}{:>5}  {}",
                paint.failure(kind),
                hosts.len(),
                fold(hosts)
            )?;
            match way {
                Some(transport) => writeln!(out, " ({transport})")?,
                None => writeln!(out)?,
            }
        }
    }
    fallbacks.sort_by_key(|(reason, _)| *reason);
    for (reason, hosts) in fallbacks {
        writeln!(
            out,
            "volley: {} {} fell back to SSH: {}: {}",
            hosts.len(),
            if hosts.len() == 1 { "host" } else { "hosts" },
            reason.describe(),
            fold(hosts)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use volley_common::outcome::Fallback;

    use super::super::fixture::host_report;
    use super::*;

    /// Hosts h01.. with the given outcomes (`None`: no report).
    fn check(
        outcomes: &[Option<Outcome>],
        elapsed: Duration,
        interrupted: bool,
        color: bool,
        expected: &str,
    ) {
        let hosts: Vec<String> = (1..=outcomes.len()).map(|n| format!("h{n:02}")).collect();
        let reports: Vec<Option<HostReport>> = hosts
            .iter()
            .zip(outcomes)
            .map(|(host, outcome)| {
                outcome.clone().map(|outcome| {
                    let mut report = host_report(host, outcome, b"", b"");
                    // A skipped host never started, as the scheduler reports it.
                    if report.outcome == Outcome::Skipped {
                        report.attempts = 0;
                    }
                    report
                })
            })
            .collect();
        check_reports(&hosts, &reports, elapsed, interrupted, color, expected);
    }

    fn check_reports(
        hosts: &[String],
        reports: &[Option<HostReport>],
        elapsed: Duration,
        interrupted: bool,
        color: bool,
        expected: &str,
    ) {
        let mut out = Vec::new();
        write_summary(&mut out, hosts, reports, elapsed, interrupted, color).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    fn fleet(failures: &[(usize, Outcome)], size: usize) -> Vec<Option<Outcome>> {
        let mut outcomes = vec![Some(Outcome::Succeeded); size];
        for (n, outcome) in failures {
            outcomes[n - 1] = Some(outcome.clone());
        }
        outcomes
    }

    fn unreachable() -> Outcome {
        Outcome::Unreachable {
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn failures_are_listed_by_kind_in_declaration_order() {
        let outcomes = fleet(
            &[
                (9, unreachable()),
                (7, Outcome::NonZeroExit { code: 1 }),
                (3, unreachable()),
            ],
            50,
        );
        check(
            &outcomes,
            Duration::from_millis(2_314),
            false,
            false,
            "volley: 50 hosts in 2.31s: 47 succeeded, 3 failed; 50 over ssh\n\
            \x20 non_zero_exit         1  h07 (ssh)\n\
            \x20 unreachable           2  h[03,09] (ssh)\n",
        );
    }

    #[test]
    fn an_interrupted_run_says_so() {
        let mut outcomes = vec![Some(Outcome::Succeeded); 10];
        outcomes.extend(vec![Some(Outcome::Cancelled); 40]);
        check(
            &outcomes,
            Duration::from_millis(1_020),
            true,
            false,
            "volley: 50 hosts in 1.02s: 10 succeeded, 40 failed, interrupted; 50 over ssh\n\
            \x20 cancelled            40  h[11-50] (ssh)\n",
        );
    }

    #[test]
    fn hosts_an_interrupt_kept_from_starting_are_counted_apart() {
        let hosts: Vec<String> = (1..=5).map(|n| format!("h{n:02}")).collect();
        let reports: Vec<Option<HostReport>> = hosts
            .iter()
            .enumerate()
            .map(|(n, host)| {
                let mut report = host_report(host, Outcome::Cancelled, b"", b"");
                if n >= 2 {
                    report.attempts = 0;
                }
                Some(report)
            })
            .collect();
        check_reports(
            &hosts,
            &reports,
            Duration::from_millis(2_000),
            true,
            false,
            "volley: 5 hosts in 2.00s: 0 succeeded, 2 failed, 3 not started, interrupted; 2 over ssh\n\
            \x20 cancelled             2  h[01-02] (ssh)\n\
            \x20 cancelled             3  h[03-05]\n",
        );
    }

    #[test]
    fn skipped_hosts_are_counted_apart_and_listed() {
        let mut outcomes = fleet(&[(2, Outcome::NonZeroExit { code: 1 })], 3);
        outcomes.extend(vec![Some(Outcome::Skipped); 6]);
        check(
            &outcomes,
            Duration::from_millis(1_500),
            false,
            false,
            "volley: 9 hosts in 1.50s: 2 succeeded, 1 failed, 6 skipped; 3 over ssh\n\
            \x20 non_zero_exit         1  h02 (ssh)\n\
            \x20 skipped               6  h[04-09]\n",
        );
    }

    #[test]
    fn all_succeeded_has_no_kind_lines() {
        check(
            &fleet(&[], 1),
            Duration::from_millis(5),
            false,
            false,
            "volley: 1 host in 0.01s: 1 succeeded, 0 failed; 1 over ssh\n",
        );
    }

    #[test]
    fn hosts_without_a_report_count_as_failed() {
        check(
            &[
                Some(Outcome::HostKeyChanged {
                    fingerprint: "SHA256:x".into(),
                }),
                None,
            ],
            Duration::from_secs(1),
            false,
            false,
            "volley: 2 hosts in 1.00s: 0 succeeded, 2 failed; 1 over ssh\n\
            \x20 host_key_changed      1  h01 (ssh)\n\
            \x20 no_report             1  h02\n",
        );
    }

    #[test]
    fn colour_marks_successes_green_and_failures_red() {
        check(
            &fleet(&[(2, Outcome::command_timeout())], 2),
            Duration::from_secs(3),
            false,
            true,
            "volley: 2 hosts in 3.00s: \x1b[32m1 succeeded\x1b[0m, \x1b[31m1 failed\x1b[0m; 2 over ssh\n\
            \x20 \x1b[31mcommand_timeout\x1b[0m       1  h02 (ssh)\n",
        );
    }

    #[test]
    fn transports_are_counted_and_fallbacks_told_with_their_reason() {
        let hosts: Vec<String> = (1..=6).map(|n| format!("h{n:02}")).collect();
        let report = |n: usize, outcome: Outcome, transport, fallback: Option<FallbackReason>| {
            let mut report = host_report(&hosts[n - 1], outcome, b"", b"");
            report.transport = transport;
            report.fallback = fallback.map(|reason| Fallback {
                reason,
                detail: "TLS rejected: x".to_string(),
            });
            Some(report)
        };
        let refused = || Outcome::Unreachable {
            reason: "connection refused".into(),
        };
        let rejected = Some(FallbackReason::AgentCertificateRejected);
        let reports = [
            report(1, Outcome::Succeeded, TransportKind::Agent, None),
            report(2, refused(), TransportKind::Agent, None),
            report(
                3,
                refused(),
                TransportKind::Ssh,
                Some(FallbackReason::NoAgent),
            ),
            report(4, Outcome::Succeeded, TransportKind::Ssh, rejected),
            report(
                5,
                Outcome::NonZeroExit { code: 1 },
                TransportKind::Ssh,
                rejected,
            ),
            report(6, Outcome::Succeeded, TransportKind::Ssh, rejected),
        ];
        check_reports(
            &hosts,
            &reports,
            Duration::from_secs(2),
            false,
            false,
            "volley: 6 hosts in 2.00s: 3 succeeded, 3 failed; 4 over ssh, 2 over agent\n\
            \x20 non_zero_exit         1  h05 (ssh)\n\
            \x20 unreachable           1  h03 (ssh)\n\
            \x20 unreachable           1  h02 (agent)\n\
            volley: 1 host fell back to SSH: no agent answered: h03\n\
            volley: 3 hosts fell back to SSH: agent certificate rejected: h[04-06]\n",
        );
    }
}
