//! What a rollout adds to the output: a line on stderr as each batch starts, and after the
//! summary, how far the rollout went and where the run is recorded.

use std::io::{self, Write};
use std::ops::Range;

use volley_common::fold::fold;
use volley_common::outcome::Outcome;

use crate::event::RunEnd;

/// `volley: batch 2/5: h[04-13] (10 hosts)`.
pub(crate) fn write_batch_started(
    out: &mut impl Write,
    hosts: &[String],
    batch: usize,
    batches: usize,
    range: Range<usize>,
) -> io::Result<()> {
    let names = hosts.get(range.clone()).unwrap_or_default();
    writeln!(
        out,
        "volley: batch {batch}/{batches}: {} ({})",
        fold(names.iter().map(String::as_str)),
        count(range.len())
    )
}

/// `volley: batch 2/5 starts in 30s (--batch-delay)`: the pause is the operator's, not a hang.
pub(crate) fn write_batch_waiting(
    out: &mut impl Write,
    batch: usize,
    batches: usize,
    delay: std::time::Duration,
) -> io::Result<()> {
    writeln!(
        out,
        "volley: batch {batch}/{batches} starts in {} (--batch-delay)",
        volley_common::duration::format_duration(delay)
    )
}

/// How far a batched or budgeted run went; nothing for a plain run.
pub fn write_rollout(
    out: &mut impl Write,
    end: &RunEnd,
    batched: bool,
    skipped: usize,
) -> io::Result<()> {
    let mut parts = Vec::new();
    if batched {
        parts.push(format!(
            "{} of {} batches ran",
            end.batches_started, end.batches
        ));
    }
    if let Some(allowed) = end.allowed_failures {
        let failed = format!(
            "{} failed, the failure budget allows {allowed}",
            count(end.failures)
        );
        parts.push(if end.stopped && !end.stopped_by_journal {
            format!("rollout stopped: {failed}; {} skipped", count(skipped))
        } else {
            failed
        });
    }
    if parts.is_empty() {
        return Ok(());
    }
    writeln!(out, "volley: {}", parts.join("; "))
}

/// `volley: rollout stopped: the run's journal could not be written (No space left on device
/// (os error 28)); 12 hosts skipped`: what ran unrecorded could not be retried or resumed safely.
pub fn write_journal_stop(out: &mut impl Write, reason: &str, skipped: usize) -> io::Result<()> {
    writeln!(
        out,
        "volley: rollout stopped: the run's journal could not be written ({reason}); {} skipped",
        count(skipped)
    )
}

/// Where the run is recorded, and how to retry the hosts that did not succeed, if any. `failed`
/// are the outcomes of those hosts (`None`: no outcome). The retry is not offered when every one
/// of them was refused for its host key or its credentials: a plain retry would meet the same
/// refusal.
pub fn write_recorded<'a>(
    out: &mut impl Write,
    id: &str,
    failed: impl IntoIterator<Item = Option<&'a Outcome>>,
) -> io::Result<()> {
    let failed: Vec<Option<&Outcome>> = failed.into_iter().collect();
    if failed.is_empty() {
        return Ok(());
    }
    if failed
        .iter()
        .all(|outcome| outcome.is_some_and(fails_again))
    {
        let (were, its) = if failed.len() == 1 {
            ("was", "its host key or credentials")
        } else {
            ("were", "host keys or credentials")
        };
        return writeln!(
            out,
            "volley: run {id}: no retry offered: the {} that did not succeed {were} refused for {its}, which a retry would meet again",
            count(failed.len())
        );
    }
    writeln!(
        out,
        "volley: run {id}: `volley retry {id}` runs it again on the {} that did not succeed",
        count(failed.len())
    )
}

/// Outcomes that retrying without a change (of known_hosts, keys, or flags) cannot mend.
fn fails_again(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::AuthFailed { .. }
            | Outcome::HostKeyUnknown { .. }
            | Outcome::HostKeyChanged { .. }
    )
}

/// The line that says how to collect the hosts in doubt, if there are any.
pub fn write_in_doubt(out: &mut impl Write, id: &str, in_doubt: usize) -> io::Result<()> {
    if in_doubt == 0 {
        return Ok(());
    }
    writeln!(
        out,
        "volley: run {id}: {} in doubt (the command may still run there): `volley runs resume {id}` collects them",
        count(in_doubt)
    )
}

fn count(hosts: usize) -> String {
    match hosts {
        1 => "1 host".to_string(),
        n => format!("{n} hosts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_in_doubt_are_pointed_to_resume() {
        let mut out = Vec::new();
        write_in_doubt(&mut out, "20261127T065812Z-3f9a", 0).unwrap();
        write_in_doubt(&mut out, "20261127T065812Z-3f9a", 3).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "volley: run 20261127T065812Z-3f9a: 3 hosts in doubt (the command may still run there): `volley runs resume 20261127T065812Z-3f9a` collects them\n"
        );
    }

    #[test]
    fn a_batch_line_folds_its_hosts() {
        let hosts: Vec<String> = (1..=20).map(|n| format!("h{n:02}")).collect();
        let mut out = Vec::new();
        write_batch_started(&mut out, &hosts, 2, 5, 3..13).unwrap();
        write_batch_started(&mut out, &hosts, 1, 5, 0..1).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "volley: batch 2/5: h[04-13] (10 hosts)\nvolley: batch 1/5: h01 (1 host)\n"
        );
    }

    fn check(end: RunEnd, batched: bool, skipped: usize, expected: &str) {
        let mut out = Vec::new();
        write_rollout(&mut out, &end, batched, skipped).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected, "{end:?}");
    }

    #[test]
    fn the_rollout_line_says_how_far_it_went() {
        let end = RunEnd {
            batches: 3,
            batches_started: 1,
            failures: 2,
            allowed_failures: Some(1),
            stopped: true,
            stopped_by_journal: false,
        };
        check(
            end,
            true,
            6,
            "volley: 1 of 3 batches ran; rollout stopped: 2 hosts failed, the failure budget allows 1; 6 hosts skipped\n",
        );
        check(
            RunEnd {
                batches_started: 3,
                failures: 1,
                stopped: false,
                ..end
            },
            true,
            0,
            "volley: 3 of 3 batches ran; 1 host failed, the failure budget allows 1\n",
        );
        check(
            RunEnd {
                allowed_failures: None,
                ..end
            },
            true,
            0,
            "volley: 1 of 3 batches ran\n",
        );
        check(
            RunEnd {
                batches: 1,
                batches_started: 1,
                allowed_failures: None,
                ..end
            },
            false,
            0,
            "",
        );
    }

    #[test]
    fn the_retry_hint_appears_only_after_failures_a_retry_may_mend() {
        let id = "20261127T065812Z-3f9a";
        let refused = Outcome::Unreachable {
            reason: "connection refused".into(),
        };
        let unknown = Outcome::HostKeyUnknown {
            fingerprint: "SHA256:x".into(),
        };
        let rejected = Outcome::AuthFailed {
            reason: "rejected".into(),
        };
        let check = |failed: &[Option<&Outcome>], expected: &str| {
            let mut out = Vec::new();
            write_recorded(&mut out, id, failed.iter().copied()).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{failed:?}");
        };
        check(&[], "");
        check(
            &[Some(&refused), Some(&unknown), None],
            "volley: run 20261127T065812Z-3f9a: `volley retry 20261127T065812Z-3f9a` runs it again on the 3 hosts that did not succeed\n",
        );
        check(
            &[Some(&unknown), Some(&rejected)],
            "volley: run 20261127T065812Z-3f9a: no retry offered: the 2 hosts that did not succeed were refused for host keys or credentials, which a retry would meet again\n",
        );
        check(
            &[Some(&rejected)],
            "volley: run 20261127T065812Z-3f9a: no retry offered: the 1 host that did not succeed was refused for its host key or credentials, which a retry would meet again\n",
        );
    }
}
