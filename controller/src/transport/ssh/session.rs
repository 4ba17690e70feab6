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

use bytes::Bytes;
use russh::ChannelMsg;
use russh::client::Handle;

use super::HostKeyCheck;
use super::connect::Connection;

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
    #[error("the connection closed before the command reported its exit")]
    Lost,
}

impl Session {
    pub(super) fn new(connection: Connection) -> Session {
        Session { connection }
    }

    pub(super) fn handle(&self) -> &Handle<HostKeyCheck> {
        &self.connection.handle
    }

    /// Runs `command` through the remote user's shell, writes `input` to its stdin followed by
    /// EOF, and waits for it to end. A command that exits without reading all its input is
    /// fine: its exit is what counts.
    pub async fn run(&self, command: &str, input: Bytes) -> Result<Finished, SessionError> {
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
            write.data_bytes(input).await?;
            write.eof().await
        };
        tokio::pin!(send);
        let mut sent = false;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut exit = None;
        loop {
            tokio::select! {
                result = &mut send, if !sent => {
                    sent = true;
                    // The command may have ended without reading; its exit tells why.
                    if let Err(error) = result {
                        tracing::debug!(%error, "sending a command's input failed");
                    }
                }
                message = read.wait() => match message {
                    Some(ChannelMsg::Data { data }) => keep(&mut stdout, &data),
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
        let exit = exit.ok_or(SessionError::Lost)?;
        Ok(Finished {
            exit,
            stdout,
            stderr,
        })
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
