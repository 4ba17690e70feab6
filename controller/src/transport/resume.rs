//! The transport of `volley runs resume`: for each host, attach to the execution its run's
//! journal recorded and follow it to its end. It never sends a command to run.

use std::collections::HashMap;

use volley_common::outcome::{Outcome, TransportKind};

use super::agent::AgentTransport;
use super::{BoxFuture, Ended, Job, Transport};

pub struct ResumeTransport {
    pub agent: AgentTransport,
    /// Host name to the execution id its command was sent as.
    pub executions: HashMap<String, String>,
}

impl Transport for ResumeTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Agent
    }

    fn run<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Ended> {
        Box::pin(async move {
            match self.executions.get(&job.host.name) {
                Some(id) => self.agent.collect(job, id).await,
                // The resume picks only hosts with an execution; this is a safe answer anyway.
                None => Ended::unconnected(
                    Outcome::InDoubt {
                        reason: "no execution recorded for this host".to_string(),
                    },
                    TransportKind::Agent,
                ),
            }
        })
    }
}
