//! `volley-agent as-user`: the step between the agent and every command it runs, which puts the
//! command in its session (see [`crate::session`]) and then becomes it.
//!
//! The agent's own binary (the running one even after an upgrade replaced the file:
//! `/proc/self/exe` for the agent, `/proc/AGENT_PID/exe` for systemd) runs as
//! `volley-agent as-user ... -- PROGRAM ARGV0 ARGS...`, started by the executor (see
//! [`crate::executor`]): as the agent's child in a process group of its own, or as the main
//! process of a transient unit of systemd. The helper, a single thread before `exec`, does what
//! sshd's session child does: the gid, the supplementary groups of the user (`initgroups`,
//! through NSS), the uid, permanently; umask 022; the open-file limit the agent was started with
//! (direct only: a unit's is systemd's default, as sshd's sessions get); the home directory (or
//! `/` after sshd's warning); the session's environment and nothing else; no descriptor but
//! stdin, stdout and stderr (see [`close_inherited`]); then it `exec`s the
//! program with the shell's base name as `$0`. The pid, the process group or unit, and the
//! pipes stay the command's, so the executor supervises and stops it. This needs no `unsafe`
//! code in the agent: nothing runs between `fork` and `exec`.
//!
//! The environment comes as a header on the helper's stdin (`--env-from-stdin`), never as the
//! helper's own: the helper runs as root until it becomes the user, and the dynamic loader
//! would honour a request's LD_PRELOAD, LD_LIBRARY_PATH or GLIBC_TUNABLES in it (code run as
//! root on an agent with `allow_root = false`); and under systemd a unit's properties, its
//! environment included, can be read by every local user over D-Bus, while a request's
//! variables may hold secrets. The header is
//! `volley-env LENGTH\n` and LENGTH bytes of `NAME=VALUE\0` entries; the helper reads exactly
//! that much, so the rest of stdin is the command's; without input (`--null-stdin`) the command
//! gets /dev/null instead, as the direct executor and sshd give it.
//!
//! When a step fails the command does not run: the helper says why on stderr, which the
//! controller shows as the command's, and exits 126, or 127 when the program is missing, as a
//! shell does.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use volley_common::exec::Program;

use crate::exec::ExecError;
use crate::session::{self, Session};

/// The subcommand's name.
pub const SUBCOMMAND: &str = "as-user";

/// The flag that makes the helper read its environment from stdin.
pub const ENV_FROM_STDIN: &str = "--env-from-stdin";

/// The flag that gives the command /dev/null as stdin once the environment is read: the
/// request brought no input, and a command then reads /dev/null, as over SSH.
pub const NULL_STDIN: &str = "--null-stdin";

/// What the environment header on stdin starts with.
const ENV_HEADER: &[u8] = b"volley-env ";

/// The largest environment header the helper accepts.
const MAX_ENV_BYTES: usize = 16 << 20;

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
    /// Read the command's whole environment from a header on stdin (see the module's comment).
    #[arg(long)]
    env_from_stdin: bool,
    /// Then give the command /dev/null as stdin.
    #[arg(long, requires = "env_from_stdin")]
    null_stdin: bool,
    /// PROGRAM ARGV0 [ARGS...]
    #[arg(last = true, num_args = 2.., required = true)]
    command: Vec<OsString>,
}

/// How to run the helper for one command: its arguments (from the subcommand on) and the
/// environment the command gets, which the executor hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperCall {
    /// `as-user FLAGS... -- PROGRAM ARGV0 ARGS...`
    pub args: Vec<OsString>,
    /// The command's whole environment.
    pub env: BTreeMap<String, String>,
    /// The program, as errors name it.
    pub program: String,
}

impl HelperCall {
    /// Adds `flag` before the command.
    pub fn with_flag(mut self, flag: &str) -> HelperCall {
        self.args.insert(1, flag.into());
        self
    }
}

/// The helper call that runs `program` in `session`. `nofile` is the open-file limit to give
/// the command back. `check_dir`: the agent sees the host's file system as the command will,
/// so a working directory that is not one is refused here (the helper checks again as the
/// user either way).
pub fn call(
    session: &Session,
    program: &Program,
    working_dir: Option<&str>,
    nofile: Option<u64>,
    check_dir: bool,
) -> Result<HelperCall, ExecError> {
    let mut args: Vec<OsString> = vec![SUBCOMMAND.into()];
    if session.switch_user {
        let account = &session.account;
        args.extend([
            "--user".into(),
            account.name.clone().into(),
            format!("--uid={}", account.uid).into(),
            format!("--gid={}", account.gid).into(),
        ]);
    }
    if let Some(nofile) = nofile {
        args.push(format!("--nofile={nofile}").into());
    }
    match working_dir {
        // Checked here because a failed chdir in the helper would read as the program's
        // failure.
        Some(dir) if check_dir && !Path::new(dir).is_dir() => {
            return Err(ExecError::WorkingDir(dir.to_string()));
        }
        Some(dir) => args.extend(["--dir".into(), dir.into()]),
        None => args.extend(["--home".into(), session.account.home.clone().into()]),
    };
    args.push("--".into());
    let name = match program {
        Program::Shell(line) => {
            let shell = session.account.login_shell();
            let name = shell.rsplit('/').next().unwrap_or(shell);
            args.extend([shell, name, "-c", line].map(OsString::from));
            shell.to_string()
        }
        Program::Argv(argv) => {
            let (first, rest) = argv.split_first().ok_or_else(|| ExecError::Spawn {
                program: "an empty argv".to_string(),
                source: std::io::ErrorKind::InvalidInput.into(),
            })?;
            let path = session.env.get("PATH").map(String::as_str);
            let found = session::find_program(first, path).ok_or_else(|| ExecError::Spawn {
                program: format!("{first:?}"),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            args.push(found.into());
            args.push(first.into());
            args.extend(rest.iter().map(OsString::from));
            format!("{first:?}")
        }
    };
    Ok(HelperCall {
        args,
        env: session.env.clone(),
        program: name,
    })
}

/// The environment header for `--env-from-stdin`. Names and values are checked before (no
/// `=` or NUL in names, no NUL in values).
pub fn env_header(env: &BTreeMap<String, String>) -> Vec<u8> {
    let mut entries = Vec::new();
    for (name, value) in env {
        entries.extend_from_slice(name.as_bytes());
        entries.push(b'=');
        entries.extend_from_slice(value.as_bytes());
        entries.push(0);
    }
    let mut header = ENV_HEADER.to_vec();
    header.extend_from_slice(format!("{}\n", entries.len()).as_bytes());
    header.extend_from_slice(&entries);
    header
}

/// Reads the environment header from `input`, exactly its bytes and no more.
fn read_env_header(input: &mut impl Read) -> Result<Vec<(OsString, OsString)>, String> {
    let bad = |what: &str| format!("the environment on stdin is malformed: {what}");
    let mut line = Vec::new();
    let mut byte = [0u8];
    while line.len() <= ENV_HEADER.len() + 20 {
        match input.read(&mut byte) {
            Ok(0) => return Err(bad("it ends early")),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(error) => return Err(format!("cannot read the environment on stdin: {error}")),
        }
    }
    let length: usize = line
        .strip_prefix(ENV_HEADER)
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|rest| rest.parse().ok())
        .filter(|length| *length <= MAX_ENV_BYTES)
        .ok_or_else(|| bad("no length"))?;
    let mut entries = vec![0; length];
    input
        .read_exact(&mut entries)
        .map_err(|_| bad("it ends early"))?;
    entries
        .split(|byte| *byte == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let equals = entry
                .iter()
                .position(|byte| *byte == b'=')
                .ok_or_else(|| bad("an entry without '='"))?;
            Ok((
                OsString::from_vec(entry[..equals].to_vec()),
                OsString::from_vec(entry[equals + 1..].to_vec()),
            ))
        })
        .collect()
}

/// The helper itself: sets the session up, then becomes the program. Returns only on failure.
pub fn run(args: &AsUserArgs) -> ExitCode {
    let fail = |code: u8, message: String| {
        eprintln!("volley-agent: {message}");
        ExitCode::from(code)
    };
    // Read before anything else: stdin is a pipe that the agent fills, and nothing of it may
    // be left for the command but what follows the header.
    let env = if args.env_from_stdin {
        let stdin = std::io::stdin().as_fd().try_clone_to_owned();
        match stdin.map(std::fs::File::from) {
            Ok(mut stdin) => match read_env_header(&mut stdin) {
                Ok(env) => Some(env),
                Err(message) => return fail(CANNOT_RUN, message),
            },
            Err(error) => return fail(CANNOT_RUN, format!("cannot read stdin: {error}")),
        }
    } else {
        None
    };
    close_inherited();
    if args.null_stdin {
        let null = std::fs::File::open("/dev/null")
            .and_then(|null| nix::unistd::dup2_stdin(null).map_err(std::io::Error::from));
        if let Err(error) = null {
            return fail(CANNOT_RUN, format!("cannot give stdin /dev/null: {error}"));
        }
    }
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
    let mut command = std::process::Command::new(program);
    command.arg0(argv0).args(rest);
    if let Some(env) = env {
        command.env_clear().envs(env);
    }
    let error = command.exec();
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

/// Closes every descriptor above stderr: the helper's own are all close-on-exec, so the others
/// came from whoever started the agent (a shell's, a wrapper's, a CI runner's), and the command,
/// as its user, could read or write them. sshd closes them too. The helper is a single thread
/// that holds nothing else open here, so closing by number cannot pull a descriptor from under
/// anyone.
fn close_inherited() {
    let open: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect(),
        // No /proc: every number the open-file limit allows.
        Err(_) => {
            let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 0));
            (0..i32::try_from(soft.min(1 << 20)).unwrap_or(1024)).collect()
        }
    };
    // The listing's own descriptor is among them, already closed: that close fails, unheard.
    for fd in open.into_iter().filter(|fd| *fd > 2) {
        let _ = nix::unistd::close(fd);
    }
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

#[cfg(test)]
mod tests;
