//! `--become`: the SSH user becomes root through `sudo -n` for a command or for every step of an
//! agent operation, as Ansible's `become` does.
//!
//! `sudo -n` never prompts: where sudo would ask for a password it fails at once, so a host whose
//! sudo wants one gets an outcome that says so, never a run that hangs. sudo's refusals and a
//! command's own failures both exit 1, so before the first command on a connection [`check`]
//! runs `sudo -n` once on its own and turns what sudo said into a one-line reason.
//!
//! sudo runs `/bin/sh` with `-H`: the command sees root's HOME and sudo's clean environment
//! (env_reset), as it would under `sudo -H sh -c` typed by hand. A root login needs no sudo:
//! `become` with the user root changes nothing.

use bytes::Bytes;

use super::{Exit, Session};
use crate::plan::HostSpec;
use crate::shell::quote;

/// Whether `host`'s commands go through sudo.
pub fn needed(host: &HostSpec) -> bool {
    host.uses_sudo()
}

/// The exec line that runs `/bin/sh -c SCRIPT ARGS...`, through `sudo -n -H` when `sudo`. The
/// remote user's login shell runs the line, so it only execs.
pub fn shell_line(script: &str, args: &[&str], sudo: bool) -> String {
    let mut line = String::from("exec ");
    if sudo {
        line.push_str("sudo -n -H ");
    }
    line.push_str("/bin/sh -c ");
    line.push_str(&quote(script));
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

/// Checks on `session` that `user` becomes root through `sudo -n`. The error is the reason, one
/// line, for the host's outcome.
pub async fn check(session: &Session, user: &str) -> Result<(), String> {
    let finished = session
        .run(&shell_line("id -u", &[], true), Bytes::new())
        .await
        .map_err(|error| format!("sudo -n as {user} (--become): {error}"))?;
    judge(
        user,
        &finished.exit,
        &String::from_utf8_lossy(&finished.stdout),
        &finished.last_error_line(),
    )
}

/// What sudo's answer to `id -u` means. `said` is the last line sudo (or the shell) wrote on
/// stderr.
fn judge(user: &str, exit: &Exit, stdout: &str, said: &str) -> Result<(), String> {
    if *exit == Exit::Code(0) {
        // The last line: a login shell's startup files may print before the command runs.
        let uid = stdout.lines().map(str::trim).rfind(|line| !line.is_empty());
        return match uid {
            Some("0") => Ok(()),
            uid => Err(format!(
                "sudo -n as {user} ran /bin/sh as uid {}, not root (--become)",
                uid.unwrap_or("(none said)")
            )),
        };
    }
    let lower = said.to_ascii_lowercase();
    let reason = if lower.contains("password is required") {
        format!(
            "sudo -n as {user} asks for a password, which volley never types (--become): \
             allow {user} NOPASSWD in sudoers"
        )
    } else if lower.contains("not allowed to")
        || lower.contains("not in the sudoers")
        || lower.contains("may not run sudo")
    {
        format!("sudo refuses to run /bin/sh as root for {user} (--become): {said}")
    } else if lower.contains("tty") || lower.contains("terminal is required") {
        format!(
            "sudo as {user} requires a terminal (requiretty), which volley never opens \
             (--become): {said}"
        )
    } else if *exit == Exit::Code(127) || lower.contains("not found") {
        format!("sudo is not installed on the host, or not on {user}'s PATH (--become)")
    } else if said.is_empty() {
        format!("sudo -n as {user} failed with {exit:?} and said nothing (--become)")
    } else {
        format!("sudo -n as {user} failed (--become): {said}")
    };
    Err(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(exit: u32, stdout: &str, said: &str, expected: Result<(), &str>) {
        let got = judge("ops", &Exit::Code(exit), stdout, said);
        match expected {
            Ok(()) => assert_eq!(got, Ok(()), "{said:?}"),
            Err(start) => {
                let reason = got.expect_err(said);
                assert!(reason.starts_with(start), "{said:?}: {reason}");
                assert!(!reason.contains('\n'), "{reason}");
            }
        }
    }

    #[test]
    fn what_sudo_says_becomes_one_reason() {
        check(0, "0\n", "", Ok(()));
        // A .bashrc that greets: its lines come first.
        check(0, "Welcome to web1\n\n0\n", "", Ok(()));
        check(
            0,
            "1000\n",
            "",
            Err("sudo -n as ops ran /bin/sh as uid 1000"),
        );
        check(
            1,
            "",
            "sudo: a password is required",
            Err("sudo -n as ops asks for a password, which volley never types"),
        );
        check(
            1,
            "",
            "Sorry, user ops is not allowed to execute '/bin/sh -c id -u' as root on web1.",
            Err("sudo refuses to run /bin/sh as root for ops (--become): Sorry, user ops"),
        );
        check(
            1,
            "",
            "ops is not in the sudoers file.  This incident will be reported.",
            Err("sudo refuses"),
        );
        check(
            1,
            "",
            "sudo: sorry, you must have a tty to run sudo",
            Err("sudo as ops requires a terminal"),
        );
        check(
            127,
            "",
            "sh: 1: exec: sudo: not found",
            Err("sudo is not installed"),
        );
        check(1, "", "", Err("sudo -n as ops failed with Code(1)"));
        check(
            1,
            "",
            "sudo: unable to open /etc/sudoers: Permission denied",
            Err("sudo -n as ops failed (--become): sudo: unable to open"),
        );
    }

    #[test]
    fn the_line_execs_the_shell_through_sudo_only_when_asked() {
        assert_eq!(
            shell_line("echo $1", &["a b"], false),
            "exec /bin/sh -c 'echo $1' 'a b'"
        );
        assert_eq!(
            shell_line("id -u", &[], true),
            "exec sudo -n -H /bin/sh -c 'id -u'"
        );
    }
}
