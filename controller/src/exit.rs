//! `volley`'s exit status, a documented function of the hosts' outcomes (see README.md).

use volley_common::outcome::{HostReport, Outcome, OutcomeClass};

pub const SUCCESS: u8 = 0;
/// Some command exited non-zero or was killed by a signal; every host was reached.
pub const COMMAND_FAILED: u8 = 1;
/// Some host was not reached, not authenticated, refused for its host key, or timed out.
pub const NOT_REACHED: u8 = 2;
/// The failure budget stopped the rollout: some hosts were skipped (never ran).
pub const ROLLOUT_STOPPED: u8 = 3;
/// Some host's outcome is unknown (`in_doubt`): its command may have run, may still run.
pub const IN_DOUBT: u8 = 4;
/// A usage or input error (sysexits' EX_USAGE); nothing ran.
pub const USAGE: u8 = 64;
/// An internal error of volley itself (sysexits' EX_SOFTWARE).
pub const INTERNAL: u8 = 70;
/// Interrupted (SIGINT or SIGTERM), as shells report 128 + SIGINT.
pub const INTERRUPTED: u8 = 130;
/// The reader of stdout or stderr went away (`volley ... | head -1`): 128 + SIGPIPE, what a
/// shell reports for a tool that a closed pipe killed. Volley stops quietly instead of dying.
pub const BROKEN_PIPE: u8 = 141;

/// The status of a finished run: an interrupt wins, then hosts in doubt, then a stopped
/// rollout, then hosts not reached, then failed commands.
pub fn status<'a>(reports: impl IntoIterator<Item = &'a HostReport>, interrupted: bool) -> u8 {
    status_of(
        reports.into_iter().map(|report| &report.outcome),
        interrupted,
    )
}

/// [`status`] of outcomes alone.
pub fn status_of<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>, interrupted: bool) -> u8 {
    if interrupted {
        return INTERRUPTED;
    }
    let worst = outcomes
        .into_iter()
        .map(Outcome::class)
        .max()
        .unwrap_or(OutcomeClass::Success);
    match worst {
        OutcomeClass::Success => SUCCESS,
        OutcomeClass::CommandFailed => COMMAND_FAILED,
        OutcomeClass::NotReached => NOT_REACHED,
        OutcomeClass::Stopped => ROLLOUT_STOPPED,
        OutcomeClass::InDoubt => IN_DOUBT,
        OutcomeClass::Interrupted => INTERRUPTED,
    }
}

#[cfg(test)]
mod tests {
    use volley_common::outcome::{Captured, Timings, TransportKind};

    use super::*;

    fn check(outcomes: &[Outcome], interrupted: bool, expected: u8) {
        let reports: Vec<HostReport> = outcomes
            .iter()
            .map(|outcome| HostReport {
                host: "h".to_string(),
                transport: TransportKind::Ssh,
                outcome: outcome.clone(),
                timings: Timings::default(),
                stdout: Captured::default(),
                stderr: Captured::default(),
                batch: 1,
                attempts: 1,
                fallback: None,
                changed: None,
            })
            .collect();
        assert_eq!(
            status(&reports, interrupted),
            expected,
            "{outcomes:?} interrupted={interrupted}"
        );
    }

    #[test]
    fn statuses() {
        let failed = Outcome::NonZeroExit { code: 3 };
        let signalled = Outcome::Signalled {
            signal: "KILL".to_string(),
        };
        let refused = Outcome::Unreachable {
            reason: "connection refused".to_string(),
        };
        check(&[], false, SUCCESS);
        check(&[Outcome::Succeeded, Outcome::Succeeded], false, SUCCESS);
        check(&[Outcome::Succeeded, failed.clone()], false, COMMAND_FAILED);
        check(std::slice::from_ref(&signalled), false, COMMAND_FAILED);
        check(&[failed.clone(), refused.clone()], false, NOT_REACHED);
        check(&[Outcome::command_timeout()], false, NOT_REACHED);
        check(
            &[Outcome::HostKeyChanged {
                fingerprint: "x".to_string(),
            }],
            false,
            NOT_REACHED,
        );
        // A stopped rollout says so over the failures that stopped it; an interrupt still wins.
        check(
            &[failed.clone(), refused.clone(), Outcome::Skipped],
            false,
            ROLLOUT_STOPPED,
        );
        check(
            &[Outcome::Skipped, Outcome::Succeeded],
            false,
            ROLLOUT_STOPPED,
        );
        // An unknown outcome says so over everything but an interrupt.
        let in_doubt = Outcome::InDoubt {
            reason: "lost".to_string(),
        };
        check(
            &[Outcome::Skipped, failed.clone(), in_doubt.clone()],
            false,
            IN_DOUBT,
        );
        check(&[in_doubt, Outcome::Cancelled], true, INTERRUPTED);
        check(&[Outcome::Skipped, Outcome::Cancelled], true, INTERRUPTED);
        check(&[Outcome::Succeeded], true, INTERRUPTED);
        check(&[refused, Outcome::Cancelled], true, INTERRUPTED);
    }
}
