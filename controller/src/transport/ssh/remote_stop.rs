//! The wrapper that lets the controller stop a remote command over SSH.
//!
//! Without a PTY, sshd leaves a command running when the client closes the channel or goes away,
//! and SSH `signal` requests are refused for root logins (measured against OpenSSH 9.2). So the command runs behind a small POSIX-sh wrapper:
//!
//! - a watcher holds a duplicate of the channel's stdin and blocks reading it. The controller never
//!   sends data or EOF in normal use, so the watcher wakes only when the controller sends EOF or
//!   the connection closes (volley stopped, killed, or the host timed out). If the command is
//!   still running, it then sends TERM to the command's process group and KILL two seconds later,
//!   ignoring TERM itself from then on so that the grace period is not cut short. A command that
//!   ended by itself is gone by then (sshd reaps it before it reports the exit), so background
//!   jobs that it left on purpose survive, as they would under plain `ssh`;
//! - the wrapper then `exec`s the user's login shell with `-c` and the shell's base name as `$0`,
//!   with `/dev/null` as stdin: the command is sshd's child itself, in the session and process
//!   group sshd made for it, exactly as sshd would run it. It is not a background job of the
//!   wrapper, which would start it with SIGINT and SIGQUIT ignored (POSIX shells do that to
//!   asynchronous lists) and print job messages such as `Terminated` on stderr. sshd reports
//!   its end as it reports `ssh host CMD`'s: an exit status, or the signal that killed it.
//!   Under `sudo` the wrapper is sudo's child, in the login's process group, so it first makes
//!   a session of its own (`setsid`, which then does not fork), which the watcher can stop
//!   without stopping sudo;
//! - with `--stdin`, the controller sends exactly N bytes first, and `$2` says N. The wrapper
//!   copies the first N bytes of the channel (`head -c`) into a private temporary file, opens it
//!   as the command's stdin and removes it before the command starts; only then does the watcher
//!   start reading the channel, so no stdin byte is taken for "stop", and EOF still means stop.
//!   A file rather than a pipe: a command that never reads its input must not block the copy,
//!   or the watcher behind it would never see a stop. Fewer than N bytes means the controller
//!   stopped (or lost) the run during the transfer: the command is not started.

/// The wrapper script. `$1` is the operator's command; `$2`, if given, the number of bytes of
/// stdin the controller sends for it before anything else.
const WRAPPER: &str = r#"exec 3<&0 0</dev/null 4</dev/null
if [ -n "${2-}" ]; then
  mask=$(umask)
  umask 077
  input=$(mktemp "${TMPDIR:-/tmp}/volley-stdin.XXXXXX") || exit 125
  umask "$mask"
  head -c "$2" <&3 >"$input"
  got=$(wc -c <"$input")
  exec 4<"$input"
  rm -f "$input"
  [ "$got" -eq "$2" ] || exit 125
fi
cmd=$$
{
  while read -r _; do :; done
  kill -0 "$cmd" 2>/dev/null || exit 0
  trap '' TERM
  kill -TERM -"$cmd" 2>/dev/null || kill -TERM "$cmd" 2>/dev/null
  sleep 2
  kill -KILL -"$cmd" 2>/dev/null || kill -KILL "$cmd" 2>/dev/null
} <&3 >/dev/null 2>&1 &
exec 3<&-
shell=${SHELL:-/bin/sh}
group=
read -r _ _ _ _ group _ </proc/$$/stat 2>/dev/null
if [ -n "$group" ] && [ "$group" != "$$" ] && command -v setsid >/dev/null 2>&1; then
  exec setsid "$shell" -c "$1" "${shell##*/}" <&4 4<&-
fi
exec "$shell" -c "$1" "${shell##*/}" <&4 4<&-
"#;

/// The exec string sent to sshd: the remote user's shell runs the wrapper under `sh` (as root
/// through `sudo -n` when `sudo`, see [`super::sudo`]), with the operator's command as its
/// argument, and the length of its stdin when there is one. Under sudo the wrapper and its
/// watcher are root's, so they can stop whatever the command started; `${SHELL}` is then root's
/// shell, which sudo sets.
pub fn wrap(command: &str, sudo: bool, stdin_bytes: Option<usize>) -> String {
    let length = stdin_bytes.map(|bytes| bytes.to_string());
    let mut args = vec!["volley", command];
    args.extend(length.as_deref());
    super::sudo::shell_line(WRAPPER, &args, sudo)
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    /// How the wrapper finds itself: sshd's child leads a session and process group of its
    /// own; under `sudo` it is sudo's child, in the group of the login.
    #[derive(Clone, Copy, Debug)]
    enum Parent {
        Sshd,
        Sudo,
    }

    /// Runs the wrapped command through a local `sh -c`, as sshd would through the login shell,
    /// with a stdin pipe held open as the SSH channel's would be.
    fn run(command: &str) -> std::process::Output {
        let mut child = spawn(command, Parent::Sshd);
        let _stdin = child.stdin.take();
        child.wait_with_output().expect("the wrapper finishes")
    }

    fn spawn(command: &str, parent: Parent) -> std::process::Child {
        spawn_with(command, None, parent)
    }

    fn spawn_with(
        command: &str,
        stdin_bytes: Option<usize>,
        parent: Parent,
    ) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let mut shell = Command::new("/bin/sh");
        shell
            .arg("-c")
            .arg(wrap(command, false, stdin_bytes))
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Parent::Sshd = parent {
            shell.process_group(0);
        }
        shell.spawn().expect("/bin/sh runs")
    }

    fn running(pattern: &str) -> bool {
        let status = Command::new("pgrep")
            .arg("-f")
            .arg(pattern)
            .stdout(Stdio::null())
            .status();
        status.expect("pgrep runs").success()
    }

    /// Polls (bounded) until no process matches `pattern`.
    fn gone_within(pattern: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !running(pattern) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn closing_stdin_stops_the_command_and_its_background_jobs() {
        for (parent, job, command) in [
            (Parent::Sshd, "sleep 7341.25", "sleep 7342.25"),
            (Parent::Sudo, "sleep 7341.75", "sleep 7342.75"),
        ] {
            let mut child = spawn(&format!("{job} & {command}; echo never"), parent);
            // Anchored: the wrapper's own command line names them too.
            let (job, command) = (format!("^{job}"), format!("^{command}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !(running(&job) && running(&command)) {
                assert!(
                    Instant::now() < deadline,
                    "{parent:?}: the command never started"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(child.stdin.take());
            let output = child.wait_with_output().expect("the wrapper finishes");
            assert!(output.stdout.is_empty(), "{parent:?}: {output:?}");
            assert!(
                gone_within(&job, Duration::from_secs(10)),
                "{parent:?}: background job left"
            );
            assert!(
                gone_within(&command, Duration::from_secs(10)),
                "{parent:?}: command left"
            );
        }
    }

    #[test]
    fn background_jobs_of_a_finished_command_are_left_alone() {
        for (parent, job) in [
            (Parent::Sshd, "sleep 7343.25"),
            (Parent::Sudo, "sleep 7343.75"),
        ] {
            let mut child = spawn(&format!("{job} >/dev/null 2>&1 & echo started"), parent);
            let stdin = child.stdin.take();
            let output = child.wait_with_output().expect("the wrapper finishes");
            assert_eq!(output.stdout, b"started\n", "{parent:?}");
            // The channel closes after the command ended: the watcher wakes, and must let the
            // job be.
            drop(stdin);
            std::thread::sleep(Duration::from_millis(500));
            // Anchored: the watcher's command line, the wrapper's, names the job too.
            let job = format!("^{job}");
            let survived = running(&job);
            let _ = Command::new("pkill").arg("-f").arg(&job).status();
            assert!(
                survived,
                "{parent:?}: a detached job must survive a normal end"
            );
        }
    }

    #[test]
    fn the_command_starts_with_the_signal_dispositions_sshd_gives_it() {
        // Not a background job of the wrapper: those start with SIGINT and SIGQUIT ignored. Of
        // the standard signals (1 to 31; glibc keeps some real-time ones to itself), the command
        // ignores what this test's process ignores, but SIGPIPE, which Rust ignores and resets
        // for the processes it spawns.
        let ignored = |status: &str| {
            let line = status.lines().find_map(|line| line.strip_prefix("SigIgn:"));
            u64::from_str_radix(line.expect("a SigIgn line").trim(), 16).expect("hex")
        };
        let standard = 0x7fff_ffff;
        let own = ignored(&std::fs::read_to_string("/proc/self/status").unwrap()) & standard;
        let sigpipe = 1 << (13 - 1);
        for parent in [Parent::Sshd, Parent::Sudo] {
            let mut child = spawn("cat /proc/self/status", parent);
            let stdin = child.stdin.take();
            let output = child.wait_with_output().expect("the wrapper finishes");
            drop(stdin);
            let status = String::from_utf8_lossy(&output.stdout);
            assert_eq!(
                ignored(&status) & standard,
                own & !sigpipe,
                "{parent:?}: {status}"
            );
        }
    }

    #[test]
    fn exit_statuses_above_128_stay_exit_statuses_and_no_job_message_is_added() {
        use std::os::unix::process::ExitStatusExt;
        let output = run("exit 130");
        assert_eq!(output.status.code(), Some(130), "{output:?}");
        let output = run("kill -USR1 $$");
        assert_eq!(output.status.signal(), Some(10), "{output:?}");
        assert!(output.stderr.is_empty(), "{output:?}");
    }

    #[test]
    fn quoting_survives_the_shell() {
        let output = run(r#"printf '%s|' "it's" 'a "b"' \$HOME; echo"#);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "it's|a \"b\"|$HOME|\n"
        );
    }

    #[test]
    fn exit_status_and_streams_pass_through() {
        let output = run("echo out; echo err >&2; exit 3");
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
    }

    #[test]
    fn a_signal_death_is_reported_as_that_signal() {
        use std::os::unix::process::ExitStatusExt;
        let output = run("kill -TERM $$");
        assert_eq!(output.status.signal(), Some(15), "{output:?}");
    }

    #[test]
    fn the_command_reads_exactly_the_announced_bytes_and_eof_still_stops_it() {
        use std::io::Write;
        let input: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        let dir = tempfile::tempdir().unwrap();
        let result = dir.path().join("result");
        // The command reads its input to the end, reports, then waits to be stopped.
        let command = format!(
            "cksum > {0}.tmp; wc -c >> {0}.tmp; mv {0}.tmp {0}; sleep 7344.25",
            result.display()
        );
        let mut child = spawn_with(&command, Some(input.len()), Parent::Sshd);
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&input).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !result.exists() || !running("^sleep 7344.25") {
            assert!(
                Instant::now() < deadline,
                "the command never got to its sleep"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The channel stays open after the input: the command runs on until EOF, the stop.
        assert!(
            child.try_wait().unwrap().is_none(),
            "the wrapper ended by itself"
        );
        drop(stdin);
        child.wait_with_output().expect("the wrapper finishes");
        assert!(
            gone_within("^sleep 7344.25", Duration::from_secs(10)),
            "not stopped"
        );
        let expected = {
            let mut cksum = Command::new("cksum")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            cksum.stdin.take().unwrap().write_all(&input).unwrap();
            cksum.wait_with_output().unwrap().stdout
        };
        // cksum consumed everything, so `wc -c` saw the end of file at once.
        assert_eq!(
            std::fs::read_to_string(&result).unwrap(),
            format!("{}0\n", String::from_utf8_lossy(&expected))
        );
    }

    #[test]
    fn input_cut_short_by_a_stop_does_not_start_the_command() {
        use std::io::Write;
        let mut child = spawn_with("echo started", Some(1000), Parent::Sshd);
        child.stdin.take().unwrap().write_all(b"only some").unwrap();
        let output = child.wait_with_output().expect("the wrapper finishes");
        assert!(output.stdout.is_empty(), "{output:?}");
        assert_eq!(output.status.code(), Some(125));
    }

    #[test]
    fn the_command_runs_in_the_login_shell_named_as_sshd_names_it() {
        let output = run("echo $0");
        assert_eq!(output.stdout, b"sh\n");
    }

    #[test]
    fn the_command_reads_no_stdin() {
        let output = run("cat; echo done");
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(output.stdout, b"done\n");
    }
}
