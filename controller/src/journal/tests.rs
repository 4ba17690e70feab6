//! The journal writer and its tap: files private, records read back, and a host journalled
//! before the reporters hear of it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use volley_common::journal::Run;
use volley_common::outcome::{Captured, HostReport, Outcome, Timings, TransportKind};

use super::*;
use crate::cli::{Cli, Command};
use crate::event::Stream;
use crate::plan::Environment;

fn bare_header(hosts: &[&str]) -> Header {
    Header {
        format: FORMAT,
        id: String::new(),
        started: String::new(),
        user: "ops".to_string(),
        command: "uptime".to_string(),
        targets: Targets::default(),
        hosts: hosts.iter().map(|host| host.to_string()).collect(),
        batches: vec![hosts.len()],
        options: Options::default(),
        arguments: vec!["-w".to_string(), "h[1-3]".to_string()],
        subcommand: Vec::new(),

        retry_of: None,
        retry_overrides: Vec::new(),
        cwd: None,
        variables: Default::default(),
        stdin: None,
    }
}

fn report(host: &str, outcome: Outcome) -> HostReport {
    HostReport {
        host: host.to_string(),
        transport: TransportKind::Ssh,
        outcome,
        timings: Timings {
            connect: None,
            run: None,
            total: Duration::from_millis(7),
        },
        stdout: Captured::default(),
        stderr: Captured::default(),
        batch: 1,
        attempts: 1,
        fallback: None,
        changed: None,
    }
}

fn read(journal_path: &Path) -> Run {
    Run::parse(&std::fs::read_to_string(journal_path).unwrap()).unwrap()
}

/// The tap of a run that is neither stopped nor interrupted.
fn tap_all(
    journal: Journal,
    events: mpsc::Receiver<Event>,
    reporters: mpsc::Sender<Event>,
) -> JoinHandle<Journal> {
    tap(
        journal,
        events,
        reporters,
        CancellationToken::new(),
        CancellationToken::new(),
    )
}

#[test]
fn a_journal_is_private_and_starts_with_its_header() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("volley/runs");
    let journal = Journal::create(&dir, bare_header(&["h1"])).unwrap();
    assert_eq!(journal.path, dir.join(format!("{}.jsonl", journal.id)));
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&state.path().join("volley")), 0o700);
    assert_eq!(mode(&journal.path), 0o600);
    let run = read(&journal.path);
    assert_eq!(run.header.id, journal.id);
    assert!(run.header.started.ends_with('Z'), "{}", run.header.started);
    assert_eq!(run.header.started[..4], journal.id[..4]);
    assert_eq!(run.footer, None);
}

#[test]
fn a_journal_that_cannot_be_created_is_an_error() {
    let state = tempfile::tempdir().unwrap();
    let blocker = state.path().join("volley");
    std::fs::write(&blocker, "a file where the directory should be").unwrap();
    assert!(Journal::create(&blocker.join("runs"), bare_header(&["h1"])).is_err());
}

/// The tap between a scheduler and a reporter: every event goes through in order, and each
/// host's record is in the file before the reporter sees the host finish.
#[tokio::test]
async fn hosts_are_journalled_before_they_are_reported() {
    let state = tempfile::tempdir().unwrap();
    let journal = Journal::create(state.path(), bare_header(&["h1", "h2", "h3"])).unwrap();
    let path = journal.path.clone();
    let (events, received) = mpsc::channel(4);
    let (forward, mut reported) = mpsc::channel(4);
    let tap = tap_all(journal, received, forward);
    let reporter = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(event) = reported.recv().await {
            if let Event::Finished { report, .. } = &event {
                let run = read(&path);
                let entry = run.hosts.iter().flatten().find(|e| e.host == report.host);
                assert_eq!(
                    entry.map(|e| &e.outcome),
                    Some(&report.outcome),
                    "{} reported before it was journalled",
                    report.host
                );
            }
            seen.push(format!("{event:?}"));
        }
        seen
    });
    let sent = vec![
        Event::BatchStarted {
            batch: 1,
            batches: 1,
            hosts: 0..3,
        },
        Event::Started { host: 0 },
        Event::Output {
            host: 0,
            stream: Stream::Stdout,
            data: Bytes::from_static(b"up\n"),
        },
        Event::Finished {
            host: 0,
            report: Box::new(report("h1", Outcome::Succeeded)),
        },
        Event::Finished {
            host: 2,
            report: Box::new(report("h3", Outcome::NonZeroExit { code: 2 })),
        },
    ];
    let expected: Vec<String> = sent.iter().map(|event| format!("{event:?}")).collect();
    for event in sent {
        events.send(event).await.unwrap();
    }
    drop(events);
    let journal = tap.await.unwrap();
    assert_eq!(reporter.await.unwrap(), expected);

    // h2 never finished: the footer counts it so.
    let path = journal.path.clone();
    journal
        .finish(Ending {
            interrupted: true,
            stopped: false,
            exit_status: 130,
        })
        .unwrap();
    let run = read(&path);
    assert_eq!(run.batches_started.len(), 1);
    let footer = run.footer.expect("a footer");
    assert_eq!(
        footer.counts,
        volley_common::journal::count_kinds(["succeeded", "non_zero_exit", NOT_FINISHED])
    );
    assert!(footer.interrupted);
    assert_eq!(footer.exit_status, 130);
}

#[tokio::test]
async fn the_journal_goes_on_when_the_reporters_are_gone() {
    let state = tempfile::tempdir().unwrap();
    let journal = Journal::create(state.path(), bare_header(&["h1", "h2"])).unwrap();
    let (events, received) = mpsc::channel(4);
    let (forward, reported) = mpsc::channel(4);
    drop(reported);
    let tap = tap_all(journal, received, forward);
    for (host, name) in ["h1", "h2"].iter().enumerate() {
        let report = report(
            name,
            Outcome::ConnectTimeout {
                reason: String::new(),
            },
        );
        events
            .send(Event::Finished {
                host,
                report: Box::new(report),
            })
            .await
            .unwrap();
    }
    drop(events);
    let journal = tap.await.unwrap();
    let run = read(&journal.path);
    assert!(run.hosts.iter().all(Option::is_some), "{run:?}");
}

/// A resume appends to the run's journal: its hosts keep the batch they ran in, it starts no
/// batch of its own, and the reporters hear the same batch.
#[tokio::test]
async fn a_resumed_host_keeps_the_batch_of_its_run() {
    let state = tempfile::tempdir().unwrap();
    let mut header = bare_header(&["h1", "h2", "h3", "h4"]);
    header.batches = vec![1, 3];
    let journal = Journal::create(state.path(), header).unwrap();
    let path = journal.path.clone();
    drop(journal);
    // h1 and h3 are collected: batches 1 and 2.
    let journal = Journal::reopen(&path, &read(&path), &[0, 2]).unwrap();
    let (events, received) = mpsc::channel(4);
    let (forward, mut reported) = mpsc::channel(4);
    let tap = tap_all(journal, received, forward);
    events
        .send(Event::BatchStarted {
            batch: 1,
            batches: 1,
            hosts: 0..2,
        })
        .await
        .unwrap();
    for (host, name) in [(0, "h1"), (1, "h3")] {
        let event = Event::Finished {
            host,
            report: Box::new(report(name, Outcome::Succeeded)),
        };
        events.send(event).await.unwrap();
    }
    drop(events);
    let mut heard = Vec::new();
    while let Some(event) = reported.recv().await {
        if let Event::Finished { report, .. } = event {
            heard.push((report.host, report.batch));
        }
    }
    tap.await.unwrap();
    let expected = [("h1".to_string(), 1), ("h3".to_string(), 2)];
    assert_eq!(heard, expected);
    let run = read(&path);
    assert!(run.batches_started.is_empty(), "{:?}", run.batches_started);
    let journalled: Vec<(String, usize)> = run
        .hosts
        .iter()
        .flatten()
        .map(|entry| (entry.host.clone(), entry.batch))
        .collect();
    assert_eq!(journalled, expected);
}

#[test]
fn the_header_records_targets_hosts_batches_and_options() {
    let home = tempfile::tempdir().unwrap();
    let arguments = [
        "-w",
        "h[1-5]",
        "-x",
        "h2",
        "--batch",
        "1,50%",
        "--batch-delay",
        "2s",
        "--max-failures",
        "25%",
        "--retries",
        "3",
        "-p",
        "8",
        "--max-handshakes",
        "6",
        "--",
        "systemctl",
        "restart",
        "app",
    ];
    let argv = ["volley", "run"].into_iter().chain(arguments);
    let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!("the arguments start with `run`")
    };
    let env = Environment {
        home: home.path().to_path_buf(),
        local_user: "ops".to_string(),
        variables: Vec::new(),
    };
    let plan = RunPlan::new(&args, &env).unwrap();
    let arguments: Vec<String> = arguments.iter().map(|arg| arg.to_string()).collect();
    // The variables are read for the header only; the plan was made without them.
    let env = Environment {
        variables: [
            ("VOLLEY_TIMEOUT", "1s"),
            ("VOLLEY_PKI", "/srv/pki"),
            ("VOLLEY_LOG", "debug"),
            ("VOLLEY_INVENTORY", "inv.toml"),
            ("HOME", "/root"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .to_vec(),
        ..env
    };
    let header = header(
        &args,
        &plan,
        arguments.clone(),
        Some("20261127T065812Z-3f9a".to_string()),
        &env,
    );
    assert_eq!(header.user, "ops");
    // Not VOLLEY_INVENTORY: the targets record the inventory, wherever it came from.
    assert_eq!(
        header.variables,
        BTreeMap::from([
            ("VOLLEY_PKI".to_string(), "/srv/pki".to_string()),
            ("VOLLEY_TIMEOUT".to_string(), "1s".to_string()),
        ])
    );
    assert_eq!(header.command, "systemctl restart app");
    assert_eq!(header.targets.patterns, ["h[1-5]"]);
    assert_eq!(header.targets.exclude, ["h2"]);
    assert_eq!(header.hosts, ["h1", "h3", "h4", "h5"]);
    // 1, then 50% of 4 hosts.
    assert_eq!(header.batches, [1, 2, 1]);
    assert_eq!(
        header.options,
        Options {
            parallel: 8,
            max_handshakes: Some(6),
            connect_timeout_ms: 10_000,
            timeout_ms: None,
            batch: Some("1,50%".to_string()),
            batch_delay_ms: 2000,
            max_failures: Some("25%".to_string()),
            allowed_failures: Some(1),
            retries: 3,
        }
    );
    assert_eq!(header.arguments, arguments);
    assert_eq!(header.retry_of.as_deref(), Some("20261127T065812Z-3f9a"));
}

/// The end of a run whose rollout stopped (here: the journal's stop).
const STOPPED: Ending = Ending {
    interrupted: false,
    stopped: true,
    exit_status: 3,
};

/// `/dev/full` refuses every write with ENOSPC, as a full disk does.
fn full_disk() -> File {
    std::fs::OpenOptions::new()
        .append(true)
        .open("/dev/full")
        .expect("/dev/full")
}

fn finished(host: usize, name: &str) -> Event {
    Event::Finished {
        host,
        report: Box::new(report(name, Outcome::Succeeded)),
    }
}

/// Records the disk refuses are held, in order, and written before the next record once it
/// takes them again: the journal has no gap, and no torn line.
#[test]
fn records_a_full_disk_refuses_are_written_once_it_takes_them_again() {
    let state = tempfile::tempdir().unwrap();
    let mut journal = Journal::create(state.path(), bare_header(&["h1", "h2", "h3"])).unwrap();
    let path = journal.path.clone();
    let disk = std::mem::replace(&mut journal.file, full_disk());
    assert!(!journal.append_host(HostEntry::new(
        &report("h1", Outcome::Succeeded),
        "t".into()
    )));
    assert!(!journal.append_host(HostEntry::new(
        &report("h2", Outcome::Succeeded),
        "t".into()
    )));
    assert!(journal.failure().is_some(), "the journal is not whole");
    assert_eq!(read(&path).hosts, [None, None, None]);

    journal.file = disk;
    assert!(journal.append_host(HostEntry::new(
        &report("h3", Outcome::Succeeded),
        "t".into()
    )));
    assert!(journal.failure().is_none(), "whole again");
    assert!(journal.write_error().is_some(), "the failure is still told");
    journal.finish(STOPPED).unwrap();
    let run = read(&path);
    let hosts: Vec<&str> = run
        .hosts
        .iter()
        .flatten()
        .map(|e| e.host.as_str())
        .collect();
    assert_eq!(hosts, ["h1", "h2", "h3"]);
    assert_eq!(run.unreadable_lines, 0);
    assert!(run.footer.is_some());
}

/// A `started` record the disk refuses is answered with why, stops the rollout, and is not
/// held: its command is not sent, so the journal must not say it was.
#[tokio::test]
async fn a_started_record_that_cannot_be_written_stops_the_rollout_and_is_not_sent() {
    let state = tempfile::tempdir().unwrap();
    let mut journal = Journal::create(state.path(), bare_header(&["h1", "h2"])).unwrap();
    let path = journal.path.clone();
    let disk = std::mem::replace(&mut journal.file, full_disk());
    let (events, received) = mpsc::channel(4);
    let (forward, mut reported) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let tap = tap(
        journal,
        received,
        forward,
        stop.clone(),
        CancellationToken::new(),
    );
    let (recorded, answer) = tokio::sync::oneshot::channel();
    events
        .send(Event::Executing {
            name: "h1".to_string(),
            execution_id: "run/h1".to_string(),
            recorded,
        })
        .await
        .unwrap();
    let refused = answer.await.unwrap().expect_err("not written");
    assert!(refused.contains("No space left on device"), "{refused}");
    assert!(stop.is_cancelled());
    events.send(finished(1, "h2")).await.unwrap();
    drop(events);
    while reported.recv().await.is_some() {}
    let mut journal = tap.await.unwrap();

    journal.file = disk;
    journal.finish(STOPPED).unwrap();
    let run = read(&path);
    assert_eq!(run.executions, [None, None], "h1's command was not sent");
    assert_eq!(run.hosts[1].as_ref().map(|e| e.host.as_str()), Some("h2"));
}

/// A journal whose last line was cut short (a crash mid-write) takes a resume's records on
/// lines of their own.
#[test]
fn a_resume_after_a_torn_last_line_starts_a_line_of_its_own() {
    let state = tempfile::tempdir().unwrap();
    let journal = Journal::create(state.path(), bare_header(&["h1", "h2"])).unwrap();
    let path = journal.path.clone();
    drop(journal);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(br#"{"type":"ho"#).unwrap();
    drop(file);
    let journal = Journal::reopen(&path, &read(&path), &[0]).unwrap();
    journal
        .finish(Ending {
            interrupted: false,
            stopped: false,
            exit_status: 0,
        })
        .unwrap();
    let run = read(&path);
    assert_eq!(run.resumes.len(), 1, "the resumed record was read");
    assert!(run.footer.is_some());
    assert_eq!(run.unreadable_lines, 1, "only the torn line");
}
