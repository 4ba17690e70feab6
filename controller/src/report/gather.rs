//! Gather mode (like `clush -b`): at the end of the run, each distinct result once, under the
//! folded list of the hosts that produced it.

use std::collections::HashMap;
use std::io::{self, Write};

use volley_common::fold::fold;
use volley_common::outcome::{HostReport, Outcome};

use super::color::Paint;

const RULE: &[u8] = b"---------------\n";

/// What makes two hosts' results the same. Truncation is part of it so that a host that printed
/// exactly the cap is not listed as truncated along with one that printed more; and so are the
/// sizes of what was printed, so that outputs alike up to the cap but of other lengths (they
/// differ past it) stay apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key<'a> {
    outcome: &'a Outcome,
    stdout: &'a [u8],
    stderr: &'a [u8],
    truncated: bool,
    printed: (u64, u64),
}

struct Group<'a> {
    key: Key<'a>,
    hosts: Vec<&'a str>,
}

/// Writes every group, ordered by the place of its first host in the host list. Hosts without a
/// report have no result to show; the summary accounts for them.
pub(crate) fn write_groups(
    out: &mut impl Write,
    reports: &[Option<HostReport>],
    paint: Paint,
) -> io::Result<()> {
    for group in groups(reports) {
        write_group(out, &group, paint)?;
    }
    Ok(())
}

fn groups(reports: &[Option<HostReport>]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    for report in reports.iter().flatten() {
        let key = Key {
            outcome: &report.outcome,
            stdout: &report.stdout.kept,
            stderr: &report.stderr.kept,
            truncated: report.stdout.truncated() || report.stderr.truncated(),
            printed: (report.stdout.total_bytes, report.stderr.total_bytes),
        };
        match index.get(&key) {
            Some(&at) => groups[at].hosts.push(&report.host),
            None => {
                index.insert(key, groups.len());
                groups.push(Group {
                    key,
                    hosts: vec![&report.host],
                });
            }
        }
    }
    groups
}

fn write_group(out: &mut impl Write, group: &Group, paint: Paint) -> io::Result<()> {
    let key = &group.key;
    let mut header = format!(
        "{} ({})",
        fold(group.hosts.iter().copied()),
        group.hosts.len()
    );
    if !key.outcome.is_success() {
        header.push_str(": ");
        header.push_str(&paint.failure(key.outcome));
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
        write_groups(&mut out, reports, Paint { enabled: color }).unwrap();
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
        let reports = vec![
            host(1, Outcome::Succeeded, "head", ""),
            Some(truncated),
            Some(longer),
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

    #[test]
    fn no_reports_write_nothing() {
        check(&[None, None], false, "");
    }
}
