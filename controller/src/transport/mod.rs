//! The one trait every transport implements, and the events a host's run emits.
//!
//! A transport runs one command on one host: it connects, runs, streams output into an
//! [`OutputSink`] and returns how it ended as an [`Ended`]. It never prints and never decides
//! what happens to other hosts; the scheduler owns that. SSH lives in [`ssh`], the agent's gRPC
//! in [`agent`], and [`auto`] picks between them per host; [`resume`] collects executions a
//! run's journal recorded.

pub mod agent;
pub mod auto;
pub mod resume;
pub mod ssh;
pub mod stage;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use volley_common::outcome::{Capture, Captured, Fallback, Outcome, TransportKind};

use crate::admission::Admission;
use crate::event::{Event, Stream};
use crate::plan::HostSpec;

/// Where a transport puts what a host produced: its output, forwarded to the reporters as it
/// arrives and kept up to the cap for the host's report; and, for `volley push`, the files it
/// changed.
pub struct OutputSink {
    host: usize,
    events: mpsc::Sender<Event>,
    stdout: Capture,
    stderr: Capture,
    changed: Option<Vec<String>>,
}

impl OutputSink {
    pub fn new(host: usize, events: mpsc::Sender<Event>, cap: usize) -> OutputSink {
        OutputSink {
            host,
            events,
            stdout: Capture::new(cap),
            stderr: Capture::new(cap),
            changed: None,
        }
    }

    /// Forwards one chunk. It waits while the reporters are behind, which in turn slows the
    /// reading of the connection: output is never buffered without bound.
    pub async fn write(&mut self, stream: Stream, data: Bytes) {
        match stream {
            Stream::Stdout => self.stdout.push(&data),
            Stream::Stderr => self.stderr.push(&data),
        }
        // The reporters are gone only when the run is being torn down; the kept copy still counts.
        let _ = self
            .events
            .send(Event::Output {
                host: self.host,
                stream,
                data,
            })
            .await;
    }

    /// Has the run's journal record that this host's command goes to its agent as
    /// `execution_id`, and returns once it is written: call it before sending the command, and
    /// send nothing if it fails (the error says why).
    pub async fn journal_execution(&self, name: &str, execution_id: &str) -> Result<(), String> {
        let (recorded, written) = tokio::sync::oneshot::channel();
        let event = Event::Executing {
            name: name.to_string(),
            execution_id: execution_id.to_string(),
            recorded,
        };
        let gone = || "the run's journal is gone".to_string();
        self.events.send(event).await.map_err(|_| gone())?;
        written.await.map_err(|_| gone())?
    }

    /// Bytes of each stream received so far.
    pub fn received(&self, stream: Stream) -> u64 {
        match stream {
            Stream::Stdout => self.stdout.total_bytes(),
            Stream::Stderr => self.stderr.total_bytes(),
        }
    }

    /// Records a stream's true size when the far side sent less than it carried (an agent
    /// applies the output cap before sending).
    pub fn count_total(&mut self, stream: Stream, total_bytes: u64) {
        match stream {
            Stream::Stdout => self.stdout.count_total(total_bytes),
            Stream::Stderr => self.stderr.count_total(total_bytes),
        }
    }

    /// Records the remote files a push changed on the host (empty: it compared, nothing
    /// differed), for its report and journal record.
    pub fn record_changed(&mut self, changed: Vec<String>) {
        self.changed = Some(changed);
    }

    /// What was kept of stdout and stderr, and the files changed if recorded.
    pub fn finish(self) -> (Captured, Captured, Option<Vec<String>>) {
        (self.stdout.finish(), self.stderr.finish(), self.changed)
    }
}

/// Limits of one host's run.
#[derive(Clone, Copy, Debug)]
pub struct RunLimits {
    /// TCP connect plus handshake plus authentication.
    pub connect_timeout: Duration,
    /// The command itself; `None` waits forever.
    pub command_timeout: Option<Duration>,
}

/// How one host's run ended, as the transport saw it.
#[derive(Debug)]
pub struct Ended {
    pub outcome: Outcome,
    /// Time to an authenticated session, when one was reached.
    pub connected_after: Option<Duration>,
    /// Time the command ran, when it started.
    pub ran_for: Option<Duration>,
    /// The transport that ended it (with `auto`, the agent or the SSH fallback).
    pub transport: TransportKind,
    /// Set by `auto` when it ran the host over SSH after the agent attempt failed.
    pub fallback: Option<Fallback>,
}

impl Ended {
    /// An end before any connection was made: no session, no command.
    pub fn unconnected(outcome: Outcome, transport: TransportKind) -> Ended {
        Ended {
            outcome,
            connected_after: None,
            ran_for: None,
            transport,
            fallback: None,
        }
    }
}

/// One command on one host.
pub struct Job<'a> {
    pub host: &'a HostSpec,
    pub command: &'a str,
    /// The id of this host's command in this run (`RUN/HOST`), under which an agent runs it.
    pub execution_id: &'a str,
    pub limits: RunLimits,
    pub output: &'a mut OutputSink,
    /// What the command reads on its stdin, then end of file (`--stdin`); `None`: nothing.
    pub stdin: Option<&'a Bytes>,
    /// Cancelled on interrupt: the transport stops the remote command and returns `Cancelled`.
    pub cancel: CancellationToken,
    /// The run's handshake admission: every connect phase goes through
    /// [`Admission::connect`], which also applies the connect timeout.
    pub admission: &'a Admission,
}

/// Opens a TCP connection to `address:port`. An IP address is dialled directly; only a name goes
/// through the resolver, which runs on tokio's blocking pool: a fleet of addresses then costs no
/// thread and no resolver memory per host.
pub async fn dial(address: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) => tokio::net::TcpStream::connect((ip, port)).await,
        Err(_) => tokio::net::TcpStream::connect((address, port)).await,
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs a command on a host. Implementations return every failure as an [`Outcome`].
pub trait Transport: Send + Sync {
    /// The transport reported for hosts that never started.
    fn kind(&self) -> TransportKind;
    fn run<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Ended>;
}
