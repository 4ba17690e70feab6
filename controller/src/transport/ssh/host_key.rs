//! The russh handler of every SSH connection, a target's or a jump host's: it checks the key the
//! server presents against known_hosts, records it under `--accept-new-host-keys`, and keeps why
//! it refused one, so that the refusal becomes the right outcome (naming the leg: which host or
//! jump host, at which address) instead of a generic handshake error.

use std::sync::{Arc, Mutex, PoisonError};

use russh::client;
use russh::keys::PublicKeyOrCertificate;
use volley_common::outcome::Outcome;

use super::known_hosts::{KnownHosts, Verdict, fingerprint};

pub struct HostKeyCheck {
    pub(super) known_hosts: Arc<KnownHosts>,
    pub(super) accept_new: bool,
    /// The host or jump host as the operator named it, for the list of recorded keys.
    pub(super) name: String,
    /// What was dialled, for reasons: `ssh jump host bastion (10.0.0.5:22)`.
    pub(super) what: String,
    pub(super) address: String,
    pub(super) port: u16,
    pub(super) problem: Arc<Mutex<Option<Outcome>>>,
    /// Why the connection ended, once it has: for a command that lost it before its exit.
    pub(super) ended: Arc<Mutex<Option<String>>>,
}

impl HostKeyCheck {
    fn refuse(&self, outcome: Outcome) -> Result<bool, russh::Error> {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        Ok(false)
    }
}

/// Why the handler refused the server's key, if it did.
pub fn refusal(problem: &Mutex<Option<Outcome>>) -> Option<Outcome> {
    problem
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// Why the connection ended, if the handler was told.
pub fn ending(ended: &Mutex<Option<String>>) -> Option<String> {
    ended.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    /// Keeps why the connection ended, in the operator's words; the result is russh's default.
    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let (why, result) = match reason {
            client::DisconnectReason::ReceivedDisconnect(info) if info.message.is_empty() => {
                ("the server disconnected".to_string(), Ok(()))
            }
            client::DisconnectReason::ReceivedDisconnect(info) => (
                format!("the server disconnected ({})", info.message),
                Ok(()),
            ),
            client::DisconnectReason::Error(russh::Error::KeepaliveTimeout) => (
                format!(
                    "the server stopped answering (no reply to {} keepalives, {} s apart)",
                    super::connect::KEEPALIVE_MAX,
                    super::connect::KEEPALIVE_INTERVAL.as_secs()
                ),
                Err(russh::Error::KeepaliveTimeout),
            ),
            client::DisconnectReason::Error(russh::Error::IO(error))
                if error.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                (
                    "it ended without an SSH goodbye (the server's session process died, or \
                     something on the way cut the connection)"
                        .to_string(),
                    Err(russh::Error::IO(error)),
                )
            }
            client::DisconnectReason::Error(error) => (error.to_string(), Err(error)),
        };
        *self.ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
        result
    }

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let what = &self.what;
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return self.refuse(Outcome::TransportError {
                    reason: format!(
                        "{what}: the server offered a host certificate, which volley does not \
                         accept"
                    ),
                });
            }
        };
        let presented = format!("{what} presented {}", fingerprint(key));
        let file = self.known_hosts.path().display();
        match self.known_hosts.check(&self.address, self.port, key) {
            Verdict::Known => Ok(true),
            Verdict::Unknown if self.accept_new => {
                match self
                    .known_hosts
                    .learn(&self.name, &self.address, self.port, key)
                {
                    Ok(()) => Ok(true),
                    Err(error) => self.refuse(Outcome::TransportError {
                        reason: format!("{what}: could not record the new host key: {error}"),
                    }),
                }
            }
            Verdict::Unknown => self.refuse(Outcome::HostKeyUnknown {
                fingerprint: presented,
            }),
            Verdict::Changed { line } => self.refuse(Outcome::HostKeyChanged {
                fingerprint: format!("{presented}, {file}:{line} holds another"),
            }),
            Verdict::Revoked { line } => self.refuse(Outcome::HostKeyChanged {
                fingerprint: format!("{presented}, revoked at {file}:{line}"),
            }),
        }
    }
}
