//! Hosts that each have their own files. Every host of a fleet runs on this one machine, so a
//! push to `/srv/app.conf` on ten SSH hosts would write one file ten times. An isolated host's
//! server (its own sshd, or its agent) starts instead in a private mount namespace of its own,
//! with a fresh tmpfs mounted at a path that every host of the test shares ([`Isolation`]): the
//! same remote path is then a different file on every host, as on a real fleet, and nothing a
//! test writes there touches the real file system.
//!
//! The test sees a host's files through `/proc/PID/root` of its server ([`HostFiles`]) and can
//! mount more in that namespace (a small tmpfs to fill, a read-only bind). Everything mounted
//! there vanishes with the server's processes: no cleanup can be forgotten, even by a test that
//! panics. Needs root and util-linux's `unshare` and `nsenter`, as CI has.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools;

/// What each isolated host gets: a tmpfs of `size` at `mount_point`.
#[derive(Clone, Debug)]
pub struct Isolation {
    /// An empty directory outside every namespace; inside each, the host's own tmpfs.
    pub mount_point: PathBuf,
    /// tmpfs's `size=` option, such as `512m`: a cap, not an allocation.
    pub size: String,
}

impl Isolation {
    /// `program`, started in a new mount namespace once the host's tmpfs is mounted there.
    /// `unshare` and `sh` exec in turn, so the child's pid is the server's.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(tools::unshare());
        command
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(
                r#"mount -t tmpfs -o "size=$1,mode=755" volley-host "$2" || exit 1
shift 2
exec "$@""#,
            )
            .arg("sh")
            .arg(&self.size)
            .arg(&self.mount_point)
            .arg(program);
        command
    }
}

/// The files of an isolated host, seen from outside through its server's `/proc/PID/root`.
#[derive(Clone, Debug)]
pub struct HostFiles {
    pub pid: u32,
}

impl HostFiles {
    /// `path` (absolute, as the host sees it) as the test can open it.
    pub fn path(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(relative)
    }

    pub fn write(&self, path: &Path, content: impl AsRef<[u8]>) {
        let seen = self.path(path);
        if let Some(parent) = seen.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(&seen, content)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", seen.display()));
    }

    /// The file's content, or `None` if there is none.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        std::fs::read(self.path(path)).ok()
    }

    /// Every name directly in `dir`, sorted; nothing if it does not exist.
    pub fn names(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(dir))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// `mount ARGS` inside the host's namespace.
    pub fn mount(&self, args: &[&str]) {
        tools::run_tool(
            Command::new(tools::nsenter())
                .arg("-t")
                .arg(self.pid.to_string())
                .args(["-m", "--", "mount"])
                .args(args),
        );
    }

    /// Mounts a tmpfs of `size` at `dir` (made if missing): a disk that fills.
    pub fn mount_small_disk(&self, dir: &Path, size: &str) {
        std::fs::create_dir_all(self.path(dir))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let dir = dir.to_string_lossy();
        self.mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "volley-small",
            &dir,
        ]);
    }

    /// Makes `dir` read-only for everything on the host, root included.
    pub fn make_read_only(&self, dir: &Path) {
        let dir = dir.to_string_lossy();
        self.mount(&["--bind", &dir, &dir]);
        self.mount(&["-o", "remount,bind,ro", &dir]);
    }
}
