//! The wrapper that lets the controller stop a remote command over SSH.
//!
//! Without a PTY, sshd leaves a command running when the client closes the channel or goes away,
//! and SSH `signal` requests are refused for root logins (measured against OpenSSH 9.2). So the command runs inside a small POSIX-sh wrapper:
//!
//! - the command runs in its own session and process group (`setsid`), under the user's login
//!   shell with `-c` and the shell's base name as `$0`, exactly as sshd itself would run it, with
//!   `/dev/null` as stdin;
//! - a watcher holds a duplicate of the channel's stdin and blocks reading it. The controller never
//!   sends data or EOF in normal use, so the watcher wakes only when the controller sends EOF or
//!   the connection closes (volley stopped, killed, or the host timed out). It then sends TERM to
//!   the command's group and KILL two seconds later. It ignores TERM itself from then on, so that
//!   the wrapper's own clean-up cannot cut the grace period short;
//! - when the command ends by itself, the wrapper stops the watcher, so background jobs that the
//!   command left on purpose survive, as they would under plain `ssh`;
//! - a death by signal reaches the wrapper as status 128+N; the wrapper re-raises that signal on
//!   itself (with core dumps off), so sshd reports `exit-signal` and the controller can tell
//!   `kill -9` from `exit 137`. The one ambiguity left: a command that itself exits with 129-159
//!   is reported as killed by that signal, as shells report it too.

/// The wrapper script. `$1` is the operator's command.
const WRAPPER: &str = r#"exec 3<&0 0</dev/null
shell=${SHELL:-/bin/sh}
if command -v setsid >/dev/null 2>&1; then
  setsid "$shell" -c "$1" "${shell##*/}" 3<&- &
else
  "$shell" -c "$1" "${shell##*/}" 3<&- &
fi
cmd=$!
{
  while read -r _; do :; done
  trap '' TERM
  kill -TERM -"$cmd" 2>/dev/null || kill -TERM "$cmd" 2>/dev/null
  sleep 2
  kill -KILL -"$cmd" 2>/dev/null
} <&3 >/dev/null 2>&1 &
watcher=$!
exec 3<&-
wait "$cmd"
rc=$?
kill "$watcher" 2>/dev/null
if [ "$rc" -gt 128 ] && [ "$rc" -lt 160 ]; then
  sig=$(kill -l "$rc" 2>/dev/null)
  case "$sig" in
    HUP|INT|QUIT|ILL|TRAP|ABRT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|XCPU|XFSZ|VTALRM|PROF|SYS)
      ulimit -c 0 2>/dev/null
      trap - "$sig"
      kill -s "$sig" $$
      ;;
  esac
fi
exit "$rc"
"#;

/// The exec string sent to sshd: the remote user's shell runs the wrapper under `sh` (as root
/// through `sudo -n` when `sudo`, see [`super::sudo`]), with the operator's command as its
/// argument. Under sudo the wrapper and its watcher are root's, so they can stop whatever the
/// command started; `${SHELL}` is then root's shell, which sudo sets.
pub fn wrap(command: &str, sudo: bool) -> String {
    super::sudo::shell_line(WRAPPER, &["volley", command], sudo)
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    /// Runs the wrapped command through a local `sh -c`, as sshd would through the login shell,
    /// with a stdin pipe held open as the SSH channel's would be.
    fn run(command: &str) -> std::process::Output {
        let mut child = spawn(command);
        let _stdin = child.stdin.take();
        child.wait_with_output().expect("the wrapper finishes")
    }

    fn spawn(command: &str) -> std::process::Child {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(wrap(command, false))
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("/bin/sh runs")
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
        let mut child = spawn("sleep 7341.25 & sleep 7342.25; echo never");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(running("sleep 7341.25") && running("sleep 7342.25")) {
            assert!(Instant::now() < deadline, "the command never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("the wrapper finishes");
        assert!(output.stdout.is_empty(), "{output:?}");
        assert!(
            gone_within("sleep 7341.25", Duration::from_secs(10)),
            "background job left"
        );
        assert!(
            gone_within("sleep 7342.25", Duration::from_secs(10)),
            "command left"
        );
    }

    #[test]
    fn background_jobs_of_a_finished_command_are_left_alone() {
        let output = run("sleep 7343.25 >/dev/null 2>&1 & echo started");
        assert_eq!(output.stdout, b"started\n");
        assert!(
            running("sleep 7343.25"),
            "a detached job must survive a normal end"
        );
        let _ = Command::new("pkill")
            .arg("-f")
            .arg("sleep 7343.25")
            .status();
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
