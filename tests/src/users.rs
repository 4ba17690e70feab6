//! Non-root users for the `--become` tests, and a plain one ([`plain`]) that the same command
//! runs as over SSH and through an agent. A fleet's hosts are this machine, so a user made here
//! is that user on every host of every fleet.
//!
//! Each `--become` user has one purpose, told by its sudo rights ([`Sudo`]), and a fixed sudoers
//! drop-in of its own. Tests run as root (here and in CI); several test processes may ask for the same
//! user at once, so the work is done under an exclusive lock on one file, and only what is
//! missing is made: a user that exists is kept, a drop-in with the right text is not rewritten.
//! The users stay on the machine after the tests: another test process may be using them. None
//! can log in but through a test's sshd (no password, no key of its own).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools;

/// What sudo lets a test user do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sudo {
    /// `NOPASSWD: ALL`: becomes root without a password.
    Passwordless,
    /// `ALL`, with a password: `sudo -n` says a password is required.
    NeedsPassword,
    /// No password asked, but root may run only `/usr/bin/true`: sudo refuses `/bin/sh`.
    OnlyTrue,
    /// As [`Sudo::Passwordless`], with bash as the login shell and a `~/.bashrc` that greets
    /// ([`GREETING`]): Debian's bash reads it for the commands sshd runs, so its lines come
    /// before anything the command prints.
    Greeted,
}

/// What the [`Sudo::Greeted`] user's `~/.bashrc` prints on stdout, before every command.
pub const GREETING: &str = "Welcome to this host\n\n";

impl Sudo {
    /// The user of this purpose.
    pub fn user(self) -> &'static str {
        match self {
            Sudo::Passwordless => "volley-sudo",
            Sudo::NeedsPassword => "volley-sudopw",
            Sudo::OnlyTrue => "volley-sudolim",
            Sudo::Greeted => "volley-sudohi",
        }
    }

    fn shell(self) -> &'static str {
        match self {
            Sudo::Greeted => "/bin/bash",
            _ => "/bin/sh",
        }
    }

    fn sudoers(self) -> String {
        let user = self.user();
        match self {
            Sudo::Passwordless | Sudo::Greeted => format!("{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
            Sudo::NeedsPassword => format!("{user} ALL=(ALL:ALL) ALL\n"),
            Sudo::OnlyTrue => {
                format!("Defaults:{user} !authenticate\n{user} ALL=(root) /usr/bin/true\n")
            }
        }
    }
}

/// `useradd`'s exit status when the name is taken.
const USER_EXISTS: i32 = 9;

/// Where the lock file lives: every test process of the machine agrees on it.
const LOCK: &str = "/tmp/volley-tests-users.lock";

/// Makes sure the user of `sudo` exists, can log in with a key, and has its sudo rights; returns
/// its name. Panics with what went wrong otherwise, or when not run as root.
pub fn ensure(sudo: Sudo) -> &'static str {
    // sudo itself must be there: without it every --become test would fail for that reason.
    tools::sudo();
    let lock = lock("the --become tests create users and sudoers rules");
    let user = sudo.user();
    let comment = format!("volley tests - sudo {sudo:?}");
    add_user(user, &["--shell", sudo.shell(), "--comment", &comment]);
    install_sudoers(sudo);
    if sudo == Sudo::Greeted {
        let home = lookup(user).map(|entry| entry.home);
        let home =
            home.unwrap_or_else(|| panic!("user {user} was made but getent does not find it"));
        let bashrc = home.join(".bashrc");
        let text = format!("printf '{}'\n", GREETING.replace('\n', "\\n"));
        if std::fs::read_to_string(&bashrc).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&bashrc, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", bashrc.display()));
        }
    }
    drop(lock);
    user
}

/// A user of this machine, as the password database has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

/// Makes sure the plain user `name` exists (a home, bash as its login shell, the group `users`
/// besides its own so that supplementary groups show, no sudo rights) and can log in with a
/// key; returns its password entry. Panics with what went wrong otherwise.
pub fn plain(name: &str) -> LocalUser {
    let lock = lock("the tests that compare transports create a user");
    add_user(
        name,
        &[
            "--shell",
            "/bin/bash",
            "--groups",
            "users",
            "--comment",
            "volley tests - plain user",
        ],
    );
    drop(lock);
    lookup(name).unwrap_or_else(|| panic!("user {name} was made but getent does not find it"))
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

/// The machine-wide lock under which users are made; `why` says who needs root.
fn lock(why: &str) -> File {
    assert_eq!(tools::login_user(), "root", "{why}: run them as root");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .unwrap_or_else(|e| panic!("cannot open {LOCK}: {e}"));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {LOCK}: {e}"));
    lock
}

/// Under the lock: adds `user` with the home directory and `options` unless it exists, and
/// unlocks its account for key logins.
fn add_user(user: &str, options: &[&str]) {
    if !exists(user) {
        let mut useradd = Command::new(tools::on_path("useradd", "apt-get install -y passwd"));
        useradd.arg("--create-home").args(options).arg(user);
        let output = useradd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {useradd:?}: {e}"));
        // Status 9: the name is taken. Someone outside our lock made the user meanwhile; it is
        // used as it is.
        assert!(
            output.status.success() || output.status.code() == Some(USER_EXISTS),
            "{useradd:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A new account is locked ("!"), and sshd without PAM refuses locked accounts; "*" has no
    // password either, but lets key logins in.
    if shadow_password(user).as_deref() != Some("*") {
        tools::run_tool(
            Command::new(tools::on_path("usermod", "apt-get install -y passwd"))
                .args(["-p", "*", user]),
        );
    }
}

fn exists(user: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(user)
        .output()
        .is_ok_and(|output| output.status.success())
}

fn shadow_password(user: &str) -> Option<String> {
    let shadow = std::fs::read_to_string("/etc/shadow").ok()?;
    shadow.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == user).then(|| fields.next().unwrap_or_default().to_string())
    })
}

/// Writes `/etc/sudoers.d/volley-tests-USER` (0440) unless it already says the right thing. The
/// text is checked by `visudo` in a temporary file that sudo ignores (its name has a dot), then
/// renamed into place, so sudo never reads a half-written or broken rule.
fn install_sudoers(sudo: Sudo) {
    let dir = Path::new("/etc/sudoers.d");
    let path = dir.join(format!("volley-tests-{}", sudo.user()));
    let text = sudo.sudoers();
    if std::fs::read_to_string(&path).is_ok_and(|current| current == text) {
        return;
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let temporary = dir.join(format!(".volley-tests-{}.new", sudo.user()));
    write_private(&temporary, &text);
    tools::run_tool(
        Command::new(tools::on_path("visudo", "apt-get install -y sudo"))
            .arg("-cf")
            .arg(&temporary),
    );
    std::fs::rename(&temporary, &path)
        .unwrap_or_else(|e| panic!("cannot rename into {}: {e}", path.display()));
}

fn write_private(path: &Path, text: &str) {
    let mut file =
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    std::io::Write::write_all(&mut file, text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o440))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
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
