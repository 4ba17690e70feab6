//! What the controller asks an agent to run and what comes back, as plain Rust types.
//!
//! The agent protocol's prost types stay in `volley-proto`, which converts to and from these at
//! the edge; everything else (the agent's executor, the controller's agent transport) works with
//! these.

use std::collections::BTreeMap;
use std::time::Duration;

/// Once a command has exited, how long its output may stay quiet, still open, before the command
/// is taken to be done (counted from the exit, or from the last output after it). A process it
/// left in the background (a daemon started without redirecting its output) can hold the output
/// open for as long as it runs; the command's end is its exit, so then its exit status is its
/// outcome and what that process prints later is not collected. Both transports wait the same.
pub const OUTPUT_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The program of an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// A command line for the user's login shell with `-c`, as `ssh host CMD` runs it.
    Shell(String),
    /// A program and its arguments, run without a shell.
    Argv(Vec<String>),
}

/// One command for an agent to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSpec {
    /// Chosen by the controller, recorded in the agent's audit log.
    pub execution_id: String,
    pub program: Program,
    /// Variables added to the user's login environment.
    pub env: BTreeMap<String, String>,
    /// `None`: the user's home directory.
    pub working_dir: Option<String>,
    pub timeout: Option<Duration>,
    /// Bytes of each stream the controller wants sent; `None`: all of them.
    pub max_output: Option<u64>,
    /// The user the command runs as, in that user's login session; `None`: the agent's own user.
    pub user: Option<String>,
    /// Run as root instead of `user` (`--become`).
    pub become_root: bool,
    /// Bytes of each stream the agent keeps for a later `Attach`; `None`: its own limit.
    pub keep_output: Option<u64>,
    /// The command's standard input, then end of file; empty reads as /dev/null does.
    pub stdin: bytes::Bytes,
}

/// How an execution's process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    /// The signal's name without `SIG`: `TERM`, `KILL`.
    Signal(String),
}

/// The last event of an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exited {
    pub status: ExitStatus,
    pub duration: Duration,
    /// The agent stopped the command because it ran past its timeout.
    pub timed_out: bool,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// A Cancel request stopped it.
    pub cancelled: bool,
}

/// A request to follow an execution again, by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachSpec {
    pub execution_id: String,
    /// Bytes of each stream the controller already has.
    pub stdout_offset: u64,
    pub stderr_offset: u64,
}

/// What an execution emits, in order: `Started`, output chunks, then `Exited`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    Started { pid: u32 },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exited(Exited),
}

/// The limits an agent enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentLimits {
    pub max_concurrent_execs: u32,
    pub max_message_bytes: u32,
    pub max_concurrent_streams: u32,
    pub max_timeout: Option<Duration>,
    /// The largest file a push may write or a fetch may read; `None` from an agent that does
    /// not say.
    pub max_file_bytes: Option<u64>,
}

/// What an agent says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentInfo {
    pub version: String,
    pub hostname: String,
    pub os: String,
    pub uptime: Duration,
    pub limits: AgentLimits,
    /// The agent's process id on its host; `None` from an agent that does not say.
    pub pid: Option<u32>,
}
