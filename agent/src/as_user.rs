//! `volley-agent as-user`: the step between the agent and every command it runs, which puts the
//! command in its session (see [`crate::session`]) and then becomes it.
//!
//! The agent starts its own binary (`/proc/self/exe`, the running one even after an upgrade
//! replaced the file) as `volley-agent as-user ... -- PROGRAM ARGV0 ARGS...`, with the session's
//! environment as its whole environment and its process group already the command's. The
//! helper, a single thread before `exec`, does what sshd's session child does: the gid, the
//! supplementary groups of the user (`initgroups`, through NSS), the uid, permanently; umask
//! 022; the open-file limit the agent was started with; the home directory (or `/` after sshd's
//! warning); then it `exec`s the program with the shell's base name as `$0`. The pid, the
//! process group and the pipes stay the command's, so the agent supervises and stops it as
//! before. This needs no `unsafe` code in the agent: nothing runs between `fork` and `exec`.
//!
//! When a step fails the command does not run: the helper says why on stderr, which the
//! controller shows as the command's, and exits 126, or 127 when the program is missing, as a
//! shell does.

use std::ffi::{CString, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use tokio::process::Command;
use volley_common::exec::Program;

use crate::exec::ExecError;
use crate::session::{self, Session};

/// The running agent's binary, whichever file now has its name.
const SELF: &str = "/proc/self/exe";

/// The subcommand's name.
pub const SUBCOMMAND: &str = "as-user";

/// A step failed before the program could run.
const CANNOT_RUN: u8 = 126;
/// The program does not exist.
const NOT_FOUND: u8 = 127;

/// The helper's arguments; only the agent writes them.
#[derive(Debug, clap::Args)]
pub struct AsUserArgs {
    /// Become this user: its gid, its supplementary groups, its uid.
    #[arg(long, requires_all = ["uid", "gid"])]
    user: Option<String>,
    #[arg(long)]
    uid: Option<u32>,
    #[arg(long)]
    gid: Option<u32>,
    /// The soft open-file limit of the command.
    #[arg(long)]
    nofile: Option<u64>,
    /// The home directory: entered if possible, `/` otherwise, as sshd does.
    #[arg(long, conflicts_with = "dir")]
    home: Option<PathBuf>,
    /// The directory the request named: the command runs there or not at all.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// PROGRAM ARGV0 [ARGS...]
    #[arg(last = true, num_args = 2.., required = true)]
    command: Vec<OsString>,
}

/// The command that runs `program` in `session`: the helper, with the session's environment as
/// its own. `nofile` is the open-file limit to give the command back.
pub fn command(
    session: &Session,
    program: &Program,
    working_dir: Option<&str>,
    nofile: Option<u64>,
) -> Result<Command, ExecError> {
    let mut helper = Command::new(SELF);
    helper.arg(SUBCOMMAND);
    if session.switch_user {
        let account = &session.account;
        helper
            .arg("--user")
            .arg(&account.name)
            .arg(format!("--uid={}", account.uid))
            .arg(format!("--gid={}", account.gid));
    }
    if let Some(nofile) = nofile {
        helper.arg(format!("--nofile={nofile}"));
    }
    match working_dir {
        // Checked here because a failed chdir in the helper would read as the program's
        // failure; the helper checks again as the user.
        Some(dir) if !Path::new(dir).is_dir() => {
            return Err(ExecError::WorkingDir(dir.to_string()));
        }
        Some(dir) => helper.arg("--dir").arg(dir),
        None => helper.arg("--home").arg(&session.account.home),
    };
    helper.arg("--");
    match program {
        Program::Shell(line) => {
            let shell = session.account.login_shell();
            let name = shell.rsplit('/').next().unwrap_or(shell);
            helper.args([shell, name, "-c", line]);
        }
        Program::Argv(args) => {
            let (first, rest) = args.split_first().ok_or_else(|| ExecError::Spawn {
                program: "an empty argv".to_string(),
                source: std::io::ErrorKind::InvalidInput.into(),
            })?;
            let path = session.env.get("PATH").map(String::as_str);
            let found = session::find_program(first, path).ok_or_else(|| ExecError::Spawn {
                program: format!("{first:?}"),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            helper.arg(found).arg(first).args(rest);
        }
    }
    helper.env_clear().envs(&session.env).current_dir("/");
    Ok(helper)
}

/// The helper itself: sets the session up, then becomes the program. Returns only on failure.
pub fn run(args: &AsUserArgs) -> ExitCode {
    let fail = |code: u8, message: String| {
        eprintln!("volley-agent: {message}");
        ExitCode::from(code)
    };
    if let Err(message) = become_user(args) {
        return fail(CANNOT_RUN, message);
    }
    nix::sys::stat::umask(Mode::from_bits_truncate(session::UMASK));
    if let Some(nofile) = args.nofile
        && let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
    {
        // Lowering the soft limit cannot fail for want of privilege; if it did, the command
        // would merely have more descriptors than it asked for.
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, nofile.min(hard), hard);
    }
    if let Some(home) = &args.home
        && let Err(error) = std::env::set_current_dir(home)
    {
        // sshd's own words; the command then starts in `/`.
        eprintln!(
            "Could not chdir to home directory {}: {}",
            home.display(),
            nix::errno::Errno::from_raw(error.raw_os_error().unwrap_or(0)).desc()
        );
    }
    if let Some(dir) = &args.dir
        && let Err(error) = std::env::set_current_dir(dir)
    {
        return fail(
            CANNOT_RUN,
            format!("cannot enter working directory {}: {error}", dir.display()),
        );
    }
    let [program, argv0, rest @ ..] = args.command.as_slice() else {
        return fail(CANNOT_RUN, "no program to run".to_string());
    };
    let error = std::process::Command::new(program)
        .arg0(argv0)
        .args(rest)
        .exec();
    let code = if error.kind() == std::io::ErrorKind::NotFound {
        NOT_FOUND
    } else {
        CANNOT_RUN
    };
    fail(
        code,
        format!("cannot run {}: {error}", Path::new(program).display()),
    )
}

/// The gid, the user's groups and the uid, for good: the command cannot get root back.
fn become_user(args: &AsUserArgs) -> Result<(), String> {
    let (Some(user), Some(uid), Some(gid)) = (&args.user, args.uid, args.gid) else {
        return Ok(());
    };
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    let name = CString::new(user.as_str()).map_err(|_| format!("'{user}' is not a user name"))?;
    let failed = |step: &str, error: nix::Error| {
        format!(
            "cannot become user '{user}': {step}: {}{}",
            error.desc(),
            if error == nix::Error::EPERM {
                " (the agent needs CAP_SETUID and CAP_SETGID)"
            } else {
                ""
            }
        )
    };
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| failed("setgid", e))?;
    nix::unistd::initgroups(&name, gid).map_err(|e| failed("initgroups", e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| failed("setuid", e))?;
    if nix::unistd::getuid() != uid || nix::unistd::geteuid() != uid {
        return Err(format!(
            "cannot become user '{user}': the uid did not change"
        ));
    }
    Ok(())
}
