//! The `auto` transport: each host through its agent where one answers, over SSH elsewhere.
//!
//! The fallback rule: a host falls back to SSH only when its agent could not be reached (refused,
//! no route, connect timeout) or the TLS handshake failed, that is when the command certainly did
//! not start. Once a request may have reached the agent, whatever happens is that host's outcome:
//! a command is never run twice. A host whose inventory entry names a transport uses only that.
//!
//! A host that fell back says so: its [`Ended::fallback`] names why (no agent, no answer in time,
//! the agent's certificate rejected, ours refused) and the agent attempt's outcome, for the JSON
//! record, the journal, the failure line and the summary.
//!
//! The choice is [`route`], which `volley push` and `volley fetch` use too: they reach a host
//! the same way, then do their own work over the agent connection or the SSH session.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use volley_common::inventory::TransportChoice;
use volley_common::outcome::{Fallback, FallbackReason, Outcome, TransportKind};

use super::agent::{AgentTransport, Ask, Reached};
use super::ssh::SshTransport;
use super::{BoxFuture, Ended, Job, Transport};
use crate::admission::Admission;
use crate::plan::HostSpec;

/// How long `auto` waits for an agent before trying SSH: a host without an agent behind a
/// firewall that drops packets should not cost the whole connect timeout twice.
const AGENT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct AutoTransport {
    /// `None` when there is no PKI: then every `auto` host goes over SSH.
    pub agent: Option<AgentTransport>,
    pub ssh: SshTransport,
}

/// Where a host's work goes.
pub enum Route {
    /// Through this agent, already reached.
    Agent(Box<Reached>),
    /// Over SSH: the host uses SSH, or its agent certainly started nothing (then why, for the
    /// host's [`Ended::fallback`]).
    Ssh(Option<Fallback>),
    /// Nowhere: the host's outcome (its agent could not be used and SSH may not take over).
    Ended(Ended),
}

/// Picks the transport of one host by its inventory choice and the fallback rule, reaching its
/// agent when that is the way.
pub async fn route(
    agent: Option<&AgentTransport>,
    host: &HostSpec,
    ask: Ask,
    connect_timeout: Duration,
    cancel: &CancellationToken,
    admission: &Admission,
) -> Route {
    let not_reached = |outcome| Route::Ended(Ended::unconnected(outcome, TransportKind::Agent));
    match (host.transport, agent) {
        (TransportChoice::Ssh, _) | (TransportChoice::Auto, None) => Route::Ssh(None),
        (TransportChoice::Agent, None) => not_reached(Outcome::TransportError {
            reason: "no PKI for the agent transport".to_string(),
        }),
        (TransportChoice::Agent, Some(agent)) => {
            match agent
                .reach(host, ask, connect_timeout, cancel, admission)
                .await
            {
                Ok(reached) => Route::Agent(Box::new(reached)),
                Err(failed) => not_reached(failed.outcome),
            }
        }
        (TransportChoice::Auto, Some(agent)) => {
            let probe = connect_timeout.min(AGENT_PROBE_TIMEOUT);
            match agent.reach(host, ask, probe, cancel, admission).await {
                Ok(reached) => Route::Agent(Box::new(reached)),
                Err(failed) if may_fall_back(&failed.outcome) => {
                    tracing::debug!(host = %host.name, "no agent ({}); using SSH", failed.outcome);
                    let reason = failed
                        .fallback
                        .or_else(|| FallbackReason::of(&failed.outcome));
                    Route::Ssh(reason.map(|reason| Fallback {
                        reason,
                        detail: failed.outcome.to_string(),
                    }))
                }
                Err(failed) => not_reached(failed.outcome),
            }
        }
    }
}

impl AutoTransport {
    async fn run_host(&self, mut job: Job<'_>) -> Ended {
        let routed = route(
            self.agent.as_ref(),
            job.host,
            Ask::for_stdin(job.stdin),
            job.limits.connect_timeout,
            &job.cancel,
            job.admission,
        )
        .await;
        match (routed, &self.agent) {
            (Route::Agent(reached), Some(agent)) => agent.run_reached(*reached, &mut job).await,
            (Route::Ended(ended), _) => ended,
            (Route::Ssh(fallback), _) => {
                let mut ended = self.ssh.run(job).await;
                ended.fallback = fallback;
                ended
            }
            // `route` reaches an agent only through `self.agent`.
            (Route::Agent(_), None) => self.ssh.run(job).await,
        }
    }
}

/// Whether an agent failure proves the command did not start and SSH may take over.
fn may_fall_back(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Unreachable { .. } | Outcome::ConnectTimeout { .. } | Outcome::TlsRejected { .. }
    )
}

/// The transport reported for hosts that never started: the agent where there is a PKI.
pub fn kind(agent: Option<&AgentTransport>) -> TransportKind {
    if agent.is_some() {
        TransportKind::Agent
    } else {
        TransportKind::Ssh
    }
}

impl Transport for AutoTransport {
    fn kind(&self) -> TransportKind {
        kind(self.agent.as_ref())
    }

    fn run<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Ended> {
        Box::pin(self.run_host(job))
    }
}
