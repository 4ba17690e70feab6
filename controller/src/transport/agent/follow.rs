//! A command on an agent, once it is sent: the execution id journalled before the `Exec`, the
//! events followed to the command's end, a lost connection taken up again by `Attach`, and
//! `Cancel` on interrupt or timeout.
//!
//! The agent runs a command whatever happens to the connection, and keeps its outcome for a
//! while after its end. So a connection lost mid-command (a stream error, a stream that ends
//! without the exit) is not the host's end: the transport dials again and attaches to the
//! execution by id, from the bytes of output it already has, [`ATTACH_ATTEMPTS`] times,
//! [`ATTACH_PAUSE`] and then twice that apart. If that fails, or the agent no longer knows the
//! execution, the host is `in_doubt`: its command may have run, may still be running, and
//! `volley runs resume` can collect it later. `volley runs resume` itself is [`collect`]: attach
//! first, then the same following.
//!
//! [`collect`]: AgentTransport::collect

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Streaming;
use tonic::transport::Channel;
use volley_common::duration::format_duration;
use volley_common::exec::{AttachSpec, ExecEvent, ExecSpec, ExitStatus, Program};
use volley_common::outcome::Outcome;
use volley_proto::pb;
use volley_proto::pb::agent_client::AgentClient;

use super::{AgentTransport, Ask, ended};
use crate::admission::Cut;
use crate::event::Stream;
use crate::plan::dialled;
use crate::transport::stage::Progress;
use crate::transport::{Ended, Job};

/// How long past the command timeout the controller waits for the agent to report the kill
/// before it gives up on the stream itself.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(10);
/// Tries to attach again after a lost connection.
const ATTACH_ATTEMPTS: u32 = 3;
/// The pause before the second try; it doubles before each next one.
const ATTACH_PAUSE: Duration = Duration::from_secs(1);
/// How long a `Cancel` may take to reach the agent on interrupt or timeout.
const CANCEL_WITHIN: Duration = Duration::from_secs(3);

/// How following a stream of events ended.
enum Followed {
    /// The host's outcome: the command's end, or ours (interrupt, timeout).
    Outcome(Outcome),
    /// The connection to the agent was lost before the command's end; why.
    Lost(String),
}

impl AgentTransport {
    /// Journals the execution, sends the command and follows it to its end.
    pub async fn exec(&self, client: AgentClient<Channel>, job: &mut Job<'_>) -> Outcome {
        self.exec_started(client, job).await.0
    }

    /// [`AgentTransport::exec`], and whether the command may have started: not where the agent
    /// refused the request (busy, the user refused or unknown) or it was never sent.
    pub async fn exec_started(
        &self,
        client: AgentClient<Channel>,
        job: &mut Job<'_>,
    ) -> (Outcome, bool) {
        let mut client = client;
        let id = job.execution_id.to_string();
        let spec = ExecSpec {
            execution_id: id.clone(),
            program: Program::Shell(job.command.to_string()),
            env: Default::default(),
            working_dir: None,
            timeout: job.limits.command_timeout,
            // The live stream is never capped; the sink caps the copy it keeps, and the agent
            // keeps the same head for a later `Attach`.
            max_output: None,
            user: Some(job.host.user.clone()),
            become_root: job.host.become_root,
            keep_output: Some(self.max_output),
            stdin: job.stdin.cloned().unwrap_or_default(),
        };
        // Before the request leaves: whatever happens next, the journal can find it again. A
        // command the journal cannot record is not sent; the rollout stops (see `journal::tap`).
        if let Err(error) = job.output.journal_execution(&job.host.name, &id).await {
            tracing::debug!(host = %job.host.name, "not sent, the journal cannot record it: {error}");
            return (Outcome::Skipped, false);
        }
        let deadline = deadline(job);
        let stream = match client.exec(pb::ExecRequest::from(spec)).await {
            Ok(response) => response.into_inner(),
            // The connection failed under the request: it may have reached the agent.
            Err(status) if StdError::source(&status).is_some() => {
                let lost = format!("the request was lost: {}", status.message());
                let outcome = self.attach_again(job, &id, lost, deadline, &mut None).await;
                return (outcome, true);
            }
            // The agent answered the request with a refusal: nothing started.
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                let reason = format!("the agent is busy: {}", status.message());
                return (Outcome::TransportError { reason }, false);
            }
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                let reason = format!(
                    "agent {} refused: {}",
                    dialled(&job.host.address, job.host.agent_port),
                    status.message()
                );
                return (Outcome::AuthFailed { reason }, false);
            }
            Err(status) => {
                let reason = format!("Exec failed: {}", status.message());
                return (Outcome::TransportError { reason }, false);
            }
        };
        let outcome = match follow(&mut client, stream, job, &id, deadline, &mut None).await {
            Followed::Outcome(outcome) => outcome,
            Followed::Lost(reason) => {
                self.attach_again(job, &id, reason, deadline, &mut None)
                    .await
            }
        };
        (outcome, true)
    }

    /// `volley runs resume`: attaches to `execution_id` on the job's host and follows it to its
    /// end. A host whose agent cannot be reached, or no longer knows the execution, is
    /// `in_doubt` (again).
    /// Its run time is the agent's measure of the command, which started before the resume,
    /// where the agent told it.
    pub async fn collect(&self, mut job: Job<'_>, execution_id: &str) -> Ended {
        let started = Instant::now();
        let deadline = deadline(&job);
        let mut ran = None;
        let resuming = "resuming".to_string();
        let outcome = self
            .attach_again(&mut job, execution_id, resuming, deadline, &mut ran)
            .await;
        ended(
            outcome,
            None,
            Some(ran.unwrap_or_else(|| started.elapsed())),
        )
    }

    /// Dials again and attaches to `id`, then follows it; tries again as long as connections
    /// are lost and attempts remain. `ran` gets the command's run time if the agent tells it.
    async fn attach_again(
        &self,
        job: &mut Job<'_>,
        id: &str,
        mut lost: String,
        deadline: Option<tokio::time::Instant>,
        ran: &mut Option<Duration>,
    ) -> Outcome {
        let mut attempts = 0;
        let mut pause = ATTACH_PAUSE;
        loop {
            attempts += 1;
            let (mut client, stream) = match self.attach(job, id).await {
                Ok(attached) => attached,
                Err(Attach::Final(outcome)) => return outcome,
                Err(Attach::Failed(why)) if attempts >= ATTACH_ATTEMPTS => {
                    return Outcome::InDoubt {
                        reason: format!(
                            "lost the agent during the command ({lost}), and could not attach again ({why}); it may still be running: `volley runs resume` collects it"
                        ),
                    };
                }
                Err(Attach::Failed(why)) => {
                    tracing::debug!(host = %job.host.name, %id, %why, "cannot attach yet");
                    tokio::select! {
                        // No agent to tell: the command runs on, as far as volley knows.
                        () = job.cancel.cancelled() => return Outcome::InDoubt {
                            reason: format!(
                                "interrupted while volley was attaching again after it lost the agent ({lost}); it may still be running: `volley runs resume` collects it"
                            ),
                        },
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause *= 2;
                    continue;
                }
            };
            match follow(&mut client, stream, job, id, deadline, ran).await {
                Followed::Outcome(outcome) => return outcome,
                Followed::Lost(reason) => lost = reason,
            }
        }
    }

    /// One try: TCP, TLS and the agent's acceptance through the run's admission, then `Attach`
    /// from the output already received.
    async fn attach(
        &self,
        job: &mut Job<'_>,
        id: &str,
    ) -> Result<(AgentClient<Channel>, Streaming<pb::ExecEvent>), Attach> {
        let progress = Progress::default();
        let timeout = job.limits.connect_timeout;
        let connect = self.connect(job.host, &progress, Ask::Acceptance, false);
        let connected = job
            .admission
            .reconnect(timeout, &job.cancel, &progress, connect)
            .await;
        let mut client = match connected {
            Ok(Ok(connected)) => connected.client,
            Ok(Err(failed)) => return Err(Attach::Failed(failed.outcome.to_string())),
            Err(Cut::TimedOut) => {
                let outcome = Outcome::ConnectTimeout {
                    reason: progress.stalled(timeout),
                };
                return Err(Attach::Failed(outcome.to_string()));
            }
            Err(Cut::Cancelled) => return Err(Attach::Final(Outcome::Cancelled)),
            // A reconnect is not stopped with the rollout; were it, trying again is harmless.
            Err(Cut::Stopped) => return Err(Attach::Failed("the rollout stopped".to_string())),
        };
        let request = AttachSpec {
            execution_id: id.to_string(),
            stdout_offset: job.output.received(Stream::Stdout),
            stderr_offset: job.output.received(Stream::Stderr),
        };
        match client.attach(pb::AttachRequest::from(request)).await {
            Ok(response) => Ok((client, response.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(Attach::Final(Outcome::InDoubt {
                    reason: format!(
                        "the agent does not know execution {id} (it restarted, or forgot it after its retention time): whether the command ran is unknown"
                    ),
                }))
            }
            Err(status) if StdError::source(&status).is_some() => Err(Attach::Failed(format!(
                "Attach failed: {}",
                status.message()
            ))),
            Err(status) => Err(Attach::Final(Outcome::InDoubt {
                reason: format!(
                    "the agent refused to attach to execution {id}: {}",
                    status.message()
                ),
            })),
        }
    }
}

/// Why an attach did not give a stream.
enum Attach {
    /// The host's outcome; no point trying again.
    Final(Outcome),
    /// Worth another try.
    Failed(String),
}

/// The outcome of a command the agent stopped at a timeout after it ran `ran`: the run's
/// `--timeout`, or, when the command stopped before that (or the run gave none), the agent's
/// own `max_timeout`, which the outcome then names: the operator's `--timeout` did not apply.
fn agent_timeout(timeout: Option<Duration>, ran: Duration) -> Outcome {
    let by_ours = timeout.is_some_and(|timeout| ran >= timeout);
    if by_ours {
        return Outcome::command_timeout();
    }
    let given = match timeout {
        Some(timeout) => format!("before --timeout {}", format_duration(timeout)),
        None => "the run gave no --timeout".to_string(),
    };
    Outcome::CommandTimeout {
        reason: format!(
            "the agent's max_timeout stopped the command after {} ({given})",
            format_duration(ran)
        ),
    }
}

/// When the controller stops waiting for the command: its timeout, plus the time the agent
/// needs to report its own kill.
fn deadline(job: &Job<'_>) -> Option<tokio::time::Instant> {
    job.limits
        .command_timeout
        .map(|timeout| tokio::time::Instant::now() + timeout + TIMEOUT_MARGIN)
}

/// Follows one stream of the execution's events until the command's end, the connection's loss,
/// an interrupt or the deadline (the last two cancel the execution on the agent). `ran` gets
/// the agent's measure of the command's run time when it ends.
async fn follow(
    client: &mut AgentClient<Channel>,
    mut stream: Streaming<pb::ExecEvent>,
    job: &mut Job<'_>,
    id: &str,
    deadline: Option<tokio::time::Instant>,
    ran: &mut Option<Duration>,
) -> Followed {
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = crate::transport::ssh::sleep_until(deadline) => {
                let stopped = cancel(client, id).await;
                return Followed::Outcome(stopped_or_in_doubt(stopped, Outcome::command_timeout()));
            }
            () = job.cancel.cancelled() => {
                let stopped = cancel(client, id).await;
                return Followed::Outcome(stopped_or_in_doubt(stopped, Outcome::Cancelled));
            }
        };
        let event = match message {
            Ok(Some(event)) => event,
            Ok(None) => {
                return Followed::Lost(
                    "the agent's stream ended before the command's exit".to_string(),
                );
            }
            Err(status) => {
                return Followed::Lost(format!("connection lost: {}", status.message()));
            }
        };
        match ExecEvent::try_from(event) {
            Ok(ExecEvent::Started { .. }) => {}
            Ok(ExecEvent::Stdout(data)) => {
                job.output.write(Stream::Stdout, Bytes::from(data)).await
            }
            Ok(ExecEvent::Stderr(data)) => {
                job.output.write(Stream::Stderr, Bytes::from(data)).await
            }
            Ok(ExecEvent::Exited(exited)) => {
                job.output.count_total(Stream::Stdout, exited.stdout_bytes);
                job.output.count_total(Stream::Stderr, exited.stderr_bytes);
                *ran = Some(exited.duration);
                return Followed::Outcome(match exited.status {
                    _ if exited.cancelled => Outcome::Cancelled,
                    _ if exited.timed_out => {
                        agent_timeout(job.limits.command_timeout, exited.duration)
                    }
                    ExitStatus::Code(0) => Outcome::Succeeded,
                    ExitStatus::Code(code) => Outcome::NonZeroExit { code: code as u32 },
                    ExitStatus::Signal(signal) => Outcome::Signalled { signal },
                });
            }
            Err(error) => {
                return Followed::Outcome(Outcome::TransportError {
                    reason: format!("bad message from the agent: {error}"),
                });
            }
        }
    }
}

/// Asks the agent to stop the execution, within [`CANCEL_WITHIN`]: what it answered.
async fn cancel(client: &mut AgentClient<Channel>, id: &str) -> Cancelled {
    let request = pb::CancelRequest {
        execution_id: id.to_string(),
    };
    match tokio::time::timeout(CANCEL_WITHIN, client.cancel(request)).await {
        Ok(Ok(reply)) if reply.get_ref().was_running => Cancelled::Stopped,
        Ok(Ok(_)) => Cancelled::HadEnded,
        Ok(Err(status)) => Cancelled::NoAnswer(format!("Cancel failed: {}", status.message())),
        Err(_) => Cancelled::NoAnswer(format!("no answer to Cancel within {CANCEL_WITHIN:?}")),
    }
}

/// What the agent said to a cancel.
enum Cancelled {
    /// The command was running: it is being stopped.
    Stopped,
    /// It had ended on its own, though its end did not reach volley.
    HadEnded,
    /// No answer: whether it stops, ran to its end or still runs is unknown.
    NoAnswer(String),
}

/// `stopped` (a timeout, an interrupt) where the agent confirmed it stops the command; else the
/// command's end is unknown, and saying it was stopped would make a retry run it again where it
/// may have run whole.
fn stopped_or_in_doubt(cancel: Cancelled, stopped: Outcome) -> Outcome {
    let reason = match cancel {
        Cancelled::Stopped => return stopped,
        Cancelled::HadEnded => {
            "the command ended on the agent, but its end did not reach volley".to_string()
        }
        Cancelled::NoAnswer(why) => format!(
            "the agent did not confirm it stopped the command ({why}): it may have run to its end, or still run"
        ),
    };
    Outcome::InDoubt {
        reason: format!("{reason}; `volley runs resume` collects it"),
    }
}
