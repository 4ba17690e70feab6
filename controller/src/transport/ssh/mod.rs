//! The SSH transport: a native russh client, one connection per host, all on one tokio runtime.
//!
//! Per host: TCP connect, key exchange with the host key checked against known_hosts, public-key
//! authentication (the host's own identity files, the global ones, then the agent's keys), one
//! session channel running the command inside the [`remote_stop`] wrapper.
//! To stop a command (timeout, interrupt) the client sends EOF and drops the connection; the
//! wrapper then kills the command's process group on the host.
//!
//! [`Session`] (in `ssh/session.rs`) is the same connection for operations of several steps,
//! such as installing an agent: plain commands in turn, with bytes sent to their stdin.

pub mod identity;
pub mod known_hosts;
pub mod remote_stop;
mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use russh::client::{self, AuthResult, Handle};
use russh::keys::{Algorithm, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use tokio_util::sync::CancellationToken;
use volley_common::outcome::{Outcome, TransportKind};

use self::identity::{Identities, IdentityFile};
use self::known_hosts::{KnownHosts, Verdict, fingerprint};
use super::{BoxFuture, Ended, Job, Transport};
use crate::event::Stream;
use crate::plan::HostSpec;

pub use session::{Exit, Finished, Session, SessionError};

/// SSH settings shared by every host of a run.
pub struct SshTransport {
    known_hosts: Arc<KnownHosts>,
    accept_new_host_keys: bool,
    identities: Arc<Identities>,
    /// Client configs keyed by the host key algorithms known_hosts records for a host, so that a
    /// host known by its ECDSA key is asked for that key first (as OpenSSH does). Fleets use a
    /// handful of key types, so this holds a handful of configs.
    configs: Mutex<HashMap<Vec<Algorithm>, Arc<client::Config>>>,
}

impl SshTransport {
    pub fn new(
        known_hosts: Arc<KnownHosts>,
        accept_new_host_keys: bool,
        identities: Arc<Identities>,
    ) -> SshTransport {
        SshTransport {
            known_hosts,
            accept_new_host_keys,
            identities,
            configs: Mutex::new(HashMap::new()),
        }
    }

    fn config_for(&self, host: &HostSpec) -> Arc<client::Config> {
        let known = self.known_hosts.algorithms(&host.address, host.port);
        let mut configs = self
            .configs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        configs
            .entry(known.clone())
            .or_insert_with(|| {
                let mut preferred = russh::Preferred::default();
                let mut keys = known;
                keys.extend(
                    preferred
                        .key
                        .iter()
                        .filter(|algorithm| !keys.contains(algorithm))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
                preferred.key = keys.into();
                Arc::new(client::Config {
                    preferred,
                    nodelay: true,
                    // A host that stops answering mid-command is noticed within about a minute
                    // instead of hanging the run forever.
                    keepalive_interval: Some(Duration::from_secs(15)),
                    keepalive_max: 4,
                    ..Default::default()
                })
            })
            .clone()
    }

    /// Connects and authenticates within `connect_timeout`, for callers that run several
    /// commands on one connection ([`Session`]). Every failure is the host's outcome.
    pub async fn open(
        &self,
        host: &HostSpec,
        connect_timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Session, Outcome> {
        let connect = tokio::time::timeout(connect_timeout, self.connect(host));
        tokio::select! {
            result = connect => match result {
                Ok(Ok(handle)) => Ok(Session::new(handle)),
                Ok(Err(outcome)) => Err(outcome),
                Err(_) => Err(Outcome::ConnectTimeout),
            },
            () = cancel.cancelled() => Err(Outcome::Cancelled),
        }
    }

    async fn run_host(&self, job: Job<'_>) -> Ended {
        let started = Instant::now();
        let session = match self
            .open(job.host, job.limits.connect_timeout, &job.cancel)
            .await
        {
            Ok(session) => session.into_handle(),
            Err(outcome) => {
                return Ended {
                    outcome,
                    connected_after: None,
                    ran_for: None,
                    transport: TransportKind::Ssh,
                };
            }
        };
        let connected_after = Some(started.elapsed());
        let run_started = Instant::now();
        let outcome = run_command(&session, job).await;
        // A polite goodbye; the connection closes when the handle drops either way.
        let _ = session
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        Ended {
            outcome,
            connected_after,
            ran_for: Some(run_started.elapsed()),
            transport: TransportKind::Ssh,
        }
    }

    /// TCP, key exchange, host key check and authentication. Every failure is an outcome.
    async fn connect(&self, host: &HostSpec) -> Result<Handle<HostKeyCheck>, Outcome> {
        let stream = super::dial(&host.address, host.port)
            .await
            .map_err(|error| Outcome::Unreachable {
                reason: connect_reason(&error),
            })?;
        let verdict = Arc::new(Mutex::new(None));
        let handler = HostKeyCheck {
            known_hosts: self.known_hosts.clone(),
            accept_new: self.accept_new_host_keys,
            address: host.address.clone(),
            port: host.port,
            problem: verdict.clone(),
        };
        let handshake = client::connect_stream(self.config_for(host), stream, handler).await;
        let mut session = match handshake {
            Ok(session) => session,
            Err(error) => {
                let problem = verdict
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take();
                return Err(problem.unwrap_or_else(|| Outcome::TransportError {
                    reason: format!("SSH handshake failed: {error}"),
                }));
            }
        };
        self.authenticate(&mut session, host).await?;
        Ok(session)
    }

    async fn authenticate(
        &self,
        session: &mut Handle<HostKeyCheck>,
        host: &HostSpec,
    ) -> Result<(), Outcome> {
        let transport_error = |error: russh::Error| Outcome::TransportError {
            reason: format!("during authentication: {error}"),
        };
        let mut offered: Vec<PublicKey> = Vec::new();
        let mut skipped: Vec<String> = Vec::new();
        let mut rsa_hash = None;
        for (path, file) in self.identities.files_for(&host.identity_files) {
            let key = match file {
                IdentityFile::Key(key) => key,
                IdentityFile::Encrypted => {
                    skipped.push(format!("{} is encrypted", path.display()));
                    continue;
                }
                IdentityFile::Unusable(reason) => {
                    skipped.push(format!("{}: {reason}", path.display()));
                    continue;
                }
            };
            if offered.contains(key.public_key()) {
                continue;
            }
            offered.push(key.public_key().clone());
            let hash = if key.algorithm().is_rsa() {
                if rsa_hash.is_none() {
                    rsa_hash = Some(
                        session
                            .best_supported_rsa_hash()
                            .await
                            .map_err(transport_error)?
                            .flatten(),
                    );
                }
                rsa_hash.flatten()
            } else {
                None
            };
            let result = session
                .authenticate_publickey(&host.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                .await
                .map_err(transport_error)?;
            if auth_done(result)? {
                return Ok(());
            }
        }
        if let Some(agent) = self.identities.agent() {
            for key in &agent.keys {
                if offered.contains(key) {
                    continue;
                }
                offered.push(key.clone());
                let hash = if key.algorithm().is_rsa() {
                    session
                        .best_supported_rsa_hash()
                        .await
                        .map_err(transport_error)?
                        .flatten()
                } else {
                    None
                };
                let mut client = agent.client.lock().await;
                let result = session
                    .authenticate_publickey_with(&host.user, key.clone(), hash, &mut *client)
                    .await
                    .map_err(|error| Outcome::AuthFailed {
                        reason: format!("ssh-agent failed to sign: {error}"),
                    })?;
                drop(client);
                if auth_done(result)? {
                    return Ok(());
                }
            }
        } else if skipped
            .iter()
            .any(|reason| reason.ends_with("is encrypted"))
        {
            skipped.push(
                "no ssh-agent is running (SSH_AUTH_SOCK is not set) to use encrypted keys"
                    .to_string(),
            );
        }
        let mut reason = if offered.is_empty() {
            "no usable identity".to_string()
        } else {
            format!(
                "{}@{} rejected {} key(s)",
                host.user,
                host.name,
                offered.len()
            )
        };
        if !skipped.is_empty() {
            reason = format!("{reason}; {}", skipped.join("; "));
        }
        Err(Outcome::AuthFailed { reason })
    }
}

/// Whether authentication is complete; a server that no longer offers public-key
/// authentication ends the attempt.
fn auth_done(result: AuthResult) -> Result<bool, Outcome> {
    match result {
        AuthResult::Success => Ok(true),
        AuthResult::Failure {
            remaining_methods,
            partial_success,
        } => {
            if partial_success {
                return Err(Outcome::AuthFailed {
                    reason: "the server asks for a second factor, which volley cannot give"
                        .to_string(),
                });
            }
            if !remaining_methods.contains(&russh::MethodKind::PublicKey) {
                return Err(Outcome::AuthFailed {
                    reason: "the server does not accept public keys".to_string(),
                });
            }
            Ok(false)
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
async fn run_command(session: &Handle<HostKeyCheck>, job: Job<'_>) -> Outcome {
    let mut channel = match session.channel_open_session().await {
        Ok(channel) => channel,
        Err(error) => {
            return Outcome::TransportError {
                reason: format!("could not open a session: {error}"),
            };
        }
    };
    if let Err(error) = channel.exec(true, remote_stop::wrap(job.command)).await {
        return Outcome::TransportError {
            reason: format!("could not start the command: {error}"),
        };
    }
    let deadline = job
        .limits
        .command_timeout
        .map(|timeout| tokio::time::Instant::now() + timeout);
    let mut exit: Option<Outcome> = None;
    loop {
        let message = tokio::select! {
            message = channel.wait() => message,
            () = sleep_until(deadline) => {
                // EOF wakes the wrapper's watcher, which kills the command's process group; the
                // connection is dropped right after, which wakes it too if EOF got lost.
                let _ = channel.eof().await;
                return Outcome::CommandTimeout;
            }
            () = job.cancel.cancelled() => {
                let _ = channel.eof().await;
                return Outcome::Cancelled;
            }
        };
        match message {
            Some(ChannelMsg::Data { data }) => job.output.write(Stream::Stdout, data).await,
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                job.output.write(Stream::Stderr, data).await
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                exit = Some(if exit_status == 0 {
                    Outcome::Succeeded
                } else {
                    Outcome::NonZeroExit { code: exit_status }
                });
            }
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
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
    }
    exit.unwrap_or(Outcome::TransportError {
        reason: "the connection closed before the command reported its exit".to_string(),
    })
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

/// The russh handler: checks the host key against known_hosts and records why it refused one,
/// so that the refusal becomes the right outcome instead of a generic handshake error.
pub struct HostKeyCheck {
    known_hosts: Arc<KnownHosts>,
    accept_new: bool,
    address: String,
    port: u16,
    problem: Arc<Mutex<Option<Outcome>>>,
}

impl HostKeyCheck {
    fn refuse(&self, outcome: Outcome) -> Result<bool, russh::Error> {
        *self
            .problem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(outcome);
        Ok(false)
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return self.refuse(Outcome::TransportError {
                    reason: "the host offered a host certificate, which volley does not accept"
                        .to_string(),
                });
            }
        };
        match self.known_hosts.check(&self.address, self.port, key) {
            Verdict::Known => Ok(true),
            Verdict::Unknown if self.accept_new => {
                match self.known_hosts.learn(&self.address, self.port, key) {
                    Ok(()) => Ok(true),
                    Err(error) => self.refuse(Outcome::TransportError {
                        reason: format!("could not record the new host key: {error}"),
                    }),
                }
            }
            Verdict::Unknown => self.refuse(Outcome::HostKeyUnknown {
                fingerprint: fingerprint(key),
            }),
            Verdict::Changed { line } => self.refuse(Outcome::HostKeyChanged {
                fingerprint: format!(
                    "{}, {}:{line} holds another",
                    fingerprint(key),
                    self.known_hosts.path().display()
                ),
            }),
            Verdict::Revoked { line } => self.refuse(Outcome::HostKeyChanged {
                fingerprint: format!(
                    "{} is revoked at {}:{line}",
                    fingerprint(key),
                    self.known_hosts.path().display()
                ),
            }),
        }
    }
}
