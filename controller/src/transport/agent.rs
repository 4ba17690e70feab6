//! The agent transport: gRPC to `volley-agent` over mutual TLS, one HTTP/2 connection per host.
//!
//! Per host: TCP connect, a TLS handshake that trusts only the private CA and requires the
//! agent's certificate to name the host, the agent's acceptance of our certificate (its first
//! HTTP/2 frame, or an `Info` call where what the agent says of itself is needed), then `Exec`,
//! whose stream carries the output and the exit. The TCP and TLS steps are done here, not
//! inside tonic, so that each failure is classified where it happens, never by parsing a
//! message; the established stream is handed to tonic once, and tonic can never silently
//! reconnect and send a command again.
//!
//! Every connect-phase failure names the agent's address and the stage it reached (TCP, TLS
//! handshake, the first answer), as recorded by [`super::stage`].
//!
//! The acceptance is waited for because with TLS 1.3 a server's refusal of the client
//! certificate arrives only after the client's handshake completed (see [`accepted`]). Until
//! then no command can have started, which is what lets [`super::auto`] fall back to SSH;
//! where the attempt stopped also says why, for the host's [`volley_common::outcome::Fallback`].
//! `Info` is asked only where its answer is read: the agent's limits for a `--stdin` or a push,
//! and what `volley agent` reports; a plain command goes without it, a request and an answer
//! less on both ends of every host.
//!
//! The command runs as the host's SSH user (`HostSpec::user`), in the login session sshd would
//! give that user (the agent builds it), or as root for `--become`. The agent streams all the
//! output: only the copy the controller keeps is capped, by the [`super::OutputSink`]. An agent
//! that refuses the user (none such on the host, root not allowed) answers before anything
//! runs, and the host is `auth_failed`, as sshd's refusal of that user would make it.
//!
//! What happens once the command is sent (the execution id journalled first, following its
//! events, attaching again after a lost connection, cancelling) is in [`follow`].

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};
use volley_common::outcome::{FallbackReason, Outcome, TransportKind};
use volley_proto::pb;
use volley_proto::pb::agent_client::AgentClient;

mod accepted;
mod follow;

use super::stage::{Leg, Progress, Protocol, Stage};
use super::{BoxFuture, Ended, Job, Transport};
use crate::admission::{Admission, Cut};
use crate::pki::ControllerCredentials;
use crate::plan::{HostSpec, dialled};

/// Largest message accepted from an agent: output arrives in chunks far below this.
const MAX_MESSAGE_BYTES: usize = 8 << 20;

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

/// Why no connection to an agent was made: the host's outcome, and what it means for a fallback
/// (set for the outcomes that allow one: no agent, no answer in time, TLS failed, and for TLS
/// which side refused). Nothing can have run on the host.
pub struct NotConnected {
    pub outcome: Outcome,
    pub fallback: Option<FallbackReason>,
}

impl From<Outcome> for NotConnected {
    fn from(outcome: Outcome) -> NotConnected {
        NotConnected {
            fallback: FallbackReason::of(&outcome),
            outcome,
        }
    }
}

/// What a connection waits for before it is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// The agent's `Info`, for what it says of itself (its limits).
    Info,
    /// Only its acceptance of our certificate: its first HTTP/2 frame.
    Acceptance,
}

/// A connection that passed TLS and that the agent accepted (it answered `Info`, if asked): no
/// command can have run yet.
pub struct Connected {
    pub client: AgentClient<Channel>,
    /// The agent's `Info`, where it was asked ([`Ask::Info`]).
    info: Option<pb::AgentInfo>,
    /// The agent's end-entity certificate (DER), when asked for: empty otherwise.
    certificate: Vec<u8>,
}

impl Connected {
    /// The largest file the agent lets a push write, if it says.
    pub fn max_file_bytes(&self) -> Option<u64> {
        let limits = self.info.as_ref()?.limits.as_ref()?;
        (limits.max_file_bytes != 0).then_some(limits.max_file_bytes)
    }
}

/// An agent reached within the connect timeout, and how long that took.
pub struct Reached {
    pub connected: Connected,
    pub after: Duration,
}

/// The agent transport, shared by every host of a run.
pub struct AgentTransport {
    tls: tokio_rustls::TlsConnector,
    /// Bytes of each stream the controller keeps (`--max-output`): the agent keeps as much for
    /// a later `Attach`.
    max_output: u64,
}

impl AgentTransport {
    pub fn new(
        credentials: &ControllerCredentials,
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
            if let Some(reason) = volley_common::certificate::not_a_ca(&certificate) {
                return Err(bad("bad CA certificate", "ca.pem", reason));
            }
            roots
                .add(certificate)
                .map_err(|e| bad("bad CA certificate", "ca.pem", e.to_string()))?;
        }
        // No CA would verify no agent: every host would fail, or fall back to SSH unnoticed.
        if roots.is_empty() {
            return Err(bad(
                "bad CA certificate",
                "ca.pem",
                "no PEM certificate in it".to_string(),
            ));
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(credentials.certificate.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| bad("bad certificate", "controller.pem", e.to_string()))?;
        if chain.is_empty() {
            return Err(bad(
                "bad certificate",
                "controller.pem",
                "no PEM certificate in it".to_string(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(credentials.key.as_bytes())
            .map_err(|e| bad("bad private key", "controller.key", e.to_string()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(tls_provider()))
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
        // One process dials each host once: a session ticket would never be used, and storing
        // the agent's tickets costs a parse and an allocation per host.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(AgentTransport {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            max_output,
        })
    }

    /// Connects (TCP, TLS, the agent's acceptance or `Info` as `ask` says) once `admission`
    /// lets it, within `timeout` from then, or says why not; an interrupt ends the wait.
    /// Nothing can have run on the host when this fails.
    pub async fn reach(
        &self,
        host: &HostSpec,
        ask: Ask,
        timeout: Duration,
        cancel: &tokio_util::sync::CancellationToken,
        admission: &Admission,
    ) -> Result<Reached, NotConnected> {
        let started = Instant::now();
        let progress = Progress::default();
        let connect = self.connect(host, &progress, ask, false);
        match admission.connect(timeout, cancel, &progress, connect).await {
            Ok(Ok(connected)) => Ok(Reached {
                connected,
                after: started.elapsed(),
            }),
            Ok(Err(failed)) => Err(failed),
            Err(Cut::TimedOut) => Err(NotConnected::from(Outcome::ConnectTimeout {
                reason: progress.stalled(timeout),
            })),
            Err(Cut::Cancelled) => Err(NotConnected {
                outcome: Outcome::Cancelled,
                fallback: None,
            }),
            Err(Cut::Stopped) => Err(NotConnected {
                outcome: Outcome::Skipped,
                fallback: None,
            }),
        }
    }

    /// Runs the job's command on an agent already reached. A `--stdin` larger than the agent
    /// takes in one request is refused here, before anything is sent (and SSH does not take
    /// over: it is the input's problem, not the agent's).
    pub async fn run_reached(&self, reached: Reached, job: &mut Job<'_>) -> Ended {
        if let Some(outcome) = too_big_for(reached.connected.info.as_ref(), job.stdin) {
            return ended(outcome, None, None);
        }
        let run_started = Instant::now();
        let (outcome, started) = self.exec_started(reached.connected.client, job).await;
        // Not started (the agent refused the request, or the rollout stopped before it was
        // sent): no run time, so that a retry of what was never reached takes the host.
        let ran_for = started.then(|| run_started.elapsed());
        ended(outcome, Some(reached.after), ran_for)
    }

    /// Connects and asks `Info`, within `timeout`: whether the agent serves, what it says about
    /// itself and the certificate it presents. Runs no command.
    pub async fn probe(
        &self,
        host: &HostSpec,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<Served, Outcome> {
        let connected =
            tokio::time::timeout(timeout, self.connect(host, progress, Ask::Info, true))
                .await
                .map_err(|_| Outcome::ConnectTimeout {
                    reason: progress.stalled(timeout),
                })?
                .map_err(|failed| failed.outcome)?;
        let info = connected
            .info
            .ok_or_else(|| "no Info was asked".to_string())
            .and_then(|info| {
                volley_common::exec::AgentInfo::try_from(info).map_err(|e| e.to_string())
            })
            .map_err(|error| Outcome::TransportError {
                reason: format!("bad Info from the agent: {error}"),
            })?;
        Ok(Served {
            info,
            certificate: connected.certificate,
        })
    }

    /// TCP, TLS, the agent's acceptance (its first HTTP/2 frame, or an `Info` call if `ask`
    /// says), each stage recorded in `progress`, and a copy of the agent's certificate if
    /// `keep_certificate` (only `volley agent` looks at it). Every failure is an outcome whose
    /// reason names the agent's address and the stage; none can have run the command.
    async fn connect(
        &self,
        host: &HostSpec,
        progress: &Progress,
        ask: Ask,
        keep_certificate: bool,
    ) -> Result<Connected, NotConnected> {
        let what = format!("agent {}", dialled(&host.address, host.agent_port));
        let leg = Leg::new(Protocol::Tls, what.clone(), None);
        progress.on(&leg);
        let tcp = super::dial(&host.address, host.agent_port)
            .await
            .map_err(|error| Outcome::Unreachable {
                reason: format!("{what}: {}", super::ssh::connect_reason(&error)),
            })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.host.clone()).map_err(|_| Outcome::TlsRejected {
            reason: format!(
                "{what}: '{}' is not a name a certificate can carry",
                host.host
            ),
        })?;
        let mut tls = self
            .tls
            .connect(name, leg.observe(tcp))
            .await
            .map_err(|error| NotConnected {
                fallback: Some(handshake_refusal(&error)),
                outcome: Outcome::TlsRejected {
                    reason: leg.failed(&error),
                },
            })?;
        leg.reach(Stage::Secured);
        let session = tls.get_ref().1;
        tracing::debug!(
            version = ?session.protocol_version(),
            suite = ?session.negotiated_cipher_suite().map(|suite| suite.suite()),
            "{what}: TLS established"
        );
        let certificate = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .filter(|_| keep_certificate)
            .map(|der| der.to_vec())
            .unwrap_or_default();

        let read = match ask {
            Ask::Info => Bytes::new(),
            Ask::Acceptance => accepted::first_frame(&mut tls)
                .await
                .map_err(|no| not_accepted(&what, no))?,
        };

        // tonic dials through this connector; it yields the established stream once, with
        // what was read of it to see the agent's acceptance.
        let stream = Arc::new(Mutex::new(Some(TokioIo::new(accepted::Rewound::new(
            read, tls,
        )))));
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
                reason: format!("{what}: bad agent address: {error}"),
            })?
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|error| Outcome::TransportError {
                reason: format!("{what}: HTTP/2 setup failed: {}", chain(&error)),
            })?;
        let mut client = AgentClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let info = match ask {
            Ask::Acceptance => None,
            Ask::Info => match client.info(pb::InfoRequest {}).await {
                Ok(response) => Some(response.into_inner()),
                Err(status) => return Err(probe_failure(&what, &status)),
            },
        };
        Ok(Connected {
            client,
            info,
            certificate,
        })
    }
}

impl Transport for AgentTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Agent
    }

    fn run<'a>(&'a self, mut job: Job<'a>) -> BoxFuture<'a, Ended> {
        Box::pin(async move {
            let connect_timeout = job.limits.connect_timeout;
            match self
                .reach(
                    job.host,
                    Ask::for_stdin(job.stdin),
                    connect_timeout,
                    &job.cancel,
                    job.admission,
                )
                .await
            {
                Ok(reached) => self.run_reached(reached, &mut job).await,
                Err(failed) => ended(failed.outcome, None, None),
            }
        })
    }
}

/// Room left in a request for everything but the stdin bytes.
const REQUEST_OVERHEAD: usize = 64 << 10;

/// ring's suites with AES-128-GCM-SHA256 first (the agent takes the client's order). At fleet
/// scale the AES-256-GCM-SHA384 default costs measurable CPU on both ends: its key schedule runs
/// SHA-384, which this hardware does not accelerate, and AES-256 takes 14 rounds where AES-128
/// takes 10 over every byte of output and of pushed files. AES-128-GCM-SHA256 is the suite every
/// TLS 1.3 peer must implement.
fn tls_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    let first = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    provider
        .cipher_suites
        .retain(|suite| suite.suite() != first.suite());
    provider.cipher_suites.insert(0, first);
    provider
}

impl Ask {
    /// What a command needs: the agent's limits where it has a `--stdin` to fit in one request.
    pub fn for_stdin(stdin: Option<&Bytes>) -> Ask {
        match stdin {
            Some(_) => Ask::Info,
            None => Ask::Acceptance,
        }
    }
}

/// The outcome of a host whose agent cannot take `--stdin` in one request, if it cannot (and
/// said its limits: they are asked wherever there is a `--stdin`, [`Ask::for_stdin`]).
fn too_big_for(info: Option<&pb::AgentInfo>, stdin: Option<&Bytes>) -> Option<Outcome> {
    let stdin = stdin?.len();
    let limit = info?.limits.as_ref()?.max_message_bytes as usize;
    let room = limit
        .min(MAX_MESSAGE_BYTES)
        .saturating_sub(REQUEST_OVERHEAD);
    (stdin > room).then(|| Outcome::TransportError {
        reason: format!(
            "--stdin is {stdin} bytes, more than this agent takes in one request ({room}; its max_message_bytes is {limit}): raise it in the agent's config, or use --transport ssh"
        ),
    })
}

fn ended(outcome: Outcome, connected_after: Option<Duration>, ran_for: Option<Duration>) -> Ended {
    Ended {
        outcome,
        connected_after,
        ran_for,
        transport: TransportKind::Agent,
        fallback: None,
    }
}

/// Which side refused a failed TLS handshake: our check of the agent's certificate, or the
/// agent, whose refusal arrives as an alert. Decided by the error's type, not its text.
fn handshake_refusal(error: &std::io::Error) -> FallbackReason {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_)) => FallbackReason::AgentCertificateRejected,
        Some(rustls::Error::AlertReceived(_)) => FallbackReason::ControllerCertificateRefused,
        _ => FallbackReason::TlsFailed,
    }
}

/// Classifies a failed `Info` probe. An agent's handler answers with a gRPC status of its own; a
/// status that carries a transport error as its source means the connection failed at its very
/// first request. With TLS 1.3 that is where an agent's refusal of our certificate lands (the
/// alert arrives after our side of the handshake completed), and in every case no command can
/// have started, so it counts as a TLS rejection: the one classification that lets `auto` fall
/// back. This is decided by where the failure happened, not by reading its message.
fn probe_failure(what: &str, status: &tonic::Status) -> NotConnected {
    // Either way below, the agent, whose certificate verified under our CA and named the host,
    // refused us right after our side of the handshake: that is its refusal of our certificate.
    // HTTP/2 keeps only the text of a TLS alert, and sometimes the connection is just closed
    // before the alert is read, so the second case is that refusal too.
    if let Some(reason) = tls_failure(status) {
        return refused(format!(
            "{what}: the agent refused our certificate: {reason}"
        ));
    }
    // The cause itself: a status's own text is its fields, the cause in Debug form among them.
    if let Some(cause) = StdError::source(status) {
        return refused(format!(
            "{what}: the agent closed the connection at the first request (it refused our certificate, or is not a volley agent): {}",
            chain(cause)
        ));
    }
    NotConnected::from(Outcome::TransportError {
        reason: format!(
            "{what}: the agent did not answer Info: {}",
            status.message()
        ),
    })
}

/// Classifies an agent's first frame that did not come, as [`probe_failure`] classifies a
/// failed `Info`: an alert, a close, or an answer that is not HTTP/2, right after our side of the
/// handshake, is the agent refusing our certificate (or not being a volley agent). Nothing was
/// sent: `auto` may fall back.
fn not_accepted(what: &str, no: accepted::NoFirstFrame) -> NotConnected {
    use accepted::NoFirstFrame;
    match no {
        NoFirstFrame::Failed(error) => match tls_failure(&error) {
            Some(reason) => refused(format!(
                "{what}: the agent refused our certificate: {reason}"
            )),
            None => refused(format!(
                "{what}: the agent closed the connection before its first answer (it refused our certificate, or is not a volley agent): {error}"
            )),
        },
        NoFirstFrame::Closed => refused(format!(
            "{what}: the agent closed the connection before its first answer (it refused our certificate, or is not a volley agent)"
        )),
        NoFirstFrame::NotHttp2 => refused(format!(
            "{what}: the server's first answer is not HTTP/2: not a volley agent"
        )),
    }
}

/// The agent, whose certificate verified under our CA and named the host, refused us right
/// after our side of the handshake.
fn refused(reason: String) -> NotConnected {
    NotConnected {
        outcome: Outcome::TlsRejected { reason },
        fallback: Some(FallbackReason::ControllerCertificateRefused),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_provider_offers_aes_128_first_and_drops_no_suite() {
        let ours: Vec<_> = tls_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut defaults: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut sorted = ours.clone();
        sorted.sort_by_key(|suite| u16::from(*suite));
        defaults.sort_by_key(|suite| u16::from(*suite));
        assert_eq!(sorted, defaults);
    }
}
