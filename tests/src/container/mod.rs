//! [`Container`]: a test host managed by systemd. This machine's own OS is booted by
//! `systemd-nspawn -D / --volatile=yes -b --register=no --keep-unit -- systemd.firstboot=off`,
//! with systemd as PID 1, and the container's own sshd listens on a loopback address of its own.
//!
//! The container shares this machine's network namespace (its sshd and agent listen on their own
//! 127.x addresses; units that would listen on `*` or reach beyond loopback are masked, see
//! [`files::MASKED`]) and its `/usr` (read-only). Its `/` is a tmpfs, so what it needs comes in
//! by bind mounts of directories of the test (see [`files`]): `/etc/systemd/system` and
//! `/usr/local` writable, and read-only the test's sshd files, a machine id, and this machine's
//! `/etc/pam.d` and `/etc/security` (sudo opens a PAM session).
//!
//! Teardown needs no `machinectl` (`--register=no`): dropping a container sends SIGTERM to its
//! nspawn, which shuts the container down in order (SIGRTMIN+3 to its systemd); past a deadline
//! its PID 1 is killed, which kills every process of its PID namespace. Then its cgroups
//! ([`cgroup`]) and nspawn's runtime directories go; its files go with the caller's directory.
//! A container that cannot boot fails the test with its console output: it is never skipped.

pub mod cgroup;
pub mod files;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::keys::KeyPair;
use crate::process::{ProcessOutput, RunningProcess};
use crate::sshd::read_banner;
use crate::tools;

use self::cgroup::Cgroups;

/// How long an orderly shutdown may take before the container is killed.
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(20);
/// How long a command run inside with [`Container::exec`] may take.
const EXEC_WITHIN: Duration = Duration::from_secs(60);
/// PATH of the commands run inside: the container's own, not the test's.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A booting or running container; dropping it stops it.
#[derive(Debug)]
pub struct Container {
    name: String,
    sshd: SocketAddrV4,
    dir: PathBuf,
    host_key: KeyPair,
    nspawn: Option<Child>,
    /// The container's PID 1 (systemd), as this machine sees it, once booted.
    leader: Option<u32>,
    cgroups: Cgroups,
}

impl Container {
    /// Writes the container's files under `dir` (which must exist and outlive it), with
    /// `authorized_keys` for its sshd on `sshd`, and starts booting it. Returns at once, so that
    /// several containers boot together; [`Container::wait_until_ready`] waits for one.
    pub fn start(name: &str, dir: &Path, sshd: SocketAddrV4, authorized_keys: &str) -> Container {
        files::write(dir, sshd);
        let test = dir.join("test");
        let host_key = KeyPair::generate(&test.join("host_ed25519"), None);
        std::fs::write(test.join("authorized_keys"), authorized_keys)
            .unwrap_or_else(|e| panic!("cannot write {}/authorized_keys: {e}", test.display()));
        for shared in ["/etc/pam.d", "/etc/security"] {
            assert!(
                Path::new(shared).is_dir(),
                "{shared} is missing: the containers take it from this machine for sudo"
            );
        }
        let cgroups = Cgroups::create(name);
        let console = std::fs::File::create(dir.join("console.log"))
            .unwrap_or_else(|e| panic!("cannot create {}/console.log: {e}", dir.display()));
        let console_err = console
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot share the console log: {e}"));
        let procs = cgroups.procs_files();
        let bind = |host: &Path, inside: &str, writable: bool| {
            let flag = if writable { "--bind" } else { "--bind-ro" };
            format!("{flag}={}:{inside}", host.display())
        };
        // The shell moves itself into the container's cgroups, then becomes nspawn.
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(
                r#"n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 1; shift; n=$((n - 1)); done
exec "$@""#,
            )
            .arg("volley-container")
            .arg(procs.len().to_string())
            .args(&procs)
            .arg(tools::systemd_nspawn())
            .args([
                "-D",
                "/",
                "--volatile=yes",
                "-b",
                "--register=no",
                "--keep-unit",
            ])
            .arg(format!("--machine={name}"))
            .arg(bind(&dir.join("system"), "/etc/systemd/system", true))
            .arg(bind(&dir.join("usr-local"), "/usr/local", true))
            .arg(bind(&test, files::TEST_DIR, false))
            .arg(bind(&dir.join("machine-id"), "/etc/machine-id", false))
            .args(["--bind-ro=/etc/pam.d", "--bind-ro=/etc/security"])
            .args(["--", "systemd.firstboot=off"])
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err);
        let nspawn = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start systemd-nspawn: {e}"));
        Container {
            name: name.to_string(),
            sshd,
            dir: dir.to_path_buf(),
            host_key,
            nspawn: Some(nspawn),
            leader: None,
            cgroups,
        }
    }

    /// Waits until the container's sshd answers (it starts once the prepare script has run) and
    /// systemd has reached multi-user.target, for at most `within`. Fails the test with the
    /// console output if nspawn exits first or time runs out.
    pub fn wait_until_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.nspawn.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "container {} could not boot: systemd-nspawn exited with {status}; its \
                     console:\n{}",
                    self.name,
                    self.console()
                );
            }
            match read_banner(self.sshd) {
                Ok(banner) if banner.starts_with("SSH-2.0-") => break,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                result => panic!(
                    "container {}: its sshd on {} did not answer within {within:?} ({result:?}); \
                     its console:\n{}",
                    self.name,
                    self.sshd,
                    self.console()
                ),
            }
        }
        let leader = self.find_leader().unwrap_or_else(|| {
            panic!(
                "container {} answers, but its PID 1 is not systemd; its console:\n{}",
                self.name,
                self.console()
            )
        });
        self.leader = Some(leader);
        // sshd answers before the boot is over (logind, for one, may still be starting): wait
        // for multi-user.target too, which the tests take for granted.
        loop {
            let target = self.exec("systemctl is-active multi-user.target");
            if target.code() == Some(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "container {}: multi-user.target not reached within {within:?}\n{}\nits \
                 console:\n{}",
                self.name,
                target.describe(),
                self.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sshd(&self) -> SocketAddrV4 {
        self.sshd
    }

    /// The key the container's sshd presents.
    pub fn host_key(&self) -> &KeyPair {
        &self.host_key
    }

    /// The container's `/etc/systemd/system`, as this machine sees it.
    pub fn systemd_dir(&self) -> PathBuf {
        self.dir.join("system")
    }

    /// The container's `/usr/local`, as this machine sees it.
    pub fn usr_local(&self) -> PathBuf {
        self.dir.join("usr-local")
    }

    /// Everything the container printed on its console so far (systemd's boot messages).
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log"))
            .unwrap_or_else(|e| format!("(no console log: {e})"))
    }

    /// Runs `script` with `/bin/sh` as root inside the container (all its namespaces, a clean
    /// environment), to look at what a test did there.
    pub fn exec(&self, script: &str) -> ProcessOutput {
        let leader = self
            .leader
            .unwrap_or_else(|| panic!("container {} has not booted yet", self.name));
        let mut nsenter = Command::new(tools::nsenter());
        nsenter
            .arg(format!("--target={leader}"))
            .args(["--all", "--", "env", "-i"])
            .arg(format!("PATH={PATH}"))
            .args(["LANG=C.UTF-8", "/bin/sh", "-c", script]);
        RunningProcess::spawn(&mut nsenter).finish(EXEC_WITHIN)
    }

    /// [`Container::exec`] that must succeed; returns its stdout, trimmed.
    pub fn check(&self, script: &str) -> String {
        let output = self.exec(script);
        assert_eq!(
            output.code(),
            Some(0),
            "in container {}: `{script}` failed\n{}",
            self.name,
            output.describe()
        );
        output.stdout.trim().to_string()
    }

    /// The container's PID 1: the child of nspawn, which must be systemd.
    fn find_leader(&self) -> Option<u32> {
        children(self.nspawn.as_ref()?.id())
            .into_iter()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "systemd")
            })
    }

    /// Shuts the container down (in order if it can), then removes what nspawn left outside
    /// the caller's directory.
    fn stop(&mut self) {
        if let Some(mut nspawn) = self.nspawn.take() {
            if matches!(nspawn.try_wait(), Ok(None)) {
                let _ = Command::new(tools::kill())
                    .args(["-s", "TERM"])
                    .arg(nspawn.id().to_string())
                    .output();
                let deadline = Instant::now() + SHUTDOWN_WITHIN;
                while matches!(nspawn.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if matches!(nspawn.try_wait(), Ok(None)) {
                    eprintln!("container {}: no orderly shutdown; killing it", self.name);
                    // Killing PID 1 of a PID namespace kills everything in it.
                    let leader = self
                        .leader
                        .or_else(|| children(nspawn.id()).first().copied());
                    if let Some(leader) = leader {
                        let _ = Command::new(tools::kill())
                            .args(["-s", "KILL"])
                            .arg(leader.to_string())
                            .output();
                    }
                    let _ = nspawn.kill();
                }
            }
            let _ = nspawn.wait();
        }
        if let Err(problem) = self.cgroups.remove(Duration::from_secs(10)) {
            eprintln!("container {}: {problem}", self.name);
        }
        // nspawn keeps per-machine directories under /run/systemd/nspawn/ (mount propagation),
        // and cannot always remove them itself.
        if let Ok(kinds) = std::fs::read_dir("/run/systemd/nspawn") {
            for kind in kinds.flatten() {
                let ours = kind.path().join(&self.name);
                if ours.exists() {
                    let _ = std::fs::remove_dir_all(&ours);
                }
            }
        }
    }
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- console of container {} ---\n{}",
                self.name,
                crate::process::shorten(&self.console())
            );
        }
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopback::AddressBlock;

    /// nspawn refuses the machine name and exits at once: the wait must fail loudly with why,
    /// never return as if the host were there.
    #[test]
    #[should_panic(expected = "could not boot: systemd-nspawn exited with exit status: 1")]
    fn a_container_that_cannot_boot_fails_the_test() {
        let dir = tempfile::tempdir().unwrap();
        let sshd = AddressBlock::random().next_free_socket();
        let mut container = Container::start("not a machine name!", dir.path(), sshd, "");
        container.wait_until_ready(Duration::from_secs(60));
    }
}
