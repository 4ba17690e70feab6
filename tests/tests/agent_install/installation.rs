//! The fixture of these tests: an [`SshFleet`] whose inventory gives every host its own
//! `agent_prefix` (a directory in the fleet's scratch space) and `agent_port`, and a PKI in the
//! controller's HOME. Agents left running by a failing test are killed when it is dropped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use volley_tests::inventory::with_host_settings;
use volley_tests::loopback::free_port;
use volley_tests::remote::{SweepOnDrop, processes};
use volley_tests::{HostRecord, ProcessOutput, SshFleet};

pub struct Installation {
    // Dropped first: the agents die before the fleet's directory goes.
    _sweeps: Vec<SweepOnDrop>,
    pub inventory: PathBuf,
    pub prefixes: BTreeMap<String, PathBuf>,
    pub ports: BTreeMap<String, u16>,
    /// Everything every volley printed, to look for private keys in.
    pub printed: std::cell::RefCell<String>,
    pub fleet: SshFleet,
}

impl Installation {
    /// The fleet with a prefix and a port per host; the hosts in `broken` get a prefix that is
    /// a regular file, so that nothing can be installed under it.
    pub fn new(fleet: SshFleet, broken: &[&str]) -> Installation {
        let mut text = std::fs::read_to_string(fleet.inventory()).expect("the fleet's inventory");
        let mut prefixes = BTreeMap::new();
        let mut ports = BTreeMap::new();
        let mut sweeps = Vec::new();
        for host in fleet.hosts() {
            let prefix = fleet.dir().join("hosts").join(&host.name);
            if broken.contains(&host.name.as_str()) {
                std::fs::create_dir_all(prefix.parent().expect("a parent")).expect("mkdir");
                std::fs::write(&prefix, "not a directory\n").expect("write the broken prefix");
            }
            let port = free_port(*host.socket.ip());
            text = with_host_settings(
                &text,
                &host.name,
                &format!(
                    "agent_port = {port}\nagent_prefix = \"{}\"\n",
                    prefix.display()
                ),
            );
            sweeps.push(SweepOnDrop(agent_command_line(&prefix)));
            prefixes.insert(host.name.clone(), prefix);
            ports.insert(host.name.clone(), port);
        }
        let inventory = fleet.dir().join("agents.toml");
        std::fs::write(&inventory, text).expect("write the inventory");
        let installation = Installation {
            _sweeps: sweeps,
            inventory,
            prefixes,
            ports,
            printed: std::cell::RefCell::new(String::new()),
            fleet,
        };
        installation.volley(["pki", "init"]).assert_code(0);
        installation
    }

    /// Runs volley with `args` in the fleet's clean environment, keeping what it printed.
    pub fn volley<S: Into<OsString>>(&self, args: impl IntoIterator<Item = S>) -> ProcessOutput {
        let output = self.fleet.run(args);
        let mut printed = self.printed.borrow_mut();
        printed.push_str(&output.stdout);
        printed.push_str(&output.stderr);
        output
    }

    /// `volley agent ACTION` on the fleet's hosts with `--json`, then `extra`.
    pub fn agent(&self, action: &str, extra: &[&str]) -> ProcessOutput {
        self.agent_as(&self.fleet.flags().user, action, extra)
    }

    /// [`Installation::agent`], logged in as `user`.
    pub fn agent_as(&self, user: &str, action: &str, extra: &[&str]) -> ProcessOutput {
        let mut args: Vec<OsString> = vec!["agent".into(), action.into()];
        args.extend(self.connection_args(user));
        args.push("--json".into());
        args.extend(extra.iter().map(OsString::from));
        self.volley(args)
    }

    /// `volley run --json -g all` with `extra` before the command.
    pub fn run(&self, extra: &[&str], command: &str) -> ProcessOutput {
        let mut args: Vec<OsString> = vec!["run".into()];
        args.extend(self.connection_args(&self.fleet.flags().user));
        args.extend(["--json", "-g", "all"].map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        args.extend(["--".into(), command.into()]);
        self.volley(args)
    }

    fn connection_args(&self, user: &str) -> Vec<OsString> {
        let mut flags = self.fleet.flags();
        flags.inventory = self.inventory.clone();
        let mut args = flags.connection();
        args.extend(["-l".into(), user.into()]);
        args
    }

    pub fn prefix(&self, host: &str) -> &Path {
        &self.prefixes[host]
    }

    /// A file of the host's installation, such as `etc/volley/agent.key`.
    pub fn file(&self, host: &str, relative: &str) -> PathBuf {
        self.prefix(host).join(relative)
    }

    /// The pids of the host's agent (the fallback starts it with this exact command line).
    pub fn agent_pids(&self, host: &str) -> Vec<u32> {
        processes(&agent_command_line(self.prefix(host)))
    }

    /// The base64 lines of the host's private key, each long enough to be unmistakable.
    pub fn key_lines(&self, host: &str) -> Vec<String> {
        let key = std::fs::read_to_string(self.file(host, "etc/volley/agent.key"))
            .unwrap_or_else(|e| panic!("{host}: cannot read the agent key: {e}"));
        assert!(key.contains("PRIVATE KEY"), "{host}: {key}");
        key.lines()
            .filter(|line| !line.starts_with("-----") && line.len() >= 40)
            .map(str::to_string)
            .collect()
    }
}

/// How the fallback supervisor starts the agent of the host with `prefix`.
pub fn agent_command_line(prefix: &Path) -> String {
    format!(
        "{0}/usr/local/bin/volley-agent --config {0}/etc/volley/agent.toml",
        prefix.display()
    )
}

/// Every file (not directory) under `dir`, recursively; nothing if `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => found.extend(files_under(&path)),
            _ => found.push(path),
        }
    }
    found
}

/// The record of `host`; fails with the whole output when there is none.
pub fn record<'a>(
    output: &ProcessOutput,
    records: &'a BTreeMap<String, HostRecord>,
    host: &str,
) -> &'a HostRecord {
    records
        .get(host)
        .unwrap_or_else(|| panic!("no record for {host}\n{}", output.describe()))
}
