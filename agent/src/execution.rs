//! One execution's record, shared by the task that supervises its process and the streams that
//! follow it: the output it keeps (the head of each stream, up to the cap), the one follower its
//! live events go to, and how it ended.
//!
//! The process does not depend on any follower. A follower that goes away (a controller killed
//! or cut off) is simply detached; the output goes on being read and counted, its head kept, and
//! a new follower can attach by id at any time, even after the end (see [`crate::registry`]).
//! Attaching replays the kept output from the offsets the follower already has, then hands it
//! the live events: the snapshot and the switch happen under one lock, and every chunk of output
//! is kept and handed to the current follower under that same lock, so a chunk reaches a
//! follower exactly once, in order.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use volley_common::exec::{ExecEvent, Exited};

use crate::exec::EVENT_QUEUE;

/// Which output stream of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A running or finished execution.
#[derive(Debug)]
pub struct Execution {
    pub id: String,
    /// The controller identity that started it: only it may attach or cancel.
    pub owner: String,
    /// Set once the process started.
    pid: AtomicU32,
    /// Cancelled by a Cancel request; the supervisor then stops the process group.
    pub cancel: CancellationToken,
    /// Bytes of each stream kept for a later follower.
    keep: u64,
    /// Bytes of each stream sent live, when the request asked for a cap; `None`: all.
    live: Option<u64>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    stdout: Kept,
    stderr: Kept,
    follower: Option<mpsc::Sender<ExecEvent>>,
    exited: Option<Exited>,
}

/// The head of one stream, and how many bytes it carried in all.
#[derive(Debug, Default)]
struct Kept {
    bytes: Vec<u8>,
    total: u64,
    /// Bytes offered to the live stream (all of them, or up to the request's cap), whether a
    /// follower was there to take them or not.
    offered: u64,
    /// The kept bytes were let go to bound the agent's memory; a replay has none of them.
    dropped: bool,
}

impl Kept {
    fn past(&self, offset: u64) -> Option<Vec<u8>> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        (!self.dropped && start < self.bytes.len()).then(|| self.bytes[start..].to_vec())
    }
}

/// What the supervisor reports of an execution's output at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

impl Execution {
    /// A new execution that keeps `keep` bytes of each stream and sends `live` bytes of each
    /// (`None`: all); its process is started next, and [`Execution::started`] tells its pid.
    pub fn new(id: String, owner: String, keep: u64, live: Option<u64>) -> Arc<Execution> {
        Arc::new(Execution {
            id,
            owner,
            pid: AtomicU32::new(0),
            cancel: CancellationToken::new(),
            keep,
            live,
            state: Mutex::new(State::default()),
        })
    }

    pub fn started(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes a new follower the only one: returns the events to replay (`Started`, the kept
    /// output from the offsets, and `Exited` if it has ended) and, while it runs, the receiver
    /// of what comes next. A previous follower's stream ends.
    pub fn follow(
        &self,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> (Vec<ExecEvent>, Option<mpsc::Receiver<ExecEvent>>) {
        let mut state = self.lock();
        let pid = self.pid.load(Ordering::Relaxed);
        let mut replay = vec![ExecEvent::Started { pid }];
        replay.extend(state.stdout.past(stdout_offset).map(ExecEvent::Stdout));
        replay.extend(state.stderr.past(stderr_offset).map(ExecEvent::Stderr));
        if let Some(exited) = &state.exited {
            replay.push(ExecEvent::Exited(exited.clone()));
            return (replay, None);
        }
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE);
        state.follower = Some(sender);
        (replay, Some(receiver))
    }

    /// A chunk the process wrote: keeps what fits in the kept head and returns the follower to
    /// send it to (up to the live cap, if the request set one), if there is one.
    pub fn output(
        &self,
        stream: Stream,
        chunk: &[u8],
    ) -> Option<(mpsc::Sender<ExecEvent>, ExecEvent)> {
        let fits = |room: u64| chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let mut state = self.lock();
        let kept = match stream {
            Stream::Stdout => &mut state.stdout,
            Stream::Stderr => &mut state.stderr,
        };
        kept.total += chunk.len() as u64;
        let keep = fits(self.keep.saturating_sub(kept.bytes.len() as u64));
        kept.bytes.extend_from_slice(&chunk[..keep]);
        let send = fits(
            self.live
                .map_or(u64::MAX, |cap| cap.saturating_sub(kept.offered)),
        );
        kept.offered += send as u64;
        if send == 0 {
            return None;
        }
        let data = chunk[..send].to_vec();
        let event = match stream {
            Stream::Stdout => ExecEvent::Stdout(data),
            Stream::Stderr => ExecEvent::Stderr(data),
        };
        state.follower.clone().map(|follower| (follower, event))
    }

    /// Forgets `follower` if it is still the current one (its stream is gone).
    pub fn detach(&self, follower: &mpsc::Sender<ExecEvent>) {
        let mut state = self.lock();
        if state
            .follower
            .as_ref()
            .is_some_and(|current| current.same_channel(follower))
        {
            state.follower = None;
        }
    }

    /// Bytes each stream carried, and whether the request's cap kept some from being sent.
    pub fn counts(&self) -> Counts {
        let state = self.lock();
        Counts {
            stdout_bytes: state.stdout.total,
            stderr_bytes: state.stderr.total,
            stdout_truncated: state.stdout.total > state.stdout.offered,
            stderr_truncated: state.stderr.total > state.stderr.offered,
        }
    }

    /// Records the end and returns the follower to send `Exited` to, if any; later followers
    /// get it in their replay.
    pub fn finish(&self, exited: Exited) -> Option<mpsc::Sender<ExecEvent>> {
        let mut state = self.lock();
        state.exited = Some(exited);
        state.follower.take()
    }

    pub fn has_ended(&self) -> bool {
        self.lock().exited.is_some()
    }

    /// Bytes of output kept in memory.
    pub fn kept_bytes(&self) -> u64 {
        let state = self.lock();
        (state.stdout.bytes.len() + state.stderr.bytes.len()) as u64
    }

    /// Lets the kept output go (the outcome stays); returns the bytes freed.
    pub fn drop_output(&self) -> u64 {
        let mut guard = self.lock();
        let state = &mut *guard;
        let freed = (state.stdout.bytes.len() + state.stderr.bytes.len()) as u64;
        for kept in [&mut state.stdout, &mut state.stderr] {
            kept.bytes = Vec::new();
            kept.dropped = true;
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use volley_common::exec::ExitStatus;

    use super::*;

    fn started(execution: Arc<Execution>) -> Arc<Execution> {
        execution.started(7);
        execution
    }

    fn exited() -> Exited {
        Exited {
            status: ExitStatus::Code(0),
            duration: std::time::Duration::from_millis(5),
            timed_out: false,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            cancelled: false,
        }
    }

    #[test]
    fn output_is_kept_up_to_the_cap_and_counted_past_it() {
        let execution = started(Execution::new("x".into(), "c".into(), 5, None));
        assert!(
            execution.output(Stream::Stdout, b"abc").is_none(),
            "no follower"
        );
        assert!(execution.output(Stream::Stdout, b"defgh").is_none());
        execution.output(Stream::Stderr, b"e");
        let counts = execution.counts();
        assert_eq!((counts.stdout_bytes, counts.stderr_bytes), (8, 1));
        // Nothing was held back from the live stream: it is not truncated.
        assert!(!counts.stdout_truncated && !counts.stderr_truncated);
        let (replay, live) = execution.follow(0, 0);
        assert_eq!(
            replay,
            [
                ExecEvent::Started { pid: 7 },
                ExecEvent::Stdout(b"abcde".to_vec()),
                ExecEvent::Stderr(b"e".to_vec()),
            ]
        );
        assert!(live.is_some());
    }

    #[test]
    fn a_follower_gets_the_replay_from_its_offsets_then_only_new_output() {
        let execution = started(Execution::new("x".into(), "c".into(), 100, None));
        execution.output(Stream::Stdout, b"hello ");
        let (replay, mut live) = execution.follow(3, 0);
        assert_eq!(replay[1..], [ExecEvent::Stdout(b"lo ".to_vec())]);
        let (follower, event) = execution
            .output(Stream::Stdout, b"world")
            .expect("sent to the follower");
        assert_eq!(event, ExecEvent::Stdout(b"world".to_vec()));
        follower.try_send(event).unwrap();
        let live = live.as_mut().unwrap();
        assert_eq!(
            live.try_recv().unwrap(),
            ExecEvent::Stdout(b"world".to_vec())
        );

        // A second follower takes over; the first one's stream ends.
        let (replay, _second) = execution.follow(11, 0);
        assert_eq!(replay.len(), 1, "nothing new past offset 11: {replay:?}");
        assert!(live.try_recv().is_err());
        let follower = execution.finish(exited()).expect("the second follower");
        assert!(!follower.same_channel(&mpsc::channel(1).0));
    }

    #[test]
    fn a_finished_execution_replays_its_end() {
        let execution = started(Execution::new("x".into(), "c".into(), 100, None));
        execution.output(Stream::Stdout, b"out");
        assert!(execution.finish(exited()).is_none(), "nobody followed");
        let (replay, live) = execution.follow(0, 0);
        assert!(live.is_none());
        assert_eq!(replay.len(), 3);
        assert_eq!(replay[2], ExecEvent::Exited(exited()));
        assert_eq!(execution.drop_output(), 3);
        let (replay, _) = execution.follow(0, 0);
        assert_eq!(
            replay.len(),
            2,
            "the outcome outlives the output: {replay:?}"
        );
    }

    #[test]
    fn a_live_cap_asked_for_holds_back_the_rest_and_says_so() {
        let execution = started(Execution::new("x".into(), "c".into(), 100, Some(4)));
        let (_, _live) = execution.follow(0, 0);
        let (_, event) = execution.output(Stream::Stdout, b"abcdef").unwrap();
        assert_eq!(event, ExecEvent::Stdout(b"abcd".to_vec()));
        assert!(execution.output(Stream::Stdout, b"gh").is_none());
        assert!(execution.counts().stdout_truncated);
    }

    #[test]
    fn a_gone_follower_is_detached_only_if_still_current() {
        let execution = started(Execution::new("x".into(), "c".into(), 100, None));
        let (_, first) = execution.follow(0, 0);
        let (first_sender, _) = execution.output(Stream::Stdout, b"a").unwrap();
        drop(first);
        let (_, _second) = execution.follow(1, 0);
        execution.detach(&first_sender);
        assert!(
            execution.output(Stream::Stdout, b"b").is_some(),
            "still followed"
        );
    }
}
