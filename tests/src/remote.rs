//! What runs on the hosts: commands that behave differently per host, and the processes a run
//! leaves behind. The fleet's hosts are this machine, so `pgrep` sees their processes.
//!
//! Tests find their remote processes by an exact command line such as `sleep 3141.594417`: the
//! random digits keep them apart from other tests and from leftovers of earlier runs, and the
//! exact match skips the volley client and shells whose arguments merely contain the text.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::fleet::Host;
use crate::loopback::random_u64;
use crate::tools;

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// `sleep <prefix><6 random digits>`, e.g. `sleep 3141.59` becomes `sleep 3141.59041293`.
pub fn unique_sleep(prefix: &str) -> String {
    format!("sleep {prefix}{:06}", random_u64() % 1_000_000)
}

/// A shell command that runs the command of the first arm whose host it runs on, then `rest`.
/// Hosts are told apart by the server address and port at the end of `$SSH_CONNECTION`.
pub fn per_host_command(arms: &[(&Host, &str)], rest: &str) -> String {
    let mut command = String::from("case \"$SSH_CONNECTION\" in ");
    for (host, arm) in arms {
        command.push_str(&format!("*\"{}\") {arm};; ", host.connection_suffix()));
    }
    command.push_str("esac; ");
    command.push_str(rest);
    command
}

/// The pids of processes whose whole command line is `command_line`.
pub fn processes(command_line: &str) -> Vec<u32> {
    let output = Command::new(tools::pgrep())
        .args(["-f", "-x"])
        .arg(regex_literal(command_line))
        .output()
        .unwrap_or_else(|e| panic!("cannot run pgrep: {e}"));
    match output.status.code() {
        Some(0) | Some(1) => String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(|pid| {
                pid.parse()
                    .unwrap_or_else(|e| panic!("pgrep printed {pid:?}: {e}"))
            })
            .collect(),
        _ => panic!("pgrep failed: {output:?}"),
    }
}

/// Waits until no process runs `command_line`, for at most `within`; returns those still there.
pub fn wait_until_gone(command_line: &str, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left = processes(command_line);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Waits until at least `count` processes run `command_line`, for at most `within`, or until
/// `give_up` says there is no point; returns the pids last seen.
pub fn wait_until_running(
    command_line: &str,
    count: usize,
    within: Duration,
    mut give_up: impl FnMut() -> bool,
) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let running = processes(command_line);
        if running.len() >= count || Instant::now() >= deadline || give_up() {
            return running;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Asserts that no process runs `command_line` after a grace of `within`. Leftovers are killed
/// before the test fails, so a failure does not leave an hour-long sleep behind.
pub fn assert_none_left(command_line: &str, within: Duration) {
    let left = wait_until_gone(command_line, within);
    if !left.is_empty() {
        kill_all(&left);
        panic!(
            "{} process(es) `{command_line}` still ran {within:?} later: {left:?}",
            left.len()
        );
    }
}

/// Kills every process running its command line when dropped, so that a failing test leaves
/// no hour-long sleep behind. Create it before starting the processes.
#[derive(Debug)]
pub struct SweepOnDrop(pub String);

impl Drop for SweepOnDrop {
    fn drop(&mut self) {
        kill_all(&processes(&self.0));
    }
}

/// The sshd processes above process `pid` (its SSH session's), nearest first, up to one of
/// `listeners` (the sshd that accepted the connection, not the session's) or PID 1.
pub fn sshd_sessions_above(pid: u32, listeners: &[u32]) -> Vec<u32> {
    let parent = |pid: u32| -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("PPid:"))
            .and_then(|ppid| ppid.trim().parse().ok())
            .unwrap_or(1)
    };
    let mut sessions = Vec::new();
    let mut pid = parent(pid);
    while pid > 1 && !listeners.contains(&pid) {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if name.trim() == "sshd" {
            sessions.push(pid);
        }
        pid = parent(pid);
    }
    sessions
}

/// Sends SIGKILL to `pids`, ignoring those already gone.
pub fn kill_all(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new(tools::kill())
        .args(["-s", "KILL"])
        .args(pids.iter().map(u32::to_string))
        .output();
}

/// `text` as a POSIX extended regular expression that matches only itself.
fn regex_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if r".[]()*+?{}|^$\".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::HostKind;
    use crate::process::RunningProcess;

    #[test]
    fn per_host_command_selects_by_address_and_port() {
        let host = Host {
            name: "h01".to_string(),
            socket: "127.50.1.1:40001".parse().unwrap(),
            kind: HostKind::Normal,
            host_key: None,
        };
        assert_eq!(
            per_host_command(&[(&host, "exit 3")], "echo ok"),
            r#"case "$SSH_CONNECTION" in *" 127.50.1.1 40001") exit 3;; esac; echo ok"#
        );
        let run = |connection: &str| {
            Command::new("sh")
                .args(["-c", &per_host_command(&[(&host, "exit 3")], "true")])
                .env("SSH_CONNECTION", connection)
                .status()
                .unwrap()
                .code()
        };
        assert_eq!(run("127.0.0.1 5555 127.50.1.1 40001"), Some(3));
        assert_eq!(run("127.0.0.1 5555 127.50.1.1 400011"), Some(0));
    }

    #[test]
    fn processes_are_found_by_exact_command_line_until_gone() {
        let sleep = unique_sleep("2999.");
        let mut args = sleep.split(' ');
        let mut child = RunningProcess::spawn(Command::new(args.next().unwrap()).args(args));
        let running = wait_until_running(&sleep, 1, Duration::from_secs(10), || false);
        assert_eq!(running, [child.pid()]);
        // Matching is exact: a prefix of the command line finds nothing.
        assert!(processes(&sleep[..sleep.len() - 1]).is_empty());
        kill_all(&running);
        assert!(wait_until_gone(&sleep, Duration::from_secs(10)).is_empty());
        assert!(child.has_exited());
    }

    #[test]
    fn regex_metacharacters_are_escaped() {
        assert_eq!(regex_literal("sleep 3141.59"), r"sleep 3141\.59");
        assert_eq!(regex_literal("a[1]*"), r"a\[1\]\*");
    }
}
