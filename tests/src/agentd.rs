//! One `volley-agent` process, configured by a TOML file and logging (audit records included) to
//! a file, both in its fleet's directory. It is killed when dropped.

use std::fmt::Write as _;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::inventory::toml_string;
use crate::isolation::Isolation;

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What one agent's configuration file says.
#[derive(Debug)]
pub struct AgentConfig<'a> {
    pub listen: SocketAddrV4,
    pub certificate: &'a Path,
    pub key: &'a Path,
    pub ca: &'a Path,
    pub allowed_controllers: &'a [String],
    /// The one directory under which pushes and fetches may touch files; `None` keeps the
    /// agent's default (the real /etc, /srv...: only for agents that are never pushed to).
    pub push_roots: Option<&'a Path>,
}

/// The configuration file's text; every other setting keeps the agent's default.
pub fn config_text(config: &AgentConfig) -> String {
    let path = |path: &Path| toml_string(&path.to_string_lossy());
    let controllers: Vec<String> = config
        .allowed_controllers
        .iter()
        .map(|name| toml_string(name))
        .collect();
    let mut text = String::from("# Written by the volley-tests agent fleet.\n");
    let _ = writeln!(text, "listen = {}", toml_string(&config.listen.to_string()));
    let _ = writeln!(text, "certificate = {}", path(config.certificate));
    let _ = writeln!(text, "key = {}", path(config.key));
    let _ = writeln!(text, "ca = {}", path(config.ca));
    let _ = writeln!(text, "allowed_controllers = [{}]", controllers.join(", "));
    if let Some(root) = config.push_roots {
        let _ = writeln!(text, "push_roots = [{}]", path(root));
    }
    text
}

/// A variable every fixture agent has in its environment, as an install session might leave
/// one: no command it runs may see it.
pub const CANARY: &str = "VOLLEY_TEST_AGENT_CANARY";

/// How to start an agent process, again if need be.
#[derive(Clone, Debug)]
pub struct AgentLaunch {
    pub binary: PathBuf,
    pub config: PathBuf,
    pub listen: SocketAddrV4,
    /// HOME of the agent process.
    pub home: PathBuf,
    /// The soft open-file limit it starts with (as a service manager might leave it), under
    /// the hard limit it inherits; `None` leaves it as it is.
    pub nofile: Option<u64>,
    /// The network namespace it runs in (`ip netns exec`), if not this one.
    pub netns: Option<String>,
    /// A mount namespace of its own (see [`Isolation`]), if any.
    pub isolation: Option<Isolation>,
    /// A file the agent inherits open, on descriptor 7, as from a careless launcher.
    pub inherited: Option<PathBuf>,
}

impl AgentLaunch {
    /// The agent `binary` with `config`, listening on `listen`, HOME `home`; nothing else.
    pub fn new(binary: &Path, config: &Path, listen: SocketAddrV4, home: &Path) -> AgentLaunch {
        AgentLaunch {
            binary: binary.to_path_buf(),
            config: config.to_path_buf(),
            listen,
            home: home.to_path_buf(),
            nofile: None,
            netns: None,
            isolation: None,
            inherited: None,
        }
    }
}

/// A running agent.
#[derive(Debug)]
pub struct Agentd {
    child: Child,
    log: PathBuf,
    listen: SocketAddrV4,
    launch: AgentLaunch,
}

impl Agentd {
    /// Starts `binary --config CONFIG` with stderr to `log` and HOME set to `home` (the agent's
    /// own; its commands run in their user's home, whatever the agent's is). Returns at once:
    /// call [`Agentd::wait_until_ready`], so that many agents can start side by side.
    pub fn spawn(binary: &Path, config: &Path, listen: SocketAddrV4, home: &Path) -> Agentd {
        Agentd::launch(AgentLaunch::new(binary, config, listen, home))
    }

    /// [`Agentd::spawn`], with the soft open-file limit the agent starts with set to `nofile`
    /// (as a service manager might leave it), under the hard limit it inherits.
    pub fn spawn_limited(
        binary: &Path,
        config: &Path,
        listen: SocketAddrV4,
        home: &Path,
        nofile: Option<u64>,
    ) -> Agentd {
        Agentd::launch(AgentLaunch {
            nofile,
            ..AgentLaunch::new(binary, config, listen, home)
        })
    }

    /// As [`Agentd::spawn`], in a mount namespace of its own (see [`Isolation`]).
    pub fn spawn_isolated(
        binary: &Path,
        config: &Path,
        listen: SocketAddrV4,
        home: &Path,
        isolation: &Isolation,
    ) -> Agentd {
        Agentd::launch(AgentLaunch {
            isolation: Some(isolation.clone()),
            ..AgentLaunch::new(binary, config, listen, home)
        })
    }

    /// Starts the agent as `launch` says. The log is appended to, so that a restarted agent's
    /// log follows the one before.
    pub fn launch(launch: AgentLaunch) -> Agentd {
        let log = launch.config.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        // The program line: `ip netns exec NS`, then a shell that lowers the limit or opens the
        // inherited file, then the
        // agent, or the isolation's wrapper around it. Each `exec`s in place, so the child's pid
        // is the agent's.
        let mut line: Vec<std::ffi::OsString> = Vec::new();
        if let Some(netns) = &launch.netns {
            line.push(crate::tools::ip().into());
            line.extend(["netns", "exec", netns.as_str()].map(Into::into));
        }
        let mut prelude = Vec::new();
        if let Some(limit) = launch.nofile {
            prelude.push(format!("ulimit -S -n {limit}"));
        }
        if let Some(file) = &launch.inherited {
            prelude.push(format!("exec 7<'{}'", file.display()));
        }
        if !prelude.is_empty() {
            line.extend(["/bin/sh", "-c"].map(Into::into));
            line.push(format!("{} && exec \"$0\" \"$@\"", prelude.join(" && ")).into());
        }
        let mut command = match &launch.isolation {
            Some(isolation) => {
                let wrapped = isolation.command(&launch.binary);
                line.push(wrapped.get_program().to_owned());
                line.extend(wrapped.get_args().map(ToOwned::to_owned));
                let mut command = Command::new(&line[0]);
                command.args(&line[1..]);
                command
            }
            None => {
                line.push(launch.binary.clone().into());
                let mut command = Command::new(&line[0]);
                command.args(&line[1..]);
                command
            }
        };
        let child = command
            .arg("--config")
            .arg(&launch.config)
            .env("HOME", &launch.home)
            .env(CANARY, "the agent's own environment leaked")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", launch.binary.display()));
        Agentd {
            child,
            log,
            listen: launch.listen,
            launch,
        }
    }

    /// A new agent process with the same configuration, after this one was killed: it knows
    /// nothing of the executions of the one before.
    pub fn restart(&mut self, deadline: Instant) {
        if !self.has_exited() {
            self.kill();
        }
        *self = Agentd::launch(self.launch.clone());
        self.wait_until_ready(deadline);
    }

    /// Returns once the agent accepts TCP connections; panics with its log if it exits first or
    /// is not listening by `deadline`.
    pub fn wait_until_ready(&mut self, deadline: Instant) {
        let address = SocketAddr::V4(self.listen);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the agent for {address} exited with {status} before it listened; its log ({}):\n{}",
                    self.log.display(),
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent for {address} did not listen in time; its log ({}):\n{}",
                self.log.display(),
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits for the agent to exit on its own, for at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                Ok(None) => panic!(
                    "the agent for {} still runs after {within:?}; its log:\n{}",
                    self.listen,
                    self.log()
                ),
                Err(e) => panic!("cannot wait for the agent for {}: {e}", self.listen),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn listen(&self) -> SocketAddrV4 {
        self.listen
    }

    /// SIGKILL, as a crash or the OOM killer would end it, then reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// The agent's configuration file: a change applies at its next [`Agentd::restart`].
    pub fn config(&self) -> &Path {
        &self.launch.config
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A `kB` field of `/proc/PID/status`, such as `VmRSS` or `VmHWM`, in KiB.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {path}: {e}; did the agent exit?"));
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{path} has no {field} in kB:\n{status}"))
    }
}

impl Drop for Agentd {
    fn drop(&mut self) {
        if !self.has_exited() {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_every_file_and_controller() {
        let controllers = ["volley-controller".to_string(), "other".to_string()];
        let text = config_text(&AgentConfig {
            listen: "127.40.1.1:40001".parse().unwrap(),
            certificate: Path::new("/pki/agents/a01.pem"),
            key: Path::new("/pki/agents/a01.key"),
            ca: Path::new("/pki/ca.pem"),
            allowed_controllers: &controllers,
            push_roots: Some(Path::new("/srv/test")),
        });
        assert_eq!(
            text,
            "# Written by the volley-tests agent fleet.\n\
             listen = \"127.40.1.1:40001\"\n\
             certificate = \"/pki/agents/a01.pem\"\n\
             key = \"/pki/agents/a01.key\"\n\
             ca = \"/pki/ca.pem\"\n\
             allowed_controllers = [\"volley-controller\", \"other\"]\n\
             push_roots = [\"/srv/test\"]\n"
        );
    }
}
