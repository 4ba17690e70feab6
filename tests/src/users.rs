//! Local users that tests log in as, created once per machine with `useradd` and kept: tests
//! that compare what a command sees over SSH and through an agent need a user that is neither
//! root nor the one running the tests.
//!
//! Several test processes may ask for the same user at once (nextest runs tests in parallel,
//! and other batteries create users of their own), so creation is serialized with `flock` and
//! a user that already exists is taken as it is. `useradd` itself may find /etc/passwd locked
//! by another tool for a moment: that is retried, a bounded number of times.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The lock our processes take around `useradd`.
const LOCK: &str = "/tmp/volley-tests-useradd.lock";

/// How often a locked password file is tried again, and how long apart.
const ATTEMPTS: u32 = 50;
const PAUSE: Duration = Duration::from_millis(100);

/// `useradd`'s status when the name is taken.
const EXISTS: i32 = 9;

/// Under the lock: adds user `$1`, or unlocks it if an earlier run left it locked.
const ADD_OR_UNLOCK: &str = "if getent passwd \"$1\" >/dev/null; then exec usermod --password '*' \"$1\"; \
     else exec useradd --create-home --shell /bin/bash --groups users --password '*' \"$1\"; fi";

/// A user of this machine, as the password database has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

/// The user `name`, created if it does not exist yet with a home directory, bash as its login
/// shell and the group `users` besides its own (so that supplementary groups show). Its
/// password is `*`: no password works, but the account is not locked (`!`), which sshd without
/// PAM would refuse even for a key. Panics with what is wrong when it cannot be had; creating
/// users needs root.
pub fn ensure(name: &str) -> LocalUser {
    for _ in 0..ATTEMPTS {
        if let Some(user) = lookup(name)
            && !locked(name)
        {
            return user;
        }
        let output = Command::new("flock")
            .arg(LOCK)
            .args(["sh", "-c", ADD_OR_UNLOCK, "sh", name])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `flock ... useradd` (util-linux and passwd, root needed): {e}")
            });
        if output.status.success() || output.status.code() == Some(EXISTS) {
            continue;
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("lock"),
            "useradd {name} failed with {}: {stderr}",
            output.status
        );
        std::thread::sleep(PAUSE);
    }
    lookup(name)
        .unwrap_or_else(|| panic!("could not create user {name}: /etc/passwd stayed locked"))
}

/// Whether the account's password field marks it locked (`!`).
fn locked(name: &str) -> bool {
    let output = Command::new("getent")
        .args(["shadow", name])
        .output()
        .unwrap_or_else(|e| panic!("cannot run getent: {e}"));
    String::from_utf8_lossy(&output.stdout)
        .split(':')
        .nth(1)
        .is_some_and(|password| password.starts_with('!'))
}

/// The user's entry, from `getent passwd` (NSS, as sshd and the agent see it).
pub fn lookup(name: &str) -> Option<LocalUser> {
    let output = Command::new("getent")
        .args(["passwd", name])
        .output()
        .unwrap_or_else(|e| panic!("cannot run getent: {e}"));
    if !output.status.success() {
        return None;
    }
    parse_passwd_line(String::from_utf8_lossy(&output.stdout).trim())
}

fn parse_passwd_line(line: &str) -> Option<LocalUser> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _, uid, gid, _, home, shell] = fields[..] else {
        return None;
    };
    Some(LocalUser {
        name: name.to_string(),
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        home: PathBuf::from(home),
        shell: shell.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_are_read() {
        assert_eq!(
            parse_passwd_line("probe:x:1001:1002:Probe,,,:/home/probe:/bin/bash"),
            Some(LocalUser {
                name: "probe".to_string(),
                uid: 1001,
                gid: 1002,
                home: PathBuf::from("/home/probe"),
                shell: "/bin/bash".to_string(),
            })
        );
        assert_eq!(parse_passwd_line("garbage"), None);
    }

    #[test]
    fn root_is_found_and_a_stranger_is_not() {
        assert_eq!(lookup("root").map(|user| user.uid), Some(0));
        assert_eq!(lookup("no-such-user-volley"), None);
    }
}
