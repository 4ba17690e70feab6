//! Where logs and audit records go.
//!
//! Logs go to stderr (the journal under systemd), filtered by `RUST_LOG` (default `info`).
//! Audit records (target `audit`) are never filtered away by `RUST_LOG`: without `audit_log`
//! they go to stderr with the logs, at info; with `audit_log` they go only to that file,
//! appended, created with mode 0600. SIGHUP reopens it ([`AuditLog::reopen`]), so `logrotate`
//! works with a `postrotate` reload as with `copytruncate`: records never go on into the file
//! that was moved away.
//!
//! A record the file does not take (a full disk) is said once on stderr, and from then on the
//! agent starts nothing it could not record ([`AuditLog::broken`]: `Exec`, `Push` and `Fetch`
//! are refused, `UNAVAILABLE`) until a record is written again: the refusals' own records try.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::prelude::*;

use crate::service::AUDIT;

#[derive(Debug, thiserror::Error)]
#[error("audit_log {path}: cannot open: {source}")]
pub struct AuditLogError {
    path: PathBuf,
    source: io::Error,
}

/// The audit log file, which records are appended to, and which can be opened again by path.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    /// Why the last record could not be written; `None` once one is.
    broken: Mutex<Option<String>>,
}

impl AuditLog {
    fn open(path: &Path) -> Result<AuditLog, AuditLogError> {
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(open(path)?),
            broken: Mutex::new(None),
        })
    }

    /// Why records cannot be written, if the last one could not be.
    pub fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Notes how the last write went, saying on stderr when that changes (not through tracing:
    /// this is tracing's writer).
    fn wrote(&self, result: &io::Result<()>) {
        let mut broken = self.broken.lock().unwrap_or_else(PoisonError::into_inner);
        match (result, broken.is_some()) {
            (Err(error), was_broken) => {
                if !was_broken {
                    eprintln!(
                        "volley-agent: audit_log {}: cannot write a record ({error}); no command, \
                         push or fetch is started until one can be written",
                        self.path.display()
                    );
                }
                *broken = Some(error.to_string());
            }
            (Ok(()), true) => {
                eprintln!(
                    "volley-agent: audit_log {}: records are written again",
                    self.path.display()
                );
                *broken = None;
            }
            (Ok(()), false) => {}
        }
    }

    /// Opens the file at the path again (after `logrotate` moved it away, a new one), checked
    /// as at start; records go to the new file from then on. When it cannot be opened, the
    /// records keep going to the file open now: better a moved file than none.
    pub fn reopen(&self) -> Result<&Path, AuditLogError> {
        let file = open(&self.path)?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
        Ok(&self.path)
    }
}

/// Each record is formatted whole, then written in one call under the lock: a reopen falls
/// between records, never inside one.
impl Write for &AuditLog {
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        let written = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(record);
        self.wrote(&written);
        written.map(|()| record.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

fn open(path: &Path) -> Result<File, AuditLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| AuditLogError {
            path: path.to_path_buf(),
            source,
        })
}

/// Installs the global subscriber; returns the audit log file, when there is one, for SIGHUP
/// to reopen.
pub fn init(audit_log: Option<&Path>) -> Result<Option<Arc<AuditLog>>, AuditLogError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    let registry = tracing_subscriber::registry();
    match audit_log {
        None => {
            registry
                .with(stderr.with_filter(filter.add_directive(audit_directive("info"))))
                .init();
            Ok(None)
        }
        Some(path) => {
            let file = Arc::new(AuditLog::open(path)?);
            let audit = tracing_subscriber::fmt::layer()
                .with_writer(file.clone())
                .with_ansi(false)
                .with_filter(filter_fn(|metadata| metadata.target() == AUDIT));
            registry
                .with(stderr.with_filter(filter.add_directive(audit_directive("off"))))
                .with(audit)
                .init();
            Ok(Some(file))
        }
    }
}

fn audit_directive(level: &str) -> tracing_subscriber::filter::Directive {
    // A literal target and level always parse.
    format!("{AUDIT}={level}")
        .parse()
        .unwrap_or_else(|_| tracing_subscriber::filter::LevelFilter::INFO.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_not_written_breaks_the_log_until_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.log")).unwrap();
        assert_eq!(log.broken(), None);
        log.wrote(&Err(io::Error::other("No space left on device")));
        assert_eq!(log.broken().as_deref(), Some("No space left on device"));
        (&log).write_all(b"a record\n").unwrap();
        assert_eq!(log.broken(), None);
        let full = AuditLog::open(Path::new("/dev/full")).unwrap();
        assert!((&full).write(b"a record\n").is_err());
        assert!(full.broken().is_some());
    }
}
