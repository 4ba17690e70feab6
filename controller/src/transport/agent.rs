//! The agent transport: gRPC to `volley-agent` over mutual TLS, one HTTP/2 connection per host.
//!
//! Per host: TCP connect, a TLS handshake that trusts only the private CA and requires the
//! agent's certificate to name the host, an `Info` call, then `Exec`, whose stream carries the
//! output and the exit. The TCP and TLS steps are done here, not inside tonic, so that each
//! failure is classified where it happens, never by parsing a message; the established stream is
//! handed to tonic once, and tonic can never silently reconnect and send a command again.
//!
//! The `Info` call proves the agent accepted our certificate: with TLS 1.3 a server's refusal of
//! the client certificate arrives only after the client's handshake completed. Until it
//! succeeds, no command can have started, which is what lets [`super::auto`] fall back to SSH.

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};
use volley_common::exec::{ExecEvent, ExecSpec, ExitStatus, Program};
use volley_common::outcome::{Outcome, TransportKind};
use volley_proto::pb;
use volley_proto::pb::agent_client::AgentClient;

use super::{BoxFuture, Ended, Job, Transport};
use crate::event::Stream;
use crate::pki::ControllerCredentials;
use crate::plan::HostSpec;

/// Largest message accepted from an agent: output arrives in chunks far below this.
const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// How long past the command timeout the controller waits for the agent to report the kill
/// before it gives up on the stream itself.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentSetupError {
    #[error("{what} in {origin}: {reason}")]
    Credentials {
        what: &'static str,
        origin: &'static str,
        reason: String,
    },
}

/// What an agent said about itself, and the certificate it served, for `volley agent`.
#[derive(Debug)]
pub struct Served {
    pub info: volley_common::exec::AgentInfo,
    /// The agent's end-entity certificate as it came in the handshake (DER).
    pub certificate: Vec<u8>,
}

/// A connection that passed TLS and answered `Info`: no command can have run yet.
pub struct Connected {
    pub client: AgentClient<Channel>,
    info: pb::AgentInfo,
    certificate: Vec<u8>,
}

/// An agent reached within the connect timeout, and how long that took.
pub struct Reached {
    pub connected: Connected,
    pub after: Duration,
}

/// The agent transport, shared by every host of a run.
pub struct AgentTransport {
    tls: tokio_rustls::TlsConnector,
    run_id: String,
    max_output: u64,
}

impl AgentTransport {
    pub fn new(
        credentials: &ControllerCredentials,
        run_id: String,
        max_output: u64,
    ) -> Result<AgentTransport, AgentSetupError> {
        let bad = |what, origin, reason: String| AgentSetupError::Credentials {
            what,
            origin,
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(credentials.ca.as_bytes()) {
            let certificate =
                certificate.map_err(|e| bad("bad CA certificate", "ca.pem", e.to_string()))?;
            roots
                .add(certificate)
                .map_err(|e| bad("bad CA certificate", "ca.pem", e.to_string()))?;
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(credentials.certificate.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| bad("bad certificate", "controller.pem", e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(credentials.key.as_bytes())
            .map_err(|e| bad("bad private key", "controller.key", e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS setup failed", "rustls", e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                bad(
                    "unusable certificate or key",
                    "controller.pem",
                    e.to_string(),
                )
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(AgentTransport {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            run_id,
            max_output,
        })
    }

    /// Connects within `timeout` (TCP, TLS, `Info`), or says why not; an interrupt ends the
    /// wait. Nothing can have run on the host when this fails.
    pub async fn reach(
        &self,
        host: &HostSpec,
        timeout: Duration,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Reached, Outcome> {
        let started = Instant::now();
        let connect = tokio::time::timeout(timeout, self.connect(host));
        tokio::select! {
            result = connect => match result {
                Ok(Ok(connected)) => Ok(Reached { connected, after: started.elapsed() }),
                Ok(Err(outcome)) => Err(outcome),
                Err(_) => Err(Outcome::ConnectTimeout),
            },
            () = cancel.cancelled() => Err(Outcome::Cancelled),
        }
    }

    /// Runs the job's command on an agent already reached.
    pub async fn run_reached(&self, reached: Reached, job: &mut Job<'_>) -> Ended {
        let mut client = reached.connected.client;
        let run_started = Instant::now();
        let outcome = self.exec(&mut client, job).await;
        ended(outcome, Some(reached.after), Some(run_started.elapsed()))
    }

    /// The id an agent records for this run's work on `host`.
    pub fn execution_id(&self, host: &HostSpec) -> String {
        format!("{}/{}", self.run_id, host.name)
    }

    /// Connects and asks `Info`, within `timeout`: whether the agent serves, what it says about
    /// itself and the certificate it presents. Runs no command.
    pub async fn probe(&self, host: &HostSpec, timeout: Duration) -> Result<Served, Outcome> {
        let connected = tokio::time::timeout(timeout, self.connect(host))
            .await
            .map_err(|_| Outcome::ConnectTimeout)??;
        let info = volley_common::exec::AgentInfo::try_from(connected.info).map_err(|error| {
            Outcome::TransportError {
                reason: format!("bad Info from the agent: {error}"),
            }
        })?;
        Ok(Served {
            info,
            certificate: connected.certificate,
        })
    }

    /// TCP, TLS, HTTP/2 and an `Info` call. Every failure is an outcome; none can have run the
    /// command.
    async fn connect(&self, host: &HostSpec) -> Result<Connected, Outcome> {
        let tcp = super::dial(&host.address, host.agent_port)
            .await
            .map_err(|error| Outcome::Unreachable {
                reason: super::ssh::connect_reason(&error),
            })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.host.clone()).map_err(|_| Outcome::TlsRejected {
            reason: format!("'{}' is not a name a certificate can carry", host.host),
        })?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|error| Outcome::TlsRejected {
                reason: error.to_string(),
            })?;
        let certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|der| der.to_vec())
            .unwrap_or_default();

        // tonic dials through this connector; it yields the established stream once.
        let stream = Arc::new(Mutex::new(Some(TokioIo::new(tls))));
        let connector = tower::service_fn(move |_uri| {
            let stream = stream
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            async move {
                stream.ok_or_else(|| {
                    std::io::Error::other(
                        "the connection to the agent was lost; volley does not redial",
                    )
                })
            }
        });
        let endpoint = Endpoint::try_from(format!("http://{}:{}", host.host, host.agent_port))
            .map_err(|error| Outcome::TransportError {
                reason: format!("bad agent address: {error}"),
            })?
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|error| Outcome::TransportError {
                reason: format!("HTTP/2 setup failed: {}", chain(&error)),
            })?;
        let mut client = AgentClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let info = match client.info(pb::InfoRequest {}).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(probe_failure(&status)),
        };
        Ok(Connected {
            client,
            info,
            certificate,
        })
    }

    /// Runs the job's command through `client` and streams its output; the outcome is the
    /// command's, or why the stream ended without one.
    pub async fn exec(&self, client: &mut AgentClient<Channel>, job: &mut Job<'_>) -> Outcome {
        let spec = ExecSpec {
            execution_id: self.execution_id(job.host),
            program: Program::Shell(job.command.to_string()),
            env: Default::default(),
            working_dir: None,
            timeout: job.limits.command_timeout,
            max_output: Some(self.max_output),
        };
        let mut stream = match client.exec(pb::ExecRequest::from(spec)).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                return Outcome::TransportError {
                    reason: format!("the agent is busy: {}", status.message()),
                };
            }
            Err(status) => {
                return Outcome::TransportError {
                    reason: format!("Exec failed: {}", status.message()),
                };
            }
        };
        let deadline = job
            .limits
            .command_timeout
            .map(|timeout| tokio::time::Instant::now() + timeout + TIMEOUT_MARGIN);
        loop {
            // Dropping the stream on a timeout or a cancel resets it; the agent then kills the
            // command's process group.
            let message = tokio::select! {
                message = stream.message() => message,
                () = super::ssh::sleep_until(deadline) => return Outcome::CommandTimeout,
                () = job.cancel.cancelled() => return Outcome::Cancelled,
            };
            let event = match message {
                Ok(Some(event)) => event,
                Ok(None) => {
                    return Outcome::TransportError {
                        reason: "the agent's stream ended before the command's exit".to_string(),
                    };
                }
                Err(status) => {
                    return Outcome::TransportError {
                        reason: format!("connection to the agent lost: {}", status.message()),
                    };
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
                    return match exited.status {
                        _ if exited.timed_out => Outcome::CommandTimeout,
                        ExitStatus::Code(0) => Outcome::Succeeded,
                        ExitStatus::Code(code) => Outcome::NonZeroExit { code: code as u32 },
                        ExitStatus::Signal(signal) => Outcome::Signalled { signal },
                    };
                }
                Err(error) => {
                    return Outcome::TransportError {
                        reason: format!("bad message from the agent: {error}"),
                    };
                }
            }
        }
    }
}

impl Transport for AgentTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Agent
    }

    fn run<'a>(&'a self, mut job: Job<'a>) -> BoxFuture<'a, Ended> {
        Box::pin(async move {
            let connect_timeout = job.limits.connect_timeout;
            match self.reach(job.host, connect_timeout, &job.cancel).await {
                Ok(reached) => self.run_reached(reached, &mut job).await,
                Err(outcome) => ended(outcome, None, None),
            }
        })
    }
}

fn ended(outcome: Outcome, connected_after: Option<Duration>, ran_for: Option<Duration>) -> Ended {
    Ended {
        outcome,
        connected_after,
        ran_for,
        transport: TransportKind::Agent,
    }
}

/// Classifies a failed `Info` probe. An agent's handler answers with a gRPC status of its own; a
/// status that carries a transport error as its source means the connection failed at its very
/// first request. With TLS 1.3 that is where an agent's refusal of our certificate lands (the
/// alert arrives after our side of the handshake completed), and in every case no command can
/// have started, so it counts as a TLS rejection: the one classification that lets `auto` fall
/// back. This is decided by where the failure happened, not by reading its message.
fn probe_failure(status: &tonic::Status) -> Outcome {
    if let Some(reason) = tls_failure(status) {
        return Outcome::TlsRejected {
            reason: format!("the agent refused our certificate: {reason}"),
        };
    }
    if StdError::source(status).is_some() {
        return Outcome::TlsRejected {
            reason: format!(
                "the agent closed the connection at the first request (it refused our certificate, or is not a volley agent): {}",
                chain(status)
            ),
        };
    }
    Outcome::TransportError {
        reason: format!("the agent did not answer Info: {}", status.message()),
    }
}

/// The TLS error in an error's source chain, if the failure was TLS's.
fn tls_failure(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        current = error.source();
    }
    None
}

/// An error and its causes on one line.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        current = cause.source();
    }
    text
}
