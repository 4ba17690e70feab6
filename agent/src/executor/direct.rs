//! The direct executor: the helper is the agent's own child, in a process group of its own.
//!
//! Stopping signals that whole group: TERM, then KILL for whatever is left of it after
//! [`KILL_AFTER`], so background children (`sleep 300 &`) die with the command. A child that
//! leaves the group (`setsid`) escapes, as it would escape a terminal's hangup. This is the path
//! wherever systemd is not PID 1, and under the fallback supervisor. Under systemd it would put
//! every command in the agent's own sandbox and cgroup; see [`super::systemd`].

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use rustix::process::{Pid, Signal};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe::Receiver;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use volley_common::exec::ExitStatus;

use super::Process;
use crate::exec::{ExecError, KILL_AFTER};
use crate::signals::signal_name;

/// How often the group is checked for survivors between TERM and KILL.
pub const GROUP_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// A command running as the agent's child, leader of its own process group.
#[derive(Debug)]
pub struct Group {
    child: Child,
    /// The group's id (the leader's pid), if it fits a pid.
    group: Option<Pid>,
}

/// Spawns `command` in a new process group, stdout and stderr piped; `program` names it in
/// errors. Its stdin is `header` (the helper's environment, see [`crate::as_user`]) and then
/// `input`, then end of file, fed by a task of its own so that a command that never reads it
/// blocks nothing; /dev/null when both are empty.
pub fn spawn(
    mut command: Command,
    program: String,
    header: Vec<u8>,
    input: Vec<u8>,
) -> Result<Process, ExecError> {
    command
        .stdin(if header.is_empty() && input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // The group is killed explicitly; killing only the leader on drop would orphan the rest.
        .kill_on_drop(false);
    let mut child = command
        .spawn()
        .map_err(|source| ExecError::Spawn { program, source })?;
    if let Some(mut pipe) = child.stdin.take() {
        // A command that exits without reading everything closes the pipe: the write fails
        // and the task ends, as `cat file | cmd` would. Dropping the pipe is the end of file.
        tokio::spawn(async move {
            if pipe.write_all(&header).await.is_ok() {
                let _ = pipe.write_all(&input).await;
            }
        });
    }
    let reaped = || ExecError::Spawn {
        program: "the command".to_string(),
        source: io::Error::other("it was reaped before it was supervised"),
    };
    let pid = child.id().ok_or_else(reaped)?;
    let pipe = |fd: io::Result<std::os::fd::OwnedFd>| {
        fd.and_then(Receiver::from_owned_fd)
            .map_err(|source| ExecError::Spawn {
                program: "the command's output".to_string(),
                source,
            })
    };
    let stdout = child.stdout.take().map(|out| pipe(out.into_owned_fd()));
    let stderr = child.stderr.take().map(|err| pipe(err.into_owned_fd()));
    Ok(Process {
        pid,
        stdout: stdout.transpose()?,
        stderr: stderr.transpose()?,
        kind: super::Kind::Direct(Group {
            group: i32::try_from(pid).ok().and_then(Pid::from_raw),
            child,
        }),
    })
}

impl Group {
    /// The leader's end; cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await.map(describe)
    }

    /// TERM to the group; KILL to whatever is left of it after [`KILL_AFTER`]. Returns the
    /// leader's status (`leader_reaped`: it was already collected, and the returned value is not
    /// used).
    pub async fn stop(&mut self, leader_reaped: bool) -> io::Result<ExitStatus> {
        let Some(group) = self.group else {
            self.child.start_kill()?;
            return self.wait().await;
        };
        signal_group(group, Signal::TERM);
        let give_up = Instant::now() + KILL_AFTER;
        let mut status = if leader_reaped {
            None
        } else {
            tokio::time::timeout_at(give_up, self.wait()).await.ok()
        };
        // While the leader is unreaped its pid cannot be reused, so the group id is ours; once
        // reaped, the id stays ours as long as any member lives, which is what is polled here.
        while (leader_reaped || status.is_some()) && group_runs(group) && Instant::now() < give_up {
            tokio::time::sleep(GROUP_POLL).await;
        }
        if group_alive(group) {
            signal_group(group, Signal::KILL);
        }
        match status.take() {
            Some(status) => status,
            None => self.wait().await,
        }
    }
}

fn signal_group(group: Pid, signal: Signal) {
    match rustix::process::kill_process_group(group, signal) {
        Ok(()) => {}
        // The group is already empty.
        Err(rustix::io::Errno::SRCH) => {}
        Err(error) => tracing::warn!(group = group.as_raw_pid(), %error, "cannot signal the group"),
    }
}

/// Whether the group has a member, a zombie included.
fn group_alive(group: Pid) -> bool {
    rustix::process::test_kill_process_group(group).is_ok()
}

/// Whether a member of the group may still be running: it has members, and they are not all
/// zombies. A zombie has ended and waits only for its parent to collect it, which an orphan's
/// parent, PID 1, may never do (some containers' init does not reap). Members /proc does not
/// show (`ProtectProc=invisible` hides other users' processes) count as running.
fn group_runs(group: Pid) -> bool {
    group_alive(group) && !only_zombies_seen(group)
}

/// Whether /proc shows members of `group`, and all of them zombies.
fn only_zombies_seen(group: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    let group = group.as_raw_pid().to_string();
    let mut seen = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the name, in parentheses, which may hold anything: state, parent, group.
        let mut fields = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace();
        let (state, pgrp) = (fields.next(), fields.nth(1));
        if pgrp == Some(group.as_str()) {
            if !matches!(state, Some("Z" | "X")) {
                return false;
            }
            seen = true;
        }
    }
    seen
}

fn describe(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(signal_name(signal)),
        // Neither exited nor signalled: only a stopped or continued child reports that, and
        // `wait` does not return for those.
        (None, None) => ExitStatus::Code(-1),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    use super::*;

    /// The state field of /proc/PID/stat.
    fn state(pid: u32) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        rest.split_whitespace().next().map(str::to_string)
    }

    #[test]
    fn a_group_of_zombies_no_longer_runs() {
        // Leader of its own group, never waited for: a zombie once it exits.
        let mut child = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let group = Pid::from_raw(pid.try_into().unwrap()).unwrap();
        for _ in 0..200 {
            if state(pid).as_deref() == Some("Z") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(state(pid).as_deref(), Some("Z"), "never became a zombie");
        assert!(group_alive(group), "a zombie is still a member");
        assert!(!group_runs(group), "but nothing of the group runs");
        child.wait().unwrap();
        assert!(!group_alive(group));
    }

    #[test]
    fn a_group_with_a_live_member_runs() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let group = Pid::from_raw(child.id().try_into().unwrap()).unwrap();
        let runs = group_runs(group);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(runs);
    }
}
