//! `volley agent renew` and `volley agent uninstall` on one host, after the probe.
//!
//! Renew: a new key made on the host and a certificate for it (see [`certificate::issue`]),
//! then SIGHUP: the agent serves the new certificate to new connections without a restart, and
//! the step passes only when it does. Uninstall: stop (and disable), check that the agent
//! neither runs nor answers (an agent that survived the stop keeps its files, so nothing is
//! removed), then remove every file an install or upgrade may leave and, where they are left
//! empty, the layout's own directories (under a prefix; without one only `/etc/volley`).

use super::certificate;
use super::files;
use super::steps::HostWork;
use super::verify::{self, Expected};
use crate::shell::quote;

pub async fn renew(work: &HostWork<'_>) -> Result<String, super::StepError> {
    let layout = work.remote.layout;
    if !work.found.installed() {
        return Err(super::StepError::new(
            "probe",
            format!(
                "no agent is installed at {}: use `volley agent install`",
                layout.binary
            ),
        ));
    }
    let pem = certificate::issue(&work.remote, &work.operation.pki, work.host).await?;
    let (done, script) = if work.found.running {
        ("reloaded without a restart", work.supervisor.reload())
    } else {
        ("started", work.supervisor.restart(layout))
    };
    let output = work.remote.script("service", &script).await?;
    let expected = Expected {
        version: None,
        certificate: certificate::der(&pem),
        pid: work.supervisor.pid(&output),
    };
    let served = verify::until_serving(
        &work.operation.agent,
        work.host,
        &work.remote,
        work.supervisor,
        &expected,
    )
    .await?;
    let expires = certificate::expiry(&served.certificate)
        .map(|when| {
            format!(
                "expires {} ({} days)",
                certificate::date(when),
                certificate::days_left(when)
            )
        })
        .unwrap_or_default();
    Ok(format!(
        "changed: certificate {expires}, {done}; agent {} answers on {}",
        served.info.version,
        files::listen_address(work.host)
    ))
}

pub async fn uninstall(work: &HostWork<'_>) -> Result<String, super::StepError> {
    let layout = work.remote.layout;
    let found = &work.found;
    let anything = found.running
        || found.binary.is_some()
        || found.config.is_some()
        || found.ca.is_some()
        || found.unit.is_some()
        || found.key_mode.is_some()
        || found.certificate.is_some();
    let mut files = String::new();
    for file in layout.every_file() {
        files.push(' ');
        files.push_str(&quote(&file));
    }
    let mut directories = String::new();
    for directory in layout.directories() {
        directories.push(' ');
        directories.push_str(&quote(&directory));
    }
    work.remote
        .script("remove", &work.supervisor.stop())
        .await?;
    if work
        .remote
        .script("remove", &work.supervisor.check_running())
        .await
        .is_ok()
    {
        return Err(super::StepError::new(
            "remove",
            "the agent still runs after the stop; nothing was removed",
        ));
    }
    // An agent the supervisor does not know (started by hand, its pid file lost) survives the
    // stop: its files stay, so that it can still be found and stopped by them.
    if let Ok(served) = work
        .operation
        .agent
        .probe(
            work.host,
            std::time::Duration::from_secs(3),
            &crate::transport::stage::Progress::default(),
        )
        .await
    {
        return Err(super::StepError::new(
            "remove",
            format!(
                "an agent {} still answers on {} after the stop ({}): stop it first; \
                 nothing was removed",
                served.info.version,
                files::listen_address(work.host),
                served
                    .info
                    .pid
                    .map_or_else(|| "its pid unknown".to_string(), |pid| format!("pid {pid}"))
            ),
        ));
    }
    let mut body = format!(
        r#"removed=0
for file in{files}; do
  if [ -e "$file" ] || [ -L "$file" ]; then rm -f "$file"; removed=$((removed + 1)); fi
done
for dir in{directories}; do rmdir "$dir" 2>/dev/null || true; done
echo "$removed"
"#
    );
    if work.supervisor == super::supervisor::Supervisor::Systemd {
        body.push_str("systemctl daemon-reload\n");
    }
    let removed = work.remote.script("remove", &body).await?;
    if !anything {
        return Ok("unchanged: no agent was installed".to_string());
    }
    let removed = removed.lines().last().unwrap_or("0").trim().to_string();
    Ok(format!(
        "changed: stopped, removed {removed} files under {}",
        if layout.prefix.is_empty() {
            "/"
        } else {
            &layout.prefix
        }
    ))
}
