//! Where logs and audit records go.
//!
//! Logs go to stderr (the journal under systemd), filtered by `RUST_LOG` (default `info`).
//! Audit records (target `audit`) are never filtered away by `RUST_LOG`: without `audit_log`
//! they go to stderr with the logs, at info; with `audit_log` they go only to that file,
//! appended (so `logrotate` with `copytruncate` works), created with mode 0600.

use std::fs::OpenOptions;
use std::io::{self, IsTerminal};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::prelude::*;

use crate::service::AUDIT;

#[derive(Debug, thiserror::Error)]
#[error("audit_log {path}: cannot open: {source}")]
pub struct AuditLogError {
    path: PathBuf,
    source: io::Error,
}

/// Installs the global subscriber.
pub fn init(audit_log: Option<&Path>) -> Result<(), AuditLogError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    let registry = tracing_subscriber::registry();
    match audit_log {
        None => registry
            .with(stderr.with_filter(filter.add_directive(audit_directive("info"))))
            .init(),
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| AuditLogError {
                    path: path.to_path_buf(),
                    source,
                })?;
            let audit = tracing_subscriber::fmt::layer()
                .with_writer(Mutex::new(file))
                .with_ansi(false)
                .with_filter(filter_fn(|metadata| metadata.target() == AUDIT));
            registry
                .with(stderr.with_filter(filter.add_directive(audit_directive("off"))))
                .with(audit)
                .init();
        }
    }
    Ok(())
}

fn audit_directive(level: &str) -> tracing_subscriber::filter::Directive {
    // A literal target and level always parse.
    format!("{AUDIT}={level}")
        .parse()
        .unwrap_or_else(|_| tracing_subscriber::filter::LevelFilter::INFO.into())
}
