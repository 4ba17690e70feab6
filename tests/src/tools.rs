//! The external programs the fixture drives (sshd, ssh, ssh-keygen, pgrep, kill, sudo,
//! systemd-nspawn, nsenter, unshare, ip) and the local user that the fleet's sshd lets in.
//!
//! A missing program is a broken test environment, never a reason to skip a test: every lookup
//! here panics with what to install.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where Debian's openssh-server installs the daemon. sshd re-executes itself, so it needs an
/// absolute path anyway.
const SSHD: &str = "/usr/sbin/sshd";

/// The directory sshd uses for privilege separation when it runs as root.
const PRIVSEP_DIR: &str = "/run/sshd";

pub fn sshd() -> PathBuf {
    let path = Path::new(SSHD);
    assert!(
        path.is_file(),
        "{SSHD} is missing: these tests need a real OpenSSH server; install it with \
         `apt-get install -y openssh-server`"
    );
    ensure_privsep_dir();
    path.to_path_buf()
}

pub fn ssh_keygen() -> PathBuf {
    on_path("ssh-keygen", "apt-get install -y openssh-client")
}

pub fn ssh() -> PathBuf {
    on_path("ssh", "apt-get install -y openssh-client")
}

pub fn ip() -> PathBuf {
    on_path(
        "ip",
        "apt-get install -y iproute2 (tests/need-netns.sh does)",
    )
}

pub fn pgrep() -> PathBuf {
    on_path("pgrep", "apt-get install -y procps")
}

pub fn kill() -> PathBuf {
    on_path("kill", "apt-get install -y procps")
}

pub fn unshare() -> PathBuf {
    on_path("unshare", "apt-get install -y util-linux")
}

/// systemd-nspawn, which boots the containers of the systemd tests (`tests/need-systemd.sh`
/// installs it).
pub fn systemd_nspawn() -> PathBuf {
    on_path(
        "systemd-nspawn",
        "apt-get install -y systemd systemd-container (tests/need-systemd.sh does)",
    )
}

/// nsenter, for looking inside a container or an isolated host's mount namespace.
pub fn nsenter() -> PathBuf {
    on_path("nsenter", "apt-get install -y util-linux")
}

/// sudo, for the `--become` tests (`tests/need-sudo.sh` installs it).
pub fn sudo() -> PathBuf {
    on_path("sudo", "apt-get install -y sudo (tests/need-sudo.sh does)")
}

/// The user the fleet logs in as: sshd started without root can only let its own user in, and
/// as root (here and in CI) this is `root`.
pub fn login_user() -> &'static str {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        let output = Command::new("id")
            .arg("-un")
            .output()
            .unwrap_or_else(|e| panic!("cannot run `id -un` to learn the local user: {e}"));
        assert!(output.status.success(), "`id -un` failed: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    })
}

/// Runs a short helper program to completion and returns its stdout, panicking with its stderr
/// if it fails. For ssh-keygen and friends, which finish in milliseconds.
pub fn run_tool(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `program` on PATH; panics with `install`, what to do, when it is not there.
pub fn on_path(program: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` is not on PATH: these tests need it; install it with `{install}`")
        })
}

/// sshd running as root refuses to start without its privilege separation directory, which a
/// fresh container lacks. Without root, sshd does not need it and we cannot create it anyway.
fn ensure_privsep_dir() {
    let dir = Path::new(PRIVSEP_DIR);
    if dir.is_dir() {
        return;
    }
    if let Err(e) = std::fs::create_dir_all(dir)
        && login_user() == "root"
    {
        panic!(
            "sshd needs {PRIVSEP_DIR} and it cannot be created ({e}): run `mkdir -p {PRIVSEP_DIR}`"
        );
    }
}
