//! `volley runs`, `volley runs show` and `volley retry`: the journals read back.
//!
//! Listing and showing are plain functions writing to any [`Write`], so tests check exact
//! text. A retry is prepared here (which run, which hosts, the original `volley run` arguments
//! parsed again) and then runs through the same path as `volley run`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::path::Path;

use volley_common::fold::fold;
use volley_common::journal::{HostEntry, NOT_FINISHED, Run};
use volley_common::outcome::{Outcome, OutcomeClass};

use crate::cli::{Cli, Command, RetryArgs, RetryOverrides, RunArgs, ShowArgs};
use crate::journal::store::{self, StoreError};
use crate::plan::HostSpec;
use crate::report::write_table;

#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "--only '{given}': '{word}' is not an outcome or a class (classes: failed, unreached, interrupted; outcomes: {})",
        retryable_kinds().collect::<Vec<_>>().join(", ")
    )]
    UnknownClass { given: String, word: String },
    #[error("run {run}: its recorded arguments no longer parse: {reason}")]
    Arguments { run: String, reason: String },
    #[error(
        "run {run}: no longer among the targets of its arguments: {hosts} (did the inventory change?)"
    )]
    HostsGone { run: String, hosts: String },
    #[error("run {run}: `{operation}` runs over SSH: --transport does not apply to its retry")]
    NoTransport { run: String, operation: String },
    #[error(
        "run {0} is still going (or being resumed): its volley holds the journal; wait until it has ended (a host still running would run twice)"
    )]
    Running(String),
    #[error(
        "run {0} is being retried by another volley: wait until that retry has ended (a host it runs would run twice)"
    )]
    Retrying(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The outcome kinds a retry can select: every kind but `succeeded`, and `not_finished`.
fn retryable_kinds() -> impl Iterator<Item = &'static str> {
    Outcome::KINDS
        .iter()
        .copied()
        .filter(|kind| *kind != "succeeded")
        .chain([NOT_FINISHED])
}

/// `volley runs`: the most recent runs, newest first.
pub fn list(out: &mut impl Write, dir: &Path, limit: usize) -> Result<(), RunsError> {
    let files = store::list(dir)?;
    let mut rows = Vec::new();
    for file in files.iter().rev().take(limit) {
        // One damaged journal (a crash mid-write, a full disk) hides no other run: it gets a
        // row that says what is wrong with it.
        let (header, footer, whole) = match store::summary(file) {
            Ok(summary) => summary,
            Err(error) => {
                let reason = match error {
                    StoreError::Unreadable { reason, .. } => reason,
                    error => error.to_string(),
                };
                let unknown = "?".to_string();
                let outcomes = format!("unreadable: {}", printable(&reason));
                rows.push([
                    file.id.clone(),
                    unknown.clone(),
                    unknown,
                    outcomes,
                    String::new(),
                ]);
                continue;
            }
        };
        let counts = match (&footer, &whole) {
            (Some(footer), _) => footer.counts.clone(),
            (None, Some(run)) => run.counts(),
            (None, None) => BTreeMap::new(),
        };
        let mut notes = Vec::new();
        match &footer {
            Some(footer) if footer.stopped => notes.push("stopped"),
            Some(footer) if footer.interrupted => notes.push("interrupted"),
            Some(_) => {}
            // Its volley holds the journal: still going, not killed.
            None if store::in_use(&file.path) => notes.push("running"),
            None => notes.push("unfinished"),
        }
        if header.retry_of.is_some() {
            notes.push("retry");
        }
        let mut outcomes = counts_text(&counts);
        if !notes.is_empty() {
            outcomes = format!("{outcomes} ({})", notes.join(", "));
        }
        rows.push([
            header.id,
            header.started.replace('T', " ").chars().take(19).collect(),
            header.hosts.len().to_string(),
            outcomes,
            printable(&header.command),
        ]);
    }
    if files.is_empty() {
        writeln!(out, "no runs recorded in {}", dir.display())?;
        return Ok(());
    }
    write_table(
        out,
        &["RUN", "STARTED (UTC)", "HOSTS", "OUTCOMES", "COMMAND"],
        &rows,
    )?;
    Ok(())
}

/// A word as a shell would read it back: as it is where nothing in it is special to the shell.
fn shown(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        crate::shell::quote(word)
    }
}

/// `text` for one line of a terminal: control characters (a newline, an escape sequence's ESC)
/// written as Rust escapes (`\n`, `\u{1b}`), so that a multi-line command stays in its row and
/// nothing recorded can drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `volley runs show RUN`: the run, then every host's outcome; or with `--failed`/`--list`, just
/// host names.
pub fn show(out: &mut impl Write, dir: &Path, args: &ShowArgs) -> Result<(), RunsError> {
    let file = store::find(dir, &args.run)?;
    let run = store::load(&file)?;
    let live = store::in_use(&file.path);
    let hosts: Vec<&str> = run
        .kinds()
        .filter(|(_, kind)| !args.failed || *kind != "succeeded")
        .map(|(host, _)| host)
        .collect();
    if args.list {
        for host in hosts {
            writeln!(out, "{host}")?;
        }
        return Ok(());
    }
    if args.failed {
        if !hosts.is_empty() {
            writeln!(out, "{}", fold(hosts))?;
        }
        return Ok(());
    }
    write_run(out, &run, live)?;
    Ok(())
}

/// One run's record; `live` when its volley still holds the journal.
fn write_run(out: &mut impl Write, run: &Run, live: bool) -> io::Result<()> {
    let header = &run.header;
    match &header.retry_of {
        Some(original) => writeln!(out, "run       {} (retry of {original})", header.id)?,
        None => writeln!(out, "run       {}", header.id)?,
    }
    writeln!(out, "command   {}", printable(&header.command))?;
    writeln!(out, "targets   {}", targets_text(header))?;
    // Every flag as given (`--become`, `-J`, limits...): the command follows `--`.
    let flags: Vec<String> = header
        .arguments
        .iter()
        .take_while(|argument| *argument != "--")
        .map(|argument| printable(&shown(argument)))
        .collect();
    if !flags.is_empty() {
        writeln!(out, "flags     {}", flags.join(" "))?;
    }
    // A retry's own flags replace the recorded ones: what it ran with is both.
    for retry in &header.retry_overrides {
        let words: Vec<String> = retry.iter().map(|word| printable(&shown(word))).collect();
        writeln!(out, "retried   volley retry {}", words.join(" "))?;
    }
    writeln!(out, "started   {} by {}", header.started, header.user)?;
    match &run.footer {
        Some(footer) => {
            let how = if footer.interrupted {
                ", interrupted"
            } else if footer.stopped && footer.journal_failed {
                ", rollout stopped: its journal could not be written for a while"
            } else if footer.stopped {
                ", rollout stopped by the failure budget"
            } else if footer.journal_failed {
                ", its journal could not be written for a while"
            } else {
                ""
            };
            writeln!(
                out,
                "ended     {}, exit status {}{how}",
                footer.ended, footer.exit_status
            )?;
        }
        None if live => writeln!(out, "ended     not yet: the run is still going")?,
        None => writeln!(
            out,
            "ended     no end recorded: volley was killed, or the run is still going"
        )?,
    }
    writeln!(
        out,
        "hosts     {}: {}",
        header.hosts.len(),
        counts_text(&run.counts())
    )?;
    if header.options.batch.is_some() {
        writeln!(
            out,
            "batches   {} started of {} ({})",
            run.batches_started.len(),
            header.batches.len(),
            header
                .batches
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if let Some(last) = run.resumes.last() {
        writeln!(
            out,
            "resumed   {} time(s), last at {}",
            run.resumes.len(),
            last.resumed
        )?;
    }
    if run.unreadable_lines > 0 {
        writeln!(
            out,
            "warning   {} unreadable lines were skipped",
            run.unreadable_lines
        )?;
    }
    writeln!(out)?;
    let batch_of = header.host_batches();
    let rows: Vec<[String; 7]> = header
        .hosts
        .iter()
        .zip(&run.hosts)
        .enumerate()
        .map(|(index, (host, entry))| {
            let execution = run.executions[index].as_deref();
            host_row(host, entry.as_ref(), batch_of.get(index), execution, live)
        })
        .collect();
    write_table(
        out,
        &[
            "HOST",
            "BATCH",
            "OUTCOME",
            "TRANSPORT",
            "ATTEMPTS",
            "TIME",
            "DETAIL",
        ],
        &rows,
    )
}

fn host_row(
    host: &str,
    entry: Option<&HostEntry>,
    batch: Option<&usize>,
    execution: Option<&str>,
    live: bool,
) -> [String; 7] {
    let batch = batch.map_or_else(|| "-".to_string(), ToString::to_string);
    let Some(entry) = entry else {
        return [
            host.to_string(),
            batch,
            NOT_FINISHED.to_string(),
            "-".to_string(),
            "-".to_string(),
            "-".to_string(),
            match execution {
                _ if live => "no outcome yet: the run is still going".to_string(),
                Some(id) => format!(
                    "no outcome recorded; its command was sent to its agent as {id}: `volley runs resume` collects it"
                ),
                None => "no outcome recorded: the run ended before this host finished".to_string(),
            },
        ];
    };
    // A host that never started has no transport and no time to show.
    let started = entry.attempts > 0;
    let mut detail = Vec::new();
    if !entry.outcome.is_success() {
        detail.push(entry.outcome.to_string());
    }
    if let Some(changed) = changed(entry) {
        detail.push(changed);
    }
    if let Some(fallback) = &entry.fallback {
        detail.push(format!(
            "fell back to SSH: {} ({})",
            fallback.reason.describe(),
            fallback.detail
        ));
    }
    [
        host.to_string(),
        entry.batch.to_string(),
        entry.outcome.kind().to_string(),
        match entry.transport {
            // Older journals recorded a transport for hosts that never started too.
            Some(transport) if started => transport.to_string(),
            _ => "-".to_string(),
        },
        entry.attempts.to_string(),
        if started {
            format!("{:.2}s", entry.total_ms as f64 / 1000.0)
        } else {
            "-".to_string()
        },
        detail.join("; "),
    ]
}

/// For a push: what the host's run changed (`unchanged` only for a host that succeeded).
fn changed(entry: &HostEntry) -> Option<String> {
    match &entry.changed.as_ref()?[..] {
        [] if entry.outcome.is_success() => Some("unchanged".to_string()),
        [] => None,
        [one] => Some(format!("changed {one}")),
        [first, rest @ ..] => Some(format!("changed {first} and {} more", rest.len())),
    }
}

/// `3 succeeded, 2 unreachable`: successes first, then the other kinds by name.
fn counts_text(counts: &BTreeMap<String, usize>) -> String {
    let succeeded = counts.get("succeeded").copied().unwrap_or(0);
    std::iter::once(format!("{succeeded} succeeded"))
        .chain(
            counts
                .iter()
                .filter(|(kind, count)| kind.as_str() != "succeeded" && **count > 0)
                .map(|(kind, count)| format!("{count} {kind}")),
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// The targets as given: `-w PATTERNS -g GROUP -x PATTERNS --hosts-file FILE`.
fn targets_text(header: &volley_common::journal::Header) -> String {
    let targets = &header.targets;
    let mut words = Vec::new();
    let mut push = |flag: &str, values: &[String]| {
        for value in values {
            words.push(format!("{flag} {value}"));
        }
    };
    push("-w", &targets.patterns);
    push("-g", &targets.groups);
    push("-x", &targets.exclude);
    push("--hosts-file", &targets.hosts_files);
    if let Some(inventory) = &targets.inventory {
        words.push(format!("--inventory {inventory}"));
    }
    words.join(" ")
}

/// A retry, ready to run: the original's arguments, and the hosts to run them on.
#[derive(Debug)]
pub struct Retry {
    pub args: RunArgs,
    /// For a recorded `volley agent ...` run: the agent operation to run again.
    pub agent: Option<crate::install::Request>,
    /// For a recorded `volley push` or `volley fetch`: the transfer to run again.
    pub transfer: Option<crate::transfer::Request>,
    pub arguments: Vec<String>,
    pub retry_of: String,
    /// The hosts that did not succeed (and match `--only`), in the original's order.
    pub hosts: Vec<String>,
    /// Hosts left alone because their command may still be running (`in_doubt`, or sent to
    /// their agent and not finished).
    pub in_doubt: Vec<String>,
    /// For a push: the hosts among them whose `--then` is owed (see [`then_owed`]).
    pub then_owed: Vec<String>,
    /// How many hosts the original run had.
    pub of: usize,
    /// The arguments of every `volley retry` from the original run to this one, for the journal.
    pub overrides: Vec<Vec<String>>,
    /// Where the original run ran: its relative paths are read from there.
    pub cwd: Option<String>,
    /// The variables that gave the run settings, as the journal recorded them.
    pub variables: BTreeMap<String, String>,
    /// The retry's lock on its run (`ID.retrying`), held until the retry has ended: another
    /// retry of the run is refused meanwhile.
    pub held: std::fs::File,
    /// What the run's command read on its stdin (`--stdin`), as recorded.
    pub stdin: Option<volley_common::journal::InputRecord>,
    /// The whole run (back to the original, through the retries on the way), host by host in
    /// its order, with whether it succeeded as it stands; `None` for the hosts this retry runs.
    pub standing: Vec<(String, Option<bool>)>,
    /// The run ended without its footer (its volley was killed) while hosts it retries over
    /// SSH had no outcome: their commands may still be in the stop that their hosts gave them
    /// when the connection went (TERM, then KILL two seconds later).
    pub killed_mid_command: bool,
}

/// Which flags of `volley retry` take a path (`-i`, `--known-hosts`, ...), and which of its
/// short flags take a value: read from its clap definition, so that a flag added there is known
/// here too (clap marks every path-typed flag).
fn retry_flags() -> (Vec<String>, Vec<char>) {
    use clap::CommandFactory as _;
    use clap::ValueHint;
    let (mut paths, mut value_shorts) = (Vec::new(), Vec::new());
    let cli = Cli::command();
    let Some(retry) = cli.find_subcommand("retry") else {
        return (paths, value_shorts);
    };
    for arg in retry.get_arguments() {
        let path = matches!(
            arg.get_value_hint(),
            ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath
        );
        let takes_value = arg.get_action().takes_values();
        if let Some(short) = arg.get_short() {
            if takes_value {
                value_shorts.push(short);
            }
            if path {
                paths.push(format!("-{short}"));
            }
        }
        if let Some(long) = arg.get_long().filter(|_| path) {
            paths.push(format!("--{long}"));
        }
    }
    (paths, value_shorts)
}

/// Makes the paths given to a retry absolute, against `here`, in its arguments as given: the
/// retry runs in its run's directory (see [`Retry::cwd`]), a retry of it reads its recorded
/// arguments again, and both must find what was meant from `here`. Parse the result again for
/// the retry's flags.
pub fn anchor_paths(given: &mut [String], here: &Path) {
    let (paths, value_shorts) = retry_flags();
    let anchored = |value: &str| here.join(value).display().to_string();
    let mut index = 0;
    while index < given.len() {
        let word = given[index].clone();
        if word == "--" {
            break;
        }
        if paths.contains(&word) {
            if let Some(value) = given.get_mut(index + 1) {
                *value = anchored(value);
            }
            index += 2;
            continue;
        }
        if let Some((flag, value)) = word.split_once('=')
            && paths.iter().any(|path| path == flag)
        {
            given[index] = format!("{flag}={}", anchored(value));
        } else if let Some(cluster) = word.strip_prefix('-').filter(|rest| !rest.starts_with('-'))
            && let Some(at) = cluster.find(|flag| value_shorts.contains(&flag))
        {
            // Short flags together (`-Ni KEY`, `-bikey`): the first that takes a value takes
            // the rest of the word, or else the next word.
            let (flags, value) = cluster.split_at(at + 1);
            let takes_path = flags
                .chars()
                .last()
                .is_some_and(|flag| paths.contains(&format!("-{flag}")));
            if takes_path {
                if value.is_empty() {
                    if let Some(next) = given.get_mut(index + 1) {
                        *next = anchored(next);
                    }
                } else {
                    given[index] = format!("-{flags}{}", anchored(value));
                }
            }
            if value.is_empty() {
                index += 1;
            }
        }
        index += 1;
    }
}

/// Prepares `volley retry RUN [--only CLASSES] [OVERRIDES]`; `given` are its arguments as given
/// (after `retry`), recorded so that a retry of this retry keeps its overrides.
pub fn retry(dir: &Path, args: &RetryArgs, given: Vec<String>) -> Result<Retry, RunsError> {
    let path = store::find(dir, &args.run)?;
    // Before the record is read: a run that ends in between would be read unfinished. Held
    // while the retry runs, so that a second retry of the run (another terminal, a cron job)
    // does not run the command again where this one runs it.
    if store::in_use(&path.path) {
        return Err(RunsError::Running(path.id.clone()));
    }
    let held = store::hold_for_retry(&path)?.ok_or_else(|| RunsError::Retrying(path.id.clone()))?;
    let run = store::load(&path)?;
    let words: Option<Vec<String>> = match &args.only {
        Some(given) => Some(parse_only(given)?),
        None => None,
    };
    let hosts: Vec<String> = run
        .header
        .hosts
        .iter()
        .enumerate()
        .filter(|(number, _)| {
            selected(
                run.hosts[*number].as_ref(),
                run.may_be_running(*number),
                words.as_deref(),
            )
        })
        .map(|(_, host)| host.clone())
        .collect();
    let then_owed = if run.header.subcommand == ["push"] {
        run.header
            .hosts
            .iter()
            .zip(&run.hosts)
            .filter(|(host, entry)| hosts.contains(host) && then_owed(entry.as_ref()))
            .map(|(host, _)| host.clone())
            .collect()
    } else {
        Vec::new()
    };
    let in_doubt: Vec<String> = (0..run.header.hosts.len())
        .filter(|&number| {
            let outcome = run.hosts[number].as_ref().map(|entry| &entry.outcome);
            run.may_be_running(number) || matches!(outcome, Some(Outcome::InDoubt { .. }))
        })
        .map(|number| run.header.hosts[number].clone())
        .filter(|host| !hosts.contains(host))
        .collect();
    let Recorded {
        args: mut run_args,
        agent,
        transfer,
    } = recorded_arguments(&run)?;
    if agent.is_some() && args.overrides.transport.is_some() {
        return Err(RunsError::NoTransport {
            run: run.header.id.clone(),
            operation: run.header.command.clone(),
        });
    }
    args.overrides.apply_to(&mut run_args);
    // Only `--out-dir`'s lists need the whole run: the chain's journals are read for them.
    let standing = match run_args.output.out_dir {
        Some(_) => standing(dir, &run, &hosts),
        None => Vec::new(),
    };
    let mut overrides = run.header.retry_overrides.clone();
    overrides.push(given);
    let killed_mid_command = run.footer.is_none()
        && (0..run.hosts.len()).any(|number| {
            run.hosts[number].is_none()
                && selected(None, run.may_be_running(number), words.as_deref())
        });
    Ok(Retry {
        args: run_args,
        agent,
        transfer,
        arguments: run.header.arguments.clone(),
        retry_of: run.header.id.clone(),
        hosts,
        in_doubt,
        then_owed,
        of: run.header.hosts.len(),
        overrides,
        cwd: run.header.cwd.clone(),
        variables: run.header.variables.clone(),
        held,
        stdin: run.header.stdin.clone(),
        standing,
        killed_mid_command,
    })
}

/// The whole run that `run` is (the original, or a retry of it, or a retry of that...), host
/// by host in the original's order with whether it succeeded as it last stood; `None` for the
/// hosts `retrying`. A run on the way whose journal is gone or unreadable adds nothing.
fn standing(dir: &Path, run: &Run, retrying: &[String]) -> Vec<(String, Option<bool>)> {
    let mut chain = vec![run.clone()];
    while let Some(earlier) = chain.last().and_then(|run| run.header.retry_of.clone()) {
        let loaded = store::find(dir, &earlier).and_then(|file| store::load(&file));
        match loaded {
            Ok(earlier) if chain.len() < 1000 => chain.push(earlier),
            _ => break,
        }
    }
    let mut order: Vec<String> = Vec::new();
    let mut success: HashMap<String, bool> = HashMap::new();
    // Oldest first: a later run's outcome for a host replaces an earlier one's.
    for run in chain.iter().rev() {
        for (host, entry) in run.header.hosts.iter().zip(&run.hosts) {
            if !success.contains_key(host) {
                order.push(host.clone());
            }
            let succeeded = entry
                .as_ref()
                .is_some_and(|entry| entry.outcome.is_success());
            success.insert(host.clone(), succeeded);
        }
    }
    let retrying: HashSet<&String> = retrying.iter().collect();
    order
        .into_iter()
        .map(|host| {
            let standing = (!retrying.contains(&host)).then(|| success[&host]);
            (host, standing)
        })
        .collect()
}

/// A recorded run's arguments, parsed again.
pub struct Recorded {
    /// Those of `volley run`, or the ones the operation's plan takes.
    pub args: RunArgs,
    /// For a `volley agent ...` run: the agent operation.
    pub agent: Option<crate::install::Request>,
    /// For a `volley push` or `volley fetch`: the transfer.
    pub transfer: Option<crate::transfer::Request>,
}

/// The recorded run's arguments parsed again, as it ran them: those of `volley run` (or of the
/// operation it was), with the inventory it used and the overrides of the retries that led to
/// it.
pub fn recorded_arguments(run: &Run) -> Result<Recorded, RunsError> {
    let id = run.header.id.clone();
    // `volley run ARGS`, or the subcommand the journal names (`volley agent install ARGS`).
    let subcommand = if run.header.subcommand.is_empty() {
        vec!["run".to_string()]
    } else {
        run.header.subcommand.clone()
    };
    let argv = std::iter::once("volley".to_string())
        .chain(subcommand)
        .chain(run.header.arguments.iter().cloned());
    let parsed = Cli::parse_args(argv).map_err(|error| RunsError::Arguments {
        run: id.clone(),
        reason: error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    })?;
    let (mut run_args, agent, transfer) = match parsed.command {
        Command::Run(run_args) => (*run_args, None, None),
        Command::Agent(command) => {
            let (run_args, request) = crate::install::plan_arguments(command);
            (run_args, Some(request), None)
        }
        Command::Push(args) => {
            let (run_args, request) = crate::transfer::plan_push(*args);
            (run_args, None, Some(request))
        }
        Command::Fetch(args) => {
            let (run_args, request) = crate::transfer::plan_fetch(*args);
            (run_args, None, Some(request))
        }
        _ => {
            return Err(RunsError::Arguments {
                run: id,
                reason: "not the arguments of `volley run`, `agent`, `push` or `fetch`".to_string(),
            });
        }
    };
    // The inventory may have come from VOLLEY_INVENTORY, which need not be set now.
    if let Some(inventory) = &run.header.targets.inventory {
        run_args.targets.inventory = Some(inventory.into());
    }
    // So may VOLLEY_PKI; as with the run settings' variables, one set here applies instead.
    if run_args.pki.dir.is_none() {
        run_args.pki.dir = run.header.variables.get("VOLLEY_PKI").map(Into::into);
    }
    // The overrides of the retries that led here.
    for layer in &run.header.retry_overrides {
        recorded_overrides(&id, layer)?.apply_to(&mut run_args);
    }
    Ok(Recorded {
        args: run_args,
        agent,
        transfer,
    })
}

/// The overrides of a recorded `volley retry`, parsed again.
fn recorded_overrides(run: &str, layer: &[String]) -> Result<RetryOverrides, RunsError> {
    let argv = ["volley", "retry"]
        .into_iter()
        .map(str::to_string)
        .chain(layer.iter().cloned());
    let unparsable = |reason: String| RunsError::Arguments {
        run: run.to_string(),
        reason,
    };
    match Cli::parse_args(argv) {
        Ok(Cli {
            command: Command::Retry(args),
        }) => Ok(args.overrides),
        Ok(_) => Err(unparsable(
            "a recorded retry is not `volley retry`".to_string(),
        )),
        Err(error) => Err(unparsable(
            error
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        )),
    }
}

impl RetryOverrides {
    /// Replaces the recorded settings with those given to the retry. A flag not given keeps
    /// the recorded value; the output mode and the failure budget are each replaced whole.
    pub fn apply_to(&self, run: &mut RunArgs) {
        let replace = |to: &mut Option<String>, from: &Option<String>| {
            if from.is_some() {
                to.clone_from(from);
            }
        };
        if let Some(parallel) = self.limits.parallel {
            run.limits.parallel = Some(parallel);
        }
        replace(
            &mut run.limits.connect_timeout,
            &self.limits.connect_timeout,
        );
        replace(&mut run.limits.max_handshakes, &self.limits.max_handshakes);
        replace(&mut run.limits.timeout, &self.limits.timeout);
        replace(&mut run.rollout.batch, &self.rollout.batch);
        replace(&mut run.rollout.batch_delay, &self.rollout.batch_delay);
        if self.rollout.max_failures.is_some() {
            run.rollout
                .max_failures
                .clone_from(&self.rollout.max_failures);
            run.rollout.abort_on_failure = false;
        }
        if self.rollout.abort_on_failure {
            run.rollout.abort_on_failure = true;
            run.rollout.max_failures = None;
        }
        if let Some(retries) = self.rollout.retries {
            run.rollout.retries = Some(retries);
        }
        let output = &self.output;
        if output.json || output.gather {
            run.output.json = output.json;
            run.output.gather = output.gather;
        }
        run.output.no_prefix |= output.no_prefix;
        run.output.list_hosts |= output.list_hosts;
        if output.out_dir.is_some() {
            run.output.out_dir.clone_from(&output.out_dir);
        }
        if output.color.is_some() {
            run.output.color = output.color;
        }
        replace(&mut run.max_output, &self.max_output);
        run.ssh.accept_new_host_keys |= self.accept_new_host_keys;
        if !self.identity.is_empty() {
            run.ssh.identity.clone_from(&self.identity);
        }
        if self.known_hosts.is_some() {
            run.ssh.known_hosts.clone_from(&self.known_hosts);
        }
        if self.transport.is_some() {
            run.transport = self.transport;
        }
        run.ssh.become_root |= self.become_root;
    }
}

/// The words of `--only`, each an outcome kind or a class.
fn parse_only(given: &str) -> Result<Vec<String>, RunsError> {
    given
        .split(',')
        .map(str::trim)
        .filter(|word| !word.is_empty())
        .map(|word| {
            let known = matches!(word, "failed" | "unreached" | "interrupted")
                || retryable_kinds().any(|kind| kind == word);
            if known {
                Ok(word.to_string())
            } else {
                Err(RunsError::UnknownClass {
                    given: given.to_string(),
                    word: word.to_string(),
                })
            }
        })
        .collect()
}

/// Whether a host with this entry is retried: never one that succeeded; one whose command may
/// still be running (`in_doubt` over either transport, or sent to its agent and not finished)
/// only when `in_doubt` is asked for by name; otherwise any, or those matching one of `words`.
fn selected(entry: Option<&HostEntry>, may_be_running: bool, words: Option<&[String]>) -> bool {
    let outcome = entry.map(|entry| &entry.outcome);
    if outcome.is_some_and(|outcome| outcome.is_success()) {
        return false;
    }
    // In doubt however it ran (an agent that stopped answering, or an SSH host that could not
    // confirm the stop): its command may still run there, and is retried only when asked.
    let in_doubt = outcome.is_some_and(|outcome| matches!(outcome, Outcome::InDoubt { .. }));
    if may_be_running || in_doubt {
        return words.is_some_and(|words| words.iter().any(|word| word == "in_doubt"));
    }
    let Some(words) = words else {
        return true;
    };
    let kind = outcome.map_or(NOT_FINISHED, |outcome| outcome.kind());
    let class = outcome.map_or(OutcomeClass::Interrupted, |outcome| outcome.class());
    words.iter().any(|word| match word.as_str() {
        "failed" => class == OutcomeClass::CommandFailed,
        // Never started: a command that timed out, or whose connection was lost after it
        // started, ran (part of) the change; it is retried by default or by its kind.
        "unreached" => {
            class == OutcomeClass::NotReached && entry.is_some_and(|entry| entry.run_ms.is_none())
        }
        "interrupted" => class == OutcomeClass::Interrupted,
        word => word == kind,
    })
}

/// Whether a pushed host's `--then` must run on a retry even if its files are then unchanged:
/// the retried run wrote files there without `--then` succeeding after them (it failed, or a
/// later file failed first), or `--then` itself failed there (in a push, only `--then` exits
/// non-zero or is killed by a signal, or is left in doubt), or volley was killed before the host finished (it may
/// have been written). Without this, a retry would find the files in place and skip the
/// reload the first run never completed.
fn then_owed(entry: Option<&HostEntry>) -> bool {
    let Some(entry) = entry else {
        return true;
    };
    let wrote = entry
        .changed
        .as_ref()
        .is_some_and(|changed| !changed.is_empty());
    // In doubt: `--then` was started on the agent and never seen to end.
    let then_failed = matches!(
        entry.outcome,
        Outcome::NonZeroExit { .. } | Outcome::Signalled { .. } | Outcome::InDoubt { .. }
    );
    !entry.outcome.is_success() && (wrote || then_failed)
}

/// Narrows a retry's planned hosts to the hosts to retry, keeping the plan's order. Every one of
/// them must still be among the targets: a retry that quietly ran on fewer hosts would look like
/// a success.
pub fn keep_only(
    planned: &mut Vec<HostSpec>,
    retry_of: &str,
    hosts: &[String],
) -> Result<(), RunsError> {
    let wanted: HashSet<&str> = hosts.iter().map(String::as_str).collect();
    let present: HashSet<&str> = planned.iter().map(|host| host.name.as_str()).collect();
    let gone: Vec<&str> = hosts
        .iter()
        .map(String::as_str)
        .filter(|host| !present.contains(*host))
        .collect();
    if !gone.is_empty() {
        return Err(RunsError::HostsGone {
            run: retry_of.to_string(),
            hosts: fold(gone),
        });
    }
    planned.retain(|host| wanted.contains(host.name.as_str()));
    Ok(())
}

#[cfg(test)]
mod tests;
