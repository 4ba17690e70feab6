//! The reporters: everything `volley run` writes while and after hosts run.
//!
//! The scheduler and the transports only emit [`Event`]s and return [`HostReport`]s; this module
//! alone turns them into text. Rendering is done by plain functions that write to any
//! [`Write`], so tests check exact bytes; [`report`] only wires the event channel to stdout and
//! stderr.
//!
//! Layout:
//! - [`stream`]: the default mode, `HOST: line` as output arrives.
//! - [`json`]: one JSON object per host (JSON Lines).
//! - [`gather`]: identical results grouped under folded host lists, at the end.
//! - [`summary`]: the closing counts per outcome kind, on stderr in every mode.
//! - [`rollout`]: the batch lines, how far a rollout went, where the run is recorded.
//! - [`hosts`]: plain tables, and `--list-hosts`.
//! - [`files`]: `--out-dir`, each host's output in files, and the succeeded/failed lists.
//! - [`progress`]: the optional progress bar on stderr.
//! - [`color`]: ANSI colours, applied only when the caller asks.

mod color;
pub mod files;
#[cfg(test)]
mod fixture;
mod gather;
mod host_keys;
mod hosts;
mod json;
mod progress;
mod rollout;
mod stream;
mod summary;

use std::io::{self, Write};

use tokio::sync::mpsc::{self, error::TryRecvError};
use volley_common::outcome::{HostReport, Outcome};

pub use gather::Dialled;
pub use host_keys::write_learned_host_keys;
pub use hosts::{write_host_list, write_table};
pub use rollout::{write_in_doubt, write_journal_stop, write_recorded, write_rollout};
pub use summary::write_summary;

use self::color::Paint;
use self::progress::Progress;
use self::stream::StreamRenderer;
use crate::event::Event;
use crate::plan::OutputMode;

#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub mode: OutputMode,
    /// Whether to colour what goes to each stream (already resolved from `--color` and whether
    /// that stream is a terminal).
    pub colors: Colors,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Put `HOST: ` before each streamed line (`-N` turns it off).
    pub prefix: bool,
    /// `--out-dir`: also write each host's output to files there (made by [`crate::local_dir::prepare`]).
    pub out_dir: Option<std::path::PathBuf>,
    /// The command hosts run is a push's `--then`: a command's failure says so.
    pub then: bool,
    /// For `volley runs resume` and `volley retry`: the whole run's hosts in its order, each
    /// with whether it succeeded, or `None` for one this resume collects or this retry runs.
    /// `--out-dir`'s lists name them all.
    pub whole_run: Option<Vec<(String, Option<bool>)>>,
    /// Where each host is dialled, in host order: `--gather` cuts a host's own address out of
    /// its outcome, so that hosts that failed alike share a group. Empty to cut nothing.
    pub dialled: Vec<Dialled>,
}

/// Colour, decided per stream: stdout may be a terminal while stderr goes to a file, and the
/// file must not get escape codes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Colors {
    pub stdout: bool,
    pub stderr: bool,
}

/// Output is written once this much is buffered even while events keep coming, so memory stays
/// bounded under a flood of output.
const FLUSH_AT: usize = 64 * 1024;

/// Consumes events until the channel closes, writing to stdout and stderr as they arrive, and
/// returns every host's final report, indexed by host number. A host without a `Finished` event
/// gets `None`.
///
/// A failed write (say, stdout is a closed pipe) ends the report early with that error; the
/// receiver is then dropped, so the run's remaining events go nowhere. `reader_gone` ends it the
/// same way, as a broken pipe, when the reader went away while nothing was being written.
pub async fn report(
    hosts: Vec<String>,
    options: ReportOptions,
    events: mpsc::Receiver<Event>,
    reader_gone: tokio_util::sync::CancellationToken,
) -> io::Result<Vec<Option<HostReport>>> {
    // The handles are locked per write, not for the whole run: a lock held across `.await` would
    // make this future `!Send` and would block every other writer (logging on stderr) until the
    // run ends. Buffering here keeps the writes, and so the locks, to one per flush.
    let mut terminal = Terminal::new(io::stdout(), io::stderr());
    let progress = options.progress.then(|| Progress::new(hosts.len()));
    tokio::select! {
        biased;
        () = reader_gone.cancelled() => Err(io::ErrorKind::BrokenPipe.into()),
        reports = consume(hosts, options, events, &mut terminal, progress, &reader_gone) => reports,
    }
}

/// The loop of [`report`], with the terminal passed in so that tests can capture it. It also
/// looks at `reader_gone` before each event: events that are waiting are taken without a
/// pause, and the interrupted hosts' lines that follow a reader's going must not be written.
async fn consume<O: Write, E: Write>(
    hosts: Vec<String>,
    options: ReportOptions,
    mut events: mpsc::Receiver<Event>,
    terminal: &mut Terminal<O, E>,
    mut progress: Option<Progress>,
    reader_gone: &tokio_util::sync::CancellationToken,
) -> io::Result<Vec<Option<HostReport>>> {
    let paint = Paint {
        enabled: options.colors.stdout,
    };
    let mut reports: Vec<Option<HostReport>> = vec![None; hosts.len()];
    let mut files = options
        .out_dir
        .clone()
        .map(|dir| files::OutDir::new(dir, &hosts));
    // The stream renderer takes the names; batch lines and the host lists need them.
    let names = hosts.clone();
    let mut stream = (options.mode == OutputMode::Stream).then(|| {
        let style = stream::Style {
            out: paint,
            err: Paint {
                enabled: options.colors.stderr,
            },
            prefix: options.prefix,
            then: options.then,
        };
        StreamRenderer::new(hosts, style)
    });
    loop {
        if reader_gone.is_cancelled() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let event = match events.try_recv() {
            Ok(event) => event,
            // Writing out only when no event is waiting keeps output prompt without a write
            // per line when output floods in.
            Err(TryRecvError::Empty) => {
                terminal.flush(progress.as_ref())?;
                match events.recv().await {
                    Some(event) => event,
                    None => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match event {
            Event::Started { host } => {
                if let Some(progress) = progress.as_mut() {
                    progress.started(host);
                }
                if let Some(files) = files.as_mut() {
                    files.started(host)?;
                }
            }
            Event::Output {
                host,
                stream: which,
                data,
            } => {
                if let Some(files) = files.as_mut() {
                    files.output(host, which, &data)?;
                }
                if let Some(stream) = stream.as_mut() {
                    stream.output(host, which, &data, &mut terminal.out, &mut terminal.err)?;
                }
            }
            // The journal's business; it does not pass it on.
            Event::Executing { .. } => {}
            Event::BatchWaiting {
                batch,
                batches,
                delay,
            } => {
                rollout::write_batch_waiting(&mut terminal.err, batch, batches, delay)?;
            }
            Event::BatchStarted {
                batch,
                batches,
                hosts: range,
            } => {
                rollout::write_batch_started(&mut terminal.err, &names, batch, batches, range)?;
            }
            Event::Finished { host, report } => {
                if let Some(files) = files.as_mut() {
                    files.finished(host);
                }
                match options.mode {
                    OutputMode::Stream => {
                        if let Some(stream) = stream.as_mut() {
                            stream.finished(host, &report, &mut terminal.out, &mut terminal.err)?;
                        }
                    }
                    OutputMode::Json => json::write_record(&mut terminal.out, &report)?,
                    OutputMode::Gather => {}
                }
                if let Some(progress) = progress.as_mut() {
                    progress.finished(host, report.outcome.is_success());
                }
                if let Some(slot) = reports.get_mut(host) {
                    *slot = Some(*report);
                }
            }
        }
        if terminal.buffered() >= FLUSH_AT {
            terminal.flush(progress.as_ref())?;
        }
    }
    if let Some(stream) = stream.as_mut() {
        stream.close(&mut terminal.out, &mut terminal.err)?;
    }
    terminal.flush(progress.as_ref())?;
    // The bar goes before the gathered results and the summary, which are the run's last word.
    drop(progress);
    if options.mode == OutputMode::Gather {
        gather::write_groups(&mut terminal.out, &reports, &options.dialled, paint)?;
        terminal.flush(None)?;
    }
    if let Some(files) = files.as_mut() {
        let succeeded = reports.iter().map(|report| {
            let outcome = report.as_ref().map(|report| &report.outcome);
            outcome.is_some_and(Outcome::is_success)
        });
        let lists = match options.whole_run {
            Some(run) => files::with_whole_run(run, &names.into_iter().zip(succeeded).collect()),
            None => names.into_iter().zip(succeeded).collect(),
        };
        files.write_lists(&lists)?;
    }
    Ok(reports)
}

/// Stdout and stderr with a buffer each, written out together.
struct Terminal<O, E> {
    out: Vec<u8>,
    err: Vec<u8>,
    stdout: O,
    stderr: E,
}

impl<O: Write, E: Write> Terminal<O, E> {
    fn new(stdout: O, stderr: E) -> Terminal<O, E> {
        Terminal {
            out: Vec::new(),
            err: Vec::new(),
            stdout,
            stderr,
        }
    }

    fn buffered(&self) -> usize {
        self.out.len() + self.err.len()
    }

    /// Writes out both buffers, with the progress bar hidden meanwhile.
    fn flush(&mut self, progress: Option<&Progress>) -> io::Result<()> {
        if self.buffered() == 0 {
            return Ok(());
        }
        let Terminal {
            out,
            err,
            stdout,
            stderr,
        } = self;
        let mut write = || -> io::Result<()> {
            write_out(stdout, out)?;
            write_out(stderr, err)
        };
        match progress {
            Some(progress) => progress.suspend(write),
            None => write(),
        }
    }
}

fn write_out(to: &mut impl Write, buffer: &mut Vec<u8>) -> io::Result<()> {
    if buffer.is_empty() {
        return Ok(());
    }
    to.write_all(buffer)?;
    to.flush()?;
    buffer.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use volley_common::outcome::Outcome;

    use super::fixture::host_report;
    use super::*;
    use crate::event::Stream;

    struct Run {
        out: String,
        err: String,
        reports: Vec<Option<HostReport>>,
    }

    fn options(mode: OutputMode) -> ReportOptions {
        ReportOptions {
            mode,
            colors: Colors::default(),
            progress: false,
            prefix: true,
            out_dir: None,
            then: false,
            whole_run: None,
            dialled: Vec::new(),
        }
    }

    /// Sends the events through a channel to the report loop and captures what it writes.
    async fn run(mode: OutputMode, events: Vec<Event>) -> Run {
        let hosts: Vec<String> = ["h01", "h02", "h03"].map(String::from).to_vec();
        let (sender, receiver) = mpsc::channel(4);
        let options = options(mode);
        let producer = tokio::spawn(async move {
            for event in events {
                sender.send(event).await.unwrap();
            }
        });
        let mut terminal = Terminal::new(Vec::new(), Vec::new());
        let gone = tokio_util::sync::CancellationToken::new();
        let reports = consume(hosts, options, receiver, &mut terminal, None, &gone)
            .await
            .unwrap();
        producer.await.unwrap();
        Run {
            out: String::from_utf8(terminal.stdout).unwrap(),
            err: String::from_utf8(terminal.stderr).unwrap(),
            reports,
        }
    }

    /// Once the reader is gone, the events still waiting (the interrupted hosts' ends) write
    /// nothing: the report ends as a broken pipe.
    #[tokio::test]
    async fn nothing_is_written_once_the_reader_is_gone() {
        let (sender, receiver) = mpsc::channel(4);
        let report = host_report("h01", Outcome::Cancelled, b"", b"");
        sender
            .send(Event::Finished {
                host: 0,
                report: Box::new(report),
            })
            .await
            .unwrap();
        drop(sender);
        let options = options(OutputMode::Stream);
        let mut terminal = Terminal::new(Vec::new(), Vec::new());
        let gone = tokio_util::sync::CancellationToken::new();
        gone.cancel();
        let hosts = vec!["h01".to_string()];
        let ended = consume(hosts, options, receiver, &mut terminal, None, &gone).await;
        assert_eq!(ended.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert!(terminal.stdout.is_empty() && terminal.stderr.is_empty());
    }

    fn events() -> Vec<Event> {
        let output = |host, stream, data: &'static str| Event::Output {
            host,
            stream,
            data: Bytes::from_static(data.as_bytes()),
        };
        vec![
            Event::Started { host: 0 },
            Event::Started { host: 1 },
            output(0, Stream::Stdout, "same\n"),
            output(1, Stream::Stdout, "sa"),
            output(1, Stream::Stdout, "me"),
            Event::Finished {
                host: 1,
                report: Box::new(host_report("h02", Outcome::Succeeded, b"same\n", b"")),
            },
            Event::Finished {
                host: 0,
                report: Box::new(host_report("h01", Outcome::Succeeded, b"same\n", b"")),
            },
            Event::Finished {
                host: 2,
                report: Box::new(host_report(
                    "h03",
                    Outcome::ConnectTimeout {
                        reason: String::new(),
                    },
                    b"",
                    b"",
                )),
            },
        ]
    }

    #[tokio::test]
    async fn stream_mode_writes_lines_and_failures() {
        let run = run(OutputMode::Stream, events()).await;
        assert_eq!(run.out, "h01: same\nh02: same\n");
        assert_eq!(run.err, "h03: volley: connect timed out (ssh)\n");
        let hosts: Vec<Option<&str>> = run
            .reports
            .iter()
            .map(|r| r.as_ref().map(|r| r.host.as_str()))
            .collect();
        assert_eq!(hosts, [Some("h01"), Some("h02"), Some("h03")]);
    }

    #[tokio::test]
    async fn json_mode_writes_one_line_per_host_in_finishing_order() {
        let run = run(OutputMode::Json, events()).await;
        let hosts: Vec<String> = run
            .out
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["host"].to_string()
            })
            .collect();
        assert_eq!(hosts, [r#""h02""#, r#""h01""#, r#""h03""#]);
        assert_eq!(run.err, "");
    }

    #[tokio::test]
    async fn gather_mode_writes_groups_at_the_end() {
        let run = run(OutputMode::Gather, events()).await;
        assert_eq!(
            run.out,
            "---------------\nh[01-02] (2)\n---------------\nsame\n\
             ---------------\nh03 (1): connect timed out\n---------------\n"
        );
        assert_eq!(run.err, "");
    }

    #[tokio::test]
    async fn a_host_out_of_range_or_never_finished_does_not_panic() {
        let events = vec![
            Event::Output {
                host: 7,
                stream: Stream::Stderr,
                data: Bytes::from_static(b"stray"),
            },
            Event::Finished {
                host: 7,
                report: Box::new(host_report("ghost", Outcome::Cancelled, b"", b"")),
            },
        ];
        let run = run(OutputMode::Stream, events).await;
        assert_eq!(run.err, "host#7: stray\nghost: volley: cancelled (ssh)\n");
        assert!(run.reports.iter().all(Option::is_none));
    }

    #[tokio::test]
    async fn batch_lines_go_to_stderr_in_every_mode() {
        for mode in [OutputMode::Stream, OutputMode::Json, OutputMode::Gather] {
            let batch = Event::BatchStarted {
                batch: 2,
                batches: 3,
                hosts: 1..3,
            };
            let run = run(mode, vec![batch]).await;
            assert_eq!(
                run.err, "volley: batch 2/3: h[02-03] (2 hosts)\n",
                "{mode:?}"
            );
            assert_eq!(run.out, "", "{mode:?}");
        }
    }

    #[test]
    fn the_report_future_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let (_sender, receiver) = mpsc::channel(1);
        let options = options(OutputMode::Stream);
        let stop = tokio_util::sync::CancellationToken::new();
        assert_send(&report(Vec::new(), options, receiver, stop));
    }
}
