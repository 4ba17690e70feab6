//! Gather mode (like `clush -b`): at the end of the run, each distinct result once, under the
//! folded list of the hosts that produced it.

use std::collections::HashMap;
use std::io::{self, Write};

use volley_common::fold::fold;
use volley_common::outcome::{HostReport, Outcome};

use super::color::Paint;
use crate::plan::{HostSpec, dialled};

const RULE: &[u8] = b"---------------\n";

/// Where a host is dialled, as failure reasons name it: over SSH, and at its agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dialled {
    ssh: String,
    agent: String,
}

impl Dialled {
    pub fn of(host: &HostSpec) -> Dialled {
        Dialled {
            ssh: dialled(&host.address, host.port),
            agent: dialled(&host.address, host.agent_port),
        }
    }
}

/// What makes two hosts' results the same. Truncation is part of it so that a host that printed
/// exactly the cap is not listed as truncated along with one that printed more; and so are the
/// sizes of what was printed and the hashes of what was past the cap, so that outputs alike up
/// to the cap but different past it stay apart.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key<'a> {
    outcome: Said,
    stdout: &'a [u8],
    stderr: &'a [u8],
    truncated: bool,
    printed: (u64, u64),
    past_cap: (u64, u64),
}

/// An outcome as gather compares it: its text with the host's own address cut out. A failure's
/// reason names the address its host was dialled at (`ssh 10.0.0.1:22: connection refused`),
/// so without the cut no two hosts down in the same way would ever share a group.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Said {
    success: bool,
    /// The text before the host's address, or all of it when it names none.
    before: String,
    /// The text after the host's address; `None` when it names none.
    after: Option<String>,
}

struct Group<'a> {
    key: Key<'a>,
    hosts: Vec<&'a str>,
    /// The addresses cut out of the hosts' outcomes, folded back into the header.
    addresses: Vec<&'a str>,
}

/// Writes every group, ordered by the place of its first host in the host list. Hosts without a
/// report have no result to show; the summary accounts for them. `dialled` is each host's
/// address, in host order.
pub(crate) fn write_groups(
    out: &mut impl Write,
    reports: &[Option<HostReport>],
    dialled: &[Dialled],
    paint: Paint,
) -> io::Result<()> {
    for group in groups(reports, dialled) {
        write_group(out, &group, paint)?;
    }
    Ok(())
}

fn groups<'a>(reports: &'a [Option<HostReport>], dialled: &'a [Dialled]) -> Vec<Group<'a>> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    for (host, report) in reports.iter().enumerate() {
        let Some(report) = report else { continue };
        let (outcome, address) = said(&report.outcome, dialled.get(host));
        let key = Key {
            outcome,
            stdout: &report.stdout.kept,
            stderr: &report.stderr.kept,
            truncated: report.stdout.truncated() || report.stderr.truncated(),
            printed: (report.stdout.total_bytes, report.stderr.total_bytes),
            past_cap: (report.stdout.past_cap, report.stderr.past_cap),
        };
        let at = match index.get(&key) {
            Some(&at) => at,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push(Group {
                    key,
                    hosts: Vec::new(),
                    addresses: Vec::new(),
                });
                groups.len() - 1
            }
        };
        groups[at].hosts.push(&report.host);
        groups[at].addresses.extend(address);
    }
    groups
}

/// The outcome's text with the first of the host's addresses that it names as a word cut out,
/// and that address. Reasons name it once (`ssh ADDR: ...`); one naming it again would keep its
/// host apart, which shows more, never less.
fn said<'a>(outcome: &Outcome, dialled: Option<&'a Dialled>) -> (Said, Option<&'a str>) {
    let text = outcome.to_string();
    let named = dialled
        .into_iter()
        .flat_map(|d| [d.ssh.as_str(), d.agent.as_str()]);
    let found = named
        .filter_map(|address| Some((word_at(&text, address)?, address)))
        .min();
    let success = outcome.is_success();
    let Some((at, address)) = found else {
        let said = Said {
            success,
            before: text,
            after: None,
        };
        return (said, None);
    };
    let said = Said {
        success,
        before: text[..at].to_string(),
        after: Some(text[at + address.len()..].to_string()),
    };
    (said, Some(address))
}

/// Where `text` first names `address` as a word of its own: after a space, and followed by the
/// end, a space or a colon. So `10.0.0.1:22` is not found in `10.0.0.1:2222` or `110.0.0.1:22`.
fn word_at(text: &str, address: &str) -> Option<usize> {
    text.match_indices(address).map(|(at, _)| at).find(|&at| {
        let after = text[at + address.len()..].chars().next();
        text[..at].ends_with(' ') && matches!(after, None | Some(' ' | ':'))
    })
}

fn write_group(out: &mut impl Write, group: &Group, paint: Paint) -> io::Result<()> {
    let key = &group.key;
    let mut header = format!(
        "{} ({})",
        fold(group.hosts.iter().copied()),
        group.hosts.len()
    );
    let said = &key.outcome;
    if !said.success {
        let outcome = match &said.after {
            Some(after) => format!(
                "{}{}{after}",
                said.before,
                fold(group.addresses.iter().copied())
            ),
            None => said.before.clone(),
        };
        header.push_str(": ");
        header.push_str(&paint.failure(outcome));
    }
    if key.truncated {
        header.push_str(" [output truncated]");
    }
    out.write_all(RULE)?;
    writeln!(out, "{header}")?;
    out.write_all(RULE)?;
    write_text(out, key.stdout)?;
    if !key.stderr.is_empty() {
        out.write_all(b"--- stderr ---\n")?;
        write_text(out, key.stderr)?;
    }
    Ok(())
}

/// Writes output as it is, ending it with a newline if it lacks one.
fn write_text(out: &mut impl Write, text: &[u8]) -> io::Result<()> {
    out.write_all(text)?;
    if !text.is_empty() && !text.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::host_report;
    use super::*;

    fn check(reports: &[Option<HostReport>], color: bool, expected: &str) {
        let mut out = Vec::new();
        write_groups(&mut out, reports, &[], Paint { enabled: color }).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    fn host(n: usize, outcome: Outcome, stdout: &str, stderr: &str) -> Option<HostReport> {
        Some(host_report(
            &format!("h{n:02}"),
            outcome,
            stdout.as_bytes(),
            stderr.as_bytes(),
        ))
    }

    #[test]
    fn identical_results_are_grouped_in_host_order() {
        let exit1 = || Outcome::NonZeroExit { code: 1 };
        let reports = vec![
            host(1, Outcome::Succeeded, "ok\n", ""),
            host(2, Outcome::Succeeded, "ok\n", ""),
            host(3, exit1(), "", "disk full\n"),
            host(4, Outcome::Succeeded, "ok", ""),
            host(5, Outcome::Succeeded, "ok\n", ""),
            None,
            host(7, exit1(), "", "disk full\n"),
            host(8, Outcome::Succeeded, "ok\n", "warning"),
            host(
                9,
                Outcome::Unreachable {
                    reason: "no route to host".into(),
                },
                "",
                "",
            ),
        ];
        check(
            &reports,
            false,
            "---------------\n\
             h[01-02,05] (3)\n\
             ---------------\n\
             ok\n\
             ---------------\n\
             h[03,07] (2): exited with status 1\n\
             ---------------\n\
             --- stderr ---\n\
             disk full\n\
             ---------------\n\
             h04 (1)\n\
             ---------------\n\
             ok\n\
             ---------------\n\
             h08 (1)\n\
             ---------------\n\
             ok\n\
             --- stderr ---\n\
             warning\n\
             ---------------\n\
             h09 (1): unreachable: no route to host\n\
             ---------------\n",
        );
    }

    #[test]
    fn truncated_output_is_noted_and_kept_apart() {
        let mut truncated = host(2, Outcome::Succeeded, "head", "").unwrap();
        truncated.stdout.total_bytes = 2_000_000;
        // Alike up to the cap, of another length: not the same output.
        let mut longer = host(3, Outcome::Succeeded, "head", "").unwrap();
        longer.stdout.total_bytes = 3_000_000;
        // As long, alike up to the cap, different past it.
        let mut other = truncated.clone();
        other.host = "h04".to_string();
        other.stdout.past_cap = 42;
        let reports = vec![
            host(1, Outcome::Succeeded, "head", ""),
            Some(truncated),
            Some(longer),
            Some(other),
        ];
        check(
            &reports,
            true,
            "---------------\n\
             h01 (1)\n\
             ---------------\n\
             head\n\
             ---------------\n\
             h02 (1) [output truncated]\n\
             ---------------\n\
             head\n\
             ---------------\n\
             h03 (1) [output truncated]\n\
             ---------------\n\
             head\n\
             ---------------\n\
             h04 (1) [output truncated]\n\
             ---------------\n\
             head\n",
        );
    }

    #[test]
    fn failures_are_red_with_colour() {
        let reports = vec![host(1, Outcome::command_timeout(), "", "")];
        check(
            &reports,
            true,
            "---------------\n\
             h01 (1): \x1b[31mcommand timed out and was stopped\x1b[0m\n\
             ---------------\n",
        );
    }

    /// Host `n` dialled at 10.0.0.`n`, over SSH on port 2222 and at its agent on 7731.
    fn dialled_at(n: usize) -> Dialled {
        Dialled {
            ssh: format!("10.0.0.{n}:2222"),
            agent: format!("10.0.0.{n}:7731"),
        }
    }

    fn unreachable(reason: String) -> Outcome {
        Outcome::Unreachable { reason }
    }

    #[test]
    fn hosts_that_failed_alike_share_a_group_whatever_their_address() {
        let refused = |n| unreachable(format!("ssh 10.0.0.{n}:2222: connection refused"));
        let reports = vec![
            host(1, refused(1), "", ""),
            host(2, refused(2), "", ""),
            host(
                3,
                unreachable("ssh 10.0.0.3:2222: no route to host".into()),
                "",
                "",
            ),
            host(4, refused(4), "", ""),
            host(
                5,
                Outcome::ConnectTimeout {
                    reason: "agent 10.0.0.5:7731: TCP connected, but no TLS answer within 5s"
                        .into(),
                },
                "",
                "",
            ),
            host(
                6,
                Outcome::ConnectTimeout {
                    reason: "agent 10.0.0.6:7731: TCP connected, but no TLS answer within 5s"
                        .into(),
                },
                "",
                "",
            ),
        ];
        let dialled: Vec<Dialled> = (1..=reports.len()).map(dialled_at).collect();
        let mut out = Vec::new();
        write_groups(&mut out, &reports, &dialled, Paint { enabled: false }).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "---------------\n\
             h[01-02,04] (3): unreachable: ssh 10.0.0.[1-2,4]:2222: connection refused\n\
             ---------------\n\
             ---------------\n\
             h03 (1): unreachable: ssh 10.0.0.3:2222: no route to host\n\
             ---------------\n\
             ---------------\n\
             h[05-06] (2): connect timed out: agent 10.0.0.[5-6]:7731: TCP connected, but no TLS answer within 5s\n\
             ---------------\n",
        );
    }

    /// Only the host's own address, as a word of its own, is cut out of its outcome.
    #[test]
    fn only_the_host_s_own_address_is_cut_out() {
        let check = |reason: &str, expected: (&str, Option<&str>, Option<&str>)| {
            let dialled = dialled_at(1);
            let (text, address) = said(&unreachable(reason.into()), Some(&dialled));
            let (before, cut, after) = expected;
            assert_eq!(
                (text.before.as_str(), address, text.after.as_deref()),
                (before, cut, after),
                "{reason}"
            );
        };
        check(
            "ssh 10.0.0.1:2222: connection refused",
            (
                "unreachable: ssh ",
                Some("10.0.0.1:2222"),
                Some(": connection refused"),
            ),
        );
        check(
            "ssh 10.0.0.1:2222 via bastion: jump host bastion refused",
            (
                "unreachable: ssh ",
                Some("10.0.0.1:2222"),
                Some(" via bastion: jump host bastion refused"),
            ),
        );
        check(
            "agent 10.0.0.1:7731: connection refused",
            (
                "unreachable: agent ",
                Some("10.0.0.1:7731"),
                Some(": connection refused"),
            ),
        );
        // Another host's address, or the host's address as part of another word: kept whole.
        for reason in [
            "ssh 10.0.0.1:22220: connection refused",
            "ssh 110.0.0.1:2222: connection refused",
            "ssh jump host bastion (10.0.0.1:2222): connection refused",
            "ssh 10.0.0.2:2222: connection refused",
        ] {
            let whole = format!("unreachable: {reason}");
            check(reason, (whole.as_str(), None, None));
        }
        // A success names no address, and a host without a known address keeps its text.
        let dialled = dialled_at(1);
        let (text, address) = said(&Outcome::Succeeded, Some(&dialled));
        assert!(text.success && address.is_none() && text.before == "succeeded");
        let refused = unreachable("ssh 10.0.0.1:2222: connection refused".into());
        let (text, address) = said(&refused, None);
        assert!(address.is_none() && text.after.is_none());
    }

    #[test]
    fn no_reports_write_nothing() {
        check(&[None, None], false, "");
    }
}
