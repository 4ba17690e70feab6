//! The run journal: every run's record on disk, written as the run goes, read back by
//! `volley runs` and `volley retry`.
//!
//! Layout:
//! - this file: [`Journal`], the writer; [`tap`], which journals each host's outcome from the
//!   event stream before passing the event on to the reporters; [`header`], the first record.
//! - [`store`]: the runs directory, run ids, finding, reading and pruning journals.
//! - [`clock`]: UTC timestamps without a date crate.
//!
//! Durability: each record is one `write(2)` of a whole line to a file opened with `O_APPEND`,
//! made as soon as the host finishes and before the reporters hear of it. Once written, a record
//! is in the kernel's page cache and survives the death of volley, `kill -9` included. There is
//! no fsync per record: at fleet scale that would make the disk's latency the pace of the whole
//! event stream, and the page cache only loses data if the machine itself goes down. The footer
//! is followed by one fsync, so a finished run's journal is on disk when volley exits.
//!
//! The writer never prints and never fails the run by itself. A write that fails (a full disk) is
//! cut back to the last whole record, and the records from it on are held in memory (up to
//! [`MAX_HELD`]) and written, in order, with the next record once the disk takes them again: the
//! journal has no gap. The tap stops the rollout at the first failure ([`tap`]'s `stop`), and a
//! `started` record that cannot be written is not held: its command is not sent. The caller says
//! at the end whether records were lost.
//!
//! The volley writing a journal holds an exclusive lock (`flock`) on it until it ends, so that
//! `volley runs resume` (which appends to a recorded run, see [`Journal::reopen`]) refuses a run
//! whose volley is still going. The kernel drops the lock when that volley dies, `kill -9`
//! included.

pub mod clock;
pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use volley_common::journal::{
    BatchEntry, Entry, FORMAT, Footer, Header, HostEntry, InputRecord, NOT_FINISHED, Options,
    ResumedEntry, Run, StartedEntry, Targets,
};

use crate::admission::HandshakeLimit;
use crate::cli::RunArgs;
use crate::event::Event;
use crate::plan::{Environment, RunPlan};

/// The most record bytes held in memory while the disk refuses them; past it they are dropped
/// and the journal stays incomplete.
const MAX_HELD: usize = 64 << 20;

/// The journal of the run in progress.
#[derive(Debug)]
pub struct Journal {
    pub id: String,
    pub path: PathBuf,
    file: File,
    /// The length of the file up to its last whole record: where a failed write is cut back to.
    written: u64,
    /// The first write that failed, if any.
    error: Option<io::Error>,
    /// Records not yet on disk since a write failed, in order, whole lines.
    held: Vec<u8>,
    /// Records were dropped (too many held, or not encodable): the journal is incomplete.
    lost: bool,
    /// Hosts in the run, and how many ended each way so far: the footer's counts.
    hosts: usize,
    counts: BTreeMap<String, usize>,
    /// A resumed run's: the batch each collected host ran in, by name. The resume itself
    /// starts no batch, and its hosts keep the batch of their run.
    resumed_batches: Option<HashMap<String, usize>>,
}

/// Why a recorded run's journal cannot be taken up again.
#[derive(Debug, thiserror::Error)]
pub enum ReopenError {
    #[error(
        "run {0} is still going: its volley holds the journal; resume it once that volley has ended"
    )]
    Running(String),
    #[error("{}", crate::plan::io_reason(.0))]
    Io(io::Error),
}

/// How the run ended, for the footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    pub interrupted: bool,
    pub stopped: bool,
    pub exit_status: u8,
}

impl Journal {
    /// Creates the run's journal in `dir` and writes its header, giving it its id and start.
    pub fn create(dir: &Path, mut header: Header) -> io::Result<Journal> {
        let started = clock::now();
        let (id, path, file) = store::create(dir, &started)?;
        // A fresh file: only a filesystem without locks can refuse, and then resume cannot
        // tell a running volley from a dead one, which it says.
        if let Err(error) = file.try_lock() {
            tracing::warn!(path = %path.display(), "cannot lock the journal: {error:?}");
        }
        header.id = id.clone();
        header.started = started.rfc3339;
        let mut journal = Journal {
            id,
            path,
            file,
            written: 0,
            error: None,
            held: Vec::new(),
            lost: false,
            hosts: header.hosts.len(),
            counts: BTreeMap::new(),
            resumed_batches: None,
        };
        if !journal.append(&Entry::Header(Box::new(header))) {
            // A journal without its header cannot be read: do not leave it behind.
            let _ = std::fs::remove_file(&journal.path);
            return Err(journal
                .error
                .take()
                .unwrap_or_else(|| io::Error::other("the record was not written")));
        }
        Ok(journal)
    }

    /// Opens the journal of the recorded run `run` at `path` to append to it: takes its lock,
    /// writes a `resumed` record, and counts the hosts that are not `resuming` as they stand.
    pub fn reopen(path: &Path, run: &Run, resuming: &[usize]) -> Result<Journal, ReopenError> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(ReopenError::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ReopenError::Running(run.header.id.clone()));
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(ReopenError::Io(error)),
        }
        let resuming_set: HashSet<usize> = resuming.iter().copied().collect();
        let mut counts = BTreeMap::new();
        for (number, entry) in run.hosts.iter().enumerate() {
            if let Some(entry) = entry.as_ref().filter(|_| !resuming_set.contains(&number)) {
                *counts.entry(entry.outcome.kind().to_string()).or_insert(0) += 1;
            }
        }
        let batch_of = run.header.host_batches();
        let batches = resuming
            .iter()
            .filter_map(|&number| {
                Some((
                    run.header.hosts.get(number)?.clone(),
                    *batch_of.get(number)?,
                ))
            })
            .collect();
        let written = file.metadata().map_err(ReopenError::Io)?.len();
        // A write cut short by a full disk before this journal had its cut-back (or a crash
        // mid-write) left a line without its end: the next record starts on a line of its own.
        let torn = written > 0 && !ends_with_newline(path, written);
        let mut journal = Journal {
            id: run.header.id.clone(),
            path: path.to_path_buf(),
            file,
            written,
            error: None,
            held: if torn { b"\n".to_vec() } else { Vec::new() },
            lost: false,
            hosts: run.header.hosts.len(),
            counts,
            resumed_batches: Some(batches),
        };
        let resumed = Entry::Resumed(ResumedEntry {
            resumed: clock::now().rfc3339,
            hosts: resuming.len(),
        });
        if !journal.append(&resumed) {
            return Err(ReopenError::Io(
                journal
                    .error
                    .take()
                    .unwrap_or_else(|| io::Error::other("the record was not written")),
            ));
        }
        Ok(journal)
    }

    /// Writes one record as one line in one write, after the records held since a failed write;
    /// returns whether it is on disk. One that is not is held for the next write.
    fn append(&mut self, entry: &Entry) -> bool {
        self.write_entry(entry, true)
    }

    /// The first write that failed, if any, though later writes made the journal whole again.
    pub fn write_error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// The first write that failed, while the journal is not whole on disk.
    pub fn failure(&self) -> Option<&io::Error> {
        self.error
            .as_ref()
            .filter(|_| self.lost || !self.held.is_empty())
    }

    fn write_entry(&mut self, entry: &Entry, hold: bool) -> bool {
        let line = match serde_json::to_vec(entry) {
            Ok(mut line) => {
                line.push(b'\n');
                line
            }
            Err(error) => {
                self.lost = true;
                self.error.get_or_insert(io::Error::other(error));
                return false;
            }
        };
        if self.lost {
            return false;
        }
        let before = self.held.len();
        self.held.extend_from_slice(&line);
        match self.file.write_all(&self.held) {
            Ok(()) => {
                self.written += self.held.len() as u64;
                self.held.clear();
                true
            }
            Err(error) => {
                // What the write put in before it failed goes: the next one starts there.
                let _ = self.file.set_len(self.written);
                self.error.get_or_insert(error);
                if !hold {
                    self.held.truncate(before);
                } else if self.held.len() > MAX_HELD {
                    self.held = Vec::new();
                    self.lost = true;
                }
                false
            }
        }
    }

    fn append_host(&mut self, entry: HostEntry) -> bool {
        *self
            .counts
            .entry(entry.outcome.kind().to_string())
            .or_insert(0) += 1;
        self.append(&Entry::Host(entry))
    }

    /// Writes the footer and puts the journal on disk; returns the first write error of the run
    /// if the journal is not whole on disk even now.
    pub fn finish(mut self, ending: Ending) -> io::Result<()> {
        let finished: usize = self.counts.values().sum();
        let mut counts = std::mem::take(&mut self.counts);
        if finished < self.hosts {
            counts.insert(NOT_FINISHED.to_string(), self.hosts - finished);
        }
        let footer = Footer {
            ended: clock::now().rfc3339,
            counts,
            interrupted: ending.interrupted,
            stopped: ending.stopped,
            exit_status: ending.exit_status,
            journal_failed: self.error.is_some(),
        };
        self.append(&Entry::Footer(footer));
        if self.failure().is_some() {
            return Err(self
                .error
                .take()
                .unwrap_or_else(|| io::Error::other("the record was not written")));
        }
        self.file.sync_all()
    }
}

/// Whether the file at `path` ends with a newline at `length`.
fn ends_with_newline(path: &Path, length: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut last = [0u8];
    File::open(path)
        .and_then(|mut file| {
            file.seek(SeekFrom::Start(length - 1))?;
            file.read_exact(&mut last)
        })
        .is_ok_and(|()| last[0] == b'\n')
}

/// Journals the run's events as they pass from the scheduler to the reporters: a host's record is
/// written before its `Finished` goes on, so nothing is reported that is not journalled, but
/// while the disk refuses records (they are held, and written once it takes them again).
/// The reporters going away (a closed stdout) does not stop the journal, nor, once the run is
/// `interrupted`, reporters stuck for [`STUCK_AFTER_INTERRUPT`] (a stdout that nobody reads:
/// `| less` at a page): the journal then goes on without them, so that the hosts being stopped,
/// whose output waits for the journal, are stopped and recorded. At the first record that
/// cannot be written, `stop` is cancelled: the rollout stops, as a spent failure budget stops
/// it, since what runs from then on may go unrecorded. Returns the journal when the
/// scheduler's side closes.
pub fn tap(
    mut journal: Journal,
    mut events: mpsc::Receiver<Event>,
    reporters: mpsc::Sender<Event>,
    stop: CancellationToken,
    interrupted: CancellationToken,
) -> JoinHandle<Journal> {
    let runtime = tokio::runtime::Handle::current();
    // Passes an event on, waiting while the reporters are behind, but after an interrupt only
    // so long; whether to go on passing events.
    let forward = move |event: Event| {
        runtime.block_on(async {
            let stuck = async {
                interrupted.cancelled().await;
                tokio::time::sleep(STUCK_AFTER_INTERRUPT).await;
            };
            tokio::select! {
                sent = reporters.send(event) => sent.is_ok(),
                () = stuck => false,
            }
        })
    };
    // File writes block; they get a thread of tokio's blocking pool rather than a worker.
    tokio::task::spawn_blocking(move || {
        let mut forwarding = true;
        while let Some(event) = events.blocking_recv() {
            let mut event = match event {
                Event::Executing {
                    name,
                    execution_id,
                    recorded,
                    ..
                } => {
                    let started = Entry::Started(StartedEntry {
                        host: name,
                        execution_id,
                        started: clock::now().rfc3339,
                    });
                    // Not held: a command whose `started` is not on disk is not sent. Nor one
                    // after the stop, though the disk took records again: the rollout stopped.
                    let answer = if stop.is_cancelled() {
                        Err("the rollout stopped: the run's journal could not be written".into())
                    } else if journal.write_entry(&started, false) {
                        Ok(())
                    } else {
                        stop.cancel();
                        let error = journal.error.as_ref().map(crate::plan::io_reason);
                        Err(error.unwrap_or_default())
                    };
                    let _ = recorded.send(answer);
                    continue;
                }
                event => event,
            };
            match &mut event {
                Event::Finished { report, .. } => {
                    if let Some(batch) = journal
                        .resumed_batches
                        .as_ref()
                        .and_then(|batches| batches.get(&report.host))
                    {
                        report.batch = *batch;
                    }
                    if !journal.append_host(HostEntry::new(report, clock::now().rfc3339)) {
                        stop.cancel();
                    }
                }
                // A resume's own batch is not one of the run's: its `resumed` record says it.
                Event::BatchStarted { .. } if journal.resumed_batches.is_some() => {}
                Event::BatchStarted { batch, hosts, .. } => {
                    let entry = Entry::Batch(BatchEntry {
                        batch: *batch,
                        hosts: hosts.len(),
                        started: clock::now().rfc3339,
                    });
                    if !journal.append(&entry) {
                        stop.cancel();
                    }
                }
                Event::Started { .. }
                | Event::Output { .. }
                | Event::Executing { .. }
                | Event::BatchWaiting { .. } => {}
            }
            if forwarding && !forward(event) {
                forwarding = false;
            }
        }
        journal
    })
}

/// How long reporters that take no event may hold up the journal once the run is interrupted.
pub const STUCK_AFTER_INTERRUPT: std::time::Duration = std::time::Duration::from_secs(1);

/// The header of a run, without its id and start time (which [`Journal::create`] gives it).
/// `arguments` are those of `volley run` as given; `retry_of` names the run a retry retries.
/// The variables to record of `variables` (the process's): those that give run settings,
/// `VOLLEY_<SETTING>` as the inventory reads them, and `VOLLEY_PKI`.
fn setting_variables(variables: &[(String, String)]) -> BTreeMap<String, String> {
    let gives_a_setting = |name: &str| {
        name == "VOLLEY_PKI"
            || name.strip_prefix("VOLLEY_").is_some_and(|key| {
                volley_common::inventory::SETTINGS.contains(&key.to_ascii_lowercase().as_str())
            })
    };
    variables
        .iter()
        .filter(|(name, _)| gives_a_setting(name))
        .cloned()
        .collect()
}

pub fn header(
    args: &RunArgs,
    plan: &RunPlan,
    arguments: Vec<String>,
    retry_of: Option<String>,
    env: &Environment,
) -> Header {
    let total = plan.hosts.len();
    let millis =
        |duration: std::time::Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let path = |path: &PathBuf| path.display().to_string();
    Header {
        format: FORMAT,
        id: String::new(),
        started: String::new(),
        user: env.local_user.clone(),
        command: plan.command.clone(),
        targets: Targets {
            patterns: args.targets.targets.clone(),
            groups: args.targets.groups.clone(),
            exclude: args.targets.exclude.clone(),
            hosts_files: args.targets.hosts_file.iter().map(path).collect(),
            inventory: args.targets.inventory.as_ref().map(path),
        },
        hosts: plan.hosts.iter().map(|host| host.name.clone()).collect(),
        batches: plan.rollout.batches(total).iter().map(Range::len).collect(),
        options: Options {
            parallel: plan.parallel,
            max_handshakes: match plan.handshakes {
                HandshakeLimit::Fixed(n) => Some(n),
                HandshakeLimit::Adaptive => None,
            },
            connect_timeout_ms: millis(plan.connect_timeout),
            timeout_ms: plan.command_timeout.map(millis),
            batch: plan
                .rollout
                .batches
                .as_ref()
                .map(|sizes| sizes.text.clone()),
            batch_delay_ms: millis(plan.rollout.delay),
            max_failures: plan
                .rollout
                .budget
                .as_ref()
                .map(|budget| budget.text.clone()),
            allowed_failures: plan.rollout.allowed_failures(total),
            retries: plan.rollout.retries,
        },
        arguments,
        subcommand: Vec::new(),
        retry_of,
        retry_overrides: Vec::new(),
        cwd: std::env::current_dir()
            .ok()
            .map(|dir| dir.display().to_string()),
        variables: setting_variables(&env.variables),
        stdin: plan.stdin.as_ref().map(|bytes| InputRecord {
            bytes: bytes.len() as u64,
            sha256: crate::upload::sha256_hex(bytes),
        }),
    }
}

#[cfg(test)]
mod tests;
