//! Connecting to one host over SSH, in stages: the jump hosts' connections (shared, see
//! [`super::jump`]), then TCP (or a `direct-tcpip` channel through the last jump host), the
//! banner and key exchange with the host key checked, and authentication. Each stage is
//! recorded in a [`Leg`], so a failure or a timeout says what was dialled and where it stopped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle};
use russh::keys::{Algorithm, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelOpenFailure, MethodKind};
use tokio::io::{AsyncRead, AsyncWrite};
use volley_common::outcome::Outcome;

use super::host_key::{self, HostKeyCheck};
use super::identity::{Agent, Identities, IdentityFile};
use super::jump::JumpPool;
use super::known_hosts::KnownHosts;
use crate::plan::{HostSpec, JumpHost, dialled};
use crate::transport::stage::{Leg, Observed, Progress, Protocol, Stage};

/// What every SSH connection of a run shares, jump host connections included.
pub struct Shared {
    pub known_hosts: Arc<KnownHosts>,
    pub accept_new_host_keys: bool,
    pub identities: Arc<Identities>,
    /// Client configs keyed by the host key algorithms known_hosts records for a host, so that a
    /// host known by its ECDSA key is asked for that key first (as OpenSSH does). Fleets use a
    /// handful of key types, so this holds a handful of configs.
    configs: Mutex<HashMap<Vec<Algorithm>, Arc<client::Config>>>,
    pub jumps: JumpPool,
}

/// An authenticated connection, and the jump host's connection it runs through, which it keeps
/// open.
/// A host that stops answering mid-command is given up after this many keepalives unanswered,
/// sent this far apart.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
pub const KEEPALIVE_MAX: usize = 4;

pub struct Connection {
    pub handle: Handle<HostKeyCheck>,
    /// Why the connection ended, once it has (see [`host_key::ending`]).
    pub ended: Arc<Mutex<Option<String>>>,
    _through: Option<Arc<Connection>>,
}

/// One end of a leg: a target or a jump host.
pub struct Endpoint<'a> {
    pub name: &'a str,
    pub address: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub identity_files: &'a [PathBuf],
    /// `IdentitiesOnly yes`: of the agent's keys, only those of the identity files.
    pub identities_only: bool,
    /// What the leg is called in reasons.
    pub what: String,
}

impl<'a> Endpoint<'a> {
    pub fn target(host: &'a HostSpec) -> Endpoint<'a> {
        Endpoint {
            name: &host.name,
            address: &host.address,
            port: host.port,
            user: &host.user,
            identity_files: &host.identity_files,
            identities_only: host.identities_only,
            what: format!(
                "ssh {}{}",
                dialled(&host.address, host.port),
                via(&host.jump)
            ),
        }
    }

    /// The last hop of `route`, reached through the ones before it.
    pub fn jump_host(route: &'a [JumpHost]) -> Option<Endpoint<'a>> {
        let (hop, before) = route.split_last()?;
        Some(Endpoint {
            name: &hop.name,
            address: &hop.address,
            port: hop.port,
            user: &hop.user,
            identity_files: &hop.identity_files,
            identities_only: hop.identities_only,
            what: format!(
                "ssh jump host {} ({}){}",
                hop.name,
                dialled(&hop.address, hop.port),
                via(before)
            ),
        })
    }
}

/// ` via a,b` for a route through jump hosts `a` and `b`.
fn via(route: &[JumpHost]) -> String {
    if route.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = route.iter().map(|hop| hop.name.as_str()).collect();
    format!(" via {}", names.join(","))
}

impl Shared {
    pub fn new(
        known_hosts: Arc<KnownHosts>,
        accept_new_host_keys: bool,
        identities: Arc<Identities>,
    ) -> Shared {
        Shared {
            known_hosts,
            accept_new_host_keys,
            identities,
            configs: Mutex::new(HashMap::new()),
            jumps: JumpPool::default(),
        }
    }

    /// Connects to `host`, through its jump hosts if it has any. `timeout` bounds the jump host
    /// connections made for it (the caller bounds the whole); `progress` says where it is.
    pub async fn connect(
        self: &Arc<Self>,
        host: &HostSpec,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<Connection, Outcome> {
        let through = match host.jump.is_empty() {
            true => None,
            false => Some(self.jumps.get(self, &host.jump, timeout, progress).await?),
        };
        let via = host.jump.last().map(|hop| hop.name.as_str());
        self.connect_leg(&Endpoint::target(host), through, via, progress)
            .await
    }

    /// One leg: TCP, or a channel through `through` (the jump host `via`); then the banner, key
    /// exchange and host key check; then authentication.
    pub async fn connect_leg(
        &self,
        endpoint: &Endpoint<'_>,
        through: Option<Arc<Connection>>,
        via: Option<&str>,
        progress: &Progress,
    ) -> Result<Connection, Outcome> {
        let leg = Leg::new(
            Protocol::Ssh,
            endpoint.what.clone(),
            via.map(str::to_string),
        );
        progress.on(&leg);
        let (handle, ended) = match &through {
            None => {
                let tcp = crate::transport::dial(endpoint.address, endpoint.port)
                    .await
                    .map_err(|error| Outcome::Unreachable {
                        reason: format!("{}: {}", leg.what(), super::connect_reason(&error)),
                    })?;
                let _ = tcp.set_nodelay(true);
                self.handshake(leg.observe(tcp), endpoint, &leg).await?
            }
            Some(connection) => {
                let channel = connection
                    .handle
                    .channel_open_direct_tcpip(
                        endpoint.address,
                        endpoint.port.into(),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|error| channel_failure(&leg, via.unwrap_or_default(), error))?;
                self.handshake(leg.observe(channel.into_stream()), endpoint, &leg)
                    .await?
            }
        };
        Ok(Connection {
            handle,
            ended,
            _through: through,
        })
    }

    async fn handshake<S>(
        &self,
        stream: Observed<S>,
        endpoint: &Endpoint<'_>,
        leg: &Leg,
    ) -> Result<(Handle<HostKeyCheck>, Arc<Mutex<Option<String>>>), Outcome>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let problem = Arc::new(Mutex::new(None));
        let ended = Arc::new(Mutex::new(None));
        let handler = HostKeyCheck {
            known_hosts: self.known_hosts.clone(),
            accept_new: self.accept_new_host_keys,
            name: endpoint.name.to_string(),
            what: leg.what().to_string(),
            address: endpoint.address.to_string(),
            port: endpoint.port,
            problem: problem.clone(),
            ended: ended.clone(),
        };
        let config = self.config_for(endpoint.address, endpoint.port);
        let mut handle = match client::connect_stream(config, stream, handler).await {
            Ok(handle) => handle,
            Err(error) => {
                return Err(host_key::refusal(&problem).unwrap_or_else(|| {
                    match leg.turned_away() {
                        // A busy server, not a broken one: `--retries` tries it again.
                        Some(reason) => Outcome::Unreachable { reason },
                        None => Outcome::TransportError {
                            reason: leg.failed(&error),
                        },
                    }
                }));
            }
        };
        leg.reach(Stage::Secured);
        self.authenticate(&mut handle, endpoint, leg).await?;
        Ok((handle, ended))
    }

    fn config_for(&self, address: &str, port: u16) -> Arc<client::Config> {
        let known = self.known_hosts.algorithms(address, port);
        let mut configs = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
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
                    keepalive_interval: Some(KEEPALIVE_INTERVAL),
                    keepalive_max: KEEPALIVE_MAX,
                    ..Default::default()
                })
            })
            .clone()
    }

    /// Public-key authentication, in ssh's order: the endpoint's own identity files, the global
    /// ones (an encrypted one through the agent's copy of its key, in its place), then the
    /// agent's other keys, unless `IdentitiesOnly`; each key offered once.
    async fn authenticate(
        &self,
        session: &mut Handle<HostKeyCheck>,
        endpoint: &Endpoint<'_>,
        leg: &Leg,
    ) -> Result<(), Outcome> {
        let what = leg.what();
        let user = endpoint.user;
        let mut attempt = Attempt {
            session,
            what,
            user,
            offered: Vec::new(),
            rsa_hash: None,
        };
        let agent = self.identities.agent();
        let mut skipped: Vec<String> = Vec::new();
        // The keys of the files, for `IdentitiesOnly`.
        let mut files_keys: Vec<PublicKey> = Vec::new();
        for (path, file) in self.identities.files_for(endpoint.identity_files) {
            match file {
                IdentityFile::Key(key) => {
                    files_keys.push(key.public_key().clone());
                    if attempt.with_file(key).await? {
                        return Ok(());
                    }
                }
                IdentityFile::Encrypted(public) => {
                    files_keys.extend(public.iter().cloned());
                    let held = agent
                        .filter(|agent| public.as_ref().is_some_and(|p| agent.keys.contains(p)));
                    match (held, public) {
                        (Some(agent), Some(public)) => {
                            if attempt.with_agent(agent, public).await? {
                                return Ok(());
                            }
                        }
                        (None, _) if agent.is_some() => skipped.push(format!(
                            "{} is encrypted, and the ssh-agent does not hold its key",
                            path.display()
                        )),
                        (_, _) => skipped.push(format!("{} is encrypted", path.display())),
                    }
                }
                IdentityFile::Unusable(reason) => {
                    skipped.push(format!("{}: {reason}", path.display()));
                }
            }
        }
        if let Some(agent) = agent {
            for key in &agent.keys {
                if endpoint.identities_only && !files_keys.contains(key) {
                    continue;
                }
                if attempt.with_agent(agent, key).await? {
                    return Ok(());
                }
            }
        } else if skipped
            .iter()
            .any(|reason| reason.ends_with("is encrypted"))
        {
            skipped.push(match &self.identities.agent_problem {
                // SSH_AUTH_SOCK is set, but to no agent that answers (volley said so at start).
                Some(problem) => format!("{problem}, to use encrypted keys"),
                None => "no ssh-agent is running (SSH_AUTH_SOCK is not set) to use encrypted keys"
                    .to_string(),
            });
        }
        let mut reason = match attempt.offered.len() {
            0 => format!("{what}: no usable identity for user {user}"),
            1 => format!("{what}: the server refused user {user} with the one key offered"),
            n => format!("{what}: the server refused user {user} with each of {n} keys"),
        };
        if !skipped.is_empty() {
            reason = format!("{reason}; {}", skipped.join("; "));
        }
        Err(Outcome::AuthFailed { reason })
    }
}

/// One authentication: the keys offered so far, each once.
struct Attempt<'s, 'w> {
    session: &'s mut Handle<HostKeyCheck>,
    what: &'w str,
    user: &'w str,
    offered: Vec<PublicKey>,
    /// The server's RSA signature hash, asked once.
    rsa_hash: Option<Option<russh::keys::HashAlg>>,
}

impl Attempt<'_, '_> {
    /// Offers a key read from a file; whether it authenticated.
    async fn with_file(&mut self, key: &Arc<russh::keys::PrivateKey>) -> Result<bool, Outcome> {
        if self.offered.contains(key.public_key()) {
            return Ok(false);
        }
        self.offered.push(key.public_key().clone());
        let hash = self.hash(key.algorithm()).await?;
        let result = self
            .session
            .authenticate_publickey(self.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .map_err(|error| self.transport_error(error))?;
        self.done(result)
    }

    /// Offers a key the ssh-agent holds, signed by it; whether it authenticated.
    async fn with_agent(&mut self, agent: &Agent, key: &PublicKey) -> Result<bool, Outcome> {
        if self.offered.contains(key) {
            return Ok(false);
        }
        self.offered.push(key.clone());
        let hash = self.hash(key.algorithm()).await?;
        let mut client = agent.client.lock().await;
        let result = self
            .session
            .authenticate_publickey_with(self.user, key.clone(), hash, &mut *client)
            .await
            .map_err(|error| Outcome::AuthFailed {
                reason: format!("{}: ssh-agent failed to sign: {error}", self.what),
            })?;
        drop(client);
        self.done(result)
    }

    async fn hash(
        &mut self,
        algorithm: Algorithm,
    ) -> Result<Option<russh::keys::HashAlg>, Outcome> {
        if !algorithm.is_rsa() {
            return Ok(None);
        }
        if self.rsa_hash.is_none() {
            let hash = self
                .session
                .best_supported_rsa_hash()
                .await
                .map_err(|error| self.transport_error(error))?
                .flatten();
            self.rsa_hash = Some(hash);
        }
        Ok(self.rsa_hash.flatten())
    }

    fn transport_error(&self, error: russh::Error) -> Outcome {
        Outcome::TransportError {
            reason: format!(
                "{}: during authentication as {}: {error}",
                self.what, self.user
            ),
        }
    }

    /// Whether the key authenticated; a server that no longer offers public-key authentication
    /// ends the attempt. One that stops taking keys after some were refused has likely counted
    /// them against its `MaxAuthTries`.
    fn done(&self, result: AuthResult) -> Result<bool, Outcome> {
        let what = self.what;
        let AuthResult::Failure {
            remaining_methods,
            partial_success,
        } = result
        else {
            return Ok(true);
        };
        let reason = if partial_success {
            format!("{what}: the server asks for a second factor, which volley cannot give")
        } else if remaining_methods.contains(&MethodKind::PublicKey) {
            return Ok(false);
        } else if self.offered.len() > 1 {
            format!(
                "{what}: the server stopped taking keys after {} were refused (its MaxAuthTries?); name the right one with IdentityFile and IdentitiesOnly, or -i",
                self.offered.len() - 1
            )
        } else {
            format!("{what}: the server does not accept public keys")
        };
        Err(Outcome::AuthFailed { reason })
    }
}

/// A jump host that could not open the forwarded channel: the host behind it was not reached.
fn channel_failure(leg: &Leg, hop: &str, error: russh::Error) -> Outcome {
    let what = leg.what();
    let why = match error {
        russh::Error::ChannelOpenFailure(failure) => match failure {
            ChannelOpenFailure::ConnectFailed => "could not connect to it".to_string(),
            ChannelOpenFailure::AdministrativelyProhibited => {
                "refuses to forward there (its sshd's AllowTcpForwarding or PermitOpen)".to_string()
            }
            ChannelOpenFailure::ResourceShortage => "is short of resources".to_string(),
            ChannelOpenFailure::UnknownChannelType => {
                "does not forward TCP connections".to_string()
            }
            ChannelOpenFailure::Other { code, reason } => {
                format!("refused to forward there ({code}: {reason})")
            }
        },
        error => {
            return Outcome::TransportError {
                reason: format!("{what}: the connection to jump host {hop} failed: {error}"),
            };
        }
    };
    Outcome::Unreachable {
        reason: format!("{what}: jump host {hop} {why}"),
    }
}
