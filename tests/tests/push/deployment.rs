//! The fixture of these tests: isolated SSH hosts (`h01`...) and isolated agents (`a01`...)
//! in one inventory (group `all`), every host with its own tmpfs at one shared path, the
//! "server root" that pushes write under. Agents allow pushes only there (`push_roots`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use volley_tests::hybrid::{InventoryHost, inventory_text};
use volley_tests::isolation::{HostFiles, Isolation};
use volley_tests::volley::RUN_DEADLINE;
use volley_tests::{
    AgentFleet, AgentFleetSpec, FleetSpec, HostRecord, ProcessOutput, RunningProcess, SshFleet,
};

pub struct Deployment {
    // Field order is drop order: the hosts go before the directory their tmpfs hides.
    pub ssh: SshFleet,
    pub agents: AgentFleet,
    pub inventory: PathBuf,
    root: PathBuf,
    _mount_point: tempfile::TempDir,
}

impl Deployment {
    /// `ssh` SSH hosts and `agents` agent hosts, each with a tmpfs of 512 MiB at most.
    pub fn start(ssh: usize, agents: usize) -> Deployment {
        Deployment::with_specs(FleetSpec::new(ssh), AgentFleetSpec::new(agents))
    }

    /// The SSH hosts of `ssh` and the agent hosts of `agents`, each isolated.
    pub fn with_specs(ssh: FleetSpec, agents: AgentFleetSpec) -> Deployment {
        let mount_point = tempfile::Builder::new()
            .prefix("volley-push-root-")
            .tempdir()
            .expect("a directory for the hosts' file systems");
        let root = mount_point.path().to_path_buf();
        let isolation = Isolation {
            mount_point: root.clone(),
            size: "512m".to_string(),
        };
        let ssh = SshFleet::with_spec(ssh.isolated(isolation.clone()));
        let agents = AgentFleet::with_spec(agents.isolated(isolation));
        let mut entries: Vec<InventoryHost> = ssh.hosts().iter().map(InventoryHost::ssh).collect();
        entries.extend(agents.hosts().iter().map(InventoryHost::agent));
        let inventory = ssh.dir().join("deployment.toml");
        std::fs::write(&inventory, inventory_text(&entries)).expect("write the inventory");
        Deployment {
            ssh,
            agents,
            inventory,
            root,
            _mount_point: mount_point,
        }
    }

    /// Every host, SSH hosts first.
    pub fn hosts(&self) -> Vec<String> {
        let ssh = self.ssh.hosts().iter().map(|host| host.name.clone());
        ssh.chain(self.agents.hosts().iter().map(|host| host.name.clone()))
            .collect()
    }

    /// The transport a host is reached by.
    pub fn transport(host: &str) -> &'static str {
        if host.starts_with('a') {
            "agent"
        } else {
            "ssh"
        }
    }

    /// A path under the hosts' own file system, as the hosts see it.
    pub fn remote(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The files of `host`, as the test sees them.
    pub fn files(&self, host: &str) -> HostFiles {
        match Deployment::transport(host) {
            "agent" => self.agents.files(host),
            _ => self.ssh.files(host),
        }
    }

    /// A local file to push, in the test's scratch space.
    pub fn local(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.ssh.dir().join("local").join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write a local file");
        path
    }

    /// `volley SUBCOMMAND` with the flags that reach every host, then `extra`.
    pub fn args<S: Into<OsString>>(
        &self,
        subcommand: &str,
        extra: impl IntoIterator<Item = S>,
    ) -> Vec<OsString> {
        self.args_as(self.ssh.user(), subcommand, extra)
    }

    /// As [`Deployment::args`], logging in as `user`.
    pub fn args_as<S: Into<OsString>>(
        &self,
        user: &str,
        subcommand: &str,
        extra: impl IntoIterator<Item = S>,
    ) -> Vec<OsString> {
        let flags = volley_tests::RunFlags {
            inventory: self.inventory.clone(),
            pki: Some(self.agents.pki().dir().to_path_buf()),
            user: user.to_string(),
            ..self.ssh.flags()
        };
        flags.args_of(subcommand, extra)
    }

    pub fn volley<S: Into<OsString>>(
        &self,
        subcommand: &str,
        extra: impl IntoIterator<Item = S>,
    ) -> ProcessOutput {
        self.spawn(subcommand, extra).finish(RUN_DEADLINE)
    }

    pub fn spawn<S: Into<OsString>>(
        &self,
        subcommand: &str,
        extra: impl IntoIterator<Item = S>,
    ) -> RunningProcess {
        RunningProcess::spawn(self.ssh.volley().args(self.args(subcommand, extra)))
    }

    /// The records of the most recent run's journal.
    fn last_journal(&self) -> Vec<serde_json::Value> {
        let runs = self.ssh.runs_dir();
        let mut journals: Vec<PathBuf> = std::fs::read_dir(&runs)
            .expect("the runs directory")
            .flatten()
            .map(|entry| entry.path())
            .collect();
        journals.sort();
        let last = journals.last().expect("a journal");
        std::fs::read_to_string(last)
            .expect("read the journal")
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON"))
            .collect()
    }

    /// The host records of the most recent run's journal, by host.
    pub fn journal(&self) -> BTreeMap<String, serde_json::Value> {
        self.last_journal()
            .into_iter()
            .filter(|entry| entry["type"] == "host")
            .map(|entry| (entry["host"].as_str().expect("a host").to_string(), entry))
            .collect()
    }

    /// The header of the most recent run's journal.
    pub fn header(&self) -> serde_json::Value {
        self.last_journal()
            .into_iter()
            .find(|entry| entry["type"] == "header")
            .expect("a header")
    }
}

/// The record of `host`, which must have `outcome` and have gone through its transport.
pub fn record<'a>(
    output: &ProcessOutput,
    records: &'a BTreeMap<String, HostRecord>,
    host: &str,
    outcome: &str,
) -> &'a HostRecord {
    volley_tests::report::expect_outcome_via(
        output,
        records,
        host,
        outcome,
        Deployment::transport(host),
    )
}

/// What `path` holds on a host, as text; `None` when there is no such file.
pub fn text(files: &HostFiles, path: &Path) -> Option<String> {
    files
        .read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}
