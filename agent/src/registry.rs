//! The agent's executions by id: the running ones, and the finished ones for a while
//! (`[retention]` in the configuration), so that a controller that lost its connection, or was
//! killed, can attach again and collect the outcome instead of running the command twice.
//!
//! Retention is bounded three ways: a finished execution is forgotten `keep_for` after its end;
//! beyond `max_executions` finished ones the oldest are forgotten; beyond `max_bytes` of kept
//! output in all, the oldest let their output go (their outcome stays). Running executions are
//! bounded by `max_concurrent_execs` and their own output cap. Everything lives in memory: an
//! agent that restarts knows no execution, and the controller reports such hosts as `in_doubt`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::execution::Execution;

/// How long and how many finished executions are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// A finished execution is forgotten this long after its end; zero: at once.
    pub keep_for: Duration,
    pub max_executions: usize,
    /// Output kept by finished executions, in all.
    pub max_bytes: u64,
    /// The head of each stream an execution keeps, at most (a request may ask for less).
    pub keep_output: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            keep_for: Duration::from_secs(15 * 60),
            max_executions: 1000,
            max_bytes: 32 << 20,
            keep_output: 1 << 20,
        }
    }
}

/// An execution id that the agent already knows.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("execution {0:?} already exists on this agent")]
pub struct AlreadyExists(pub String);

#[derive(Debug)]
pub struct Registry {
    retention: Retention,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    executions: HashMap<String, Arc<Execution>>,
    /// Finished executions, oldest first, with when they finished.
    finished: VecDeque<(Instant, String)>,
    /// Output kept by the finished executions.
    kept_bytes: u64,
}

impl Registry {
    pub fn new(retention: Retention) -> Registry {
        Registry {
            retention,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Takes in a new execution; refused if its id is known, running or kept.
    pub fn insert(&self, execution: Arc<Execution>) -> Result<(), AlreadyExists> {
        let mut inner = self.lock();
        self.expire(&mut inner, Instant::now());
        if inner.executions.contains_key(&execution.id) {
            return Err(AlreadyExists(execution.id.clone()));
        }
        inner.executions.insert(execution.id.clone(), execution);
        Ok(())
    }

    /// Forgets an execution whose process could not start.
    pub fn remove(&self, id: &str) {
        self.lock().executions.remove(id);
    }

    /// The execution `id`, running or kept.
    pub fn get(&self, id: &str) -> Option<Arc<Execution>> {
        let mut inner = self.lock();
        self.expire(&mut inner, Instant::now());
        inner.executions.get(id).cloned()
    }

    /// Records that `id` finished: it is kept from now on, within the bounds.
    pub fn finished(&self, id: &str) {
        let mut inner = self.lock();
        let Some(execution) = inner.executions.get(id).cloned() else {
            return;
        };
        inner.kept_bytes += execution.kept_bytes();
        inner.finished.push_back((Instant::now(), id.to_string()));
        while inner.finished.len() > self.retention.max_executions {
            inner.forget_oldest();
        }
        let mut next = 0;
        while inner.kept_bytes > self.retention.max_bytes && next < inner.finished.len() {
            let id = &inner.finished[next].1;
            let freed = inner.executions.get(id).map_or(0, |e| e.drop_output());
            inner.kept_bytes -= freed.min(inner.kept_bytes);
            next += 1;
        }
        self.expire(&mut inner, Instant::now());
    }

    /// Forgets finished executions past `keep_for`; called on every use and now and then.
    pub fn sweep(&self) {
        let mut inner = self.lock();
        self.expire(&mut inner, Instant::now());
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while inner
            .finished
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= self.retention.keep_for)
        {
            inner.forget_oldest();
        }
    }

    /// Running and kept executions, and the output bytes kept by the finished ones.
    pub fn sizes(&self) -> (usize, usize, u64) {
        let inner = self.lock();
        let kept = inner.finished.len();
        (inner.executions.len() - kept, kept, inner.kept_bytes)
    }
}

impl Inner {
    fn forget_oldest(&mut self) {
        if let Some((_, id)) = self.finished.pop_front()
            && let Some(execution) = self.executions.remove(&id)
        {
            self.kept_bytes -= execution.kept_bytes().min(self.kept_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use volley_common::exec::{ExitStatus, Exited};

    use super::*;
    use crate::execution::Stream;

    fn finished(registry: &Registry, id: &str, output: &[u8]) {
        let execution = Execution::new(id.to_string(), "c".to_string(), 1 << 20, None);
        execution.output(Stream::Stdout, output);
        registry.insert(execution.clone()).unwrap();
        execution.finish(Exited {
            status: ExitStatus::Code(0),
            duration: Duration::ZERO,
            timed_out: false,
            stdout_bytes: output.len() as u64,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            cancelled: false,
        });
        registry.finished(id);
    }

    fn retention(keep_for_secs: u64, max_executions: usize, max_bytes: u64) -> Retention {
        Retention {
            keep_for: Duration::from_secs(keep_for_secs),
            max_executions,
            max_bytes,
            keep_output: 1 << 20,
        }
    }

    #[test]
    fn an_id_runs_once() {
        let registry = Registry::new(Retention::default());
        finished(&registry, "a", b"");
        let again = Execution::new("a".to_string(), "c".to_string(), 10, None);
        assert_eq!(registry.insert(again), Err(AlreadyExists("a".to_string())));
        assert!(registry.get("a").is_some());
        assert!(registry.get("b").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn finished_executions_are_forgotten_after_keep_for() {
        let registry = Registry::new(retention(60, 100, 1 << 20));
        let running = Execution::new("running".to_string(), "c".to_string(), 10, None);
        registry.insert(running).unwrap();
        finished(&registry, "old", b"x");
        tokio::time::advance(Duration::from_secs(30)).await;
        finished(&registry, "new", b"y");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(registry.get("old").is_none());
        assert!(registry.get("new").is_some());
        // A running execution is never forgotten, however long it runs.
        assert!(registry.get("running").is_some());
        tokio::time::advance(Duration::from_secs(30)).await;
        registry.sweep();
        assert_eq!(registry.sizes(), (1, 0, 0));
    }

    #[test]
    fn beyond_max_executions_the_oldest_are_forgotten() {
        let registry = Registry::new(retention(3600, 3, 1 << 20));
        for id in ["1", "2", "3", "4", "5"] {
            finished(&registry, id, b"out");
        }
        let known: Vec<bool> = ["1", "2", "3", "4", "5"]
            .iter()
            .map(|id| registry.get(id).is_some())
            .collect();
        assert_eq!(known, [false, false, true, true, true]);
        assert_eq!(registry.sizes(), (0, 3, 9));
    }

    #[test]
    fn beyond_max_bytes_the_oldest_let_their_output_go_and_keep_their_outcome() {
        let registry = Registry::new(retention(3600, 100, 10));
        finished(&registry, "1", b"aaaa");
        finished(&registry, "2", b"bbbb");
        finished(&registry, "3", b"cccc");
        assert_eq!(registry.sizes(), (0, 3, 8));
        let first = registry.get("1").expect("its outcome is kept");
        assert!(first.has_ended());
        assert_eq!(first.kept_bytes(), 0);
        assert_eq!(registry.get("3").unwrap().kept_bytes(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn keep_for_zero_forgets_at_once() {
        let registry = Registry::new(retention(0, 100, 1 << 20));
        finished(&registry, "a", b"x");
        assert!(registry.get("a").is_none());
    }
}
