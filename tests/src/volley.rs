//! Running the volley binary against a fleet: where the binary is, the clean environment it runs
//! in, the flags that point it at the fleet, and waiting for it with a deadline.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::fleet::SshFleet;
use crate::process::{ProcessOutput, RunningProcess};

/// The longest any single run may take before the test kills it and fails.
pub const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// `<target dir>/debug/volley`, next to the test binary (which runs from `target/debug/deps/`)
/// or under `CARGO_TARGET_DIR`. Panics with what to build if it is missing.
pub fn volley_binary() -> PathBuf {
    debug_binary("volley", "volley")
}

/// `<target dir>/debug/volley-agent`, found like [`volley_binary`]. Panics with what to build if
/// it is missing.
pub fn volley_agent_binary() -> PathBuf {
    debug_binary("volley-agent", "volley-agent")
}

/// The binary `name` of the workspace package `package`, built in the debug profile.
fn debug_binary(name: &str, package: &str) -> PathBuf {
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            // A relative target dir is relative to where cargo ran: the workspace root.
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            workspace.join(dir)
        }
        None => {
            let exe = std::env::current_exe()
                .unwrap_or_else(|e| panic!("cannot find the test binary's own path: {e}"));
            exe.ancestors()
                .nth(3)
                .unwrap_or_else(|| panic!("{} is not under <target>/debug/deps", exe.display()))
                .to_path_buf()
        }
    };
    let binary = target_dir.join("debug").join(name);
    assert!(
        binary.is_file(),
        "the {name} binary is missing at {}: build it first: cargo build -p {package}",
        binary.display()
    );
    binary
}

/// A volley command that can see nothing of the real user: HOME is `home`, no agent, no
/// colour, no VOLLEY_* settings from the calling environment, and run journals under
/// `home/.local/state` (see [`SshFleet::runs_dir`]).
pub fn volley_command(home: &Path) -> Command {
    volley_command_at(&volley_binary(), home)
}

/// [`volley_command`] with the volley binary at `binary` (a release build, for benchmarks).
pub fn volley_command_at(binary: &Path, home: &Path) -> Command {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VOLLEY_") {
            command.env_remove(name);
        }
    }
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("NO_COLOR", "1")
        .env_remove("XDG_STATE_HOME")
        .env_remove("SSH_AUTH_SOCK");
    command
}

/// The flags of `volley run` that point it at a fleet. Tests change a field to run with
/// another known_hosts file or identity, then add their own arguments.
#[derive(Clone, Debug)]
pub struct RunFlags {
    pub inventory: PathBuf,
    pub known_hosts: PathBuf,
    pub identity: PathBuf,
    pub user: String,
    /// The PKI directory for the agent transport; `None` leaves `--pki` out.
    pub pki: Option<PathBuf>,
}

impl RunFlags {
    /// `run --inventory I --known-hosts K -i KEY -l USER [--pki DIR]`, then `extra`.
    pub fn args<S: Into<OsString>>(&self, extra: impl IntoIterator<Item = S>) -> Vec<OsString> {
        self.args_of("run", extra)
    }

    /// As [`RunFlags::args`], for another subcommand that takes the same flags (`push`,
    /// `fetch`).
    pub fn args_of<S: Into<OsString>>(
        &self,
        subcommand: &str,
        extra: impl IntoIterator<Item = S>,
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![subcommand.into()];
        args.extend(self.connection());
        args.extend(["-l".into(), self.user.clone().into()]);
        if let Some(pki) = &self.pki {
            args.extend(["--pki".into(), pki.clone().into()]);
        }
        args.extend(extra.into_iter().map(Into::into));
        args
    }

    /// `--inventory I --known-hosts K -i KEY`, for any subcommand; the user then comes from
    /// the inventory unless the caller adds `-l`.
    pub fn connection(&self) -> Vec<OsString> {
        vec![
            "--inventory".into(),
            self.inventory.clone().into(),
            "--known-hosts".into(),
            self.known_hosts.clone().into(),
            "-i".into(),
            self.identity.clone().into(),
        ]
    }
}

impl SshFleet {
    /// The volley binary with the fleet's clean environment and no arguments.
    pub fn volley(&self) -> Command {
        volley_command(self.client_home())
    }

    /// Where the volley runs of this fleet keep their journals.
    pub fn runs_dir(&self) -> PathBuf {
        self.client_home().join(".local/state/volley/runs")
    }

    /// The flags that point `volley run` at this fleet, ready to change.
    pub fn flags(&self) -> RunFlags {
        RunFlags {
            inventory: self.inventory().to_path_buf(),
            known_hosts: self.known_hosts().to_path_buf(),
            identity: self.client_key().path().to_path_buf(),
            user: self.user().to_string(),
            pki: None,
        }
    }

    /// `run --inventory ... --known-hosts ... -i ... -l USER`, for tests to extend.
    pub fn run_args(&self) -> Vec<OsString> {
        self.flags().args(Vec::<OsString>::new())
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
}
