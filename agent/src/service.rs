//! The gRPC service: `Exec`, `Attach`, `Cancel` and `Info`, the execution limit, and the audit
//! records. `Stat`, `Push` and `Fetch` (files under `push_roots`) are in [`crate::transfer`].
//!
//! Every execution leaves two records under the tracing target `audit`: `exec started` (peer,
//! execution id, the user it runs as and who asked, command, pid, and under systemd the unit it
//! runs as) and `exec ended` (status, duration, bytes, truncation, how it ended). A request
//! refused before anything ran leaves one `exec refused` record; `Attach` and `Cancel` leave
//! `exec attached` and `exec cancel`. Commands and execution ids are recorded with Rust's debug
//! quoting, so that a newline in them cannot forge a record. Environment values are not
//! recorded (they may carry secrets), only their names.
//!
//! An execution outlives the stream that started it: it is registered by id
//! ([`crate::registry`]) before its process starts, so that one id never runs twice, and runs to
//! its end, its timeout, a `Cancel` or the agent's shutdown, whoever follows it. Only the
//! controller identity that started an execution may attach to it or cancel it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use volley_common::exec::{AgentInfo, AttachSpec, ExecEvent, ExecSpec, ExitStatus, Program};
use volley_proto::pb;

use crate::config::{Limits, SessionConfig};
use crate::exec::{self, Ending, ExecError, KILL_AFTER};
use crate::execution::Execution;
use crate::executor::Executor;
use crate::host::Host;
use crate::registry::Registry;
use crate::roots::PushRoots;
use crate::session::{self, AgentProcess, SessionError};
use crate::tls::common_name;
use crate::transfer::{self, FetchStream};

/// The tracing target of audit records.
pub const AUDIT: &str = "audit";

/// How long a finished execution's `Exited` may wait for a follower that does not read; after
/// that the follower has to attach again (the outcome is kept) to learn it.
const EXITED_DELIVERY: Duration = Duration::from_secs(30);

/// What the service needs from the rest of the agent.
#[derive(Debug)]
pub struct ServiceContext {
    pub limits: Limits,
    pub host: Host,
    /// How commands are run: in the login session of the user the request names. SIGHUP
    /// replaces it (see [`crate::reload`]); each request reads it as it comes.
    pub session: tokio::sync::watch::Receiver<SessionConfig>,
    pub process: AgentProcess,
    /// How commands are started and stopped (see [`crate::executor`]).
    pub executor: Arc<Executor>,
    /// The open-file limit the agent was started with, which directly-run commands get back.
    pub nofile: Option<u64>,
    /// Cancelled when the agent starts stopping: new executions are refused.
    pub stop: CancellationToken,
    /// Cancelled when the grace period is over: running executions are killed.
    pub kill: CancellationToken,
    /// Tracks running executions, so that shutdown can wait for them.
    pub executions: TaskTracker,
    /// Executions by id, running and finished.
    pub registry: Arc<Registry>,
    /// Where pushes and fetches may touch files.
    pub push_roots: PushRoots,
    /// The checksums of the files pushed here.
    pub checksums: Arc<crate::files::Checksums>,
    /// The audit log file, if records go to one: nothing is started while it takes none.
    pub audit: Option<Arc<crate::logging::AuditLog>>,
}

impl ServiceContext {
    /// Refuses what the audit log could not record (see [`crate::logging`]).
    pub fn check_audit(&self) -> Result<(), Status> {
        match self.audit.as_ref().and_then(|audit| audit.broken()) {
            None => Ok(()),
            Some(reason) => Err(Status::unavailable(format!(
                "this agent's audit log cannot be written ({reason}): it starts nothing it cannot record"
            ))),
        }
    }
}

#[derive(Debug)]
pub struct AgentService {
    context: Arc<ServiceContext>,
    slots: Arc<Semaphore>,
    started: Instant,
}

impl AgentService {
    pub fn new(context: ServiceContext) -> AgentService {
        let slots = Arc::new(Semaphore::new(context.limits.max_concurrent_execs as usize));
        AgentService {
            context: Arc::new(context),
            slots,
            started: Instant::now(),
        }
    }
}

/// Who is asking: the client certificate's Common Name and the connection's address.
pub(crate) struct Peer {
    pub(crate) identity: String,
    address: Option<SocketAddr>,
}

impl Peer {
    pub(crate) fn of<T>(request: &Request<T>) -> Result<Peer, Status> {
        // The TLS verifier already admitted only allowed controllers; this is the same name,
        // read again for the audit record. No certificate here would mean a bypassed verifier.
        let identity = request
            .peer_certs()
            .and_then(|chain| chain.first().and_then(|der| common_name(der)))
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        Ok(Peer {
            identity,
            address: request.remote_addr(),
        })
    }

    pub(crate) fn address(&self) -> String {
        self.address.map_or_else(String::new, |a| a.to_string())
    }
}

fn command(program: &Program) -> String {
    match program {
        Program::Shell(line) => format!("{line:?}"),
        Program::Argv(args) => format!("{args:?}"),
    }
}

/// How a refused session reaches the controller: a denial (no such user, root refused) is
/// `PERMISSION_DENIED`, which the controller reports as the host's `auth_failed`, as sshd's
/// refusal would be; a lookup that failed is the host's trouble, `UNAVAILABLE`.
fn session_refusal(error: &SessionError) -> Status {
    if error.is_denial() {
        Status::permission_denied(error.to_string())
    } else {
        Status::unavailable(error.to_string())
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ExecEvent, Status>> + Send>>;

/// The replayed events, then (while the execution runs) the live ones.
fn event_stream(replay: Vec<ExecEvent>, live: Option<mpsc::Receiver<ExecEvent>>) -> EventStream {
    let to_wire = |event| Ok(pb::ExecEvent::from(event));
    let replay = tokio_stream::iter(replay);
    match live {
        Some(live) => Box::pin(replay.chain(ReceiverStream::new(live)).map(to_wire)),
        None => Box::pin(replay.map(to_wire)),
    }
}

impl AgentService {
    /// The execution `id`, if it exists and `peer` started it.
    fn owned(&self, peer: &Peer, id: &str) -> Result<Arc<Execution>, Status> {
        let execution = self
            .context
            .registry
            .get(id)
            .ok_or_else(|| Status::not_found(format!("no execution {id:?} on this agent")))?;
        if execution.owner != peer.identity {
            return Err(Status::permission_denied(format!(
                "execution {id:?} belongs to another controller"
            )));
        }
        Ok(execution)
    }
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    type ExecStream = EventStream;
    type AttachStream = EventStream;
    type FetchStream = FetchStream;

    async fn stat(
        &self,
        request: Request<pb::StatRequest>,
    ) -> Result<Response<pb::StatResponse>, Status> {
        transfer::stat(&self.context, request).await
    }

    async fn push(
        &self,
        request: Request<tonic::Streaming<pb::PushRequest>>,
    ) -> Result<Response<pb::PushResult>, Status> {
        transfer::push(&self.context, &self.slots, request).await
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<FetchStream>, Status> {
        transfer::fetch(&self.context, &self.slots, request).await
    }

    async fn exec(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = Peer::of(&request)?;
        let execution_id = request.get_ref().execution_id.clone();
        let refuse = |status: Status| {
            tracing::warn!(
                target: AUDIT,
                peer = %peer.identity,
                address = %peer.address(),
                ?execution_id,
                reason = ?status.message(),
                "exec refused"
            );
            status
        };
        let spec = ExecSpec::try_from(request.into_inner())
            .map_err(|error| refuse(Status::invalid_argument(error.to_string())))?;
        if spec.execution_id.is_empty() {
            return Err(refuse(Status::invalid_argument(
                "the execution id is empty",
            )));
        }
        if self.context.stop.is_cancelled() {
            return Err(refuse(Status::unavailable("the agent is stopping")));
        }
        self.context.check_audit().map_err(refuse)?;
        // Refused at once rather than queued: the controller decides whether and when to retry.
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            refuse(Status::resource_exhausted(format!(
                "the agent is running its limit of {} executions",
                self.context.limits.max_concurrent_execs
            )))
        })?;
        // The id is taken before anything starts (the session lookup below waits), so that one
        // id never runs twice; it is let go if the command cannot start.
        let retention = self.context.registry.retention();
        let keep = spec.keep_output.map_or(retention.keep_output, |wanted| {
            wanted.min(retention.keep_output)
        });
        // The live stream is never capped; a request may still ask for a cap.
        let execution = Execution::new(
            spec.execution_id.clone(),
            peer.identity.clone(),
            keep,
            spec.max_output,
        );
        self.context
            .registry
            .insert(execution.clone())
            .map_err(|exists| {
                refuse(Status::already_exists(format!(
                    "{exists}; attach to it instead"
                )))
            })?;
        let forget = |status: Status| {
            self.context.registry.remove(&spec.execution_id);
            refuse(status)
        };
        let context = self.context.clone();
        let asked = spec.clone();
        let config = self.context.session.borrow().clone();
        let session = tokio::task::spawn_blocking(move || {
            session::resolve(&asked, &config, &context.process)
        })
        .await
        .map_err(|error| forget(Status::internal(format!("session lookup failed: {error}"))))?
        .map_err(|error| forget(session_refusal(&error)))?;
        let running = exec::start(&spec, &session, &self.context.executor, self.context.nofile)
            .await
            .map_err(|error| {
                forget(match error {
                    ExecError::EnvName(_) | ExecError::EnvValue(_) => {
                        Status::invalid_argument(error.to_string())
                    }
                    _ => Status::failed_precondition(error.to_string()),
                })
            })?;
        execution.started(running.pid());
        let limits = self.context.limits;
        let timeout = match (spec.timeout, limits.max_timeout) {
            (Some(wanted), Some(cap)) => Some(wanted.min(cap)),
            (wanted, cap) => wanted.or(cap),
        };
        tracing::info!(
            target: AUDIT,
            peer = %peer.identity,
            address = %peer.address(),
            ?execution_id,
            user = %session.account.name,
            asked_as = ?spec.user,
            become_root = spec.become_root,
            command = %command(&spec.program),
            env = ?spec.env.keys().collect::<Vec<_>>(),
            working_dir = ?spec.working_dir,
            timeout_ms = timeout.map(|t| t.as_millis() as u64),
            pid = running.pid(),
            unit = running.unit(),
            "exec started"
        );
        let (replay, live) = execution.follow(0, 0);
        let kill = self.context.kill.clone();
        let registry = self.context.registry.clone();
        self.context.executions.spawn(async move {
            let report = running
                .supervise(execution.clone(), timeout, kill.clone())
                .await;
            drop(slot);
            let exited = &report.exited;
            let (code, signal) = match &exited.status {
                ExitStatus::Code(code) => (Some(*code), None),
                ExitStatus::Signal(name) => (None, Some(name.as_str())),
            };
            tracing::info!(
                target: AUDIT,
                peer = %peer.identity,
                ?execution_id,
                code,
                signal,
                duration_ms = exited.duration.as_millis() as u64,
                stdout_bytes = exited.stdout_bytes,
                stderr_bytes = exited.stderr_bytes,
                stdout_truncated = exited.stdout_truncated,
                stderr_truncated = exited.stderr_truncated,
                timed_out = report.ending == Ending::TimedOut,
                cancelled = report.ending == Ending::Cancelled,
                killed_at_shutdown = report.ending == Ending::Shutdown,
                "exec ended"
            );
            let follower = execution.finish(report.exited.clone());
            registry.finished(&execution.id);
            if let Some(follower) = follower {
                // At shutdown the agent does not wait long for a follower that does not read.
                let send = follower.send(ExecEvent::Exited(report.exited));
                tokio::pin!(send);
                tokio::select! {
                    _ = tokio::time::timeout(EXITED_DELIVERY, &mut send) => {}
                    () = kill.cancelled() => {
                        let _ = tokio::time::timeout(KILL_AFTER, &mut send).await;
                    }
                }
            }
        });
        Ok(Response::new(event_stream(replay, live)))
    }

    async fn attach(
        &self,
        request: Request<pb::AttachRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = Peer::of(&request)?;
        let spec = AttachSpec::try_from(request.into_inner())
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let execution = self.owned(&peer, &spec.execution_id)?;
        let (replay, live) = execution.follow(spec.stdout_offset, spec.stderr_offset);
        tracing::info!(
            target: AUDIT,
            peer = %peer.identity,
            address = %peer.address(),
            execution_id = ?spec.execution_id,
            running = live.is_some(),
            stdout_offset = spec.stdout_offset,
            stderr_offset = spec.stderr_offset,
            "exec attached"
        );
        Ok(Response::new(event_stream(replay, live)))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelReply>, Status> {
        let peer = Peer::of(&request)?;
        let id = request.into_inner().execution_id;
        let execution = self.owned(&peer, &id)?;
        let was_running = !execution.has_ended();
        execution.cancel.cancel();
        tracing::info!(
            target: AUDIT,
            peer = %peer.identity,
            address = %peer.address(),
            execution_id = ?id,
            was_running,
            "exec cancel"
        );
        Ok(Response::new(pb::CancelReply { was_running }))
    }

    async fn info(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        Peer::of(&request)?;
        // Uptime is the agent's own (since it started), which tells a restart apart; the host's
        // is one `uptime` command away.
        let info = AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: self.context.host.hostname.clone(),
            os: self.context.host.os.clone(),
            uptime: self.started.elapsed(),
            limits: self.context.limits.agent_limits(),
            pid: Some(std::process::id()),
        };
        Ok(Response::new(info.into()))
    }
}
