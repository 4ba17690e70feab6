//! Where journals live and how they are found: the runs directory, run ids, creating a journal
//! file, finding a run by `last` or its id, and pruning old runs.
//!
//! A journal is `<runs dir>/<id>.jsonl`; the directory is
//! `$XDG_STATE_HOME/volley/runs` (default `~/.local/state/volley/runs`), made 0700, and each
//! file 0600: a journal names hosts and commands, which are nobody else's business.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use volley_common::journal::{Entry, Footer, Header, JournalError, Run};

use super::clock::Stamp;
use crate::entropy::XorShift;
use crate::plan::JournalLimits;
use crate::plan::{Environment, io_reason};

const EXTENSION: &str = "jsonl";

/// A problem finding or reading a recorded run; the operator's input when it names a run.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no runs recorded in {0}")]
    NoRuns(PathBuf),
    #[error("unknown run '{0}' (see volley runs)")]
    Unknown(String),
    #[error("ambiguous run '{given}': {count} runs start with it")]
    Ambiguous { given: String, count: usize },
    #[error("run journal {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
}

/// One journal file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFile {
    pub id: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// `$XDG_STATE_HOME/volley/runs`, or `~/.local/state/volley/runs`. The XDG spec says a relative
/// XDG_STATE_HOME is to be ignored.
pub fn runs_dir(env: &Environment) -> PathBuf {
    let state = env
        .variables
        .iter()
        .find(|(name, _)| name == "XDG_STATE_HOME")
        .map(|(_, value)| PathBuf::from(value))
        .filter(|path| path.is_absolute())
        .unwrap_or_else(|| env.home.join(".local/state"));
    state.join("volley").join("runs")
}

/// Creates the journal file of a new run, with a fresh id, and the directory if need be.
pub fn create(dir: &Path, started: &Stamp) -> io::Result<(String, PathBuf, File)> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut random = XorShift::seeded(u64::from(std::process::id()));
    let mut attempt = 0;
    loop {
        let id = format!("{}-{:04x}", started.compact, random.next_u64() & 0xffff);
        let path = dir.join(format!("{id}.{EXTENSION}"));
        // O_APPEND: every record is one write at the end, even if the file were shared.
        // create_new: two runs started in the same second never share a journal.
        let opened = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match opened {
            Ok(file) => return Ok((id, path, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Every journal in `dir`, oldest first. A missing directory holds no runs.
pub fn list(dir: &Path) -> io::Result<Vec<RunFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut runs = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(&format!(".{EXTENSION}")))
            .filter(|id| is_run_id(id))
        else {
            continue;
        };
        let bytes = entry.metadata().map_or(0, |metadata| metadata.len());
        runs.push(RunFile {
            id: id.to_string(),
            path,
            bytes,
        });
    }
    // Ids start with their second; within one second the header's milliseconds decide, and a
    // journal whose header cannot be read counts as the newest of its second: `last` must
    // never be an older run than the newest (a retry would run another command), and a
    // journal that cannot be read is refused when named.
    runs.sort_by_cached_key(|run| {
        let started = started(&run.path);
        (
            run.id[..16].to_string(),
            started.is_none(),
            started,
            run.id.clone(),
        )
    });
    Ok(runs)
}

/// `20261127T065812Z-3f9a`. Only names of this shape are journals; nothing else in the
/// directory is ever read or deleted.
fn is_run_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 21
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[8] == b'T'
        && bytes[9..15].iter().all(u8::is_ascii_digit)
        && &bytes[15..17] == b"Z-"
        && bytes[17..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// The run that `given` names: `last`, an id, or the start of exactly one id.
pub fn find(dir: &Path, given: &str) -> Result<RunFile, StoreError> {
    let runs = list(dir).map_err(|error| StoreError::Unreadable {
        path: dir.to_path_buf(),
        reason: io_reason(&error),
    })?;
    if given == "last" {
        return runs
            .last()
            .cloned()
            .ok_or_else(|| StoreError::NoRuns(dir.to_path_buf()));
    }
    if let Some(run) = runs.iter().find(|run| run.id == given) {
        return Ok(run.clone());
    }
    let matching: Vec<&RunFile> = runs
        .iter()
        .filter(|run| !given.is_empty() && run.id.starts_with(given))
        .collect();
    match matching[..] {
        [run] => Ok(run.clone()),
        [] => Err(StoreError::Unknown(given.to_string())),
        _ => Err(StoreError::Ambiguous {
            given: given.to_string(),
            count: matching.len(),
        }),
    }
}

/// Reads a whole journal.
pub fn load(run: &RunFile) -> Result<Run, StoreError> {
    let unreadable = |reason: String| StoreError::Unreadable {
        path: run.path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&run.path).map_err(|e| unreadable(io_reason(&e)))?;
    Run::parse(&text).map_err(|e: JournalError| unreadable(e.to_string()))
}

/// A journal's header and footer, read without the host records in between when the footer is
/// there; a run without one (still running, or killed) is read whole for its counts.
pub fn summary(run: &RunFile) -> Result<(Header, Option<Footer>, Option<Run>), StoreError> {
    let unreadable = |reason: String| StoreError::Unreadable {
        path: run.path.clone(),
        reason,
    };
    let mut file = File::open(&run.path).map_err(|e| unreadable(io_reason(&e)))?;
    if let Some(footer) =
        last_line(&mut file)
            .ok()
            .and_then(|line| match serde_json::from_str(&line) {
                Ok(Entry::Footer(footer)) => Some(footer),
                _ => None,
            })
    {
        let header =
            first_line(&run.path)
                .ok()
                .and_then(|line| match serde_json::from_str(&line) {
                    Ok(Entry::Header(header)) => Some(*header),
                    _ => None,
                });
        if let Some(header) = header {
            return Ok((header, Some(footer), None));
        }
    }
    let whole = load(run)?;
    Ok((whole.header.clone(), whole.footer.clone(), Some(whole)))
}

fn first_line(path: &Path) -> io::Result<String> {
    use std::io::BufRead;
    let mut line = String::new();
    io::BufReader::new(File::open(path)?).read_line(&mut line)?;
    Ok(line)
}

/// The last line of a file, if it fits in the last 64 KiB (a footer always does).
fn last_line(file: &mut File) -> io::Result<String> {
    let length = file.seek(SeekFrom::End(0))?;
    let start = length.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    file.read_to_string(&mut tail)?;
    Ok(tail
        .trim_end()
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The header's start time, to order runs started within the same second.
/// When the run of the journal at `path` started, from its header; `None` if it cannot be read.
fn started(path: &Path) -> Option<String> {
    first_line(path)
        .ok()
        .and_then(|line| match serde_json::from_str(&line) {
            Ok(Entry::Header(header)) => Some(header.started),
            _ => None,
        })
}

/// The file a retry of a run locks while it runs: beside the journal, so that the journal's
/// own lock still tells a run (or its resume) still going. Not a journal's name: never listed.
fn retry_lock(journal: &Path) -> PathBuf {
    journal.with_extension("retrying")
}

/// Takes the lock that a retry of `run` holds for as long as the file returned is open
/// (opened for writing: a lock over NFS needs it); `None` if another volley's retry holds it.
pub fn hold_for_retry(run: &RunFile) -> Result<Option<File>, StoreError> {
    let path = retry_lock(&run.path);
    let unwritable = |error: io::Error| StoreError::Unreadable {
        path: path.clone(),
        reason: io_reason(&error),
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(unwritable)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        // No lock to be had on this filesystem: as `in_use`, the run is taken as not in use.
        Err(std::fs::TryLockError::Error(_)) => Ok(Some(file)),
    }
}

/// Whether a volley still writes the journal at `path`: it holds the journal's lock until it
/// ends (see [`super::Journal`]). A journal that cannot be opened is not in use.
pub fn in_use(path: &Path) -> bool {
    // Opened for writing: over NFS, an exclusive lock on a file opened read-only fails.
    let opened = OpenOptions::new().append(true).open(path);
    match opened.map(|file| file.try_lock()) {
        Ok(Err(std::fs::TryLockError::WouldBlock)) => true,
        // Taken, and let go as the file closes; or no lock to be had here.
        Ok(_) | Err(_) => false,
    }
}

/// How long a journal with executions that may still run on their agents is kept past the
/// limits: `volley runs resume` needs it to collect them (or to tell they are in doubt).
const AWAITS_RESUME_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Whether the journal of `run` names commands that may still be running on their agents
/// (sent, and never seen to end), and was written within [`AWAITS_RESUME_FOR`].
fn awaits_resume(run: &RunFile) -> bool {
    let recent = std::fs::metadata(&run.path)
        .and_then(|metadata| metadata.modified())
        .is_ok_and(|modified| modified.elapsed().unwrap_or_default() < AWAITS_RESUME_FOR);
    recent
        && load(run)
            .is_ok_and(|whole| (0..whole.header.hosts.len()).any(|host| whole.may_be_running(host)))
}

/// Deletes the oldest journals beyond `limits.keep_runs` runs or `limits.max_bytes` in all;
/// the journal `current` is never deleted, nor one that another volley is writing or that
/// [awaits a resume](awaits_resume). Returns how many were deleted.
pub fn prune(dir: &Path, limits: &JournalLimits, current: &str) -> io::Result<usize> {
    let runs = list(dir)?;
    let mut count = runs.len();
    let mut bytes: u64 = runs.iter().map(|run| run.bytes).sum();
    let mut deleted = 0;
    for run in &runs {
        if count <= limits.keep_runs && bytes <= limits.max_bytes {
            break;
        }
        if run.id == current {
            continue;
        }
        // Another volley's run that is still going (it holds the lock): a journal deleted
        // under it would lose that run's record, and its resume and retry. It is kept, and
        // counts for nothing against the limits, as if it were not there yet.
        // So is a run killed while its agents ran its commands, for a day: deleted, its
        // executions could no longer be collected, nor known to be in doubt.
        if in_use(&run.path) || awaits_resume(run) {
            count -= 1;
            bytes -= run.bytes;
            continue;
        }
        let _ = std::fs::remove_file(retry_lock(&run.path));
        match std::fs::remove_file(&run.path) {
            Ok(()) => deleted += 1,
            // Another volley pruning at the same time got there first.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        count -= 1;
        bytes -= run.bytes;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests;
