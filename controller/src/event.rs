//! The events a run emits, host by host, from the scheduler and the transports to the journal and
//! the reporters, and how the run ended. They are plain data (but for the journal's answer to
//! [`Event::Executing`]), so that executing (scheduler, transports) and rendering (journal,
//! reporters) depend on this module and never on each other.

use bytes::Bytes;

/// Which output stream of the remote command a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a run emits, in order per host. Hosts are numbered by their place in the plan.
#[derive(Debug)]
pub enum Event {
    /// The host's turn came: it is connecting.
    Started { host: usize },
    /// The host's command is about to be sent to its agent as `execution_id`. The journal
    /// records it, then answers on `recorded`; the transport sends the command only once it
    /// is written, so that an execution is always in the journal before it can have started.
    /// The error is why it could not be written. Not passed on to the reporters.
    Executing {
        /// The host's name.
        name: String,
        execution_id: String,
        recorded: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// A chunk of output, as it arrived (not split into lines).
    Output {
        host: usize,
        stream: Stream,
        data: Bytes,
    },
    /// The host's final record. No event for this host follows. Boxed: one per host, and far
    /// larger than the output chunks that make up most events.
    Finished {
        host: usize,
        report: Box<volley_common::outcome::HostReport>,
    },
    /// The batch delay (`--batch-delay`) starts: batch `batch` follows it.
    BatchWaiting {
        batch: usize,
        batches: usize,
        delay: std::time::Duration,
    },
    /// A batch of a rollout starts: its hosts are next. Sent only when the run is batched.
    BatchStarted {
        /// Counted from 1, out of `batches`.
        batch: usize,
        batches: usize,
        hosts: std::ops::Range<usize>,
    },
}

/// How the rollout went, for the summary and the journal's footer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunEnd {
    pub batches: usize,
    /// Batches that started (all of them, unless the rollout was stopped or interrupted).
    pub batches_started: usize,
    /// Hosts that did not succeed, as the budget counts them.
    pub failures: usize,
    /// The failures the budget allows; `None` without a budget.
    pub allowed_failures: Option<usize>,
    /// The rollout stopped (the budget was exceeded, or the journal could not record the run)
    /// while hosts were still to start: they were skipped.
    pub stopped: bool,
    /// It was the journal that stopped it.
    pub stopped_by_journal: bool,
}

/// A host key that `--accept-new-host-keys` recorded, for the operator to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedHostKey {
    /// The host or jump host as the operator named it.
    pub host: String,
    /// The address and port it was recorded under, as dialled.
    pub address: String,
    /// `ED25519`, `ECDSA`, `RSA`, ...
    pub key_type: String,
    /// `SHA256:...`, as OpenSSH prints it.
    pub fingerprint: String,
}
