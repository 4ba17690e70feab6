//! [`Namespace`]: a network namespace of the test's own, with only a loopback interface, for
//! servers that must not be reachable from the machine's own network stack (hosts that only a
//! jump host can reach). Processes enter it with `nsenter`; nothing in it can reach anything
//! outside, and nothing outside can reach it except through what a test passes in explicitly.
//!
//! The namespace is held by a `sleep` started with `unshare --net` (so it cannot outlive its
//! test by more than [`HOLD_FOR`] even if the test is killed) and disappears when that and every
//! process started in it have ended. It needs root, `unshare`/`nsenter` (util-linux) and `ip`
//! (iproute2, which `tests/need-netns.sh` installs where it is missing).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools;

/// How long the holder sleeps: far longer than any test, short enough not to linger for long.
const HOLD_FOR: &str = "900";
/// How long `unshare` gets to make the namespace.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running network namespace; dropping it ends its holder.
pub struct Namespace {
    holder: Child,
}

impl Namespace {
    /// A new namespace with its loopback interface up (127.0.0.0/8 and ::1 inside it).
    pub fn start() -> Namespace {
        assert!(
            tools::login_user() == "root",
            "network namespaces need root; these tests run as root (as CI does)"
        );
        let holder = Command::new(tools::on_path("unshare", "apt-get install -y util-linux"))
            .args(["--net", "--", "sleep", HOLD_FOR])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start unshare: {e}"));
        let mut namespace = Namespace { holder };
        namespace.wait_until_made();
        tools::run_tool(
            namespace
                .command(&tools::ip())
                .args(["link", "set", "lo", "up"]),
        );
        namespace
    }

    /// `program` to be run inside the namespace (through `nsenter`); add its arguments.
    pub fn command(&self, program: &std::path::Path) -> Command {
        self.entry().command(program)
    }

    /// A way in that threads can keep: it stays valid while the namespace lives.
    pub fn entry(&self) -> Entry {
        Entry {
            holder: self.holder.id(),
        }
    }

    /// `unshare` makes the namespace and then runs `sleep` in it as the same process: the
    /// namespace is ready once the process's namespace differs from ours.
    fn wait_until_made(&mut self) {
        let ours = std::fs::read_link("/proc/self/ns/net")
            .unwrap_or_else(|e| panic!("cannot read our network namespace: {e}"));
        let theirs = format!("/proc/{}/ns/net", self.holder.id());
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = self.holder.try_wait() {
                panic!("unshare --net exited with {status}: cannot make a network namespace");
            }
            if std::fs::read_link(&theirs).is_ok_and(|link| link != ours) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "unshare made no network namespace within {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Enters a [`Namespace`] through its holder's pid.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    holder: u32,
}

impl Entry {
    /// `program` to be run inside the namespace; add its arguments. `nsenter` enters the
    /// network namespace and then runs `program` as the same process.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new(tools::on_path("nsenter", "apt-get install -y util-linux"));
        command
            .arg("--target")
            .arg(self.holder.to_string())
            .arg("--net")
            .arg("--")
            .arg(program);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_port_inside_is_not_reachable_outside() {
        let namespace = Namespace::start();
        // A listener inside answers inside: nc-free, with bash's /dev/tcp.
        let outside = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = outside.local_addr().unwrap().port();
        let probe = namespace
            .command(std::path::Path::new("/bin/bash"))
            .arg("-c")
            .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
            .output()
            .unwrap();
        assert!(
            !probe.status.success(),
            "a port outside the namespace answered inside it"
        );
    }
}
