//! Running one command: started in its user's session (see [`crate::as_user`]) by the
//! executor (its own process group, or a transient unit of systemd: see [`crate::executor`]),
//! its output kept and streamed to whoever follows the execution (see [`crate::execution`]),
//! its end on exit, timeout, cancel or shutdown.
//!
//! Output is streamed whole: the live stream is never capped, as over SSH; the controller caps
//! only the copy it keeps, and the agent keeps the same head for a controller that attaches
//! later. Backpressure: a follower's chunks go through a bounded channel to its gRPC response,
//! so a controller that reads slowly makes the agent read the pipes slowly, and the command
//! blocks on its writes, as it would on a terminal or an SSH channel. Without a follower (the
//! controller went away) the pipes are read at full speed and only the kept head stays. Memory
//! per execution is one read buffer per stream, the channel's few chunks and the kept head of
//! each stream. A request may still ask for a cap (an older controller does): past it the agent
//! reads and counts without sending, and flags the stream as truncated.
//!
//! Stopping (timeout, Cancel, shutdown) signals the whole command, its process group or its
//! unit's cgroup: TERM, then KILL for whatever is left after [`KILL_AFTER`], so background
//! children (`sleep 300 &`) die with the command. A command that ends by itself is not
//! signalled: a daemon it started with its output redirected away from the pipes lives on, as
//! it would under SSH. A follower that goes away stops nothing: the command runs to its end and
//! its outcome is kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use volley_common::exec::{ExecSpec, ExitStatus, Exited, OUTPUT_AFTER_EXIT};

use crate::as_user;
use crate::execution::{Execution, Stream};
use crate::executor::{Executor, Process};
use crate::session::Session;

/// The largest output chunk sent in one event.
pub const CHUNK_BYTES: usize = 64 << 10;

/// Events waiting for the controller; with [`CHUNK_BYTES`] this bounds what an execution holds.
pub const EVENT_QUEUE: usize = 8;

/// How long a stopped command's group gets between TERM and KILL.
pub const KILL_AFTER: Duration = Duration::from_secs(2);

/// After a stop, how long the pipes may still deliver output before the agent gives up on them
/// (a process that left the group can hold them open forever).
const OUTPUT_LINGER: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("working directory {0}: not a directory")]
    WorkingDir(String),
    #[error("environment variable name {0:?}: empty, or holding '=' or NUL")]
    EnvName(String),
    #[error("environment variable {0}: its value holds NUL")]
    EnvValue(String),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("systemd did not start {unit}: {reason}")]
    Unit { unit: String, reason: String },
}

/// How an execution came to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The command exited and its output ended.
    Finished,
    /// It ran past its timeout and was killed.
    TimedOut,
    /// A Cancel request stopped it.
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
    process: Process,
    started: Instant,
}

/// Starts `spec`'s command in `session` (see [`crate::as_user`]) with `executor`, stdout and
/// stderr piped, stdin the request's bytes. `nofile` is the open-file limit the command gets
/// from a direct executor.
pub async fn start(
    spec: &ExecSpec,
    session: &Session,
    executor: &Executor,
    nofile: Option<u64>,
) -> Result<Running, ExecError> {
    if let Some(name) = spec
        .env
        .keys()
        .find(|name| name.is_empty() || name.contains(['=', '\0']))
    {
        return Err(ExecError::EnvName(name.clone()));
    }
    if let Some((name, _)) = session.env.iter().find(|(_, value)| value.contains('\0')) {
        return Err(ExecError::EnvValue(name.clone()));
    }
    let direct = executor.shares_agent_view();
    let call = as_user::call(
        session,
        &spec.program,
        spec.working_dir.as_deref(),
        nofile.filter(|_| direct),
        direct,
    )?;
    let process = executor
        .start(call, &spec.execution_id, spec.stdin.to_vec())
        .await?;
    Ok(Running {
        process,
        started: Instant::now(),
    })
}

/// Spawns `command` as the direct executor would, in a new process group, stdout and stderr
/// piped, `input` on its stdin; `program` names it in errors. For tests of supervision.
#[cfg(test)]
pub fn spawn(
    command: tokio::process::Command,
    program: String,
    input: Vec<u8>,
) -> Result<Running, ExecError> {
    Ok(Running {
        process: crate::executor::direct::spawn(command, program, Vec::new(), input)?,
        started: Instant::now(),
    })
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The transient unit the command runs as, under systemd.
    pub fn unit(&self) -> Option<&str> {
        self.process.unit()
    }

    /// Reads the command's output into `execution` (which keeps it and passes it on to its
    /// follower) until the command ends. Ends early on `timeout`, on the execution's cancel or
    /// when `kill` is cancelled, killing the group each time.
    pub async fn supervise(
        mut self,
        execution: Arc<Execution>,
        timeout: Option<Duration>,
        kill: CancellationToken,
    ) -> Report {
        // A timeout too far away to represent is no timeout.
        let deadline = timeout.and_then(|timeout| self.started.checked_add(timeout));
        let (stdout, stderr) = self.process.take_outputs();
        // Pumps waiting for the follower to take a chunk: output held back by a slow reader is
        // not a quiet one.
        let sending = AtomicUsize::new(0);
        let outputs = async {
            tokio::join!(
                pump(stdout, &execution, Stream::Stdout, &sending),
                pump(stderr, &execution, Stream::Stderr, &sending),
            )
        };
        tokio::pin!(outputs);

        let mut outputs_done = false;
        let mut status = None;
        // Set at the command's exit: the output's last chance to close (`OUTPUT_AFTER_EXIT`
        // after the last of it), and how much of it there was then.
        let mut output_until = None;
        let mut output_seen = execution.counts();
        let ending = loop {
            if outputs_done && status.is_some() {
                break Ending::Finished;
            }
            tokio::select! {
                _ = &mut outputs, if !outputs_done => outputs_done = true,
                waited = self.process.wait(), if status.is_none() => {
                    status = Some(waited);
                    output_until = Some(Instant::now() + OUTPUT_AFTER_EXIT);
                    output_seen = execution.counts();
                }
                // Exited, and its output quiet for OUTPUT_AFTER_EXIT but still open: something
                // it left running holds it. The command is done, and what it left is not
                // stopped, as over SSH. Output still flowing is waited for.
                () = sleep_until(output_until) => {
                    let now = execution.counts();
                    if now == output_seen && sending.load(Ordering::Relaxed) == 0 {
                        break Ending::Finished;
                    }
                    output_seen = now;
                    output_until = Some(Instant::now() + OUTPUT_AFTER_EXIT);
                }
                // A command that exited did not time out, however long its output lingers. An
                // agent that was stalled (stopped, starved of CPU) wakes to find the deadline
                // past and the command perhaps ended meanwhile: then it ended by itself, and
                // nothing is stopped.
                () = sleep_until(deadline), if status.is_none() => {
                    let in_flight = self.process.end_in_flight();
                    match tokio::time::timeout(in_flight, self.process.wait()).await {
                        Ok(waited) => {
                            status = Some(waited);
                            output_until = Some(Instant::now() + OUTPUT_AFTER_EXIT);
                            output_seen = execution.counts();
                        }
                        Err(_) => break Ending::TimedOut,
                    }
                }
                () = execution.cancel.cancelled(), if status.is_none() => break Ending::Cancelled,
                () = kill.cancelled() => break Ending::Shutdown,
            }
        };
        let waited = match status {
            Some(waited) if ending == Ending::Finished => waited,
            status => {
                let stopped = self.process.stop(status.is_some()).await;
                if !outputs_done {
                    let _ = tokio::time::timeout(OUTPUT_LINGER, &mut outputs).await;
                }
                status.unwrap_or(stopped)
            }
        };
        let status = match waited {
            Ok(status) => status,
            // Only possible if something else reaped our child, or systemd lost the unit; there
            // is no status to tell.
            Err(error) => {
                tracing::error!(
                    pid = self.process.pid(),
                    %error,
                    "cannot read the command's exit status"
                );
                ExitStatus::Code(-1)
            }
        };
        let counts = execution.counts();
        let exited = Exited {
            status,
            duration: self.started.elapsed(),
            timed_out: ending == Ending::TimedOut,
            stdout_bytes: counts.stdout_bytes,
            stderr_bytes: counts.stderr_bytes,
            stdout_truncated: counts.stdout_truncated,
            stderr_truncated: counts.stderr_truncated,
            cancelled: ending == Ending::Cancelled,
        };
        Report { exited, ending }
    }
}

/// Reads one pipe to its end in chunks into `execution`, sending what it keeps to its follower
/// with backpressure. A follower that has gone is detached and the reading goes on.
async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    execution: &Execution,
    stream: Stream,
    sending: &AtomicUsize,
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
        if let Some((follower, event)) = execution.output(stream, &buffer[..read]) {
            sending.fetch_add(1, Ordering::Relaxed);
            let sent = follower.send(event).await;
            sending.fetch_sub(1, Ordering::Relaxed);
            if sent.is_err() {
                execution.detach(&follower);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
