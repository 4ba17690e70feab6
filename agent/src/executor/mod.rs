//! The executor: how a command is started, how it is stopped, and how its end is read.
//!
//! Both executors run the same helper (`volley-agent as-user`, see [`crate::as_user`]) with the
//! same arguments, so a command gets the same session either way, and both hand the agent the
//! command's stdout and stderr as pipes and its end as an exit code or a signal's name:
//!
//! - [`direct`]: the helper is the agent's child, in a process group of its own; stopping
//!   signals that group. The path wherever systemd is not PID 1, and under the fallback
//!   supervisor.
//! - [`systemd`]: the helper is the main process of a transient service of PID 1, outside the
//!   agent's sandbox and cgroup; stopping signals the unit's whole cgroup, `setsid` children
//!   included. This is what lets the agent's own unit drop its capabilities and most of the file
//!   system while commands keep root's whole power.
//!
//! `executor = "auto"` (the default) picks systemd when the agent is itself a service of PID 1:
//! systemd runs (`/run/systemd/system`), the agent's parent is PID 1, and systemd gave it an
//! `INVOCATION_ID`. An agent started by hand or by the fallback supervisor runs commands
//! directly.

pub mod direct;
pub mod systemd;

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio::net::unix::pipe::Receiver;
use volley_common::exec::ExitStatus;

use crate::as_user::{self, HelperCall};
use crate::exec::ExecError;

/// The `executor` setting of the configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutorChoice {
    /// systemd when the agent is a service of PID 1, direct otherwise.
    #[default]
    Auto,
    Direct,
    Systemd,
}

impl ExecutorChoice {
    /// The setting as the configuration spells it.
    pub fn parse(text: &str) -> Option<ExecutorChoice> {
        match text {
            "auto" => Some(ExecutorChoice::Auto),
            "direct" => Some(ExecutorChoice::Direct),
            "systemd" => Some(ExecutorChoice::Systemd),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("executor = \"systemd\": systemd is not running on this host (no /run/systemd/system)")]
    NoSystemd,
    #[error(
        "executor {choice}: cannot reach systemd over the system D-Bus: {source} (is dbus \
         running? executor = \"direct\" runs commands as the agent's children instead)"
    )]
    Bus {
        choice: &'static str,
        source: systemd::ConnectError,
    },
}

impl ExecutorError {
    /// Whether restarting the agent cannot help.
    pub fn is_configuration(&self) -> bool {
        matches!(self, ExecutorError::NoSystemd)
    }
}

/// How this agent runs commands.
#[derive(Debug)]
pub enum Executor {
    Direct,
    Systemd(systemd::Systemd),
}

impl Executor {
    /// The executor `choice` asks for on this host.
    pub async fn new(choice: ExecutorChoice) -> Result<Arc<Executor>, ExecutorError> {
        let systemd = match choice {
            ExecutorChoice::Direct => false,
            ExecutorChoice::Systemd if !systemd::booted() => return Err(ExecutorError::NoSystemd),
            ExecutorChoice::Systemd => true,
            ExecutorChoice::Auto => systemd::is_our_manager(),
        };
        if !systemd {
            return Ok(Arc::new(Executor::Direct));
        }
        let choice = match choice {
            ExecutorChoice::Auto => "auto (the agent is a service of systemd)",
            _ => "= \"systemd\"",
        };
        systemd::Systemd::connect()
            .await
            .map(|systemd| Arc::new(Executor::Systemd(systemd)))
            .map_err(|source| ExecutorError::Bus { choice, source })
    }

    /// The executor's name, as the configuration spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Executor::Direct => "direct",
            Executor::Systemd(_) => "systemd",
        }
    }

    /// Whether commands share the agent's view of the host: its file system and limits. Under
    /// systemd the agent's sandbox hides part of the file system (`/home`, its own `/tmp`), so
    /// what the command will find is checked by the helper, as the command's user.
    pub fn shares_agent_view(&self) -> bool {
        matches!(self, Executor::Direct)
    }

    /// Starts the helper `call` for the execution `execution_id`, with `input` on the
    /// command's stdin.
    pub async fn start(
        &self,
        call: HelperCall,
        execution_id: &str,
        input: Vec<u8>,
    ) -> Result<Process, ExecError> {
        match self {
            Executor::Direct => {
                let program = call.program.clone();
                // The helper runs as root until it becomes the user: the request's variables
                // must not be its environment, where the dynamic loader would honour
                // LD_PRELOAD and its kind in a root process. They come on its stdin, as under
                // systemd, and are the command's only, at its exec.
                let mut call = call.with_flag(as_user::ENV_FROM_STDIN);
                if input.is_empty() {
                    call = call.with_flag(as_user::NULL_STDIN);
                }
                let header = as_user::env_header(&call.env);
                direct::spawn(direct_command(call), program, header, input)
            }
            Executor::Systemd(systemd) => systemd.start(call, execution_id, input).await,
        }
    }

    /// Gives the file at `path` the uid and gid of `owner` outside the agent, where the agent
    /// may not (under systemd its unit refuses chown(2)). Returns false where the agent does it
    /// itself (direct).
    pub async fn chown(
        &self,
        path: &Path,
        owner: (Option<u32>, Option<u32>),
    ) -> Result<bool, String> {
        match self {
            Executor::Direct => Ok(false),
            Executor::Systemd(systemd) => systemd.chown(path, owner).await.map(|()| true),
        }
    }

    /// Stops the commands that an earlier agent left running (it died without stopping them),
    /// as a restart of a directly-run agent kills its children. Nothing to do for direct.
    pub async fn stop_leftovers(&self, leftovers: Vec<String>) {
        if let Executor::Systemd(systemd) = self {
            systemd.stop_leftovers(leftovers).await;
        }
    }

    /// The commands an earlier agent left running, listed before this one starts any.
    pub async fn leftovers(&self) -> Vec<String> {
        match self {
            Executor::Direct => Vec::new(),
            Executor::Systemd(systemd) => systemd.leftovers().await,
        }
    }
}

/// The helper as the agent's child: the running agent's binary, with no environment (the
/// session's comes on its stdin), started in `/`.
fn direct_command(call: HelperCall) -> tokio::process::Command {
    // The running agent's binary, whichever file now has its name.
    let mut command = tokio::process::Command::new(Path::new("/proc/self/exe"));
    command.args(call.args).env_clear().current_dir("/");
    command
}

/// A started command: its pid, its output pipes, and how it is stopped and waited for.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    stdout: Option<Receiver>,
    stderr: Option<Receiver>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Direct(direct::Group),
    Unit(systemd::Unit),
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How long, at the command's deadline, an end that already happened may still be on its
    /// way: none for a child of ours (its status is read at once), a moment for a unit, whose
    /// end comes from systemd over D-Bus. A command still running is stopped that much later.
    pub fn end_in_flight(&self) -> std::time::Duration {
        match &self.kind {
            Kind::Direct(_) => std::time::Duration::ZERO,
            Kind::Unit(_) => std::time::Duration::from_millis(500),
        }
    }

    /// The transient unit the command runs as, under systemd.
    pub fn unit(&self) -> Option<&str> {
        match &self.kind {
            Kind::Direct(_) => None,
            Kind::Unit(unit) => Some(unit.name()),
        }
    }

    /// The read ends of the command's stdout and stderr; taken once.
    pub fn take_outputs(&mut self) -> (Option<Receiver>, Option<Receiver>) {
        (self.stdout.take(), self.stderr.take())
    }

    /// How the command's main process ended; cancel-safe, and may be called again.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.kind {
            Kind::Direct(group) => group.wait().await,
            Kind::Unit(unit) => unit.wait().await,
        }
    }

    /// Stops the command and everything it started: TERM, then KILL for what is left after
    /// [`crate::exec::KILL_AFTER`]. `ended`: its main process had already ended (and the
    /// returned status is not used). Returns how the main process ended.
    pub async fn stop(&mut self, ended: bool) -> io::Result<ExitStatus> {
        match &mut self.kind {
            Kind::Direct(group) => group.stop(ended).await,
            Kind::Unit(unit) => unit.stop(ended).await,
        }
    }
}
