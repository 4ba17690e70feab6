//! Running one command: the process in its own process group and in its user's session (see
//! [`crate::as_user`]), its output streamed as events with backpressure, its end on exit,
//! timeout, cancel or shutdown.
//!
//! Output is streamed whole: the live stream is never capped, as over SSH; the controller caps
//! only the copy it keeps. Backpressure: chunks go through a bounded channel to the gRPC
//! response, so a controller that reads slowly makes the agent read the pipes slowly, and the
//! command blocks on its writes, as it would on a terminal or an SSH channel. Memory per
//! execution is one read buffer per stream plus the channel's few chunks, whatever the command
//! prints. A request may still ask for a cap (an older controller does): past it the agent
//! reads and counts without sending, and flags the stream as truncated.
//!
//! Stopping (timeout, dropped stream, shutdown) signals the whole process group: TERM, then KILL
//! for whatever is left of the group after [`KILL_AFTER`], so background children
//! (`sleep 300 &`) die with the command. A child that leaves the group (`setsid`) escapes, as it
//! would escape a terminal's hangup. A command that ends by itself is not signalled: a daemon it
//! started with its output redirected away from the pipes lives on, as it would under SSH.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use volley_common::exec::{ExecEvent, ExecSpec, ExitStatus, Exited, Program};

use crate::as_user;
use crate::session::Session;
use crate::signals::signal_name;

/// The largest output chunk sent in one event.
pub const CHUNK_BYTES: usize = 64 << 10;

/// Events waiting for the controller; with [`CHUNK_BYTES`] this bounds what an execution holds.
pub const EVENT_QUEUE: usize = 8;

/// How long a stopped command's group gets between TERM and KILL.
pub const KILL_AFTER: Duration = Duration::from_secs(2);

/// After a stop, how long the pipes may still deliver output before the agent gives up on them
/// (a process that left the group can hold them open forever).
const OUTPUT_LINGER: Duration = Duration::from_millis(500);

/// How often the group is checked for survivors between TERM and KILL.
const GROUP_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("working directory {0}: not a directory")]
    WorkingDir(String),
    #[error("environment variable name {0:?}: empty, or holding '=' or NUL")]
    EnvName(String),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// How an execution came to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The command exited and its output ended.
    Finished,
    /// It ran past its timeout and was killed.
    TimedOut,
    /// The controller dropped the stream (cancel, or the connection is gone); it was killed.
    Cancelled,
    /// The agent is stopping and the grace period is over; it was killed.
    Shutdown,
}

/// The record of a finished execution, for the audit log.
#[derive(Clone, Debug)]
pub struct Report {
    pub exited: Exited,
    pub ending: Ending,
}

/// A started command, not yet supervised.
#[derive(Debug)]
pub struct Running {
    child: Child,
    pid: u32,
    started: Instant,
}

/// Starts `spec`'s command in `session` (see [`crate::as_user`]) in a new process group,
/// stdout and stderr piped, stdin the request's bytes (see [`spawn`]). `nofile` is the open-file
/// limit the command gets.
pub fn start(
    spec: &ExecSpec,
    session: &Session,
    nofile: Option<u64>,
) -> Result<Running, ExecError> {
    if let Some(name) = spec
        .env
        .keys()
        .find(|name| name.is_empty() || name.contains(['=', '\0']))
    {
        return Err(ExecError::EnvName(name.clone()));
    }
    let command = as_user::command(session, &spec.program, spec.working_dir.as_deref(), nofile)?;
    let program = match &spec.program {
        Program::Shell(_) => session.account.login_shell().to_string(),
        Program::Argv(args) => format!("{:?}", args.first().map_or("", String::as_str)),
    };
    spawn(command, program, spec.stdin.clone())
}

/// Spawns `command` in a new process group, stdout and stderr piped; `program` names it in
/// errors. Its stdin is `input`, then end of file, fed by a task of its own so that a command
/// that never reads it blocks nothing; /dev/null when `input` is empty.
pub fn spawn(mut command: Command, program: String, input: Vec<u8>) -> Result<Running, ExecError> {
    command
        .stdin(if input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // The group is killed explicitly; killing only the leader on drop would orphan the rest.
        .kill_on_drop(false);
    let mut child = command
        .spawn()
        .map_err(|source| ExecError::Spawn { program, source })?;
    if let Some(mut pipe) = child.stdin.take() {
        // A command that exits without reading everything closes the pipe: the write fails
        // and the task ends, as `cat file | cmd` would. Dropping the pipe is the end of file.
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    let started = Instant::now();
    let pid = child.id().ok_or_else(|| ExecError::Spawn {
        program: "the command".to_string(),
        source: std::io::Error::other("it was reaped before it was supervised"),
    })?;
    Ok(Running {
        child,
        pid,
        started,
    })
}

/// Bytes one output stream carried, and how many of them were sent.
#[derive(Debug, Default)]
struct StreamCount {
    bytes: AtomicU64,
    sent: AtomicU64,
}

impl StreamCount {
    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn truncated(&self) -> bool {
        self.bytes() > self.sent.load(Ordering::Relaxed)
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Streams the command's events into `events` until it ends; all of each stream is sent, or
    /// `output_cap` bytes of it when the request asked for a cap. Ends early on `timeout`, when `events`' receiver is dropped, or when
    /// `kill` is cancelled, killing the group each time.
    pub async fn supervise(
        mut self,
        output_cap: Option<u64>,
        timeout: Option<Duration>,
        events: mpsc::Sender<ExecEvent>,
        kill: CancellationToken,
    ) -> Report {
        let group = i32::try_from(self.pid).ok().and_then(Pid::from_raw);
        // A timeout too far away to represent is no timeout.
        let deadline = timeout.and_then(|timeout| self.started.checked_add(timeout));
        let (stdout_count, stderr_count) = (StreamCount::default(), StreamCount::default());
        let stdout = self.child.stdout.take();
        let stderr = self.child.stderr.take();
        let outputs = async {
            tokio::join!(
                pump(
                    stdout,
                    output_cap,
                    &stdout_count,
                    &events,
                    ExecEvent::Stdout
                ),
                pump(
                    stderr,
                    output_cap,
                    &stderr_count,
                    &events,
                    ExecEvent::Stderr
                ),
            )
        };
        tokio::pin!(outputs);
        // The channel is new and larger than one event, so this does not wait.
        let _ = events.send(ExecEvent::Started { pid: self.pid }).await;

        let mut outputs_done = false;
        let mut status = None;
        let ending = loop {
            if outputs_done && status.is_some() {
                break Ending::Finished;
            }
            tokio::select! {
                _ = &mut outputs, if !outputs_done => outputs_done = true,
                waited = self.child.wait(), if status.is_none() => status = Some(waited),
                () = sleep_until(deadline) => break Ending::TimedOut,
                () = events.closed() => break Ending::Cancelled,
                () = kill.cancelled() => break Ending::Shutdown,
            }
        };
        let waited = match status {
            Some(waited) if ending == Ending::Finished => waited,
            status => {
                let stopped = stop_group(group, &mut self.child, status.is_some()).await;
                if ending != Ending::Cancelled && !outputs_done {
                    let _ = tokio::time::timeout(OUTPUT_LINGER, &mut outputs).await;
                }
                status.unwrap_or(stopped)
            }
        };
        let status = match waited {
            Ok(status) => describe(status),
            // Only possible if something else reaped our child; there is no status to tell.
            Err(error) => {
                tracing::error!(pid = self.pid, %error, "cannot read the command's exit status");
                ExitStatus::Code(-1)
            }
        };
        let exited = Exited {
            status,
            duration: self.started.elapsed(),
            timed_out: ending == Ending::TimedOut,
            stdout_bytes: stdout_count.bytes(),
            stderr_bytes: stderr_count.bytes(),
            stdout_truncated: stdout_count.truncated(),
            stderr_truncated: stderr_count.truncated(),
        };
        if ending != Ending::Cancelled {
            send_exited(&events, exited.clone(), ending, &kill).await;
        }
        Report { exited, ending }
    }
}

/// Sends the last event. A controller that stops reading without going away must not hold the
/// execution's slot forever: the wait ends at shutdown, and after a stop it is short.
async fn send_exited(
    events: &mpsc::Sender<ExecEvent>,
    exited: Exited,
    ending: Ending,
    kill: &CancellationToken,
) {
    let send = events.send(ExecEvent::Exited(exited));
    if ending == Ending::Finished {
        tokio::select! {
            _ = send => {}
            () = kill.cancelled() => {}
        }
    } else {
        let _ = tokio::time::timeout(KILL_AFTER, send).await;
    }
}

/// Reads one pipe to its end in chunks, sending all of them or up to `cap` bytes, and counting
/// all of them.
async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    cap: Option<u64>,
    count: &StreamCount,
    events: &mpsc::Sender<ExecEvent>,
    event: fn(Vec<u8>) -> ExecEvent,
) {
    let Some(mut pipe) = pipe else { return };
    let mut buffer = vec![0; CHUNK_BYTES];
    loop {
        let read = match pipe.read(&mut buffer).await {
            Ok(0) => return,
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(%error, "cannot read the command's output");
                return;
            }
        };
        count.bytes.fetch_add(read as u64, Ordering::Relaxed);
        let room = cap.map_or(u64::MAX, |cap| {
            cap.saturating_sub(count.sent.load(Ordering::Relaxed))
        });
        let send = read.min(usize::try_from(room).unwrap_or(usize::MAX));
        if send > 0 {
            if events.send(event(buffer[..send].to_vec())).await.is_err() {
                // The controller is gone; the supervisor sees the closed channel and kills.
                return;
            }
            count.sent.fetch_add(send as u64, Ordering::Relaxed);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// TERM to the group; KILL to whatever is left of it after [`KILL_AFTER`]. Returns the leader's
/// status (`leader_reaped`: it was already collected, and the returned value is not used).
async fn stop_group(
    group: Option<Pid>,
    leader: &mut Child,
    leader_reaped: bool,
) -> std::io::Result<std::process::ExitStatus> {
    let Some(group) = group else {
        leader.start_kill()?;
        return leader.wait().await;
    };
    signal_group(group, Signal::TERM);
    let give_up = Instant::now() + KILL_AFTER;
    let mut status = if leader_reaped {
        None
    } else {
        tokio::time::timeout_at(give_up, leader.wait()).await.ok()
    };
    // While the leader is unreaped its pid cannot be reused, so the group id is ours; once
    // reaped, the id stays ours as long as any member lives, which is what is polled here.
    while (leader_reaped || status.is_some()) && group_alive(group) && Instant::now() < give_up {
        tokio::time::sleep(GROUP_POLL).await;
    }
    if group_alive(group) {
        signal_group(group, Signal::KILL);
    }
    match status.take() {
        Some(status) => status,
        None => leader.wait().await,
    }
}

fn signal_group(group: Pid, signal: Signal) {
    match rustix::process::kill_process_group(group, signal) {
        Ok(()) => {}
        // The group is already empty.
        Err(rustix::io::Errno::SRCH) => {}
        Err(error) => tracing::warn!(group = group.as_raw_pid(), %error, "cannot signal the group"),
    }
}

fn group_alive(group: Pid) -> bool {
    rustix::process::test_kill_process_group(group).is_ok()
}

fn describe(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(signal_name(signal)),
        // Neither exited nor signalled: only a stopped or continued child reports that, and
        // `wait` does not return for those.
        (None, None) => ExitStatus::Code(-1),
    }
}

#[cfg(test)]
mod tests;
