//! `volley agent install|status|upgrade|renew|uninstall`: agents put on hosts, checked, renewed
//! and removed over SSH, as one more fleet operation.
//!
//! An agent operation is a [`Transport`]: the scheduler runs it on every host exactly as it runs
//! a command, so targets, `--parallel`, interrupts, outcomes, reports and exit statuses are those
//! of `volley run` (and so are batches, the failure budget and the run journal where the
//! scheduler has them). A host that fails is one outcome among the others; the fleet keeps
//! working over SSH wherever the agent is not (yet) there, since `auto` falls back.
//!
//! Per host, on one SSH connection:
//! - [`probe`]: one script reports what is there;
//! - [`steps`]: install and upgrade; [`lifecycle`]: renew and uninstall; [`status`];
//! - [`remote`]: scripts and checksum-verified atomic uploads; [`layout`]: the paths, under the
//!   inventory's `agent_prefix`; [`files`]: the config and unit the controller writes;
//! - [`certificate`]: the key made on the host, the request signed by the CA;
//! - [`supervisor`]: systemd, or the fallback (detached, pid file) where there is none;
//! - [`verify`]: done only when the agent answers over mTLS as expected.
//!
//! With `--become` (or the inventory's `become`) a non-root SSH user becomes root through
//! `sudo -n` for every script and upload; sudo is checked once first, and a host where it asks
//! for a password or refuses fails the step `become` with sudo's reason.
//!
//! The result of a host is its outcome: `succeeded` with one line on stdout, which starts with
//! `unchanged` when nothing had to change and `changed:` (and what) otherwise; or `step_failed`
//! naming the step (become, probe, binary, ca, certificate, config, unit, service, verify,
//! remove, status) and why. Hosts that SSH cannot reach get the SSH outcome.

mod certificate;
mod files;
mod layout;
mod lifecycle;
mod probe;
mod remote;
mod status;
mod steps;
mod supervisor;
mod verify;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use volley_common::outcome::{Outcome, TransportKind};

use crate::admission::{Admission, Cut};
use crate::cli::{AgentArgs, AgentCommand, RunArgs};
use crate::event::Stream;
use crate::pki::{Pki, PkiError};
use crate::plan::{HostSpec, RunPlan};
use crate::transport::agent::{AgentSetupError, AgentTransport};
use crate::transport::ssh::{SshTransport, sudo};
use crate::transport::{BoxFuture, Ended, Job, Transport};

use self::layout::Layout;
use self::remote::{Remote, StepError};
use self::steps::{HostWork, Mode};
use self::supervisor::Supervisor;

/// A host's whole operation may take this long unless `--timeout` says otherwise: uploads of a
/// large binary over a slow link, an agent's 30 s grace at a restart, the 30 s to come up.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(600);
/// `status` gives an agent this long to answer before asking over SSH why it does not.
const STATUS_PROBE: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Install,
    Status,
    Upgrade,
    Renew,
    Uninstall,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Install => "install",
            Action::Status => "status",
            Action::Upgrade => "upgrade",
            Action::Renew => "renew",
            Action::Uninstall => "uninstall",
        }
    }
}

/// What the operator asked for, beside the run settings.
#[derive(Debug)]
pub struct Request {
    pub action: Action,
    /// For install and upgrade: the binary to put on the hosts.
    pub agent_binary: Option<PathBuf>,
}

/// Splits `volley agent ACTION ...` into the `volley run` arguments that plan its hosts (the
/// same targets, SSH settings, limits and output) and the request. The run's "command" names
/// the operation, for the records.
pub fn plan_arguments(command: AgentCommand) -> (RunArgs, Request) {
    let (action, args, agent_binary) = match command {
        AgentCommand::Install(args) => (Action::Install, args.common, args.agent_binary),
        AgentCommand::Upgrade(args) => (Action::Upgrade, args.common, args.agent_binary),
        AgentCommand::Status(args) => (Action::Status, *args, None),
        AgentCommand::Renew(args) => (Action::Renew, *args, None),
        AgentCommand::Uninstall(args) => (Action::Uninstall, *args, None),
    };
    let AgentArgs {
        targets,
        ssh,
        pki,
        limits,
        output,
        rollout,
    } = args;
    let run = RunArgs {
        targets,
        ssh,
        transport: None,
        pki,
        limits,
        max_output: None,
        output,
        rollout,
        stdin: None,
        command: vec![format!("volley agent {}", action.name())],
    };
    (
        run,
        Request {
            action,
            agent_binary,
        },
    )
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("pki: {0}")]
    Agent(#[from] AgentSetupError),
    #[error("agent binary {path}: {reason}")]
    Binary { path: PathBuf, reason: String },
}

/// The agent binary that install and upgrade put on the hosts, read once and shared.
pub struct AgentBinary {
    pub bytes: Bytes,
    pub sha256: String,
}

impl AgentBinary {
    /// Reads `path`; `default` says the operator did not name it, which the error then says.
    fn load(path: &Path, default: bool) -> Result<AgentBinary, SetupError> {
        let bytes = std::fs::read(path).map_err(|error| SetupError::Binary {
            path: path.to_path_buf(),
            reason: if default {
                format!(
                    "{} (the default, next to volley: build it with cargo build -p volley-agent, or give --agent-binary FILE)",
                    crate::plan::io_reason(&error)
                )
            } else {
                crate::plan::io_reason(&error)
            },
        })?;
        check_binary(path, &bytes).map_err(|reason| SetupError::Binary {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(AgentBinary {
            sha256: remote::sha256_hex(&bytes),
            bytes: Bytes::from(bytes),
        })
    }
}

/// How long the local `--version` of the agent binary may take.
const LOCAL_VERSION_LIMIT: Duration = Duration::from_secs(10);

/// A cheap look at the agent binary before any host gets it: an ELF file (or a `#!` script, as
/// tests and wrappers use), and, when it runs here (the same architecture and libc), one whose
/// `--version` says `volley-agent X.Y.Z`. A binary for another machine that cannot run here is
/// left to the check on each host.
fn check_binary(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"\x7fELF") && !bytes.starts_with(b"#!") {
        return Err("not an executable: neither an ELF binary nor a #! script".to_string());
    }
    let Some(said) = local_version(path) else {
        return Ok(());
    };
    let first = said.lines().next().unwrap_or_default();
    match probe::version(first) {
        Some(_) => Ok(()),
        None => Err(format!(
            "its --version says '{first}', not 'volley-agent VERSION': give the agent's binary"
        )),
    }
}

/// What `path --version` prints here, or `None` when it cannot run here or fails.
fn local_version(path: &Path) -> Option<String> {
    let mut child = std::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    // Read as it comes, so that a program printing more than a pipe holds does not stall.
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut said = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut said).map(|_| said)
    });
    let deadline = Instant::now() + LOCAL_VERSION_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let said = reader.join().ok()?.ok()?;
    status.success().then_some(said)
}

/// One agent operation, shared by every host of the run.
pub struct AgentOperation {
    action: Action,
    ssh: SshTransport,
    agent: AgentTransport,
    pki: Pki,
    /// The CA certificate (PEM) that agents get and trust.
    ca: String,
    /// The controller identity that agents allow.
    identity: String,
    binary: Option<AgentBinary>,
}

impl AgentOperation {
    /// Reads the PKI and, for install and upgrade, the binary. Every problem here is the
    /// operator's input (exit 64), found before any host is contacted.
    pub fn new(
        request: Request,
        plan: &RunPlan,
        ssh: SshTransport,
    ) -> Result<AgentOperation, SetupError> {
        let pki = Pki::new(plan.pki.clone());
        let credentials = pki.controller_credentials()?;
        let identity = pki.controller_identity()?;
        let agent = AgentTransport::new(&credentials, plan.max_output as u64)?;
        // Renew signs on every host: a CA without its key is one line here, not a failure per
        // host after each made a key. (Install signs only where a certificate must be
        // replaced, and checks it on those hosts before it touches them.)
        if request.action == Action::Renew {
            pki.check_can_sign()?;
        }
        let binary = match request.action {
            Action::Install | Action::Upgrade => {
                let binary = match request.agent_binary {
                    Some(path) => AgentBinary::load(&path, false)?,
                    None => AgentBinary::load(&default_binary()?, true)?,
                };
                Some(binary)
            }
            _ => None,
        };
        Ok(AgentOperation {
            action: request.action,
            ssh,
            agent,
            pki,
            ca: credentials.ca,
            identity,
            binary,
        })
    }

    async fn run_host(&self, job: Job<'_>) -> Ended {
        let limit = job.limits.command_timeout.unwrap_or(DEFAULT_LIMIT);
        let cancel = job.cancel.clone();
        let started = Instant::now();
        let on_host = self.on_host(job.host, job.limits.connect_timeout, &cancel, job.admission);
        let finish = tokio::select! {
            finish = tokio::time::timeout(limit, on_host) => finish.unwrap_or_else(|_| Finish::outcome(Outcome::operation_timeout(&format!("agent {}", self.action.name()), job.limits.command_timeout, DEFAULT_LIMIT))),
            () = cancel.cancelled() => Finish::outcome(Outcome::Cancelled),
        };
        if let Some(line) = finish.line {
            job.output
                .write(Stream::Stdout, Bytes::from(format!("{line}\n")))
                .await;
        }
        Ended {
            outcome: finish.outcome,
            connected_after: finish.connected_after,
            ran_for: finish
                .connected_after
                .map(|connected| started.elapsed().saturating_sub(connected)),
            transport: finish.transport,
            fallback: None,
        }
    }

    async fn on_host(
        &self,
        host: &HostSpec,
        connect_timeout: Duration,
        cancel: &CancellationToken,
        admission: &Admission,
    ) -> Finish {
        let started = Instant::now();
        // Status asks the agent first: an agent that answers needs no SSH at all.
        let mut not_answering = None;
        if self.action == Action::Status {
            let timeout = connect_timeout.min(STATUS_PROBE);
            let progress = crate::transport::stage::Progress::default();
            let probe = self.agent.probe(host, timeout, &progress);
            // The probe bounds itself by the same timeout, and names the stage it reached.
            let probed = match admission.connect(timeout, cancel, &progress, probe).await {
                Ok(probed) => probed,
                Err(Cut::Cancelled) => return Finish::outcome(Outcome::Cancelled),
                Err(Cut::Stopped) => return Finish::outcome(Outcome::Skipped),
                Err(Cut::TimedOut) => Err(Outcome::ConnectTimeout {
                    reason: format!("the agent did not answer within {}s", timeout.as_secs()),
                }),
            };
            match probed {
                Ok(served) => {
                    return Finish {
                        outcome: Outcome::Succeeded,
                        transport: TransportKind::Agent,
                        connected_after: Some(started.elapsed()),
                        line: Some(status::answered(&served)),
                    };
                }
                Err(outcome) => not_answering = Some(outcome),
            }
        }
        let session = match self
            .ssh
            .open(host, connect_timeout, cancel, admission)
            .await
        {
            Ok(session) => session,
            // For status, an agent that answered and was refused says more than SSH's failure:
            // a certificate that expired or names another host is what status is run to find.
            Err(outcome) => {
                return Finish::outcome(match not_answering {
                    Some(Outcome::TlsRejected { reason }) => Outcome::TlsRejected {
                        reason: format!("{reason}; and over SSH: {outcome}"),
                    },
                    _ => outcome,
                });
            }
        };
        let connected_after = Some(started.elapsed());
        let layout = Layout::new(host.agent_prefix.as_deref());
        let result = {
            let remote = Remote {
                session: &session,
                layout: &layout,
                sudo: sudo::needed(host),
            };
            self.steps(host, remote, not_answering).await
        };
        session.close().await;
        let (outcome, line) = match result {
            Ok(line) => (Outcome::Succeeded, Some(line)),
            Err(HostFailure { error, line }) => (
                Outcome::StepFailed {
                    step: error.step.to_string(),
                    reason: error.reason,
                },
                line,
            ),
        };
        Finish {
            outcome,
            transport: TransportKind::Ssh,
            connected_after,
            line,
        }
    }

    async fn steps(
        &self,
        host: &HostSpec,
        remote: Remote<'_>,
        not_answering: Option<Outcome>,
    ) -> Result<String, HostFailure> {
        if remote.sudo {
            sudo::check(remote.session, &host.user)
                .await
                .map_err(|reason| StepError::new("become", reason))?;
        }
        let output = remote.script("probe", &probe::script()).await?;
        let found = probe::parse(&output).map_err(|reason| StepError::new("probe", reason))?;
        // Status only reads; everything else writes root's files.
        if self.action != Action::Status && !found.root {
            return Err(StepError::new(
                "probe",
                format!(
                    "the SSH user {} is not root: log in as root, or give --become \
                     (or `become = true` in the inventory) to go through sudo -n",
                    host.user
                ),
            )
            .into());
        }
        let work = HostWork {
            operation: self,
            host,
            remote,
            supervisor: Supervisor::of_host(found.systemd),
            found,
        };
        let binary = || {
            self.binary
                .as_ref()
                .ok_or_else(|| StepError::new("binary", "no agent binary was loaded"))
        };
        let line = match self.action {
            Action::Install => steps::install(&work, Mode::Install, binary()?).await?,
            Action::Upgrade => steps::install(&work, Mode::Upgrade, binary()?).await?,
            Action::Renew => lifecycle::renew(&work).await?,
            Action::Uninstall => lifecycle::uninstall(&work).await?,
            Action::Status => {
                return Err(status::over_ssh(
                    &work.found,
                    not_answering.as_ref(),
                    &host.user,
                ));
            }
        };
        Ok(line)
    }
}

impl Transport for AgentOperation {
    /// Agent operations reach hosts over SSH; `status` reports `agent` for hosts whose agent
    /// answered.
    fn kind(&self) -> TransportKind {
        TransportKind::Ssh
    }

    fn run<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Ended> {
        Box::pin(self.run_host(job))
    }
}

/// The `volley-agent` next to the running `volley`, as `cargo build` and packages put them.
fn default_binary() -> Result<PathBuf, SetupError> {
    let volley = std::env::current_exe().map_err(|error| SetupError::Binary {
        path: PathBuf::from("volley-agent"),
        reason: format!("cannot find volley's own path ({error}); give --agent-binary FILE"),
    })?;
    Ok(volley.with_file_name("volley-agent"))
}

/// How a host ended, before it becomes an [`Ended`].
struct Finish {
    outcome: Outcome,
    transport: TransportKind,
    connected_after: Option<Duration>,
    line: Option<String>,
}

impl Finish {
    fn outcome(outcome: Outcome) -> Finish {
        Finish {
            outcome,
            transport: TransportKind::Ssh,
            connected_after: None,
            line: None,
        }
    }
}

/// A failed host: the step and, for status, what SSH found.
struct HostFailure {
    error: StepError,
    line: Option<String>,
}

impl From<StepError> for HostFailure {
    fn from(error: StepError) -> HostFailure {
        HostFailure { error, line: None }
    }
}
