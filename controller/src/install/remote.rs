//! Running the steps of an agent operation on a host: POSIX sh scripts over the host's one SSH
//! [`Session`], and uploads that are checksum-verified and moved into place atomically (the
//! script shared with `volley push`, in [`crate::upload`]).
//!
//! Every script starts with the layout's paths as shell variables and a few functions
//! ([`PRELUDE`]), runs under `/bin/sh` whatever the login shell is (as root through `sudo -n`
//! with `--become`), and fails with `set -e` semantics: a non-zero exit is the step's failure,
//! its last line of stderr the reason.

use bytes::Bytes;

use crate::transport::ssh::{Exit, Session, sudo};
pub use crate::upload::sha256_hex;
use crate::upload::{self, Directories, Upload};

use super::layout::Layout;

/// Functions every script may use:
/// - `sum FILE`: the file's SHA-256 in hex, or `-` when there is no such file;
/// - `alive PID`: the process exists and is not a zombie (containers often have no init to
///   reap one);
/// - `agent_pid`: prints the pid of this layout's agent under the fallback supervisor, if it
///   runs: the pid file's process, checked by its command line, so that a recycled pid or
///   another host's agent on the same machine is never taken for ours;
/// - `limited CMD...`: CMD with a 10-second limit where `timeout` exists, for running a binary
///   that may be anything (`--version` of an upload);
/// - `make_config_dir`: makes `$CONFIG_DIR` 0700 (it holds the key) if missing, and its
///   missing parents 0755, as `install -d` would.
pub const PRELUDE: &str = r#"sum() { if [ -f "$1" ]; then sha256sum < "$1" | cut -c1-64; else echo -; fi; }
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
agent_pid() {
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  case "$pid" in ''|*[!0-9]*) return 1;; esac
  alive "$pid" || return 1
  tr '\000' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--config $CONFIG " || return 1
  echo "$pid"
}
limited() { if command -v timeout >/dev/null 2>&1; then timeout 10 "$@"; else "$@"; fi; }
make_config_dir() {
  [ -d "$CONFIG_DIR" ] && return 0
  (umask 022; mkdir -p -- "$(dirname "$CONFIG_DIR")")
  mkdir -m 700 -- "$CONFIG_DIR"
}
"#;

/// A step that failed on the host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {reason}")]
pub struct StepError {
    pub step: &'static str,
    pub reason: String,
}

impl StepError {
    pub fn new(step: &'static str, reason: impl Into<String>) -> StepError {
        StepError {
            step,
            reason: reason.into(),
        }
    }
}

/// The host's session and layout, for running steps.
pub struct Remote<'a> {
    pub session: &'a Session,
    pub layout: &'a Layout,
    /// Every script runs through `sudo -n` (`--become`, checked before the first step).
    pub sudo: bool,
}

impl Remote<'_> {
    /// Runs `body` under `/bin/sh -eu` after the layout's variables and the [`PRELUDE`];
    /// returns its stdout.
    pub async fn script(&self, step: &'static str, body: &str) -> Result<String, StepError> {
        self.script_with_input(step, body, Bytes::new()).await
    }

    /// As [`Remote::script`], with `input` on the script's stdin.
    pub async fn script_with_input(
        &self,
        step: &'static str,
        body: &str,
        input: Bytes,
    ) -> Result<String, StepError> {
        let script = format!("set -eu\n{}{PRELUDE}{body}", self.layout.shell_variables());
        let command = sudo::shell_line(&script, &[], self.sudo);
        let finished = self
            .session
            .run(&command, input)
            .await
            .map_err(|error| StepError::new(step, error.to_string()))?;
        match &finished.exit {
            Exit::Code(0) => Ok(String::from_utf8_lossy(&finished.stdout).into_owned()),
            exit => {
                let line = finished.last_error_line();
                let reason = match (line.is_empty(), exit) {
                    (false, _) => line,
                    (true, Exit::Code(code)) => format!("exited with status {code}"),
                    (true, Exit::Signal(signal)) => format!("killed by signal {signal}"),
                };
                Err(StepError::new(step, reason))
            }
        }
    }

    /// Writes `contents` to `path` with `mode` by the shared atomic upload
    /// ([`crate::upload`]): a temporary file in the same directory, checked on the host
    /// against our SHA-256, renamed over `path`. A failure leaves `path` as it was.
    pub async fn put(
        &self,
        step: &'static str,
        path: &str,
        contents: Bytes,
        mode: u32,
    ) -> Result<(), StepError> {
        let sha256 = sha256_hex(&contents);
        let upload = Upload {
            path,
            sha256: &sha256,
            mode,
            owner: None,
            directories: Directories::Any,
            backup_suffix: None,
        };
        // The config directory holds the key: made private before an upload can make it.
        let mut body = String::new();
        if path.starts_with(&format!("{}/", self.layout.config_dir)) {
            body.push_str("make_config_dir\n");
        }
        body.push_str(&upload::script(&upload));
        self.script_with_input(step, &body, contents).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    /// Runs a script the way [`Remote::script`] builds it, with a local `/bin/sh`.
    fn local(layout: &Layout, body: &str) -> std::process::Output {
        let script = format!("set -eu\n{}{PRELUDE}{body}", layout.shell_variables());
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("/bin/sh runs")
    }

    #[test]
    fn sum_matches_our_checksum_and_says_when_there_is_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"volley\n").unwrap();
        let layout = Layout::new(Some(dir.path()));
        let body = format!(
            "sum {}; sum {}/missing",
            file.display(),
            dir.path().display()
        );
        let output = local(&layout, &body);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{}\n-\n", sha256_hex(b"volley\n"))
        );
    }

    #[test]
    fn agent_pid_takes_only_a_live_process_running_this_layouts_config() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(Some(dir.path()));
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        // A process whose command line names this layout's config, as the fallback starts it;
        // `read` is a builtin, so no child outlives the kill below.
        let quiet = || (Stdio::piped(), Stdio::null(), Stdio::null());
        let (stdin, stdout, stderr) = quiet();
        let mut ours = Command::new("/bin/sh")
            .args(["-c", "read -r line", "sh", "--config", &layout.config, "x"])
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let (_, stdout, stderr) = quiet();
        let mut other = Command::new("sleep")
            .arg("31")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let check = |pid: u32| {
            std::fs::write(&layout.pid_file, format!("{pid}\n")).unwrap();
            String::from_utf8_lossy(&local(&layout, "agent_pid || echo none").stdout)
                .trim()
                .to_string()
        };
        assert_eq!(check(ours.id()), ours.id().to_string());
        assert_eq!(check(other.id()), "none");
        std::fs::write(&layout.pid_file, "garbage").unwrap();
        assert_eq!(
            String::from_utf8_lossy(&local(&layout, "agent_pid || echo none").stdout).trim(),
            "none"
        );
        for child in [&mut ours, &mut other] {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert_eq!(check(ours.id()), "none");
    }
}
