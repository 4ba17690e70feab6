//! The battery's fleet and what its tests ask of it: volley run against the containers with the
//! test's inventory, and `systemctl` inside them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use volley_tests::container::Container;
use volley_tests::{ProcessOutput, RunningProcess, SystemdFleet};

pub const UNIT: &str = "volley-agent.service";
pub const HOSTS: [&str; 3] = ["c01", "c02", "c03"];
pub const SUCCEEDED: i32 = 0;
pub const SOME_FAILED: i32 = 1;

/// The fleet, and the inventory that names each host's user.
pub struct Systemd {
    pub fleet: SystemdFleet,
    pub inventory: PathBuf,
}

impl Systemd {
    /// `volley agent ACTION --json` on the fleet, users and `become` from the inventory.
    pub fn agent(&self, action: &str, extra: &[&str]) -> ProcessOutput {
        let mut args: Vec<OsString> = vec!["agent".into(), action.into()];
        args.extend(self.connection());
        args.push("--json".into());
        args.extend(extra.iter().map(OsString::from));
        self.fleet.run(args)
    }

    /// `volley push --json -w @all EXTRA` (EXTRA ends with the files and the destination).
    pub fn push(&self, extra: &[&str]) -> ProcessOutput {
        let mut args: Vec<OsString> = vec!["push".into()];
        args.extend(self.connection());
        args.extend(["--json", "-w", "@all"].map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        self.fleet.run(args)
    }

    /// `volley run --json -g all EXTRA -- COMMAND`.
    pub fn run(&self, extra: &[&str], command: &str) -> ProcessOutput {
        self.run_on("@all", extra, command)
    }

    /// `volley run --json -w TARGETS EXTRA -- COMMAND`.
    pub fn run_on(&self, targets: &str, extra: &[&str], command: &str) -> ProcessOutput {
        self.fleet.run(self.run_args(targets, true, extra, command))
    }

    /// [`Systemd::run_on`] without `--json`: the live `host: line` stream.
    pub fn stream_on(&self, targets: &str, extra: &[&str], command: &str) -> ProcessOutput {
        self.fleet
            .run(self.run_args(targets, false, extra, command))
    }

    /// [`Systemd::run_on`], returning at once.
    pub fn spawn_on(&self, targets: &str, extra: &[&str], command: &str) -> RunningProcess {
        self.fleet
            .spawn(self.run_args(targets, true, extra, command))
    }

    fn run_args(&self, targets: &str, json: bool, extra: &[&str], command: &str) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["run".into()];
        args.extend(self.connection());
        if json {
            args.push("--json".into());
        }
        args.extend(["-w", targets].map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        args.extend(["--".into(), command.into()]);
        args
    }

    /// The fleet's flags with the test's inventory, which names the users.
    fn connection(&self) -> Vec<OsString> {
        let mut flags = self.fleet.flags();
        flags.inventory = self.inventory.clone();
        flags.connection()
    }

    pub fn container(&self, host: &str) -> &Container {
        self.fleet.container(host)
    }

    /// The address and port the agent of `host` listens on.
    pub fn listen(&self, host: &str) -> String {
        let host = self
            .fleet
            .hosts()
            .iter()
            .find(|h| h.name == host)
            .expect("a host of the fleet");
        format!("{}:{}", host.address, host.agent_port)
    }
}

/// `systemctl show` of the agent's unit inside `container`: the properties asked for.
pub fn show(container: &Container, properties: &str) -> BTreeMap<String, String> {
    container
        .check(&format!("systemctl show -p {properties} {UNIT}"))
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

pub fn main_pid(container: &Container) -> String {
    show(container, "MainPID")["MainPID"].clone()
}

/// Polls `systemctl show` until `done` holds, for at most 30 s; returns the last properties.
pub fn wait_for(
    container: &Container,
    properties: &str,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = show(container, properties);
        if done(&shown) || Instant::now() >= deadline {
            return shown;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent's journal in `container`, messages only.
pub fn journal(container: &Container) -> String {
    container.check(&format!("journalctl -u {UNIT} -o cat --no-pager"))
}

/// The commands' units still loaded in `container` after at most `within`: none once every
/// command has ended and systemd has collected them.
pub fn no_command_units_within(container: &Container, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let units =
            container.check("systemctl list-units --all --plain --no-legend 'volley-exec-*'");
        if units.is_empty() || Instant::now() >= deadline {
            return units;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
