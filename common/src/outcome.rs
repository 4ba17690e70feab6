//! The result model: how a run ended on one host.
//!
//! Every transport produces the same closed [`Outcome`] enum, so the scheduler, the reporters and
//! the exit status never need to know which transport ran a host. A host failing is data, never an
//! `Err` that unwinds the run.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::format_duration;

/// How a run ended on one host. It is also the `outcome` of a run journal's host record, so
/// it reads back as it was written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The command ran and exited with status 0.
    Succeeded,
    /// The command ran and exited with a non-zero status.
    NonZeroExit { code: u32 },
    /// The command was killed by a signal (`TERM`, `KILL`, ...).
    Signalled { signal: String },
    /// The host refused the connection, had no route, or its name did not resolve.
    Unreachable { reason: String },
    /// The connection (TCP and handshake) did not complete within the connect timeout. The
    /// reason says what was dialled and where it stalled (empty in journals written before it
    /// was recorded).
    ConnectTimeout {
        #[serde(default)]
        reason: String,
    },
    /// The host rejected every credential offered, or no usable credential existed; or the
    /// host's agent refused the user (none such on the host, root not allowed), as sshd would.
    AuthFailed { reason: String },
    /// The host's key is not in known_hosts.
    HostKeyUnknown { fingerprint: String },
    /// known_hosts holds other keys for this host: another of the same type, or keys of other
    /// types only.
    HostKeyChanged { fingerprint: String },
    /// The TLS handshake with the agent failed: its certificate did not verify or name the
    /// host, or it refused ours.
    TlsRejected { reason: String },
    /// The command ran longer than the command timeout and was stopped on the host. The reason
    /// says whose limit it was where that is not the run's `--timeout` on its command (empty
    /// then, and in journals written before it was recorded).
    CommandTimeout {
        #[serde(default)]
        reason: String,
    },
    /// The run was interrupted before this host finished (or before it started).
    Cancelled,
    /// Any other transport failure, for example a connection lost in the middle of a command.
    TransportError { reason: String },
    /// A step of a multi-step operation on the host (such as `volley agent install`) failed
    /// there: the host was reached, the operation did not complete.
    StepFailed { step: String, reason: String },
    /// Never started: the failure budget stopped the rollout before this host's turn.
    Skipped,
    /// The command was sent to the host's agent, and its end is unknown: the connection was lost
    /// and could not be restored, or the agent no longer knows the execution (it restarted, or
    /// forgot it). The command may have run, may still run: `volley runs resume` finds out, and
    /// `volley retry` leaves such hosts alone unless asked for them by name.
    InDoubt { reason: String },
}

/// The classes of outcomes that decide `volley`'s exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutcomeClass {
    Success,
    /// The command ran and failed: non-zero exit, signal, or a failed step.
    CommandFailed,
    /// The host was not reached, not authenticated, or timed out.
    NotReached,
    /// The failure budget stopped the rollout and this host never ran. It outranks the
    /// failures because it says the change is only partly rolled out.
    Stopped,
    /// Whether the command ran on this host is unknown. It outranks a stopped rollout: the
    /// command may still be running there.
    InDoubt,
    /// The run was interrupted.
    Interrupted,
}

impl Outcome {
    /// The command outlived the run's `--timeout` and was stopped.
    pub fn command_timeout() -> Outcome {
        Outcome::CommandTimeout {
            reason: String::new(),
        }
    }

    /// An operation (`push`, `agent install`, ...) that did not finish within its limit: the
    /// run's `--timeout`, or else its `default`.
    pub fn operation_timeout(
        operation: &str,
        timeout: Option<Duration>,
        default: Duration,
    ) -> Outcome {
        let limit = match timeout {
            Some(timeout) => format!("--timeout {}", format_duration(timeout)),
            None => format!(
                "{} (its limit where no --timeout is given)",
                format_duration(default)
            ),
        };
        Outcome::CommandTimeout {
            reason: format!("the {operation} did not finish within {limit}, and was stopped"),
        }
    }

    pub fn class(&self) -> OutcomeClass {
        match self {
            Outcome::Succeeded => OutcomeClass::Success,
            Outcome::NonZeroExit { .. }
            | Outcome::Signalled { .. }
            | Outcome::StepFailed { .. } => OutcomeClass::CommandFailed,
            Outcome::Unreachable { .. }
            | Outcome::ConnectTimeout { .. }
            | Outcome::AuthFailed { .. }
            | Outcome::HostKeyUnknown { .. }
            | Outcome::HostKeyChanged { .. }
            | Outcome::TlsRejected { .. }
            | Outcome::CommandTimeout { .. }
            | Outcome::TransportError { .. } => OutcomeClass::NotReached,
            Outcome::Cancelled => OutcomeClass::Interrupted,
            Outcome::Skipped => OutcomeClass::Stopped,
            Outcome::InDoubt { .. } => OutcomeClass::InDoubt,
        }
    }

    /// Every [`Outcome::kind`], in the order of the enum's declaration.
    pub const KINDS: &'static [&'static str] = &[
        "succeeded",
        "non_zero_exit",
        "signalled",
        "unreachable",
        "connect_timeout",
        "auth_failed",
        "host_key_unknown",
        "host_key_changed",
        "tls_rejected",
        "command_timeout",
        "cancelled",
        "transport_error",
        "step_failed",
        "skipped",
        "in_doubt",
    ];

    /// A short stable name for the kind of outcome, used in summaries and JSON.
    pub fn kind(&self) -> &'static str {
        Outcome::KINDS[self.index()]
    }

    /// The kind's place in [`Outcome::KINDS`]: the order summaries list kinds in. The match is
    /// exhaustive, so a new variant cannot be added without choosing its place.
    pub fn index(&self) -> usize {
        match self {
            Outcome::Succeeded => 0,
            Outcome::NonZeroExit { .. } => 1,
            Outcome::Signalled { .. } => 2,
            Outcome::Unreachable { .. } => 3,
            Outcome::ConnectTimeout { .. } => 4,
            Outcome::AuthFailed { .. } => 5,
            Outcome::HostKeyUnknown { .. } => 6,
            Outcome::HostKeyChanged { .. } => 7,
            Outcome::TlsRejected { .. } => 8,
            Outcome::CommandTimeout { .. } => 9,
            Outcome::Cancelled => 10,
            Outcome::TransportError { .. } => 11,
            Outcome::StepFailed { .. } => 12,
            Outcome::Skipped => 13,
            Outcome::InDoubt { .. } => 14,
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Succeeded => f.write_str("succeeded"),
            Outcome::NonZeroExit { code } => write!(f, "exited with status {code}"),
            Outcome::Signalled { signal } => write!(f, "killed by signal {signal}"),
            Outcome::Unreachable { reason } => write!(f, "unreachable: {reason}"),
            Outcome::ConnectTimeout { reason } if reason.is_empty() => {
                f.write_str("connect timed out")
            }
            Outcome::ConnectTimeout { reason } => write!(f, "connect timed out: {reason}"),
            Outcome::AuthFailed { reason } => write!(f, "authentication failed: {reason}"),
            Outcome::HostKeyUnknown { fingerprint } => {
                write!(
                    f,
                    "host key unknown ({fingerprint}); see --accept-new-host-keys"
                )
            }
            Outcome::HostKeyChanged { fingerprint } => write!(
                f,
                "HOST KEY CHANGED ({fingerprint}): refusing to connect, check known_hosts"
            ),
            Outcome::TlsRejected { reason } => write!(f, "TLS rejected: {reason}"),
            Outcome::CommandTimeout { reason } if reason.is_empty() => {
                f.write_str("command timed out and was stopped")
            }
            Outcome::CommandTimeout { reason } => write!(f, "timed out: {reason}"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::TransportError { reason } => write!(f, "transport error: {reason}"),
            Outcome::StepFailed { step, reason } => write!(f, "{step} failed: {reason}"),
            Outcome::Skipped => {
                f.write_str("skipped: the failure budget stopped the rollout before this host")
            }
            Outcome::InDoubt { reason } => write!(f, "in doubt: {reason}"),
        }
    }
}

/// The transport that ran (or tried to run) a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    Ssh,
    Agent,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Ssh => "ssh",
            TransportKind::Agent => "agent",
        })
    }
}

/// Why `auto` ran a host over SSH although it tried the host's agent first. Each proves the
/// command had not started on the agent, which is what allows the fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// Nothing answered on the agent port (refused, no route): the host has no agent.
    NoAgent,
    /// The agent port did not answer in time.
    AgentTimeout,
    /// The agent's certificate did not verify under the CA or did not name the host.
    AgentCertificateRejected,
    /// The agent refused the controller's certificate.
    ControllerCertificateRefused,
    /// The TLS handshake failed otherwise.
    TlsFailed,
}

impl FallbackReason {
    /// Every reason, in declaration order: the order summaries list them in.
    pub const ALL: [FallbackReason; 5] = [
        FallbackReason::NoAgent,
        FallbackReason::AgentTimeout,
        FallbackReason::AgentCertificateRejected,
        FallbackReason::ControllerCertificateRefused,
        FallbackReason::TlsFailed,
    ];

    /// The reason in the operator's words, for summaries and failure lines.
    pub fn describe(self) -> &'static str {
        match self {
            FallbackReason::NoAgent => "no agent answered",
            FallbackReason::AgentTimeout => "the agent did not answer in time",
            FallbackReason::AgentCertificateRejected => "agent certificate rejected",
            FallbackReason::ControllerCertificateRefused => "the agent refused our certificate",
            FallbackReason::TlsFailed => "the TLS handshake with the agent failed",
        }
    }

    /// The reason for an agent attempt that ended with `outcome`, when that outcome allows a
    /// fallback; the agent transport knows better for TLS failures and says so itself.
    pub fn of(outcome: &Outcome) -> Option<FallbackReason> {
        match outcome {
            Outcome::Unreachable { .. } => Some(FallbackReason::NoAgent),
            Outcome::ConnectTimeout { .. } => Some(FallbackReason::AgentTimeout),
            Outcome::TlsRejected { .. } => Some(FallbackReason::TlsFailed),
            _ => None,
        }
    }
}

/// A host that fell back from its agent to SSH: why, and the agent attempt's outcome in full.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fallback {
    pub reason: FallbackReason,
    /// How the agent attempt ended, as a sentence (`TLS rejected: invalid peer certificate...`).
    pub detail: String,
}

/// Where the time of one host went. Phases that never began are `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// From the start of the host to an authenticated session.
    pub connect: Option<Duration>,
    /// From the start of the command to its end.
    pub run: Option<Duration>,
    /// From the start of the host to its outcome.
    pub total: Duration,
}

/// What was kept of one output stream. The terminal stream is never capped; this copy is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes of the stream, at most the cap.
    pub kept: Vec<u8>,
    /// All bytes the stream carried, kept or not.
    pub total_bytes: u64,
    /// A hash of the bytes past the cap, which `kept` does not hold (0 when there were none):
    /// outputs alike up to the cap and as long, but different past it, tell apart by it.
    pub past_cap: u64,
}

impl Captured {
    pub fn truncated(&self) -> bool {
        self.total_bytes > self.kept.len() as u64
    }
}

/// Keeps the head of one output stream up to a cap, counting everything, and hashing what is
/// past the cap.
#[derive(Debug)]
pub struct Capture {
    cap: usize,
    captured: Captured,
    /// Of the bytes past the cap, in order: SipHash's `write` is a stream, so chunks hash as the
    /// bytes they carry whatever their sizes.
    past_cap: Option<std::hash::DefaultHasher>,
}

impl Capture {
    pub fn new(cap: usize) -> Capture {
        Capture {
            cap,
            captured: Captured::default(),
            past_cap: None,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        use std::hash::Hasher as _;
        self.captured.total_bytes += chunk.len() as u64;
        let room = self.cap.saturating_sub(self.captured.kept.len());
        let (kept, past) = chunk.split_at(room.min(chunk.len()));
        self.captured.kept.extend_from_slice(kept);
        if !past.is_empty() {
            self.past_cap
                .get_or_insert_with(Default::default)
                .write(past);
        }
    }

    /// Bytes pushed so far (or counted, after [`Capture::count_total`]).
    pub fn total_bytes(&self) -> u64 {
        self.captured.total_bytes
    }

    /// Raises the count to `total_bytes` when more was carried than was pushed here.
    pub fn count_total(&mut self, total_bytes: u64) {
        self.captured.total_bytes = self.captured.total_bytes.max(total_bytes);
    }

    pub fn finish(self) -> Captured {
        use std::hash::Hasher as _;
        Captured {
            past_cap: self.past_cap.map_or(0, |hasher| hasher.finish()),
            ..self.captured
        }
    }
}

/// The whole record of one host's run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostReport {
    /// The host as the operator named it (after range expansion).
    pub host: String,
    pub transport: TransportKind,
    pub outcome: Outcome,
    pub timings: Timings,
    pub stdout: Captured,
    pub stderr: Captured,
    /// The rollout batch the host belongs to, counted from 1 (a run without `--batch` is one
    /// batch).
    pub batch: usize,
    /// Connection attempts made: 0 for a host that never started, more than 1 when a
    /// connect-phase failure was retried.
    pub attempts: u32,
    /// Set when `auto` tried the host's agent and then ran it over SSH.
    pub fallback: Option<Fallback>,
    /// For `volley push`: the remote files the host's run replaced or created (empty when
    /// nothing differed), also when it failed afterwards. `None` for other runs, and for a host
    /// whose push never got to compare.
    pub changed: Option<Vec<String>>,
}

impl HostReport {
    /// Whether the host never started: skipped by the stopped rollout, or kept from starting by
    /// an interrupt. It did not fail; the summary counts it apart.
    pub fn never_started(&self) -> bool {
        match self.outcome {
            Outcome::Skipped => true,
            Outcome::Cancelled => self.attempts == 0,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_lists_every_kind_in_declaration_order() {
        let text = || "x".to_string();
        let every = [
            Outcome::Succeeded,
            Outcome::NonZeroExit { code: 1 },
            Outcome::Signalled { signal: text() },
            Outcome::Unreachable { reason: text() },
            Outcome::ConnectTimeout { reason: text() },
            Outcome::AuthFailed { reason: text() },
            Outcome::HostKeyUnknown {
                fingerprint: text(),
            },
            Outcome::HostKeyChanged {
                fingerprint: text(),
            },
            Outcome::TlsRejected { reason: text() },
            Outcome::command_timeout(),
            Outcome::Cancelled,
            Outcome::TransportError { reason: text() },
            Outcome::StepFailed {
                step: text(),
                reason: text(),
            },
            Outcome::Skipped,
            Outcome::InDoubt { reason: text() },
        ];
        let kinds: Vec<&str> = every.iter().map(Outcome::kind).collect();
        assert_eq!(kinds, Outcome::KINDS);
    }

    #[test]
    fn a_timeout_says_whose_limit_it_was_where_it_is_not_the_run_s_own() {
        assert_eq!(
            Outcome::command_timeout().to_string(),
            "command timed out and was stopped"
        );
        let ten_minutes = Duration::from_secs(600);
        assert_eq!(
            Outcome::operation_timeout("push", Some(Duration::from_secs(90)), ten_minutes)
                .to_string(),
            "timed out: the push did not finish within --timeout 1m30s, and was stopped"
        );
        assert_eq!(
            Outcome::operation_timeout("agent install", None, ten_minutes).to_string(),
            "timed out: the agent install did not finish within 10m (its limit where no --timeout is given), and was stopped"
        );
        // A journal written before timeouts had reasons reads back.
        let old: Outcome = serde_json::from_str(r#"{"kind":"command_timeout"}"#).unwrap();
        assert_eq!(old, Outcome::command_timeout());
    }

    #[test]
    fn capture_keeps_the_head_and_counts_everything() {
        let mut capture = Capture::new(5);
        capture.push(b"abc");
        capture.push(b"defgh");
        capture.push(b"ij");
        let captured = capture.finish();
        assert_eq!(captured.kept, b"abcde");
        assert_eq!(captured.total_bytes, 10);
        assert!(captured.truncated());
    }

    #[test]
    fn what_is_past_the_cap_is_told_apart_by_its_hash_whatever_the_chunks() {
        let capture = |chunks: &[&[u8]]| {
            let mut capture = Capture::new(3);
            for chunk in chunks {
                capture.push(chunk);
            }
            capture.finish()
        };
        let one = capture(&[b"abcdef1"]);
        assert_eq!(one, capture(&[b"ab", b"cde", b"f1"]));
        assert_ne!(one.past_cap, capture(&[b"abcdef2"]).past_cap);
        assert_ne!(one.past_cap, 0);
        assert_eq!(capture(&[b"abc"]).past_cap, 0);
    }

    #[test]
    fn capture_under_the_cap_is_not_truncated() {
        let mut capture = Capture::new(5);
        capture.push(b"abcde");
        let captured = capture.finish();
        assert_eq!(captured.kept, b"abcde");
        assert!(!captured.truncated());
    }
}
