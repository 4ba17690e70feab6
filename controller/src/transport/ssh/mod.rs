//! The SSH transport: a native russh client, one connection per host, all on one tokio runtime.
//!
//! Per host (`connect.rs`): TCP connect, or a `direct-tcpip` channel through the host's jump
//! hosts (whose connections the run shares, `jump.rs`); key exchange with the host key checked
//! against known_hosts (`host_key.rs`); public-key authentication (the host's own identity
//! files, the global ones, then the agent's keys). Then one session channel runs the command
//! inside the [`remote_stop`] wrapper. To stop a command (timeout, interrupt) the client sends
//! EOF and drops the connection; the wrapper then kills the command's process group on the host.
//!
//! [`Session`] (in `ssh/session.rs`) is the same connection for operations of several steps,
//! such as installing an agent: plain commands in turn, with bytes sent to their stdin.
//! [`sudo`] is `--become`: a check that sudo makes the user root, then everything through
//! `sudo -n`.

mod connect;
mod host_key;
pub mod identity;
mod jump;
pub mod known_hosts;
pub mod remote_stop;
mod session;
pub mod sudo;

use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use tokio_util::sync::CancellationToken;
use volley_common::exec::OUTPUT_AFTER_EXIT;
use volley_common::outcome::{Outcome, TransportKind};

use self::connect::Shared;
use self::host_key::HostKeyCheck;
use self::identity::Identities;
use self::known_hosts::KnownHosts;
use super::stage::Progress;
use super::{BoxFuture, Ended, Job, Transport};
use crate::admission::{Admission, Cut};
use crate::event::Stream;
use crate::plan::HostSpec;

pub use session::{Exit, Finished, Session, SessionError};

/// SSH settings and connections shared by every host of a run.
pub struct SshTransport {
    shared: Arc<Shared>,
}

impl SshTransport {
    pub fn new(
        known_hosts: Arc<KnownHosts>,
        accept_new_host_keys: bool,
        identities: Arc<Identities>,
    ) -> SshTransport {
        SshTransport {
            shared: Arc::new(Shared::new(known_hosts, accept_new_host_keys, identities)),
        }
    }

    /// Connects and authenticates once `admission` lets it, within `connect_timeout` from then,
    /// through the host's jump hosts if it has any. Every failure is the host's outcome, whose
    /// reason says what was dialled and where it stopped.
    pub async fn open(
        &self,
        host: &HostSpec,
        connect_timeout: Duration,
        cancel: &CancellationToken,
        admission: &Admission,
    ) -> Result<Session, Outcome> {
        let progress = Progress::default();
        let connect = self.shared.connect(host, connect_timeout, &progress);
        match admission
            .connect(connect_timeout, cancel, &progress, connect)
            .await
        {
            Ok(Ok(connection)) => Ok(Session::new(connection)),
            Ok(Err(outcome)) => Err(outcome),
            Err(Cut::TimedOut) => Err(Outcome::ConnectTimeout {
                reason: progress.stalled(connect_timeout),
            }),
            Err(Cut::Cancelled) => Err(Outcome::Cancelled),
            Err(Cut::Stopped) => Err(Outcome::Skipped),
        }
    }

    async fn run_host(&self, job: Job<'_>) -> Ended {
        let started = Instant::now();
        let session = match self
            .open(
                job.host,
                job.limits.connect_timeout,
                &job.cancel,
                job.admission,
            )
            .await
        {
            Ok(session) => session,
            Err(outcome) => return Ended::unconnected(outcome, TransportKind::Ssh),
        };
        if sudo::needed(job.host)
            && let Err(outcome) = self.become_root(&session, &job).await
        {
            session.close().await;
            return Ended {
                outcome,
                connected_after: Some(started.elapsed()),
                ran_for: None,
                transport: TransportKind::Ssh,
                fallback: None,
            };
        }
        let connected_after = Some(started.elapsed());
        let run_started = Instant::now();
        let outcome = run_command(&session, job).await;
        // A polite goodbye; the connection closes when the session drops either way.
        session.close().await;
        Ended {
            outcome,
            connected_after,
            ran_for: Some(run_started.elapsed()),
            transport: TransportKind::Ssh,
            fallback: None,
        }
    }

    /// `--become`: checks on the fresh session that sudo makes the user root, within the
    /// connect timeout. A refusal is `auth_failed` with sudo's reason: the command never ran.
    pub(crate) async fn become_root(
        &self,
        session: &Session,
        job: &Job<'_>,
    ) -> Result<(), Outcome> {
        let check = tokio::time::timeout(
            job.limits.connect_timeout,
            sudo::check(session, &job.host.user),
        );
        tokio::select! {
            result = check => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(Outcome::AuthFailed { reason }),
                // A sudo that hangs (its directory service is down, say) refused nothing: a
                // timeout, which a retry may get through, not a credentials failure.
                Err(_) => Err(Outcome::ConnectTimeout {
                    reason: format!(
                        "sudo -n as {} did not answer within {}s (--become)",
                        job.host.user,
                        job.limits.connect_timeout.as_secs()
                    ),
                }),
            },
            () = job.cancel.cancelled() => Err(Outcome::Cancelled),
        }
    }
}

impl Transport for SshTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Ssh
    }

    fn run<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Ended> {
        Box::pin(self.run_host(job))
    }
}

/// Opens a session channel, runs the wrapped command and streams its output until the channel
/// closes, the command times out or the run is cancelled.
async fn run_command(session: &Session, job: Job<'_>) -> Outcome {
    // What was dialled, as every other reason says it; made only for a failure.
    let what = || connect::Endpoint::target(job.host).what;
    let mut channel = match session.handle().channel_open_session().await {
        Ok(channel) => channel,
        Err(error) => {
            return Outcome::TransportError {
                reason: format!("{}: could not open a session: {error}", what()),
            };
        }
    };
    let stdin_bytes = job.stdin.map(|bytes| bytes.len());
    let command = remote_stop::wrap(job.command, sudo::needed(job.host), stdin_bytes);
    if let Err(error) = channel.exec(true, command).await {
        return Outcome::TransportError {
            reason: format!("{}: could not start the command: {error}", what()),
        };
    }
    let deadline = job
        .limits
        .command_timeout
        .map(|timeout| tokio::time::Instant::now() + timeout);
    if let Some(bytes) = job.stdin {
        // The wrapper takes exactly these bytes before the command starts; no EOF follows,
        // since EOF is the wrapper's "stop". The timeout counts from here, input included.
        tokio::select! {
            sent = channel.data(&bytes[..]) => if let Err(error) = sent {
                return Outcome::TransportError {
                    reason: format!("{}: could not send the command's stdin: {error}", what()),
                };
            },
            outcome = must_stop(deadline, &job.cancel) => {
                return stop_confirmed(&mut channel, outcome, job.output, what).await;
            }
        }
    }
    let mut exit: Option<Outcome> = None;
    // Set at the command's exit: the output's last chance to close (`OUTPUT_AFTER_EXIT`).
    let mut output_until = None;
    loop {
        let message = tokio::select! {
            // In this order: a stop first, then any message already here, and only then the
            // end of the wait for output after the exit.
            biased;
            // A command that exited neither timed out nor is stopped, however long its output
            // lingers.
            outcome = must_stop(deadline, &job.cancel), if exit.is_none() => {
                return stop_confirmed(&mut channel, outcome, job.output, what).await;
            }
            message = channel.wait() => message,
            // Exited, and its output quiet but open: something it left running holds it. The
            // command is done, and what it left runs on, as it would after ssh.
            () = sleep_until(output_until) => break,
        };
        // Output still coming after the exit (a slow reader, a slow link) is the command's last
        // words, not silence: the wait counts from the last of it, once it is passed on.
        let flowing = exit.is_some()
            && matches!(
                message,
                Some(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. })
            );
        match message {
            Some(ChannelMsg::Data { data }) => job.output.write(Stream::Stdout, data).await,
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                job.output.write(Stream::Stderr, data).await
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                output_until = Some(tokio::time::Instant::now() + OUTPUT_AFTER_EXIT);
                exit = Some(if exit_status == 0 {
                    Outcome::Succeeded
                } else {
                    Outcome::NonZeroExit { code: exit_status }
                });
            }
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                output_until = Some(tokio::time::Instant::now() + OUTPUT_AFTER_EXIT);
                let signal = match signal_name {
                    russh::Sig::Custom(name) => name,
                    known => format!("{known:?}"),
                };
                exit = Some(Outcome::Signalled { signal });
            }
            // The exit status may come before the last output: read until the channel closes.
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
        if flowing {
            output_until = Some(tokio::time::Instant::now() + OUTPUT_AFTER_EXIT);
        }
    }
    exit.unwrap_or_else(|| Outcome::TransportError {
        reason: format!(
            "{}: the connection closed before the command reported its exit{}",
            what(),
            session.why_lost()
        ),
    })
}

/// How long a host may take to confirm that its command stopped (the wrapper's TERM, KILL two
/// seconds later, and its exit reported) before the host is in doubt.
const STOP_CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// Stops the command and says how that ended: `stopped` (its timeout, or the interrupt) once
/// the host confirms, by the command's exit, the channel's close or the connection's end (sshd
/// then closes the wrapper's input, which stops it too). A command whose exit status comes
/// meanwhile ended as it says ([`ended_while_stopped`]): one that ran to its end is not called
/// stopped, which a retry would run again. A host that says nothing (a hung jump
/// host, a partition: the connection stays up and nothing comes back) did not get the stop,
/// and its command may run to its end: `in_doubt`, which no retry takes up unasked, not a
/// `stopped` that a retry would run again where it may have run whole.
async fn stop_confirmed(
    channel: &mut russh::Channel<russh::client::Msg>,
    stopped: Outcome,
    output: &mut super::OutputSink,
    what: impl Fn() -> String,
) -> Outcome {
    // EOF wakes the wrapper's watcher, which kills the command's process group; the connection
    // is dropped right after, which wakes it too if EOF got lost.
    let _ = channel.eof().await;
    let confirmed = async {
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Data { data }) => output.write(Stream::Stdout, data).await,
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    output.write(Stream::Stderr, data).await
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => return Some(exit_status),
                // Not EOF: a command may close its output and run on.
                Some(ChannelMsg::ExitSignal { .. } | ChannelMsg::Close) | None => return None,
                Some(_) => {}
            }
        }
    };
    match tokio::time::timeout(STOP_CONFIRM_WITHIN, confirmed).await {
        Ok(Some(code)) => ended_while_stopped(code, stopped),
        Ok(None) => stopped,
        Err(_) => {
            let why = match stopped {
                Outcome::Cancelled => "interrupted",
                _ => "its timeout came",
            };
            Outcome::InDoubt {
                reason: format!(
                    "{}: {why}, and the host did not confirm the stop within {}s (it stopped \
                     answering): the command may still run",
                    what(),
                    STOP_CONFIRM_WITHIN.as_secs()
                ),
            }
        }
    }
}

/// The outcome of a command whose exit status came while it was being stopped. A signal of the
/// stop (TERM, then KILL; INT and HUP too) shows as a signal, or, from a shell that reports
/// its child's death, as 128 plus its number: then the stop ended it. Any other status is the
/// command's own end (it ended first, or ignored TERM and ended before KILL): 0 is a success,
/// whatever stopped the run meanwhile.
fn ended_while_stopped(code: u32, stopped: Outcome) -> Outcome {
    const BY_THE_STOP: [u32; 4] = [128 + 1, 128 + 2, 128 + 9, 128 + 15];
    match code {
        0 => Outcome::Succeeded,
        code if BY_THE_STOP.contains(&code) => stopped,
        code => Outcome::NonZeroExit { code },
    }
}

/// Resolves when the command must be stopped: its timeout, or the run's interrupt.
async fn must_stop(deadline: Option<tokio::time::Instant>, cancel: &CancellationToken) -> Outcome {
    tokio::select! {
        () = sleep_until(deadline) => Outcome::command_timeout(),
        () = cancel.cancelled() => Outcome::Cancelled,
    }
}

pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

pub(super) fn connect_reason(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_string(),
        ErrorKind::HostUnreachable => "no route to host".to_string(),
        ErrorKind::NetworkUnreachable => "network unreachable".to_string(),
        ErrorKind::TimedOut => "connection timed out".to_string(),
        _ => error.to_string(),
    }
}
