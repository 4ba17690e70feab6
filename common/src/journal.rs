//! The run journal's records: what `volley run` writes about a run, one JSON object per line
//! (JSON Lines), and how a journal reads back.
//!
//! A journal is a [`Header`] line, then a [`HostEntry`] line per host as soon as that host
//! finishes (and a [`BatchEntry`] line as each batch of a rollout starts, and a
//! [`StartedEntry`] line before a command is sent to a host's agent, naming the execution),
//! then a [`Footer`] line when the run ends. A run that was killed has no footer; [`Run::parse`]
//! reads it all the same, and its hosts without an entry are the ones that had not finished.
//! `volley runs resume` appends to a run's journal: a [`ResumedEntry`], the host lines of the
//! hosts it collected (the last line of a host is its outcome), and a new footer. Writing the
//! lines is the controller's job; this module is plain data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::outcome::{Fallback, HostReport, Outcome, TransportKind};

/// The version of the line format, in every header. Readers accept unknown fields, so adding a
/// field does not change it.
pub const FORMAT: u32 = 1;

/// The label of hosts that have no entry in a journal: the run ended before they finished.
pub const NOT_FINISHED: &str = "not_finished";

/// One line of a journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// Boxed: one header per journal against thousands of host lines.
    Header(Box<Header>),
    Batch(BatchEntry),
    Started(StartedEntry),
    Host(HostEntry),
    Resumed(ResumedEntry),
    Footer(Footer),
}

/// What was run, where and how: the first line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// The run id, also the journal's file name: `20261127T065812Z-3f9a`.
    pub id: String,
    /// RFC 3339, UTC, milliseconds: `2026-11-27T06:58:12.345Z`.
    pub started: String,
    /// The local user who ran volley.
    pub user: String,
    pub command: String,
    /// The targets as the operator gave them.
    pub targets: Targets,
    /// The hosts the targets resolved to, in the order they run.
    pub hosts: Vec<String>,
    /// The size of each batch, in order; one batch when the run was not batched.
    pub batches: Vec<usize>,
    pub options: Options,
    /// The arguments of `volley run` as given (after `run`). `volley retry` parses them again,
    /// so that a retry runs with exactly the same flags.
    pub arguments: Vec<String>,
    /// The subcommand when the run was not `volley run`, such as `["agent", "install"]`; the
    /// arguments are then those after it, and `volley retry` runs that subcommand again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subcommand: Vec<String>,
    /// The run this one retries, if it is a retry.
    pub retry_of: Option<String>,
    /// For a retry: the arguments of each `volley retry` in the chain back to the original run
    /// (after `retry`), oldest first. Their flags override the recorded `arguments`, later
    /// ones winning, so that a retry of a retry runs with every override given on the way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_overrides: Vec<Vec<String>>,
    /// The directory volley ran in: relative paths in `arguments` (an inventory, a hosts file,
    /// files to push) are read from there again by `volley retry` and `volley runs resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The `VOLLEY_*` variables that gave the run settings (`VOLLEY_TIMEOUT`, `VOLLEY_PKI`,
    /// ...), as they were set: `volley retry` takes those that are not set where it runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// What `--stdin` gave the command: its size and SHA-256 (not the bytes), so that a retry
    /// can tell whether it sends the same input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<InputRecord>,
}

/// The input a run's command read on its stdin, as the journal records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    pub bytes: u64,
    pub sha256: String,
}

impl Header {
    /// The batch of each host, by its number in the run, counted from 1 (from `batches`).
    pub fn host_batches(&self) -> Vec<usize> {
        let mut batch_of = Vec::with_capacity(self.hosts.len());
        for (number, size) in self.batches.iter().enumerate() {
            batch_of.extend(std::iter::repeat_n(number + 1, *size));
        }
        batch_of
    }
}

/// The targets of a run, as given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    pub patterns: Vec<String>,
    pub groups: Vec<String>,
    pub exclude: Vec<String>,
    pub hosts_files: Vec<String>,
    pub inventory: Option<String>,
}

/// The settings a run ran with, after the inventory and defaults were applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    pub parallel: usize,
    /// `--max-handshakes`; `None`: adaptive.
    #[serde(default)]
    pub max_handshakes: Option<usize>,
    pub connect_timeout_ms: u64,
    pub timeout_ms: Option<u64>,
    /// `--batch` as given, e.g. `1,10%,50%`.
    pub batch: Option<String>,
    pub batch_delay_ms: u64,
    /// `--max-failures` as given (`--abort-on-failure` is `0`).
    pub max_failures: Option<String>,
    /// The failures the budget allows over the whole run; more stop the rollout.
    pub allowed_failures: Option<usize>,
    pub retries: u32,
}

/// A batch of a rollout started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// Counted from 1.
    pub batch: usize,
    pub hosts: usize,
    pub started: String,
}

/// A command is about to be sent to a host's agent as this execution: written before the
/// request leaves, so that whatever happens next, the execution can be found again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedEntry {
    pub host: String,
    pub execution_id: String,
    pub started: String,
}

/// `volley runs resume` took the run up again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumedEntry {
    pub resumed: String,
    /// The hosts it set out to collect.
    pub hosts: usize,
}

/// How one host ended. Output is not journalled: it could be megabytes per host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub host: String,
    pub batch: usize,
    pub attempts: u32,
    /// What ran (or last tried) the host; None for a host that never started.
    pub transport: Option<TransportKind>,
    pub outcome: Outcome,
    pub connect_ms: Option<u64>,
    pub run_ms: Option<u64>,
    pub total_ms: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// For `volley push`: the remote files this host's run replaced or created (see
    /// [`HostReport::changed`]); absent for other runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<String>>,
    /// When the outcome was known, RFC 3339 UTC.
    pub finished: String,
    /// Set when `auto` ran the host over SSH after its agent failed; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

impl HostEntry {
    pub fn new(report: &HostReport, finished: String) -> HostEntry {
        let millis =
            |duration: std::time::Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        HostEntry {
            host: report.host.clone(),
            batch: report.batch,
            attempts: report.attempts,
            transport: (report.attempts > 0).then_some(report.transport),
            outcome: report.outcome.clone(),
            connect_ms: report.timings.connect.map(millis),
            run_ms: report.timings.run.map(millis),
            total_ms: millis(report.timings.total),
            stdout_bytes: report.stdout.total_bytes,
            stderr_bytes: report.stderr.total_bytes,
            changed: report.changed.clone(),
            finished,
            fallback: report.fallback.clone(),
        }
    }
}

/// How the run ended: the last line, absent when volley was killed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    pub ended: String,
    /// Hosts per outcome kind, `not_finished` included.
    pub counts: BTreeMap<String, usize>,
    /// Stopped by SIGINT or SIGTERM.
    pub interrupted: bool,
    /// The rollout stopped: by the failure budget, or by the journal (see `journal_failed`).
    pub stopped: bool,
    pub exit_status: u8,
    /// A record could not be written during the run (a full disk), which stops the rollout;
    /// this footer was written once the disk took records again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub journal_failed: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JournalError {
    #[error("the journal is empty")]
    Empty,
    #[error("the first line is not a journal header: {0}")]
    BadHeader(String),
}

/// A journal read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub header: Header,
    pub batches_started: Vec<BatchEntry>,
    /// Indexed like `header.hosts`; `None` for a host that had not finished.
    pub hosts: Vec<Option<HostEntry>>,
    /// Indexed like `header.hosts`: the agent execution the host's command was sent as.
    pub executions: Vec<Option<String>>,
    /// Each time the run was resumed.
    pub resumes: Vec<ResumedEntry>,
    /// The last footer: a resumed run has one per resume.
    pub footer: Option<Footer>,
    /// Lines that could not be read (a torn last line of a crashed run, say); they are skipped.
    pub unreadable_lines: usize,
}

impl Run {
    /// Reads a journal's text. Only an unreadable header is an error: every other line that
    /// cannot be read is skipped and counted, so that a damaged journal still shows what it can.
    pub fn parse(text: &str) -> Result<Run, JournalError> {
        let mut lines = text.lines().filter(|line| !line.trim().is_empty());
        let first = lines.next().ok_or(JournalError::Empty)?;
        let header = match serde_json::from_str::<Entry>(first) {
            Ok(Entry::Header(header)) => *header,
            Ok(_) => return Err(JournalError::BadHeader("another kind of line".to_string())),
            Err(error) => return Err(JournalError::BadHeader(error.to_string())),
        };
        let index: BTreeMap<&str, usize> = header
            .hosts
            .iter()
            .enumerate()
            .map(|(number, host)| (host.as_str(), number))
            .collect();
        let mut hosts = vec![None; header.hosts.len()];
        let mut executions = vec![None; header.hosts.len()];
        let mut resumes = Vec::new();
        let mut batches_started = Vec::new();
        let mut footer = None;
        let mut unreadable_lines = 0;
        for line in lines {
            match serde_json::from_str::<Entry>(line) {
                Ok(Entry::Host(entry)) => match index.get(entry.host.as_str()) {
                    Some(&number) => hosts[number] = Some(entry),
                    None => unreadable_lines += 1,
                },
                Ok(Entry::Started(entry)) => match index.get(entry.host.as_str()) {
                    Some(&number) => executions[number] = Some(entry.execution_id),
                    None => unreadable_lines += 1,
                },
                Ok(Entry::Resumed(entry)) => resumes.push(entry),
                Ok(Entry::Batch(entry)) => batches_started.push(entry),
                Ok(Entry::Footer(entry)) => footer = Some(entry),
                Ok(Entry::Header(_)) | Err(_) => unreadable_lines += 1,
            }
        }
        Ok(Run {
            header,
            batches_started,
            hosts,
            executions,
            resumes,
            footer,
            unreadable_lines,
        })
    }

    /// The outcome kind of each host, `not_finished` for those without an entry.
    pub fn kinds(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.header
            .hosts
            .iter()
            .zip(&self.hosts)
            .map(|(host, entry)| {
                let kind = entry
                    .as_ref()
                    .map_or(NOT_FINISHED, |entry| entry.outcome.kind());
                (host.as_str(), kind)
            })
    }

    /// Whether host number `host` may still be running on its agent: its command was sent as
    /// an execution, and its outcome is unknown (not recorded, or `in_doubt`).
    pub fn may_be_running(&self, host: usize) -> bool {
        self.executions.get(host).is_some_and(Option::is_some)
            && match self.hosts.get(host) {
                Some(Some(entry)) => matches!(entry.outcome, Outcome::InDoubt { .. }),
                _ => true,
            }
    }

    /// Hosts per outcome kind.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        count_kinds(self.kinds().map(|(_, kind)| kind))
    }
}

/// Counts each kind.
pub fn count_kinds<'a>(kinds: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for kind in kinds {
        *counts.entry(kind.to_string()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outcome::{Captured, Timings};

    fn header() -> Header {
        Header {
            format: FORMAT,
            id: "20261127T065812Z-3f9a".to_string(),
            started: "2026-11-27T06:58:12.345Z".to_string(),
            user: "ops".to_string(),
            command: "systemctl restart app".to_string(),
            targets: Targets {
                groups: vec!["web".to_string()],
                ..Targets::default()
            },
            hosts: vec!["web1".to_string(), "web2".to_string(), "web3".to_string()],
            batches: vec![1, 2],
            options: Options {
                parallel: 512,
                batch: Some("1,50%".to_string()),
                ..Options::default()
            },
            arguments: vec!["-g".to_string(), "web".to_string()],
            subcommand: Vec::new(),

            retry_of: None,
            retry_overrides: Vec::new(),
            cwd: None,
            variables: Default::default(),
            stdin: None,
        }
    }

    fn host(name: &str, outcome: Outcome) -> HostEntry {
        let report = HostReport {
            host: name.to_string(),
            transport: TransportKind::Ssh,
            outcome,
            timings: Timings {
                connect: Some(Duration::from_millis(12)),
                run: None,
                total: Duration::from_millis(40),
            },
            stdout: Captured::default(),
            stderr: Captured {
                kept: b"x".to_vec(),
                total_bytes: 9,
                past_cap: 0,
            },
            batch: 1,
            attempts: 2,
            fallback: None,
            changed: None,
        };
        HostEntry::new(&report, "2026-11-27T06:58:13.000Z".to_string())
    }

    fn lines(entries: &[Entry]) -> String {
        entries
            .iter()
            .map(|entry| serde_json::to_string(entry).unwrap() + "\n")
            .collect()
    }

    #[test]
    fn a_journal_reads_back_as_written() {
        let outcomes = [
            Outcome::Succeeded,
            Outcome::NonZeroExit { code: 3 },
            Outcome::Signalled {
                signal: "KILL".to_string(),
            },
            Outcome::Unreachable {
                reason: "connection refused".to_string(),
            },
            Outcome::ConnectTimeout {
                reason: "ssh 10.0.0.1:22: TCP connected, but no SSH banner within 10s".to_string(),
            },
            Outcome::Skipped,
        ];
        for outcome in outcomes {
            let entries = [
                Entry::Header(Box::new(header())),
                Entry::Host(host("web2", outcome.clone())),
            ];
            let run = Run::parse(&lines(&entries)).unwrap();
            assert_eq!(run.header, header());
            assert_eq!(run.hosts[1], Some(host("web2", outcome)));
            assert_eq!(run.hosts[0], None);
        }
    }

    #[test]
    fn a_killed_run_has_its_finished_hosts_and_no_footer() {
        let text = lines(&[
            Entry::Header(Box::new(header())),
            Entry::Batch(BatchEntry {
                batch: 1,
                hosts: 1,
                started: "2026-11-27T06:58:12.400Z".to_string(),
            }),
            Entry::Host(host("web1", Outcome::Succeeded)),
            Entry::Host(host(
                "web3",
                Outcome::ConnectTimeout {
                    reason: String::new(),
                },
            )),
        ]);
        // A line torn by a crash, and a host that is not in the header, are skipped.
        let text = format!("{text}{{\"type\":\"host\",\"host\":\"web2\",\"ba\n");
        let text = text + &lines(&[Entry::Host(host("stranger", Outcome::Succeeded))]) + "\n";
        let run = Run::parse(&text).unwrap();
        assert_eq!(run.footer, None);
        assert_eq!(run.unreadable_lines, 2);
        assert_eq!(run.batches_started.len(), 1);
        let kinds: Vec<(&str, &str)> = run.kinds().collect();
        assert_eq!(
            kinds,
            [
                ("web1", "succeeded"),
                ("web2", NOT_FINISHED),
                ("web3", "connect_timeout")
            ]
        );
        let counts = run.counts();
        assert_eq!(counts.get(NOT_FINISHED), Some(&1));
        assert_eq!(counts.get("succeeded"), Some(&1));
    }

    #[test]
    fn executions_and_resumes_are_read_and_the_last_host_line_wins() {
        let started = |host: &str| {
            Entry::Started(StartedEntry {
                host: host.to_string(),
                execution_id: format!("run/{host}"),
                started: "2026-11-27T06:58:12.500Z".to_string(),
            })
        };
        let in_doubt = Outcome::InDoubt {
            reason: "lost".to_string(),
        };
        let run = Run::parse(&lines(&[
            Entry::Header(Box::new(header())),
            started("web1"),
            started("web2"),
            started("web3"),
            Entry::Host(host("web1", in_doubt.clone())),
            Entry::Host(host("web3", Outcome::NonZeroExit { code: 1 })),
            Entry::Resumed(ResumedEntry {
                resumed: "2026-11-27T07:00:00.000Z".to_string(),
                hosts: 2,
            }),
            Entry::Host(host("web2", Outcome::Succeeded)),
        ]))
        .unwrap();
        assert_eq!(run.executions[1].as_deref(), Some("run/web2"));
        assert_eq!(run.resumes.len(), 1);
        assert_eq!(run.hosts[1], Some(host("web2", Outcome::Succeeded)));
        let may_run: Vec<bool> = (0..3).map(|host| run.may_be_running(host)).collect();
        assert_eq!(may_run, [true, false, false]);
        assert_eq!(run.unreadable_lines, 0);
    }

    #[test]
    fn the_footer_is_read() {
        let footer = Footer {
            ended: "2026-11-27T06:59:00.000Z".to_string(),
            counts: count_kinds(["succeeded", "succeeded", "skipped"]),
            interrupted: false,
            stopped: true,
            exit_status: 3,
            journal_failed: false,
        };
        let run = Run::parse(&lines(&[
            Entry::Header(Box::new(header())),
            Entry::Footer(footer.clone()),
        ]))
        .unwrap();
        assert_eq!(run.footer, Some(footer));
    }

    #[test]
    fn only_a_bad_header_is_an_error() {
        assert_eq!(Run::parse(""), Err(JournalError::Empty));
        assert!(matches!(
            Run::parse("{\"type\":\"footer\"}\n"),
            Err(JournalError::BadHeader(_))
        ));
        assert!(matches!(
            Run::parse(&lines(&[Entry::Host(host("web1", Outcome::Succeeded))])),
            Err(JournalError::BadHeader(_))
        ));
        assert!(matches!(
            Run::parse("not json\n"),
            Err(JournalError::BadHeader(_))
        ));
    }

    #[test]
    fn a_fallback_is_journalled_and_read_back_and_absent_otherwise() {
        let mut entry = host("web2", Outcome::Succeeded);
        let plain = serde_json::to_string(&Entry::Host(entry.clone())).unwrap();
        assert!(!plain.contains("fallback"), "{plain}");
        entry.transport = Some(TransportKind::Ssh);
        entry.fallback = Some(Fallback {
            reason: crate::outcome::FallbackReason::AgentCertificateRejected,
            detail: "TLS rejected: invalid peer certificate: UnknownIssuer".to_string(),
        });
        let text = lines(&[
            Entry::Header(Box::new(header())),
            Entry::Host(entry.clone()),
        ]);
        assert!(
            text.contains(r#""fallback":{"reason":"agent_certificate_rejected","detail":"TLS rejected: invalid peer certificate: UnknownIssuer"}"#),
            "{text}"
        );
        assert_eq!(Run::parse(&text).unwrap().hosts[1], Some(entry));
    }

    #[test]
    fn an_entry_is_one_line_tagged_with_its_type() {
        let timeout = Outcome::ConnectTimeout {
            reason: "no answer".to_string(),
        };
        let text = serde_json::to_string(&Entry::Host(host("web1", timeout))).unwrap();
        assert!(!text.contains('\n'));
        assert!(
            text.starts_with(r#"{"type":"host","host":"web1","batch":1,"attempts":2,"transport":"ssh","outcome":{"kind":"connect_timeout","reason":"no answer"},"connect_ms":12,"run_ms":null,"total_ms":40,"#),
            "{text}"
        );
    }

    #[test]
    fn a_connect_timeout_recorded_without_a_reason_still_reads() {
        let outcome: Outcome = serde_json::from_str(r#"{"kind":"connect_timeout"}"#).unwrap();
        assert_eq!(
            outcome,
            Outcome::ConnectTimeout {
                reason: String::new()
            }
        );
        assert_eq!(outcome.to_string(), "connect timed out");
    }
}
