//! SIGHUP (`systemctl reload`): the configuration file, the certificate, key and CA files are
//! read again and new connections are served with them, without a restart. This is how `volley
//! agent renew` replaces a certificate without downtime, and how an operator takes a controller
//! identity out of `allowed_controllers`: running connections and executions keep going, the
//! next handshake uses the new certificate and the new list.
//!
//! The audit log file is opened again at its path, for `logrotate` (see logging.rs).
//!
//! Only `allowed_controllers`, `[session]` (read by each request as it comes: taking
//! `allow_root` away applies to the next command) and the contents of the certificate, key and
//! CA files take effect at a reload. Every other setting is held by a part of the agent that
//! started with it (the socket, the executor, the registry, the services): a change to one is
//! named in a warning and waits for the next restart, so that the operator is not left
//! believing it applies.
//!
//! The files are checked as at start (config syntax and values, key mode, parseable PEM, key
//! matching the certificate); if anything is wrong, the agent logs why and keeps serving with
//! everything it had.

use std::sync::Arc;

use rustls::ServerConfig;
use tokio::signal::unix::Signal;
use tokio::sync::watch;

use crate::config::{AgentConfig, Limits, SessionConfig};
use crate::logging::AuditLog;
use crate::registry::Retention;
use crate::tls;

/// Where a reload publishes what it applies: the TLS configuration to the listener, the
/// `[session]` settings to the service, which reads them at each request.
pub struct Applied {
    pub tls: watch::Sender<Arc<ServerConfig>>,
    pub session: watch::Sender<SessionConfig>,
}

/// Reloads on every SIGHUP and publishes what it applies.
pub async fn on_hangup(
    running: AgentConfig,
    audit: Option<Arc<AuditLog>>,
    mut hangups: Signal,
    applied: Applied,
) {
    let mut running = running;
    while hangups.recv().await.is_some() {
        if let Some(audit) = &audit {
            reopen(audit);
        }
        reload(&mut running, &applied);
    }
}

/// The audit log is reopened whatever the state of the other files: `logrotate` sends SIGHUP
/// after it moved the file, and the records must follow the path.
fn reopen(audit: &AuditLog) {
    match audit.reopen() {
        Ok(path) => tracing::info!(path = %path.display(), "SIGHUP: reopened the audit log"),
        Err(error) => tracing::error!(
            %error,
            "SIGHUP: audit records keep going to the file the agent had open"
        ),
    }
}

/// One reload: `running` becomes what is applied, when everything checks.
fn reload(running: &mut AgentConfig, applied: &Applied) {
    let file = match AgentConfig::load(&running.path) {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(
                %error,
                "SIGHUP: reload refused; still serving with the previous configuration and certificate"
            );
            return;
        }
    };
    let waiting = restart_settings(running, &file);
    if !waiting.is_empty() {
        let they = if waiting.len() == 1 {
            "it takes"
        } else {
            "they take"
        };
        tracing::warn!(
            "SIGHUP: {} changed in {}: {they} effect at the next restart",
            waiting.join(", "),
            running.path.display()
        );
    }
    let next = AgentConfig {
        allowed_controllers: file.allowed_controllers,
        session: file.session,
        ..running.clone()
    };
    match tls::server_config(&next) {
        Ok(served) => {
            applied.tls.send_replace(served.server);
            applied.session.send_replace(next.session.clone());
            if let Some(warning) = &served.warning {
                tracing::warn!("SIGHUP: {warning}");
            }
            tracing::info!(
                certificate = %next.certificate.display(),
                controllers = ?next.allowed_controllers,
                "SIGHUP: reloaded the certificate, key and CA, allowed_controllers and [session]"
            );
            *running = next;
        }
        Err(error) => tracing::error!(
            %error,
            "SIGHUP: reload refused; still serving with the previous certificate and allowed_controllers"
        ),
    }
}

/// The settings (as the file names them) that differ between the running configuration and the
/// file, other than those a reload applies.
fn restart_settings(running: &AgentConfig, file: &AgentConfig) -> Vec<&'static str> {
    // Destructured in full, so that a new setting cannot be forgotten here.
    let AgentConfig {
        path: _,
        listen,
        certificate,
        key,
        ca,
        allowed_controllers: _,
        // Applied: each request reads it as it comes.
        session: _,
        audit_log,
        executor,
        push_roots,
        limits,
        retention,
        warnings: _,
    } = file;
    let mut changed = Vec::new();
    let mut compare = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    compare("listen", *listen != running.listen);
    // The files are read again at every reload, but from the paths the agent started with: the
    // key's path is also the file that pushes must never touch.
    compare("certificate", *certificate != running.certificate);
    compare("key", *key != running.key);
    compare("ca", *ca != running.ca);
    compare("audit_log", *audit_log != running.audit_log);
    compare("executor", *executor != running.executor);
    // The roots alone: the files they protect follow `key`.
    compare("push_roots", push_roots.list() != running.push_roots.list());
    let Limits {
        max_concurrent_execs,
        max_message_bytes,
        max_concurrent_streams,
        max_concurrent_handshakes,
        max_timeout,
        shutdown_grace,
        max_file_bytes,
    } = limits;
    let was = &running.limits;
    compare(
        "limits.max_concurrent_execs",
        *max_concurrent_execs != was.max_concurrent_execs,
    );
    compare(
        "limits.max_message_bytes",
        *max_message_bytes != was.max_message_bytes,
    );
    compare(
        "limits.max_concurrent_streams",
        *max_concurrent_streams != was.max_concurrent_streams,
    );
    compare(
        "limits.max_concurrent_handshakes",
        *max_concurrent_handshakes != was.max_concurrent_handshakes,
    );
    compare("limits.max_timeout", *max_timeout != was.max_timeout);
    compare(
        "limits.shutdown_grace",
        *shutdown_grace != was.shutdown_grace,
    );
    compare(
        "limits.max_file_bytes",
        *max_file_bytes != was.max_file_bytes,
    );
    let Retention {
        keep_for,
        max_executions,
        max_bytes,
        keep_output,
    } = retention;
    let was = &running.retention;
    compare("retention.keep_for", *keep_for != was.keep_for);
    compare(
        "retention.max_executions",
        *max_executions != was.max_executions,
    );
    compare("retention.max_bytes", *max_bytes != was.max_bytes);
    compare("retention.keep_output", *keep_output != was.keep_output);
    changed
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(text: &str) -> AgentConfig {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write the config");
        let config = AgentConfig::load(&path).expect("a valid config");
        AgentConfig {
            path: Path::new("agent.toml").to_path_buf(),
            ..config
        }
    }

    fn check(before: &str, after: &str, expected: &[&str]) {
        assert_eq!(
            restart_settings(&load(before), &load(after)),
            expected,
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn settings_that_wait_for_a_restart_are_named() {
        check("", "", &[]);
        // Applied at once: not named.
        check("", "allowed_controllers = [\"ops\"]", &[]);
        check(
            "",
            "listen = \"127.0.0.1:1\"\n[limits]\nmax_timeout = \"2h\"",
            &["listen", "limits.max_timeout"],
        );
        check(
            "",
            "certificate = \"/c.pem\"\nkey = \"/k.key\"\nca = \"/ca.pem\"\naudit_log = \"/a.log\"",
            &["certificate", "key", "ca", "audit_log"],
        );
        check(
            "",
            "executor = \"direct\"\npush_roots = [\"/srv\"]",
            &["executor", "push_roots"],
        );
        // [session] too: each request reads it as it comes.
        check(
            "",
            "[session]\nallow_root = false\nenv = { LANG = \"C\" }",
            &[],
        );
        check(
            "",
            "[retention]\nkeep_for = \"1m\"\nmax_bytes = 1",
            &["retention.keep_for", "retention.max_bytes"],
        );
        // The same values written otherwise are no change.
        check(
            "[limits]\nmax_timeout = \"1h\"",
            "[limits]\nmax_timeout = 3600",
            &[],
        );
    }
}
