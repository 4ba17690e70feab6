//! `--retries`: which failures of a host may be tried again, and how long to wait first.
//!
//! Only a failure that certainly happened before the command could start is retried: the host
//! refused the connection, had no route, or the connect timeout (TCP, handshake and
//! authentication) ran out. Anything after that, a dropped connection included, may have left the
//! command running or done, and running it twice is worse than reporting the failure. The rule is
//! written against [`Ended`], so it holds for every transport.

use std::time::Duration;

use volley_common::outcome::Outcome;

use crate::transport::Ended;

/// The wait before the first retry; each further retry waits twice as long, up to the cap.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether this end of an attempt may be retried.
pub fn may_retry(ended: &Ended) -> bool {
    // No session and no command: the transport never got that far, whatever the outcome says.
    let never_connected = ended.connected_after.is_none() && ended.ran_for.is_none();
    never_connected
        && matches!(
            ended.outcome,
            Outcome::Unreachable { .. } | Outcome::ConnectTimeout { .. }
        )
}

/// The wait after `failed` attempts (1 after the first): exponential, capped, with "equal
/// jitter": half of it fixed and half random, so hosts that failed together do not all come back
/// at the same instant (to a load balancer or sshd's MaxStartups that has just recovered).
pub fn backoff(failed: u32, random: u64) -> Duration {
    let doublings = failed.saturating_sub(1).min(16);
    let full = FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF);
    let half = full / 2;
    let half_millis = u64::try_from(half.as_millis()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_millis(random % (half_millis + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(outcome: Outcome, connected: bool, ran: bool) -> Ended {
        let some = |yes: bool| yes.then(|| Duration::from_millis(5));
        Ended {
            outcome,
            connected_after: some(connected),
            ran_for: some(ran),
            transport: volley_common::outcome::TransportKind::Ssh,
            fallback: None,
        }
    }

    #[test]
    fn only_failures_before_the_command_are_retried() {
        let refused = Outcome::Unreachable {
            reason: "connection refused".to_string(),
        };
        let cases = [
            (ended(refused.clone(), false, false), true),
            (
                ended(
                    Outcome::ConnectTimeout {
                        reason: String::new(),
                    },
                    false,
                    false,
                ),
                true,
            ),
            // A transport that got a session and still said unreachable is not believed.
            (ended(refused, true, false), false),
            (
                ended(
                    Outcome::ConnectTimeout {
                        reason: String::new(),
                    },
                    true,
                    true,
                ),
                false,
            ),
            (ended(Outcome::NonZeroExit { code: 1 }, true, true), false),
            (ended(Outcome::command_timeout(), true, true), false),
            (
                ended(
                    Outcome::TransportError {
                        reason: "connection lost".to_string(),
                    },
                    true,
                    true,
                ),
                false,
            ),
            (
                ended(
                    Outcome::AuthFailed {
                        reason: "publickey".to_string(),
                    },
                    false,
                    false,
                ),
                false,
            ),
            (ended(Outcome::Cancelled, false, false), false),
        ];
        for (ended, expected) in cases {
            assert_eq!(may_retry(&ended), expected, "{ended:?}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let check = |failed: u32, low_ms: u64, high_ms: u64| {
            for random in [0, 1, 499, 500, 12_345, u64::MAX] {
                let wait = backoff(failed, random);
                assert!(
                    wait >= Duration::from_millis(low_ms) && wait <= Duration::from_millis(high_ms),
                    "after {failed} failures, random {random}: {wait:?}"
                );
            }
            assert_eq!(backoff(failed, 0), Duration::from_millis(low_ms));
        };
        check(1, 500, 1000);
        check(2, 1000, 2000);
        check(3, 2000, 4000);
        check(5, 8000, 16_000);
        check(6, 15_000, 30_000);
        check(100, 15_000, 30_000);
        check(0, 500, 1000);
    }
}
