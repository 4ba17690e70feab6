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

use std::time::Duration;

use volley_common::inventory::TransportChoice;
use volley_common::outcome::{Fallback, FallbackReason, Outcome, TransportKind};

use super::agent::{AgentTransport, Attempt};
use super::ssh::SshTransport;
use super::{BoxFuture, Ended, Job, Transport};

/// How long `auto` waits for an agent before trying SSH: a host without an agent behind a
/// firewall that drops packets should not cost the whole connect timeout twice.
const AGENT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct AutoTransport {
    /// `None` when there is no PKI: then every `auto` host goes over SSH.
    pub agent: Option<AgentTransport>,
    pub ssh: SshTransport,
}

impl AutoTransport {
    async fn run_host(&self, mut job: Job<'_>) -> Ended {
        match (job.host.transport, &self.agent) {
            (TransportChoice::Ssh, _) | (TransportChoice::Auto, None) => self.ssh.run(job).await,
            (TransportChoice::Agent, None) => Ended {
                outcome: Outcome::TransportError {
                    reason: "no PKI for the agent transport".to_string(),
                },
                connected_after: None,
                ran_for: None,
                transport: TransportKind::Agent,
                fallback: None,
            },
            (TransportChoice::Agent, Some(agent)) => agent.run(job).await,
            (TransportChoice::Auto, Some(agent)) => {
                let probe = job.limits.connect_timeout.min(AGENT_PROBE_TIMEOUT);
                match agent.attempt(&mut job, probe).await {
                    Attempt::Ran(ended) => ended,
                    Attempt::NotReached(agent_ended, reason)
                        if may_fall_back(&agent_ended.outcome) =>
                    {
                        tracing::debug!(host = %job.host.name, "no agent ({}); using SSH", agent_ended.outcome);
                        let reason = reason.or_else(|| FallbackReason::of(&agent_ended.outcome));
                        let mut ended = self.ssh.run(job).await;
                        ended.fallback = reason.map(|reason| Fallback {
                            reason,
                            detail: agent_ended.outcome.to_string(),
                        });
                        ended
                    }
                    Attempt::NotReached(ended, _) => ended,
                }
            }
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

impl Transport for AutoTransport {
    fn kind(&self) -> TransportKind {
        if self.agent.is_some() {
            TransportKind::Agent
        } else {
            TransportKind::Ssh
        }
    }

    fn run<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Ended> {
        Box::pin(self.run_host(job))
    }
}
