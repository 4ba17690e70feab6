//! [`AgentFleet`]: N named hosts served by real `volley-agent` processes on loopback, with a
//! fresh PKI made by `volley pki` and an inventory naming them.
//!
//! Every agent has its own loopback address and a port the kernel found free. Agents start side
//! by side and are then awaited by bounded TCP polling, so hundreds start in seconds. Odd agents
//! ([`AgentKind`]) live in the same fleet, so one run meets them next to ordinary ones.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::agentd::{AgentConfig, AgentLaunch, Agentd, config_text};
use crate::hybrid::{InventoryHost, inventory_text};
use crate::isolation::{HostFiles, Isolation};
use crate::loopback::{AddressBlock, free_port};
use crate::partition::Partition;
use crate::pki::Pki;
use crate::process::{ProcessOutput, RunningProcess, shorten};
use crate::volley::{RUN_DEADLINE, volley_agent_binary, volley_binary, volley_command_at};

/// The controller identity of the fleet's PKI, which its agents allow.
pub const CONTROLLER_IDENTITY: &str = "volley-controller";

/// The agent's default port, used inside a namespace of the test's own.
const AGENT_PORT: u16 = 7731;

/// How long agents get to listen: a base for a loaded 2-core box, plus a little per agent.
const READY_BASE: Duration = Duration::from_secs(20);
const READY_PER_AGENT: Duration = Duration::from_millis(50);

/// What an agent presents when a controller comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKind {
    /// A certificate from the fleet's CA naming the host and its address.
    Normal,
    /// A valid certificate from the fleet's CA, issued for another host name (`other-NAME`).
    NamesAnotherHost,
}

/// The volley and volley-agent binaries a fleet uses.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub volley: PathBuf,
    pub agent: PathBuf,
}

impl Binaries {
    /// The debug builds next to the test binary; panics with what to build if one is missing.
    pub fn debug() -> Binaries {
        Binaries {
            volley: volley_binary(),
            agent: volley_agent_binary(),
        }
    }
}

/// The agents of a fleet, in order: named `a01`, `a02`, ... in the order given here.
#[derive(Clone, Debug)]
pub struct AgentFleetSpec {
    hosts: Vec<AgentKind>,
    addresses: Vec<Ipv4Addr>,
    allowed_controllers: Vec<String>,
    binaries: Option<Binaries>,
    isolation: Option<Isolation>,
    open_file_limit: Option<u64>,
    /// A file every agent inherits open (see [`AgentLaunch::inherited`]).
    inherited: Option<PathBuf>,
    /// The network namespace the agents run in, if not this one.
    netns: Option<String>,
    /// More of every agent's config, after the fleet's own settings.
    extra_config: String,
}

impl AgentFleetSpec {
    /// `normal` ordinary agents.
    pub fn new(normal: usize) -> AgentFleetSpec {
        AgentFleetSpec {
            hosts: vec![AgentKind::Normal; normal],
            addresses: Vec::new(),
            allowed_controllers: vec![CONTROLLER_IDENTITY.to_string()],
            binaries: None,
            isolation: None,
            open_file_limit: None,
            inherited: None,
            netns: None,
            extra_config: String::new(),
        }
    }

    /// Every agent in a mount namespace of its own, with its own tmpfs at the isolation's
    /// mount point, which is its only push root: the hosts have their own files there.
    /// `text` at the end of every agent's config: `[limits]\nmax_file_bytes = 1000\n`.
    pub fn with_config(mut self, text: &str) -> AgentFleetSpec {
        self.extra_config.push_str(text);
        self
    }

    pub fn isolated(mut self, isolation: Isolation) -> AgentFleetSpec {
        self.isolation = Some(isolation);
        self
    }

    /// One more agent of `kind`, after the ones already given.
    pub fn with(mut self, kind: AgentKind) -> AgentFleetSpec {
        self.hosts.push(kind);
        self
    }

    /// The first agents listen on these addresses (one each, on a free port), for instance
    /// those of an [`crate::SshFleet`], so that one host has both sshd and an agent. The others
    /// get fresh addresses.
    pub fn on_addresses(mut self, addresses: impl IntoIterator<Item = Ipv4Addr>) -> AgentFleetSpec {
        self.addresses = addresses.into_iter().collect();
        self
    }

    /// The controller identities the agents allow, instead of the fleet's own.
    pub fn allowing(mut self, identities: &[&str]) -> AgentFleetSpec {
        self.allowed_controllers = identities.iter().map(|name| name.to_string()).collect();
        self
    }

    /// Every agent runs inside `partition`, each on one of its addresses and on the agent's
    /// default port (the namespace is the test's own: nothing else listens there).
    pub fn in_namespace(mut self, partition: &Partition) -> AgentFleetSpec {
        assert!(
            partition.addresses().len() >= self.hosts.len(),
            "the namespace has fewer addresses than the fleet has agents"
        );
        self.addresses = partition.addresses();
        self.netns = Some(partition.name().to_string());
        self
    }

    /// Agents start with this soft open-file limit, as a service manager may leave it.
    pub fn with_open_file_limit(mut self, limit: u64) -> AgentFleetSpec {
        self.open_file_limit = Some(limit);
        self
    }

    /// Agents start with `file` open on descriptor 7, as a careless launcher may leave one.
    pub fn inheriting(mut self, file: &Path) -> AgentFleetSpec {
        self.inherited = Some(file.to_path_buf());
        self
    }

    /// Other binaries than the debug builds, such as release builds for a benchmark.
    pub fn with_binaries(mut self, binaries: Binaries) -> AgentFleetSpec {
        self.binaries = Some(binaries);
        self
    }
}

/// One agent host of a fleet.
#[derive(Clone, Debug)]
pub struct AgentHost {
    /// `a01`..`aNN`, zero-padded to the width of N (at least 2).
    pub name: String,
    pub socket: SocketAddrV4,
    pub kind: AgentKind,
}

/// A running fleet of agents. Dropping it kills them and removes its directory.
pub struct AgentFleet {
    // Field order is drop order: the agents go before the directory they log into.
    agents: Vec<Agentd>,
    hosts: Vec<AgentHost>,
    pki: Pki,
    inventory: PathBuf,
    client_home: PathBuf,
    volley: PathBuf,
    dir: TempDir,
}

impl AgentFleet {
    /// A fleet of `normal` ordinary agents.
    pub fn start(normal: usize) -> AgentFleet {
        AgentFleet::with_spec(AgentFleetSpec::new(normal))
    }

    pub fn with_spec(spec: AgentFleetSpec) -> AgentFleet {
        let binaries = spec.binaries.clone().unwrap_or_else(Binaries::debug);
        let dir = tempfile::Builder::new()
            .prefix("volley-agents-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create the agent fleet's directory: {e}"));
        let root = dir.path().to_path_buf();
        let client_home = make_dir(&root.join("client-home"));
        let configs = make_dir(&root.join("agents"));
        // Agents that are not isolated may push only here, never into the real /etc.
        let push_root = match &spec.isolation {
            Some(isolation) => isolation.mount_point.clone(),
            None => make_dir(&root.join("push-root")),
        };

        let hosts = plan_hosts(&spec);
        let pki = Pki::init(
            &binaries.volley,
            &client_home,
            &root.join("pki"),
            CONTROLLER_IDENTITY,
        );
        let issued: Vec<(String, Option<Ipv4Addr>)> = hosts
            .iter()
            .map(|host| match host.kind {
                AgentKind::Normal => (host.name.clone(), Some(*host.socket.ip())),
                AgentKind::NamesAnotherHost => (certificate_name(host), None),
            })
            .collect();
        let issued: Vec<(&str, Option<Ipv4Addr>)> = issued
            .iter()
            .map(|(name, address)| (name.as_str(), *address))
            .collect();
        pki.issue(&issued);

        let mut agents: Vec<Agentd> = hosts
            .iter()
            .map(|host| {
                let name = certificate_name(host);
                let config = configs.join(format!("{}.toml", host.name));
                let text = config_text(&AgentConfig {
                    listen: host.socket,
                    certificate: &pki.certificate(&name),
                    key: &pki.key(&name),
                    ca: &pki.ca(),
                    allowed_controllers: &spec.allowed_controllers,
                    push_roots: Some(&push_root),
                }) + &spec.extra_config;
                write(&config, &text);
                let home = make_dir(&root.join("agent-home").join(&host.name));
                Agentd::launch(AgentLaunch {
                    nofile: spec.open_file_limit,
                    netns: spec.netns.clone(),
                    isolation: spec.isolation.clone(),
                    inherited: spec.inherited.clone(),
                    ..AgentLaunch::new(&binaries.agent, &config, host.socket, &home)
                })
            })
            .collect();
        let deadline = ready_deadline(hosts.len());
        for agent in &mut agents {
            agent.wait_until_ready(deadline);
        }

        let inventory = root.join("inventory.toml");
        let entries: Vec<InventoryHost> = hosts.iter().map(InventoryHost::agent).collect();
        write(&inventory, &inventory_text(&entries));
        AgentFleet {
            agents,
            hosts,
            pki,
            inventory,
            client_home,
            volley: binaries.volley,
            dir,
        }
    }

    pub fn hosts(&self) -> &[AgentHost] {
        &self.hosts
    }

    /// The host called `name`; panics if there is none.
    pub fn host(&self, name: &str) -> &AgentHost {
        &self.hosts[self.index(name)]
    }

    /// The one host of `kind`; panics unless there is exactly one.
    pub fn only(&self, kind: AgentKind) -> &AgentHost {
        let hosts: Vec<&AgentHost> = self.hosts.iter().filter(|h| h.kind == kind).collect();
        match hosts[..] {
            [host] => host,
            _ => panic!("expected one {kind:?} agent, the fleet has {}", hosts.len()),
        }
    }

    /// The agent process of host `name`.
    pub fn agent(&self, name: &str) -> &Agentd {
        &self.agents[self.index(name)]
    }

    /// SIGKILLs the agent of host `name`, as a crash would end it.
    pub fn kill(&mut self, name: &str) {
        let index = self.index(name);
        self.agents[index].kill();
    }

    /// Kills the agent of host `name` and starts a new one with the same configuration: it
    /// knows nothing of the executions of the one before.
    pub fn restart(&mut self, name: &str) {
        let index = self.index(name);
        self.agents[index].restart(ready_deadline(1));
    }

    /// Every agent's process, in host order.
    pub fn agents(&self) -> &[Agentd] {
        &self.agents
    }

    /// The files of host `name` of an isolated fleet ([`AgentFleetSpec::isolated`]), as the
    /// test sees them.
    pub fn files(&self, name: &str) -> HostFiles {
        HostFiles {
            pid: self.agent(name).pid(),
        }
    }

    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The inventory: group `all`, and per host its `address` and `agent_port`.
    pub fn inventory(&self) -> &Path {
        &self.inventory
    }

    /// The fleet's scratch directory; files that tests write belong here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// HOME of every volley the fleet starts: empty.
    pub fn client_home(&self) -> &Path {
        &self.client_home
    }

    /// The volley binary with the fleet's clean environment and no arguments.
    pub fn volley(&self) -> Command {
        volley_command_at(&self.volley, &self.client_home)
    }

    /// `run --inventory INVENTORY --pki PKI`, then `extra`.
    pub fn run_args<S: Into<OsString>>(&self, extra: impl IntoIterator<Item = S>) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "run".into(),
            "--inventory".into(),
            self.inventory.clone().into(),
            "--pki".into(),
            self.pki.dir().into(),
        ];
        args.extend(extra.into_iter().map(Into::into));
        args
    }

    /// Runs volley with `args` to the end, killing it and failing past [`RUN_DEADLINE`].
    pub fn run<S: Into<OsString>>(&self, args: impl IntoIterator<Item = S>) -> ProcessOutput {
        self.spawn(args).finish(RUN_DEADLINE)
    }

    /// Starts volley with `args`, for tests that act while it runs; killed on drop.
    pub fn spawn<S: Into<OsString>>(&self, args: impl IntoIterator<Item = S>) -> RunningProcess {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        RunningProcess::spawn(self.volley().args(args))
    }

    /// Every agent's log, each under its path, shortened, for failure messages.
    pub fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|agent| {
                format!(
                    "--- {} ---\n{}",
                    agent.log_path().display(),
                    shorten(&agent.log())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn index(&self, name: &str) -> usize {
        self.hosts
            .iter()
            .position(|host| host.name == name)
            .unwrap_or_else(|| panic!("the agent fleet has no host {name}"))
    }
}

impl Drop for AgentFleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "agent fleet directory: {}\n{}",
                self.dir.path().display(),
                self.logs()
            );
        }
    }
}

/// When agents started now must be listening.
fn ready_deadline(agents: usize) -> Instant {
    Instant::now() + READY_BASE + READY_PER_AGENT * u32::try_from(agents).unwrap_or(0)
}

/// Names, kinds and sockets: the given addresses first, then a random block of loopback.
fn plan_hosts(spec: &AgentFleetSpec) -> Vec<AgentHost> {
    let mut block = AddressBlock::random();
    let mut given = spec.addresses.iter();
    spec.hosts
        .iter()
        .enumerate()
        .map(|(index, &kind)| {
            let address = given
                .next()
                .copied()
                .unwrap_or_else(|| block.next_address());
            // Inside a namespace of the test's own, the agent's port is free; here the kernel
            // says which one is.
            let port = match spec.netns {
                Some(_) => AGENT_PORT,
                None => free_port(address),
            };
            AgentHost {
                name: host_name(index + 1, spec.hosts.len()),
                socket: SocketAddrV4::new(address, port),
                kind,
            }
        })
        .collect()
}

/// The name on the host's certificate.
fn certificate_name(host: &AgentHost) -> String {
    match host.kind {
        AgentKind::Normal => host.name.clone(),
        AgentKind::NamesAnotherHost => format!("other-{}", host.name),
    }
}

/// `a` and the host's number, zero-padded to the width of the fleet's size (at least 2).
fn host_name(number: usize, fleet_size: usize) -> String {
    let width = fleet_size.to_string().len().max(2);
    format!("a{number:0width$}")
}

fn make_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    path.to_path_buf()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_padded_to_the_width_of_the_fleet() {
        assert_eq!(host_name(1, 1), "a01");
        assert_eq!(host_name(500, 500), "a500");
        assert_eq!(host_name(7, 500), "a007");
    }

    #[test]
    fn given_addresses_come_first() {
        let given = Ipv4Addr::new(127, 0, 0, 1);
        let hosts = plan_hosts(&AgentFleetSpec::new(2).on_addresses([given]));
        assert_eq!(*hosts[0].socket.ip(), given);
        assert_ne!(*hosts[1].socket.ip(), given);
        assert!(hosts[1].socket.ip().is_loopback());
    }
}
