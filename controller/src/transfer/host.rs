//! A host reached for `volley push` or `volley fetch`, over either transport: the way there
//! (the `auto` fallback rule, [`route`]), the primitives both operations use ([`Files`]), and
//! the timings and transport of the host's [`Ended`].
//!
//! `--timeout` (default 10 minutes) bounds the whole host once it is reached, `--then`
//! included; an interrupt stops it where it is. With `--become`, everything over SSH runs
//! through `sudo -n`, checked once per host as `volley run` checks it; through the agent,
//! files are always read and written by the agent's user (root), and `--then` runs as
//! `volley run` would run it there.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use tonic::transport::Channel;
use volley_common::outcome::{Outcome, TransportKind};
use volley_common::transfer::{FetchSpec, FileState, PushSpec, StatQuery};
use volley_proto::pb::agent_client::AgentClient;

use super::local::LocalFile;
use super::{agent, ssh};
use crate::transport::agent::{AgentTransport, Ask};
use crate::transport::auto::{Route, route};
use crate::transport::ssh::{Session, SshTransport, sudo};
use crate::transport::{BoxFuture, Ended, Job, Transport};

/// A host's whole operation may take this long unless `--timeout` says otherwise.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(600);

/// A reached host.
pub enum Files<'a> {
    Ssh {
        session: &'a Session,
        /// Through `sudo -n` (`--become`).
        sudo: bool,
    },
    Agent {
        client: AgentClient<Channel>,
        agent: &'a AgentTransport,
        /// The largest file the agent writes, if it says.
        max_file_bytes: Option<u64>,
    },
}

impl Files<'_> {
    /// Refuses, before anything is written, a file larger than the host takes: a push whose
    /// last file is refused must not leave the first ones in place.
    pub fn check_size(&self, path: &str, size: u64) -> Result<(), String> {
        match self {
            Files::Agent {
                max_file_bytes: Some(limit),
                ..
            } if size > *limit => Err(format!(
                "{path}: {size} bytes is more than the agent's max_file_bytes ({limit}); nothing was written"
            )),
            _ => Ok(()),
        }
    }

    pub async fn stat(&mut self, queries: &[StatQuery]) -> Result<Vec<FileState>, String> {
        match self {
            Files::Ssh { session, sudo } => ssh::stat(session, *sudo, queries).await,
            Files::Agent { client, .. } => agent::stat(client, queries).await,
        }
    }

    /// Writes one file atomically; returns the backup kept, if any.
    pub async fn put(
        &mut self,
        file: &LocalFile,
        spec: &PushSpec,
    ) -> Result<Option<String>, String> {
        match self {
            Files::Ssh { session, sudo } => ssh::put(session, *sudo, file, spec).await,
            Files::Agent { client, .. } => agent::put(client, file, spec).await,
        }
    }

    /// Streams a remote file into `out`. Over SSH the checksum is the one the probe read, of the
    /// file's first `size` bytes as it found it, and those bytes are sent; over the agent it is
    /// what the agent computed as it sent, returned here.
    pub async fn fetch(
        &mut self,
        spec: FetchSpec,
        size: u64,
        out: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<Option<String>, String> {
        match self {
            Files::Ssh { session, sudo } => ssh::fetch(session, *sudo, &spec.path, size, out)
                .await
                .map(|()| None),
            Files::Agent { client, .. } => agent::fetch(client, spec, out).await.map(Some),
        }
    }

    /// Runs the job's command, as `volley run` would over this transport.
    pub async fn run(&mut self, mut job: Job<'_>) -> Outcome {
        match self {
            Files::Ssh { session, .. } => session.run_job(job).await,
            Files::Agent { client, agent, .. } => {
                match agent.exec(client.clone(), &mut job).await {
                    // Not sent (the journal could not record it), after the files were
                    // written: the host did start, and its `--then` is owed.
                    Outcome::Skipped => Outcome::StepFailed {
                        step: "then".to_string(),
                        reason: "not sent: the run's journal could not record it".to_string(),
                    },
                    outcome => outcome,
                }
            }
        }
    }

    /// The id an agent records for this run's work on the host (none over SSH).
    pub fn execution_id(&self, job: &Job<'_>) -> String {
        match self {
            Files::Agent { .. } => job.execution_id.to_string(),
            Files::Ssh { .. } => String::new(),
        }
    }
}

/// A push or a fetch as a [`Transport`]: its work on each host, and the transports that reach
/// the hosts.
pub struct FileOperation<W> {
    pub work: W,
    pub ssh: SshTransport,
    pub agent: Option<AgentTransport>,
}

impl<W: HostWork + Send> Transport for FileOperation<W> {
    fn kind(&self) -> TransportKind {
        crate::transport::auto::kind(self.agent.as_ref())
    }

    fn run<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Ended> {
        Box::pin(run_host(&self.work, &self.ssh, self.agent.as_ref(), job))
    }
}

/// What push and fetch do on a reached host.
pub trait HostWork: Sync {
    fn on_host(
        &self,
        files: &mut Files<'_>,
        job: &mut Job<'_>,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = Outcome> + Send;
}

/// Reaches the job's host and runs `work` there; the host's [`Ended`].
pub async fn run_host(
    work: &impl HostWork,
    ssh: &SshTransport,
    agent: Option<&AgentTransport>,
    mut job: Job<'_>,
) -> Ended {
    let started = Instant::now();
    let limit = job.limits.command_timeout.unwrap_or(DEFAULT_LIMIT);
    // The agent's limits are read: every file is checked against them before the first is sent.
    let routed = route(
        agent,
        job.host,
        Ask::Info,
        job.limits.connect_timeout,
        &job.cancel,
        job.admission,
    )
    .await;
    let (outcome, connected_after, transport) = match (routed, agent) {
        (Route::Ended(ended), _) => return ended,
        (Route::Agent(reached), Some(agent)) => {
            let deadline = tokio::time::Instant::now() + limit;
            let max_file_bytes = reached.connected.max_file_bytes();
            let mut files = Files::Agent {
                client: reached.connected.client,
                agent,
                max_file_bytes,
            };
            let outcome = work.on_host(&mut files, &mut job, deadline).await;
            (outcome, reached.after, TransportKind::Agent)
        }
        (Route::Ssh(fallback), _) => {
            let mut ended = over_ssh(work, ssh, job, started).await;
            ended.fallback = fallback;
            return ended;
        }
        // `route` reaches an agent only through `agent`.
        (Route::Agent(_), None) => return over_ssh(work, ssh, job, started).await,
    };
    Ended {
        outcome,
        connected_after: Some(connected_after),
        ran_for: Some(started.elapsed().saturating_sub(connected_after)),
        transport,
        fallback: None,
    }
}

/// The host over SSH: connect, `--become`'s check, the work, goodbye.
async fn over_ssh(
    work: &impl HostWork,
    ssh: &SshTransport,
    mut job: Job<'_>,
    started: Instant,
) -> Ended {
    let ended = |outcome, connected_after: Option<Duration>| Ended {
        outcome,
        connected_after,
        ran_for: connected_after.map(|after| started.elapsed().saturating_sub(after)),
        transport: TransportKind::Ssh,
        fallback: None,
    };
    let connect = job.limits.connect_timeout;
    let session = match ssh
        .open(job.host, connect, &job.cancel, job.admission)
        .await
    {
        Ok(session) => session,
        Err(outcome) => return ended(outcome, None),
    };
    let sudo = sudo::needed(job.host);
    if sudo && let Err(outcome) = ssh.become_root(&session, &job).await {
        session.close().await;
        return ended(outcome, Some(started.elapsed()));
    }
    let connected_after = started.elapsed();
    let limit = job.limits.command_timeout.unwrap_or(DEFAULT_LIMIT);
    let deadline = tokio::time::Instant::now() + limit;
    let mut files = Files::Ssh {
        session: &session,
        sudo,
    };
    let outcome = work.on_host(&mut files, &mut job, deadline).await;
    session.close().await;
    ended(outcome, Some(connected_after))
}

/// A reason that names the file, once.
pub fn prefixed(path: &str, reason: String) -> String {
    if reason.contains(path) {
        reason
    } else {
        format!("{path}: {reason}")
    }
}
