//! Non-root users for the `--become` tests. A fleet's hosts are this machine, so a user made here
//! is that user on every host of every fleet.
//!
//! Each user has one purpose, told by its sudo rights ([`Sudo`]), and a fixed sudoers drop-in of
//! its own. Tests run as root (here and in CI); several test processes may ask for the same
//! user at once, so the work is done under an exclusive lock on one file, and only what is
//! missing is made: a user that exists is kept, a drop-in with the right text is not rewritten.
//! The users stay on the machine after the tests: another test process may be using them. None
//! can log in but through a test's sshd (no password, no key of its own).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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
}

impl Sudo {
    /// The user of this purpose.
    pub fn user(self) -> &'static str {
        match self {
            Sudo::Passwordless => "volley-sudo",
            Sudo::NeedsPassword => "volley-sudopw",
            Sudo::OnlyTrue => "volley-sudolim",
        }
    }

    fn sudoers(self) -> String {
        let user = self.user();
        match self {
            Sudo::Passwordless => format!("{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
            Sudo::NeedsPassword => format!("{user} ALL=(ALL:ALL) ALL\n"),
            Sudo::OnlyTrue => {
                format!("Defaults:{user} !authenticate\n{user} ALL=(root) /usr/bin/true\n")
            }
        }
    }
}

/// Where the lock file lives: every test process of the machine agrees on it.
const LOCK: &str = "/tmp/volley-tests-users.lock";

/// Makes sure the user of `sudo` exists, can log in with a key, and has its sudo rights; returns
/// its name. Panics with what went wrong otherwise, or when not run as root.
pub fn ensure(sudo: Sudo) -> &'static str {
    assert_eq!(
        tools::login_user(),
        "root",
        "the --become tests create users and sudoers rules: run them as root"
    );
    // sudo itself must be there: without it every --become test would fail for that reason.
    tools::sudo();
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .unwrap_or_else(|e| panic!("cannot open {LOCK}: {e}"));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {LOCK}: {e}"));
    let user = sudo.user();
    if !exists(user) {
        tools::run_tool(
            Command::new(tools::on_path("useradd", "apt-get install -y passwd"))
                .args(["--create-home", "--shell", "/bin/sh", "--comment"])
                .arg(format!("volley tests: sudo {sudo:?}"))
                .arg(user),
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
    install_sudoers(sudo);
    drop(lock);
    user
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
