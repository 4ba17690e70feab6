//! `volley agent install` and `volley agent upgrade` on one host, after the probe.
//!
//! Install, each step only when the host's copy differs from what the controller would write:
//! 1. binary: uploaded as `volley-agent.new`, checksum-verified, its `--version` read, the
//!    current one kept as `volley-agent.prev`, then renamed into place (atomic);
//! 2. CA certificate, 3. agent certificate (new key made on the host, see [`certificate`]),
//!    4. config, 5. unit (under systemd);
//! 6. service: restart when anything changed or the agent is not running; a reload (SIGHUP)
//!    when only the certificate changed;
//! 7. verify over mTLS ([`verify`]).
//!
//! Upgrade is steps 1, 6 and 7 on a host that has an agent. When the new binary fails to start
//! or to answer, the previous one is put back and restarted, and the step fails with both
//! stories: the old agent keeps serving. Nothing changed and the agent answering as expected is
//! "unchanged".

use bytes::Bytes;

use super::certificate;
use super::files;
use super::probe::{self, Found};
use super::remote::{Remote, StepError, sha256_hex};
use super::supervisor::Supervisor;
use super::verify::{self, Expected};
use super::{AgentBinary, AgentOperation};
use crate::plan::HostSpec;

/// What install or upgrade works with on one host.
pub struct HostWork<'a> {
    pub operation: &'a AgentOperation,
    pub host: &'a HostSpec,
    pub remote: Remote<'a>,
    pub found: Found,
    pub supervisor: Supervisor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Install,
    Upgrade,
}

/// Runs install or upgrade; returns the host's one-line summary.
pub async fn install(
    work: &HostWork<'_>,
    mode: Mode,
    binary: &AgentBinary,
) -> Result<String, StepError> {
    let found = &work.found;
    let layout = work.remote.layout;
    if mode == Mode::Upgrade && !found.installed() {
        return Err(StepError::new(
            "probe",
            format!(
                "no agent is installed at {}: use `volley agent install`",
                layout.binary
            ),
        ));
    }
    let operation = work.operation;
    let renew_because = match (&found.certificate, found.key_mode.as_deref()) {
        _ if mode == Mode::Upgrade => None,
        // A key that is not the certificate's would stop the agent at its next start.
        (Some(_), Some("600")) if found.key_matches == Some(false) => {
            Some("the key is not the certificate's".to_string())
        }
        (Some(pem), Some("600")) => certificate::problem(&operation.ca, pem, work.host),
        (Some(_), Some(mode)) => Some(format!("the key has mode {mode}")),
        _ => Some("none yet".to_string()),
    };
    // A PKI that cannot sign fails the host before anything is uploaded to it.
    if renew_because.is_some() {
        operation
            .pki
            .check_can_sign()
            .map_err(|error| StepError::new("certificate", error.to_string()))?;
    }
    let mut changed: Vec<String> = Vec::new();
    let mut version = found.version.clone();
    let mut swapped = false;
    if found.binary.as_deref() != Some(binary.sha256.as_str()) {
        let new = place_binary(work, binary).await?;
        changed.push(match &version {
            Some(old) if *old != new => format!("binary {old} -> {new}"),
            _ => "binary".to_string(),
        });
        swapped = found.binary.is_some();
        version = Some(new);
    }
    let mut certificate = found.certificate.clone();
    if mode == Mode::Install {
        if found.ca.as_deref() != Some(sha256_hex(operation.ca.as_bytes()).as_str()) {
            let ca = Bytes::from(operation.ca.clone());
            work.remote.put("ca", &layout.ca, ca, 0o644).await?;
            changed.push("ca".to_string());
        }
        if renew_because.is_some() {
            certificate = Some(certificate::issue(&work.remote, &operation.pki, work.host).await?);
            changed.push("certificate".to_string());
        }
        // The operator's settings are carried over only from the config read whole: one read
        // in part (too large, not UTF-8) would lose some, and is refused instead.
        let existing = found.config_text.as_deref();
        let whole =
            |text: &str| found.config.as_deref() == Some(sha256_hex(text.as_bytes()).as_str());
        if found.config.is_some() && !existing.is_some_and(whole) {
            return Err(StepError::new(
                "config",
                format!(
                    "{} could not be read whole (too large, or not UTF-8), so the settings kept \
                     in it would be lost: fix it by hand",
                    layout.config
                ),
            ));
        }
        let config = files::agent_config(layout, work.host, &operation.identity, existing);
        if found.config.as_deref() != Some(sha256_hex(config.as_bytes()).as_str()) {
            let config = Bytes::from(config);
            work.remote
                .put("config", &layout.new_config(), config, 0o644)
                .await?;
            work.remote.script("config", CHECK_NEW_CONFIG).await?;
            changed.push("config".to_string());
        }
        let unit = files::unit(layout);
        if work.supervisor == Supervisor::Systemd
            && found.unit.as_deref() != Some(sha256_hex(unit.as_bytes()).as_str())
        {
            work.remote
                .put("unit", &layout.unit, Bytes::from(unit), 0o644)
                .await?;
            changed.push("unit".to_string());
        }
    }
    let expected = Expected {
        version: version.clone(),
        certificate: certificate.as_deref().and_then(certificate::der),
        pid: None,
    };

    let service = if !found.running {
        Some(("started", work.supervisor.restart(layout)))
    } else if changed == ["certificate"] {
        Some(("reloaded", work.supervisor.reload()))
    } else if !changed.is_empty() {
        Some(("restarted", work.supervisor.restart(layout)))
    } else {
        None
    };
    let served = match service {
        Some((done, script)) => {
            let served = match work.remote.script("service", &script).await {
                Ok(output) => until_serving(work, &expected.of(work.supervisor.pid(&output))).await,
                Err(error) => Err(error),
            };
            match served {
                Ok(served) => {
                    changed.push(done.to_string());
                    served
                }
                Err(failure) if swapped => return Err(roll_back(work, failure).await),
                Err(failure) => return Err(failure),
            }
        }
        // Files as they should be and an agent running: it must also answer as expected; an
        // agent that runs with older files (changed by hand, a failed reload) is restarted.
        None => match until_serving(work, &expected.of(found.pid)).await {
            Ok(served) => served,
            Err(failure) => {
                let output = work
                    .remote
                    .script("service", &work.supervisor.restart(layout))
                    .await?;
                let served =
                    until_serving(work, &expected.of(work.supervisor.pid(&output))).await?;
                changed.push(format!("restarted ({})", failure.reason));
                served
            }
        },
    };
    let verdict = if changed.is_empty() {
        "unchanged".to_string()
    } else {
        format!("changed: {}", changed.join(", "))
    };
    Ok(format!(
        "{verdict}; agent {} answers on {} under {}",
        served.info.version,
        files::listen_address(work.host),
        work.supervisor.name()
    ))
}

/// Has the agent (this install's binary, in place by now) read the new config as its start
/// would, before it replaces the old one: settings kept below the line that the agent cannot
/// take (a typo, a key the install also writes, bad TOML) fail the step with the agent's own
/// line, and the running agent and its config are left as they were. An agent too old to
/// know `check-config` exits 64 (bad command line); its config goes in unchecked, as before.
const CHECK_NEW_CONFIG: &str = r#"status=0
said=$(limited "$BINARY" --config "$CONFIG.new" check-config 2>&1) || status=$?
case $status in
  0|64) mv -f "$CONFIG.new" "$CONFIG" ;;
  *)
    rm -f "$CONFIG.new"
    echo "$CONFIG as this install would write it is refused by the agent, so it was not written (fix the settings below the line by hand): $(printf '%s\n' "$said" | tail -n 1)" >&2
    exit 1
    ;;
esac
"#;

/// Runs the uploaded `$BINARY.new --version` and prints its first line, which must be
/// `volley-agent X.Y.Z`; otherwise removes it, so that the wrong file is never renamed into
/// place, and fails with what it said (the exec error, for a binary that cannot run here).
const CHECK_NEW_BINARY: &str = r#"if ! said=$(limited "$BINARY.new" --version 2>&1); then
  rm -f "$BINARY.new"
  echo "the new binary does not run here: $BINARY.new --version failed: $(printf '%s\n' "$said" | tail -n 1)" >&2
  exit 1
fi
first=$(printf '%s\n' "$said" | head -n 1)
case $first in
  "volley-agent "?*) printf '%s\n' "$first" ;;
  *)
    rm -f "$BINARY.new"
    echo "the new binary is not volley-agent: its --version says '$first'" >&2
    exit 1
    ;;
esac
"#;

/// Uploads the binary next to the current one, reads its version, keeps the current one as
/// `.prev` and renames the new one into place. Returns the new version.
async fn place_binary(work: &HostWork<'_>, binary: &AgentBinary) -> Result<String, StepError> {
    let layout = work.remote.layout;
    work.remote
        .put("binary", &layout.new_binary(), binary.bytes.clone(), 0o755)
        .await?;
    let said = work.remote.script("binary", CHECK_NEW_BINARY).await?;
    let version = said
        .lines()
        .next()
        .and_then(probe::version)
        .ok_or_else(|| StepError::new("binary", "the new binary's --version printed nothing"))?;
    let keep = if work.found.binary.is_some() {
        "cp -p \"$BINARY\" \"$BINARY.prev\"\n"
    } else {
        ""
    };
    work.remote
        .script(
            "binary",
            &format!("{keep}mv -f \"$BINARY.new\" \"$BINARY\"\n"),
        )
        .await?;
    Ok(version)
}

async fn until_serving(
    work: &HostWork<'_>,
    expected: &Expected,
) -> Result<crate::transport::agent::Served, StepError> {
    verify::until_serving(
        &work.operation.agent,
        work.host,
        &work.remote,
        work.supervisor,
        expected,
    )
    .await
}

/// Puts the previous binary back and restarts it after `failure`; the step still fails, and
/// says whether the old agent answers again.
async fn roll_back(work: &HostWork<'_>, failure: StepError) -> StepError {
    let layout = work.remote.layout;
    let script = format!(
        "mv -f \"$BINARY.prev\" \"$BINARY\"\n{}",
        work.supervisor.restart(layout)
    );
    let story = match work.remote.script("rollback", &script).await {
        Err(error) => format!("the rollback failed too: {}", error.reason),
        Ok(output) => {
            let expected = Expected {
                version: work.found.version.clone(),
                certificate: None,
                pid: work.supervisor.pid(&output),
            };
            match until_serving(work, &expected).await {
                Ok(served) => format!(
                    "rolled back to {}, which answers again",
                    served.info.version
                ),
                Err(error) => format!(
                    "rolled back, but the previous agent does not answer either: {}",
                    error.reason
                ),
            }
        }
    };
    StepError::new(failure.step, format!("{}; {story}", failure.reason))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use super::super::layout::Layout;
    use super::super::remote::PRELUDE;
    use super::*;

    /// Runs the check on `content` put where an upload puts the new binary.
    fn check(content: &str) -> (bool, String, String, bool) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(Some(dir.path()));
        std::fs::create_dir_all(dir.path().join("usr/local/bin")).unwrap();
        let new = layout.new_binary();
        std::fs::write(&new, content).unwrap();
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = format!(
            "set -eu\n{}{PRELUDE}{CHECK_NEW_BINARY}",
            layout.shell_variables()
        );
        let output = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).replace(&new, "NEW");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr,
            std::path::Path::new(&new).exists(),
        )
    }

    #[test]
    fn only_a_binary_that_says_volley_agent_is_kept() {
        let (ok, stdout, _, kept) = check("#!/bin/sh\necho 'volley-agent 9.9.9'\n");
        assert!(ok && kept);
        assert_eq!(stdout, "volley-agent 9.9.9\n");

        let (ok, _, stderr, kept) = check("#!/bin/sh\necho 'volley 0.1.0'\n");
        assert!(!ok && !kept, "{stderr}");
        assert_eq!(
            stderr,
            "the new binary is not volley-agent: its --version says 'volley 0.1.0'\n"
        );

        let (ok, _, stderr, kept) = check("#!/nonexistent/interpreter\n");
        assert!(!ok && !kept, "{stderr}");
        assert!(
            stderr.starts_with("the new binary does not run here: NEW --version failed: ")
                && stderr.contains("No such file or directory"),
            "{stderr}"
        );
    }
}
