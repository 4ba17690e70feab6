//! One authenticated SSH connection that runs several commands in turn: the steps of an
//! operation such as installing an agent share one handshake instead of paying one per step.
//!
//! Commands run as plain `exec` requests, without the [`remote_stop`](super::remote_stop)
//! wrapper: that wrapper reads EOF on stdin as "stop the command", while these commands are
//! given bytes on stdin (an upload is `cat > FILE`) followed by EOF. They are short and bounded
//! by the caller's deadline; dropping the session closes the connection.
//!
//! Each command gets its own channel, opened when it starts and closed when it ends, so a
//! session never holds more than one of sshd's `MaxSessions` slots.
//!
//! Input and output can be streamed ([`Session::run_streaming`]): a file of any size goes to a
//! command's stdin, or comes from its stdout, in chunks paced by the SSH window, so memory per
//! host stays bounded. [`Session::run_job`] runs an operator's command on the same connection
//! inside the remote-stop wrapper, as `volley run` does.

use bytes::Bytes;
use russh::ChannelMsg;
use russh::client::Handle;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use volley_common::outcome::Outcome;

use super::HostKeyCheck;
use super::connect::Connection;
use crate::transport::Job;

/// Bytes read from a command's input at a time.
const INPUT_CHUNK: usize = 64 << 10;

/// How much of each output stream a command may produce; the rest is counted and dropped. The
/// steps print a few lines at most (a checksum, a certificate request).
const MAX_OUTPUT: usize = 1 << 20;

/// An authenticated connection to one host (and the jump host connections it runs through).
pub struct Session {
    connection: Connection,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(u32),
    /// Killed by this signal (`TERM`, `KILL`, ...).
    Signal(String),
}

/// A finished command: its exit and what it printed (each stream at most 1 MiB).
#[derive(Clone, Debug)]
pub struct Finished {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    /// The last non-empty line of stderr, for a one-line reason.
    pub fn last_error_line(&self) -> String {
        String::from_utf8_lossy(&self.stderr)
            .lines()
            .map(str::trim)
            .rfind(|line| !line.is_empty())
            .unwrap_or_default()
            .to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("could not open a session channel: {0}")]
    Open(String),
    #[error("could not start the command: {0}")]
    Start(String),
    #[error("the connection closed before the command reported its exit{0}")]
    Lost(String),
    #[error("reading the input: {0}")]
    Input(std::io::Error),
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

impl Session {
    pub(super) fn new(connection: Connection) -> Session {
        Session { connection }
    }

    pub(super) fn handle(&self) -> &Handle<HostKeyCheck> {
        &self.connection.handle
    }

    /// Why the connection ended, as `: WHY` to follow "the connection closed", or nothing when
    /// the handler was not told.
    pub(super) fn why_lost(&self) -> String {
        super::host_key::ending(&self.connection.ended)
            .map(|why| format!(": {why}"))
            .unwrap_or_default()
    }

    /// Runs `command` through the remote user's shell, writes `input` to its stdin followed by
    /// EOF, and waits for it to end. A command that exits without reading all its input is
    /// fine: its exit is what counts.
    pub async fn run(&self, command: &str, input: Bytes) -> Result<Finished, SessionError> {
        self.run_streaming(command, &mut &input[..], None).await
    }

    /// As [`Session::run`], with stdin read from `input` as the channel's window allows, and
    /// stdout written to `stdout` when one is given (then `Finished::stdout` stays empty). A
    /// failure to read the input ends the command's input early and is the error; the command
    /// sees EOF, so an upload script finds a short file and refuses it.
    pub async fn run_streaming(
        &self,
        command: &str,
        input: &mut (dyn AsyncRead + Unpin + Send),
        mut stdout: Option<&mut (dyn AsyncWrite + Unpin + Send)>,
    ) -> Result<Finished, SessionError> {
        let channel = self
            .handle()
            .channel_open_session()
            .await
            .map_err(|error| SessionError::Open(error.to_string()))?;
        channel
            .exec(true, command)
            .await
            .map_err(|error| SessionError::Start(error.to_string()))?;
        // Reading and writing at once: a command may print while it reads, and a channel whose
        // messages nobody reads would stop the connection's window adjustments.
        let (mut read, write) = channel.split();
        let send = async {
            let mut buffer = vec![0; INPUT_CHUNK];
            let mut failed = None;
            loop {
                match input.read(&mut buffer).await {
                    Ok(0) => break,
                    Ok(count) => {
                        let chunk = Bytes::copy_from_slice(&buffer[..count]);
                        if let Err(error) = write.data_bytes(chunk).await {
                            // The command may have ended without reading; its exit tells why.
                            tracing::debug!(%error, "sending a command's input failed");
                            break;
                        }
                    }
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            let _ = write.eof().await;
            failed
        };
        tokio::pin!(send);
        let mut sent = false;
        let mut input_error = None;
        let mut output_error = None;
        let mut kept_stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut exit = None;
        loop {
            tokio::select! {
                failed = &mut send, if !sent => {
                    sent = true;
                    input_error = failed;
                }
                message = read.wait() => match message {
                    Some(ChannelMsg::Data { data }) => match stdout.as_mut() {
                        Some(out) if output_error.is_none() => {
                            if let Err(error) = out.write_all(&data).await {
                                output_error = Some(error);
                            }
                        }
                        Some(_) => {}
                        None => keep(&mut kept_stdout, &data),
                    },
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => keep(&mut stderr, &data),
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        exit = Some(Exit::Code(exit_status));
                    }
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        exit = Some(Exit::Signal(match signal_name {
                            russh::Sig::Custom(name) => name,
                            known => format!("{known:?}"),
                        }));
                    }
                    // The exit status may come before the last output: read until the close.
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
            }
        }
        if let Some(error) = input_error {
            return Err(SessionError::Input(error));
        }
        if let Some(error) = output_error {
            return Err(SessionError::Output(error));
        }
        if let Some(out) = stdout {
            out.flush().await.map_err(SessionError::Output)?;
        }
        let exit = exit.ok_or_else(|| SessionError::Lost(self.why_lost()))?;
        Ok(Finished {
            exit,
            stdout: kept_stdout,
            stderr,
        })
    }

    /// Runs an operator's command on this connection exactly as `volley run` runs it over SSH:
    /// inside the remote-stop wrapper, output streamed to the job's sink, stopped on the host
    /// at the job's timeout or cancel.
    pub async fn run_job(&self, job: Job<'_>) -> Outcome {
        super::run_command(self, job).await
    }

    /// Says goodbye; the connection closes when the session drops either way.
    pub async fn close(self) {
        let _ = self
            .handle()
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

fn keep(buffer: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..room.min(data.len())]);
}
