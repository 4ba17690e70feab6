//! [`SystemdFleet`]: N hosts that are containers booted with systemd as PID 1 (see
//! [`Container`]), each with its own sshd, host key and loopback address, and the client key,
//! known_hosts and inventory that volley needs to reach them.
//!
//! The containers boot together. Every host has an `agent_port` of its own in the inventory and
//! no `agent_prefix`: `volley agent install` puts the agent where it goes on a real server
//! (`/usr/local/bin`, `/etc/volley`, `/etc/systemd/system`). Root and [`OPERATOR`] (passwordless
//! sudo) can log in with the fleet's client key.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::container::Container;
use crate::inventory::toml_string;
use crate::keys::{KeyPair, known_hosts_line};
use crate::loopback::{AddressBlock, free_port, random_u64};
use crate::process::{ProcessOutput, RunningProcess};
use crate::volley::{RUN_DEADLINE, RunFlags, volley_command};

pub use crate::container::files::OPERATOR;

/// How long the containers get to boot, together, on a loaded 2-core machine.
const BOOT_WITHIN: Duration = Duration::from_secs(120);

/// One host of the fleet.
#[derive(Clone, Debug)]
pub struct SystemdHost {
    /// `c01`, `c02`, ...
    pub name: String,
    pub address: std::net::Ipv4Addr,
    pub agent_port: u16,
}

/// A running fleet of containers. Dropping it stops them and removes its directory.
pub struct SystemdFleet {
    // Field order is drop order: the containers stop before their directory goes.
    containers: Vec<Container>,
    hosts: Vec<SystemdHost>,
    client_key: KeyPair,
    known_hosts: PathBuf,
    inventory: PathBuf,
    client_home: PathBuf,
    dir: TempDir,
}

impl SystemdFleet {
    /// Boots `count` containers and waits until every one's sshd answers. Fails the test,
    /// with the console of the container at fault, when one cannot boot.
    pub fn start(count: usize) -> SystemdFleet {
        let dir = tempfile::Builder::new()
            .prefix("volley-systemd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create the fleet's directory: {e}"));
        let root = dir.path();
        let client_home = root.join("client-home");
        std::fs::create_dir_all(client_home.join(".ssh"))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", client_home.display()));
        let client_key = KeyPair::generate(&root.join("client"), None);
        let authorized = format!("{}\n", client_key.public());

        // Machine names are the containers' host names, unique across concurrent test runs.
        let run = format!("{:04x}", random_u64() & 0xffff);
        let mut block = AddressBlock::random();
        let mut hosts = Vec::new();
        let mut containers = Vec::new();
        for number in 1..=count {
            let name = format!("c{number:02}");
            let sshd = block.next_free_socket();
            let container_dir = root.join(&name);
            std::fs::create_dir_all(&container_dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", container_dir.display()));
            let machine = format!("volley-{run}-{name}");
            containers.push(Container::start(
                &machine,
                &container_dir,
                sshd,
                &authorized,
            ));
            hosts.push(SystemdHost {
                agent_port: free_port(*sshd.ip()),
                address: *sshd.ip(),
                name,
            });
        }
        for container in &mut containers {
            container.wait_until_ready(BOOT_WITHIN);
        }

        let known_hosts = root.join("known_hosts");
        let lines: String = containers
            .iter()
            .map(|container| known_hosts_line(container.sshd(), container.host_key()) + "\n")
            .collect();
        write(&known_hosts, &lines);
        let inventory = root.join("inventory.toml");
        write(&inventory, &inventory_toml(&hosts, &containers));
        SystemdFleet {
            containers,
            hosts,
            client_key,
            known_hosts,
            inventory,
            client_home,
            dir,
        }
    }

    pub fn hosts(&self) -> &[SystemdHost] {
        &self.hosts
    }

    /// The container of host `name`; panics if there is none.
    pub fn container(&self, name: &str) -> &Container {
        let index = self
            .hosts
            .iter()
            .position(|host| host.name == name)
            .unwrap_or_else(|| panic!("the fleet has no host {name}"));
        &self.containers[index]
    }

    /// The fleet's scratch directory; files that tests write belong here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn inventory(&self) -> &Path {
        &self.inventory
    }

    /// The flags that point volley at the fleet, as root; tests change `user` or the inventory.
    pub fn flags(&self) -> RunFlags {
        RunFlags {
            inventory: self.inventory.clone(),
            known_hosts: self.known_hosts.clone(),
            identity: self.client_key.path().to_path_buf(),
            user: "root".to_string(),
            pki: None,
        }
    }

    /// Runs volley with `args` in the fleet's clean environment (HOME is the fleet's), killing
    /// it and failing past [`RUN_DEADLINE`].
    pub fn run<S: Into<OsString>>(&self, args: impl IntoIterator<Item = S>) -> ProcessOutput {
        self.spawn(args).finish(RUN_DEADLINE)
    }

    /// Starts volley with `args` in the fleet's clean environment, and returns at once.
    pub fn spawn<S: Into<OsString>>(&self, args: impl IntoIterator<Item = S>) -> RunningProcess {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        RunningProcess::spawn(volley_command(&self.client_home).args(args))
    }
}

/// One `[hosts.NAME]` table per host, with its address, sshd port and agent port, and a group
/// `all`.
fn inventory_toml(hosts: &[SystemdHost], containers: &[Container]) -> String {
    let names: Vec<String> = hosts.iter().map(|host| toml_string(&host.name)).collect();
    let mut text = format!(
        "# Written by the volley-tests systemd fleet.\n\n[groups.all]\nhosts = [{}]\n",
        names.join(", ")
    );
    for (host, container) in hosts.iter().zip(containers) {
        let _ = write!(
            text,
            "\n[hosts.{}]\naddress = {}\nport = {}\nagent_port = {}\n",
            host.name,
            toml_string(&host.address.to_string()),
            container.sshd().port(),
            host.agent_port
        );
    }
    text
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
