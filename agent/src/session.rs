//! The login session a command runs in: what sshd sets up for a user before it runs
//! `ssh host CMD`, set up by the agent for the user the controller names.
//!
//! The controller names the user its SSH transport would log in as (the host's SSH user), so a
//! command gets the same session through the agent as over SSH:
//!
//! - that user's entry in the password database (through NSS, so LDAP and sssd users work),
//!   its uid, gid and supplementary groups;
//! - its login shell, run with `-c` and the shell's base name as `$0`, as sshd runs it; an empty
//!   shell field means `/bin/sh`; a shell that is not an executable file refuses the user, as
//!   sshd refuses such a login;
//! - its home directory as the working directory (when the directory cannot be entered, the
//!   command starts in `/` after sshd's own warning on stderr);
//! - umask 022, and the open-file limit the agent was started with, not the one it raised for
//!   itself;
//! - an environment built from nothing, as sshd's `do_setup_env` builds it without PAM: `USER`,
//!   `LOGNAME`, `HOME`, `PATH` (the configured path, root's for uid 0), `MAIL`, `SHELL`, and
//!   `TZ` when the agent has one; then the configured `session.env` (what pam_env adds over SSH
//!   on the host), then the request's own variables. Nothing of the agent's own environment
//!   leaks (no `NOTIFY_SOCKET`, `INVOCATION_ID`, nor whatever the install session had). The
//!   shell adds its own (`PWD`, `SHLVL`, `_`) as it does under sshd. Variables that only an SSH
//!   connection has (`SSH_CLIENT`, `SSH_CONNECTION`, `SSH_TTY`) are absent.
//!
//! Who may ask for what: any controller the agent admits may run commands as any user of the
//! host, as an SSH key in that user's authorized_keys could. `become_root` (the controller's
//! `--become`) runs the command in root's session instead, with `SUDO_USER`, `SUDO_UID` and
//! `SUDO_GID` naming the user who asked, as sudo sets them (and means nothing for root). The
//! agent does not consult sudo: the user's sudoers rights do not bound an admitted controller. A command as root, asked either way,
//! is refused when `session.allow_root` is false. A user that does not exist is refused. An
//! agent that does not run as root can run commands only as its own user. Every refusal happens
//! before anything runs.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Uid, User};
use volley_common::exec::{ExecSpec, Program};

use crate::config::SessionConfig;

/// Where sshd points `MAIL` (Debian's and most distributions' `_PATH_MAILDIR`).
const MAIL_DIR: &str = "/var/mail";

/// The shell of a password entry whose shell field is empty.
const DEFAULT_SHELL: &str = "/bin/sh";

/// The umask of every command, as a fresh sshd session has it.
pub const UMASK: u32 = 0o022;

/// Why a command cannot run in the session it asked for. Every one of them is decided before
/// anything runs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("there is no user '{0}' on this host")]
    NoSuchUser(String),
    #[error("'{0}' is not a user name")]
    BadName(String),
    #[error("the agent runs as uid {0}, which is not in the password database")]
    NoAgentUser(u32),
    #[error("cannot look up user '{user}': {reason}")]
    Lookup { user: String, reason: String },
    #[error("this agent does not run commands as root (session.allow_root = false in its config)")]
    RootRefused,
    #[error("the agent runs as '{agent}', not as root, so it cannot run commands as '{user}'")]
    CannotSwitch { agent: String, user: String },
    #[error("user '{user}' cannot log in: its shell {shell} is not an executable file")]
    BadShell { user: String, shell: String },
}

impl SessionError {
    /// Whether the refusal is about who may run what (a missing or refused user), as opposed to
    /// the host failing to answer a lookup.
    pub fn is_denial(&self) -> bool {
        !matches!(self, SessionError::Lookup { .. })
    }
}

/// A user as the password database describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// As written in the entry; may be empty.
    pub shell: String,
}

impl Account {
    fn from_user(user: User) -> Account {
        Account {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
            shell: user.shell.to_string_lossy().into_owned(),
        }
    }

    /// The login shell: the entry's, or `/bin/sh` when the entry names none.
    pub fn login_shell(&self) -> &str {
        if self.shell.is_empty() {
            DEFAULT_SHELL
        } else {
            &self.shell
        }
    }
}

/// What the agent process itself is, read once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentProcess {
    pub uid: u32,
    /// The agent's `TZ`, which sshd passes on too.
    pub tz: Option<String>,
}

impl AgentProcess {
    pub fn current() -> AgentProcess {
        AgentProcess {
            uid: nix::unistd::geteuid().as_raw(),
            tz: std::env::var("TZ").ok(),
        }
    }
}

/// The session of one command: whom it runs as, where, and with which environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub account: Account,
    /// The agent must change identity to run it (it runs as root, for another user or root).
    pub switch_user: bool,
    /// The whole environment of the command.
    pub env: BTreeMap<String, String>,
}

/// Looks up the user the request names and builds its session, or says why it cannot run.
/// Reads the password database, which may ask a directory server: call it off the runtime.
pub fn resolve(
    spec: &ExecSpec,
    config: &SessionConfig,
    agent: &AgentProcess,
) -> Result<Session, SessionError> {
    let requested = match &spec.user {
        Some(name) => lookup(name)?,
        None => lookup_uid(agent.uid)?,
    };
    let root = if spec.become_root {
        Some(lookup_uid(0)?)
    } else {
        None
    };
    build(spec, requested, root, config, agent)
}

/// The session of `requested`, or of `root` when the request asked to become root.
fn build(
    spec: &ExecSpec,
    requested: Account,
    root: Option<Account>,
    config: &SessionConfig,
    agent: &AgentProcess,
) -> Result<Session, SessionError> {
    let (account, asked_by) = match root {
        // Root asking to become root is root, as a root login ignores `--become` over SSH.
        Some(root) if requested.uid != 0 => (root, Some(requested)),
        _ => (requested, None),
    };
    decide(&account, config, agent)?;
    let shell = Path::new(account.login_shell());
    if matches!(spec.program, Program::Shell(_)) && !is_executable(shell) {
        return Err(SessionError::BadShell {
            user: account.name.clone(),
            shell: account.login_shell().to_string(),
        });
    }
    let mut env = login_environment(&account, config, agent);
    if let Some(asked_by) = asked_by {
        env.insert("SUDO_USER".to_string(), asked_by.name);
        env.insert("SUDO_UID".to_string(), asked_by.uid.to_string());
        env.insert("SUDO_GID".to_string(), asked_by.gid.to_string());
    }
    env.extend(spec.env.clone());
    Ok(Session {
        switch_user: agent.uid == 0,
        account,
        env,
    })
}

/// Whether the agent may and can run commands as `account`.
fn decide(
    account: &Account,
    config: &SessionConfig,
    agent: &AgentProcess,
) -> Result<(), SessionError> {
    if account.uid == 0 && !config.allow_root {
        return Err(SessionError::RootRefused);
    }
    if agent.uid != 0 && agent.uid != account.uid {
        let agent_name = lookup_uid(agent.uid)
            .map(|agent| agent.name)
            .unwrap_or_else(|_| format!("uid {}", agent.uid));
        return Err(SessionError::CannotSwitch {
            agent: agent_name,
            user: account.name.clone(),
        });
    }
    Ok(())
}

/// The environment sshd's `do_setup_env` gives a session without PAM, plus the configured
/// variables.
pub fn login_environment(
    account: &Account,
    config: &SessionConfig,
    agent: &AgentProcess,
) -> BTreeMap<String, String> {
    let path = if account.uid == 0 {
        &config.root_path
    } else {
        &config.path
    };
    let mut env = BTreeMap::new();
    let mut set = |name: &str, value: String| {
        env.insert(name.to_string(), value);
    };
    set("USER", account.name.clone());
    set("LOGNAME", account.name.clone());
    set("HOME", account.home.to_string_lossy().into_owned());
    set("PATH", path.clone());
    set("MAIL", format!("{MAIL_DIR}/{}", account.name));
    set("SHELL", account.login_shell().to_string());
    if let Some(tz) = &agent.tz {
        set("TZ", tz.clone());
    }
    env.extend(config.env.clone());
    env
}

fn lookup(name: &str) -> Result<Account, SessionError> {
    if name.is_empty() || name.contains(['\0', '/', ':']) {
        return Err(SessionError::BadName(name.to_string()));
    }
    match User::from_name(name) {
        Ok(Some(user)) => Ok(Account::from_user(user)),
        Ok(None) => Err(SessionError::NoSuchUser(name.to_string())),
        Err(error) => Err(SessionError::Lookup {
            user: name.to_string(),
            reason: error.desc().to_string(),
        }),
    }
}

fn lookup_uid(uid: u32) -> Result<Account, SessionError> {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => Ok(Account::from_user(user)),
        Ok(None) => Err(SessionError::NoAgentUser(uid)),
        Err(error) => Err(SessionError::Lookup {
            user: format!("uid {uid}"),
            reason: error.desc().to_string(),
        }),
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Where `program` is found: itself when it names a path, otherwise the first executable file
/// of that name in `path` (the session's `PATH`), as `execvp` would find it.
pub fn find_program(program: &str, path: Option<&str>) -> Option<PathBuf> {
    if program.contains('/') {
        let program = PathBuf::from(program);
        return is_executable(&program).then_some(program);
    }
    path?
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(test)]
mod tests;
