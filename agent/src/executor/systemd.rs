//! The systemd executor: each command is the main process of a transient service of PID 1,
//! `volley-exec-ID-PID-N.service`, as `systemd-run --pipe --wait --collect` would start it.
//!
//! The unit runs the agent's own helper (`/proc/AGENT_PID/exe as-user ...`: the running binary,
//! even after an upgrade replaced the file) as root, outside the agent's sandbox, cgroup and
//! namespaces, with nothing of the agent's unit: systemd's default limits (those sshd's sessions
//! get), umask and environment, which the helper then replaces with the session's. Its stdin,
//! stdout and stderr are pipes the agent made and passed to systemd, so output is streamed with
//! backpressure as a child's would be; stdin carries the session's environment first (see
//! [`crate::as_user`]), then the request's bytes and end of file, or /dev/null when there are
//! none.
//!
//! - `Type=exec`: the start job ends once the helper runs. Its words are passed with every `$`
//!   doubled, which systemd turns back into one instead of expanding variables.
//! - `KillMode=process`: when the command ends by itself, what it left running in the
//!   background lives on, as after an SSH session (and under the direct executor). Stopping
//!   (timeout, cancel, shutdown) is the agent's: `KillUnit` TERM to every process of the unit's
//!   cgroup, then KILL for what is left after [`KILL_AFTER`]; a cgroup holds `setsid` children
//!   too, so nothing escapes.
//! - `IgnoreSIGPIPE=no`: a command gets SIGPIPE's default action, as over SSH.
//! - `AddRef` and `CollectMode=inactive-or-failed`: systemd keeps the finished unit until the
//!   agent has read how its main process ended (`ExecMainCode`, `ExecMainStatus`: an exit code
//!   or a signal's number), then forgets it, failed or not; if the agent dies, its references go
//!   with its bus connection.
//!
//! The end is read when systemd says the unit changed (`PropertiesChanged`), and every second
//! besides, in case a signal was missed. An agent that dies leaves its commands running in their
//! units; the next agent stops them at start, as a restart of a directly-run agent kills its
//! children.

mod bus;

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::process::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe::{Receiver, Sender};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use volley_common::exec::ExitStatus;
use zbus::{Fd, MessageStream, Variant};

use self::bus::{Bus, MainExit};
use super::{Kind, Process};
use crate::as_user::{self, HelperCall};
use crate::exec::{ExecError, KILL_AFTER};
use crate::session;
use crate::signals::signal_name;

/// The prefix of every unit the agent starts.
const PREFIX: &str = "volley-exec-";

/// How long systemd gets to start a command.
const START_WITHIN: Duration = Duration::from_secs(30);

/// How often a unit's state is read when no signal came.
const POLL: Duration = Duration::from_secs(1);

/// How often it is read when systemd's signals cannot be had.
const POLL_UNSIGNALLED: Duration = Duration::from_millis(100);

/// How often a stopped unit is checked for survivors between TERM and KILL.
const CGROUP_POLL: Duration = Duration::from_millis(50);

/// Where the unit that gives a pushed file its owner finds `chown`.
const CHOWN_PATH: &str = "/usr/bin:/bin";

/// At most this much of the execution id goes into a unit's name.
const ID_IN_NAME: usize = 100;

/// Whether systemd is PID 1 here.
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Whether this agent is a service of PID 1: systemd runs, started the agent (its parent is
/// PID 1) and gave it an invocation id.
pub fn is_our_manager() -> bool {
    booted()
        && std::env::var_os("INVOCATION_ID").is_some()
        && rustix::process::getppid().is_some_and(|parent| parent.as_raw_nonzero().get() == 1)
}

/// Why the agent cannot talk to systemd.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConnectError(#[from] zbus::Error);

/// The executor's link to systemd.
#[derive(Debug)]
pub struct Systemd {
    bus: Bus,
    /// The helper as PID 1 starts it: the running agent's binary.
    binary: String,
    /// Numbers the units of this agent.
    started: AtomicU64,
}

impl Systemd {
    pub async fn connect() -> Result<Systemd, ConnectError> {
        Ok(Systemd {
            bus: Bus::connect().await?,
            binary: format!("/proc/{}/exe", std::process::id()),
            started: AtomicU64::new(0),
        })
    }

    /// Starts `call` as a transient service and waits until the helper runs; `input` goes to
    /// the command's stdin.
    pub async fn start(
        &self,
        call: HelperCall,
        execution_id: &str,
        input: Vec<u8>,
    ) -> Result<Process, ExecError> {
        let number = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let name = unit_name(execution_id, std::process::id(), number);
        let failed = |reason: String| ExecError::Unit {
            unit: name.clone(),
            reason,
        };
        let mut call = call.with_flag(as_user::ENV_FROM_STDIN);
        if input.is_empty() {
            call = call.with_flag(as_user::NULL_STDIN);
        }
        let mut argv = vec!["volley-agent".to_string()];
        for arg in call.args {
            let arg = arg.into_string().map_err(|arg| {
                failed(format!(
                    "an argument is not UTF-8: {}",
                    arg.to_string_lossy()
                ))
            })?;
            // systemd expands `${NAME}` (and `$NAME` as a whole word) in ExecStart=; `$$` is its
            // literal `$`, so that the command gets its words exactly.
            argv.push(arg.replace('$', "$$"));
        }
        let pipe = || io::pipe().map_err(|error| failed(format!("no pipe: {error}")));
        let (stdin, stdin_writer) = pipe()?;
        let (stdout_reader, stdout) = pipe()?;
        let (stderr_reader, stderr) = pipe()?;
        let (stdin, stdout, stderr) = (
            OwnedFd::from(stdin),
            OwnedFd::from(stdout),
            OwnedFd::from(stderr),
        );
        let path = bus::object_path(&name);
        let bus_failed = |error: zbus::Error| failed(error.to_string());
        let mut jobs = self.bus.job_removals().await.map_err(bus_failed)?;
        // systemd's word that the unit changed; without it (the bus may refuse one more match
        // rule), its state is read more often.
        let changes = match self.bus.changes(&path).await {
            Ok(changes) => Some(changes),
            Err(error) => {
                tracing::warn!(unit = %name, %error, "no change signals; polling the unit");
                None
            }
        };
        let exec_start: Vec<(String, Vec<String>, bool)> = vec![(self.binary.clone(), argv, false)];
        let job = {
            let properties = vec![
                (
                    "Description",
                    Variant::from(format!("Volley command of execution {execution_id}")),
                ),
                ("Type", Variant::from("exec")),
                ("ExecStart", Variant::from(exec_start)),
                ("KillMode", Variant::from("process")),
                ("IgnoreSIGPIPE", Variant::from(false)),
                ("CollectMode", Variant::from("inactive-or-failed")),
                ("AddRef", Variant::from(true)),
                (
                    "StandardInputFileDescriptor",
                    Variant::from(Fd::from(&stdin)),
                ),
                (
                    "StandardOutputFileDescriptor",
                    Variant::from(Fd::from(&stdout)),
                ),
                (
                    "StandardErrorFileDescriptor",
                    Variant::from(Fd::from(&stderr)),
                ),
            ];
            let start = self.bus.start_transient_unit(&name, properties);
            tokio::time::timeout(START_WITHIN, start).await
        };
        // The unit's ends of the pipes are systemd's now; ours would keep them open.
        drop((stdin, stdout, stderr));
        let job = match job {
            Ok(Ok(job)) => job,
            Ok(Err(error)) => return Err(bus_failed(error)),
            Err(_) => {
                abandon(&self.bus, &name, &path).await;
                return Err(failed(format!("no answer within {START_WITHIN:?}")));
            }
        };
        // The job's result says nothing more: a command that fails at once fails its start job
        // too. Its end is read like any other.
        let running = async {
            while let Some(message) = jobs.next().await {
                if bus::job_removed(&message?).is_some_and(|(removed, _)| removed == job) {
                    break;
                }
            }
            self.bus.main_pid(&path).await
        };
        let started = match tokio::time::timeout(START_WITHIN, running).await {
            Ok(Ok(pid)) => Receiver::from_owned_fd(OwnedFd::from(stdout_reader))
                .and_then(|stdout| {
                    let stderr = Receiver::from_owned_fd(OwnedFd::from(stderr_reader))?;
                    let stdin = Sender::from_owned_fd(OwnedFd::from(stdin_writer))?;
                    Ok((pid, stdout, stderr, stdin))
                })
                .map_err(|error| failed(format!("cannot use its pipes: {error}"))),
            Ok(Err(error)) => Err(bus_failed(error)),
            Err(_) => Err(failed(format!("it did not start within {START_WITHIN:?}"))),
        };
        let (pid, stdout, stderr, mut stdin) = match started {
            Ok(started) => started,
            Err(error) => {
                abandon(&self.bus, &name, &path).await;
                return Err(error);
            }
        };
        // The helper reads the header first thing, and the command the input after it: a task of
        // its own feeds them, so that a command that never reads its stdin blocks nothing. A
        // command that exits first closes the pipe, and the write ends, as `cat file | cmd`
        // would. Dropping the pipe is the end of file.
        let header = as_user::env_header(&call.env);
        let unit = name.clone();
        tokio::spawn(async move {
            let fed = match stdin.write_all(&header).await {
                Ok(()) => stdin.write_all(&input).await,
                Err(error) => Err(error),
            };
            if let Err(error) = fed {
                tracing::debug!(%unit, %error, "the command's stdin was closed early");
            }
        });
        let (done, ended) = oneshot::channel();
        tokio::spawn(watch(self.bus.clone(), path, changes, done));
        Ok(Process {
            pid,
            stdout: Some(stdout),
            stderr: Some(stderr),
            kind: Kind::Unit(Unit {
                bus: self.bus.clone(),
                name,
                ended,
                status: None,
            }),
        })
    }

    /// Gives the file at `path` the uid and gid of `owner` with `chown` in a unit of its own,
    /// run by the helper as root outside the agent's sandbox, as a command would be. Numbers are
    /// passed as `+N`, which chown never takes for names; a link is changed itself, never
    /// followed.
    pub async fn chown(
        &self,
        path: &Path,
        owner: (Option<u32>, Option<u32>),
    ) -> Result<(), String> {
        let owner = match owner {
            (Some(uid), Some(gid)) => format!("+{uid}:+{gid}"),
            (Some(uid), None) => format!("+{uid}"),
            (None, Some(gid)) => format!(":+{gid}"),
            (None, None) => return Ok(()),
        };
        let program = session::find_program("chown", Some(CHOWN_PATH))
            .ok_or_else(|| format!("no chown in {CHOWN_PATH}"))?;
        let args: Vec<OsString> = [
            as_user::SUBCOMMAND.into(),
            "--dir".into(),
            "/".into(),
            "--".into(),
            program.into_os_string(),
            "chown".into(),
            "--no-dereference".into(),
            owner.into(),
            "--".into(),
            path.as_os_str().to_owned(),
        ]
        .into();
        let call = HelperCall {
            args,
            env: [("PATH".to_string(), CHOWN_PATH.to_string())].into(),
            program: "chown".to_string(),
        };
        let mut process = self
            .start(call, "push-owner", Vec::new())
            .await
            .map_err(|error| error.to_string())?;
        let (stdout, stderr) = process.take_outputs();
        let (mut said, mut ignored) = (Vec::new(), Vec::new());
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_end(&mut said).await;
        }
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_end(&mut ignored).await;
        }
        match process.wait().await.map_err(|error| error.to_string())? {
            ExitStatus::Code(0) => Ok(()),
            status => Err(format!(
                "chown in a unit of systemd ended with {status:?}: {}",
                String::from_utf8_lossy(&said).trim()
            )),
        }
    }

    /// The units an earlier agent started, listed before this one starts any.
    pub async fn leftovers(&self) -> Vec<String> {
        match self.bus.units_matching(&format!("{PREFIX}*.service")).await {
            Ok(units) => units,
            Err(error) => {
                tracing::warn!(%error, "cannot list the commands an earlier agent left");
                Vec::new()
            }
        }
    }

    /// Stops `units`, which an earlier agent left running.
    pub async fn stop_leftovers(&self, units: Vec<String>) {
        if units.is_empty() {
            return;
        }
        tracing::warn!(
            ?units,
            "stopping the commands that an earlier agent left running"
        );
        for unit in &units {
            signal(&self.bus, unit, Signal::TERM).await;
        }
        let give_up = Instant::now() + KILL_AFTER;
        for unit in &units {
            while has_processes(&self.bus, unit).await && Instant::now() < give_up {
                tokio::time::sleep(CGROUP_POLL).await;
            }
            if has_processes(&self.bus, unit).await {
                signal(&self.bus, unit, Signal::KILL).await;
            }
        }
    }
}

/// A command running as a transient unit.
#[derive(Debug)]
pub struct Unit {
    bus: Bus,
    name: String,
    /// How the main process ended, once the watcher has read it.
    ended: oneshot::Receiver<Result<ExitStatus, String>>,
    status: Option<Result<ExitStatus, String>>,
}

impl Unit {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the main process ended; cancel-safe, and may be called again.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if self.status.is_none() {
            let ended = (&mut self.ended)
                .await
                .unwrap_or_else(|_| Err("the unit's watcher stopped".to_string()));
            self.status = Some(ended);
        }
        match &self.status {
            Some(Ok(status)) => Ok(status.clone()),
            Some(Err(reason)) => Err(io::Error::other(reason.clone())),
            None => Err(io::Error::other("no status")),
        }
    }

    /// TERM to every process of the unit; KILL to what is left after [`KILL_AFTER`]; as the
    /// direct executor stops a process group (see [`super::direct::Group::stop`]).
    pub async fn stop(&mut self, ended: bool) -> io::Result<ExitStatus> {
        signal(&self.bus, &self.name, Signal::TERM).await;
        let give_up = Instant::now() + KILL_AFTER;
        let status = if ended {
            None
        } else {
            tokio::time::timeout_at(give_up, self.wait()).await.ok()
        };
        while (ended || status.is_some())
            && has_processes(&self.bus, &self.name).await
            && Instant::now() < give_up
        {
            tokio::time::sleep(CGROUP_POLL).await;
        }
        if has_processes(&self.bus, &self.name).await {
            signal(&self.bus, &self.name, Signal::KILL).await;
        }
        match status {
            Some(status) => status,
            None => self.wait().await,
        }
    }
}

/// The unit name of a command of `execution_id`: the id's letters, digits, `_`, `.` and `:`
/// (anything else as `-`), then the agent's pid and the command's number in this agent, which
/// keep names apart across executions and agents.
fn unit_name(execution_id: &str, agent: u32, number: u64) -> String {
    let id: String = execution_id
        .chars()
        .take(ID_IN_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{PREFIX}{id}-{agent}-{number}.service")
}

/// Kills what a start that went wrong may have left running, and lets systemd forget it.
async fn abandon(bus: &Bus, unit: &str, path: &str) {
    signal(bus, unit, Signal::KILL).await;
    let _ = bus.unref(path).await;
}

/// Reads how the unit at `path` ended, when it changes and every [`POLL`] (every
/// [`POLL_UNSIGNALLED`] without `changes`), and sends it; then lets systemd forget the unit.
async fn watch(
    bus: Bus,
    path: String,
    mut changes: Option<MessageStream>,
    done: oneshot::Sender<Result<ExitStatus, String>>,
) {
    let mut signals = changes.is_some();
    let poll = if signals { POLL } else { POLL_UNSIGNALLED };
    let ended = loop {
        match bus.main_exit(&path).await {
            Ok(Some(MainExit::Code(code))) => break Ok(ExitStatus::Code(code)),
            Ok(Some(MainExit::Signal(number))) => {
                break Ok(ExitStatus::Signal(signal_name(number)));
            }
            Ok(None) => {}
            Err(error) if bus::is_no_such_unit(&error) => {
                break Err("systemd forgot the unit before its end was read".to_string());
            }
            Err(error) => tracing::warn!(%path, %error, "cannot read the command's state"),
        }
        let change = async {
            match changes.as_mut() {
                Some(changes) => changes.next().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            more = change, if signals => signals = more,
            () = tokio::time::sleep(poll) => {}
        }
    };
    if let Err(error) = bus.unref(&path).await {
        tracing::debug!(%path, %error, "cannot release the unit");
    }
    let _ = done.send(ended);
}

/// Sends `signal` to every process of `unit`; a unit already gone has nothing to signal.
async fn signal(bus: &Bus, unit: &str, signal: Signal) {
    match bus.kill_unit(unit, signal.as_raw()).await {
        Ok(()) => {}
        Err(error) if bus::is_no_such_unit(&error) => {}
        Err(error) => tracing::warn!(%unit, %error, "cannot signal the command's unit"),
    }
}

/// Whether `unit`'s cgroup still holds a process; a unit already gone holds none.
async fn has_processes(bus: &Bus, unit: &str) -> bool {
    match bus.unit_processes(unit).await {
        Ok(count) => count > 0,
        Err(error) if bus::is_no_such_unit(&error) => false,
        Err(error) => {
            tracing::warn!(%unit, %error, "cannot list the command's processes");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_keep_what_systemd_accepts_of_the_execution_id() {
        assert_eq!(
            unit_name("20261127T065812Z-3f9a/web01.example.com", 4242, 7),
            "volley-exec-20261127T065812Z-3f9a-web01.example.com-4242-7.service"
        );
        assert_eq!(
            unit_name("a b@c\\d$é", 1, 1),
            "volley-exec-a-b-c-d---1-1.service"
        );
        let long = unit_name(&"x".repeat(1000), u32::MAX, u64::MAX);
        assert!(long.len() < 256, "{}", long.len());
    }
}
