//! Handshake admission: how many hosts may be in their connect phase at once (TCP connect, then
//! SSH key exchange and authentication, or the TLS handshake and the agent's `Info`), apart from
//! how many run at once (`parallel`).
//!
//! A handshake costs CPU on both ends. Hundreds started at once share that CPU fairly, and so they
//! all finish late together, past the connect timeout: a run of 500 where 18 hosts get through.
//! The scheduler owns one [`Admission`] per run; every transport runs its connect phase through
//! [`Admission::connect`], which takes a permit before the TCP connect and gives it back once the
//! host is authenticated (or failed); a host whose TCP connect is not answered within
//! [`LEND_AFTER`], or whose server has not sent a byte after [`SILENT_AFTER`] (or four times
//! what handshakes take here), lends its permit while it waits. The connect timeout counts from
//! admission:
//! time spent waiting for a permit is not held against a host.
//!
//! The limit is fixed (`--max-handshakes N`) or, by default, adaptive. The adaptive limit works
//! like TCP's congestion window, with handshake latency as its signal:
//!
//! - It measures each completed handshake, from admission to authenticated, and keeps the
//!   fastest one seen (the baseline: a handshake that did not queue) and a moving average of the
//!   recent ones (weight 1/4 per sample, as TCP smooths its round-trip time).
//! - While the recent average stays within twice the baseline, nothing queues: the limit grows
//!   by one per completed handshake, so it doubles every round (as TCP's slow start).
//! - While it is above that but under a tenth of the connect timeout, handshakes queue but can
//!   afford it: the limit grows by one per round. A fleet that is simply far away, or mixed, is
//!   then not mistaken for an overloaded one.
//! - Above a tenth of the timeout the limit shrinks to three quarters; a handshake that timed out
//!   halves it, but only while the completed ones are that slow too: a host that never answers
//!   (dead, or behind a dropping firewall) times out on an idle fleet as well, and must not
//!   throttle the live ones. It shrinks at most once per round (the recent latency; the timeout
//!   for timeouts), so that one burst of slow samples counts once.
//! - Bounds: it starts at [`INITIAL`], never goes below [`MINIMUM`] (or `parallel`, if smaller)
//!   and never above `parallel`. Failures that say nothing about load (refused, no route,
//!   authentication or host-key refusals, cancels) give the permit back without a sample.
//!
//! Admission is also where a stopped rollout stops hosts: once the failure budget is spent
//! ([`Admission::stop_starting`]), no host is admitted any more, and a host still waiting for a
//! turn, connecting or in its handshake ends without its command (`Cut::Stopped`): with the
//! default `parallel`, every host of a batch has its slot at once and waits here, and would
//! otherwise start its command long after the failures that spent the budget.

use std::future::Future;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::transport::stage::Progress;

/// How long a connection may take to come up (TCP, or a channel through a jump host) before
/// its permit is lent to another host until it does: far longer than a connect to a live host,
/// near or far, takes.
pub const LEND_AFTER: Duration = Duration::from_millis(200);
/// How long a connection that is up may go without a byte from the server before its permit is
/// lent (see [`Admission::connect`]); longer where handshakes take longer.
pub const SILENT_AFTER: Duration = Duration::from_secs(1);
/// Where the adaptive limit starts.
pub const INITIAL: usize = 8;
/// The adaptive limit never goes below this (unless `parallel` is smaller).
pub const MINIMUM: usize = 4;
/// Recent latency within this factor of the baseline means no queue: the limit grows fast.
const FAST_FACTOR: u32 = 2;
/// Recent latency under the connect timeout divided by this is affordable: the limit grows
/// slowly. Above it, the limit shrinks.
const TIMEOUT_SHARE: u32 = 10;

/// How many handshakes may be in flight at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeLimit {
    /// Exactly this many (`--max-handshakes N`).
    Fixed(usize),
    /// Grows while handshakes stay fast and shrinks when they slow down (the default).
    Adaptive,
}

/// The handshakes of one run: a semaphore whose size the limit sets.
#[derive(Debug)]
pub struct Admission {
    permits: Semaphore,
    state: Mutex<State>,
    connect_timeout: Duration,
    /// Cancelled when the rollout stops: no host starts any more.
    stopped: CancellationToken,
}

#[derive(Debug)]
struct State {
    adaptive: bool,
    /// The target; fractional so that growth by one per round can add up.
    limit: f64,
    /// Permits that exist, handed out or not. It follows `limit`: a permit given back while
    /// there are too many is forgotten instead of returned.
    capacity: usize,
    minimum: usize,
    maximum: usize,
    baseline: Option<Duration>,
    recent: Option<Duration>,
    last_shrink: Option<Instant>,
}

/// Why an admitted connect phase gave no result of its own. The transport turns it into the
/// host's outcome (`Cancelled`, or `ConnectTimeout` with the stage it had reached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    Cancelled,
    TimedOut,
    /// The rollout stopped (the failure budget is spent) before the host's command started.
    Stopped,
}

/// What a connection that lent its turn waits for; once it comes, the connection needs a turn
/// again.
#[derive(Clone, Copy, Debug)]
enum Waiting {
    /// The TCP connect (or a channel through a jump host).
    Connection,
    /// The server's first bytes (an SSH banner, a TLS answer).
    FirstBytes,
}

impl Waiting {
    fn holds(self, progress: &Progress) -> bool {
        match self {
            Waiting::Connection => progress.connecting(),
            Waiting::FirstBytes => progress.silent(),
        }
    }
}

/// How a handshake ended, as far as the limit cares.
enum Sample {
    Completed(Duration),
    TimedOut,
    /// It said nothing about load.
    Neutral,
}

impl Admission {
    /// `parallel` bounds the limit from above: more handshakes than hosts at once cannot be.
    pub fn new(limit: HandshakeLimit, parallel: usize, connect_timeout: Duration) -> Admission {
        let parallel = parallel.max(1);
        let (adaptive, capacity, minimum, maximum) = match limit {
            HandshakeLimit::Fixed(n) => (false, n.max(1), n.max(1), n.max(1)),
            HandshakeLimit::Adaptive => {
                (true, INITIAL.min(parallel), MINIMUM.min(parallel), parallel)
            }
        };
        Admission {
            permits: Semaphore::new(capacity),
            state: Mutex::new(State {
                adaptive,
                limit: capacity as f64,
                capacity,
                minimum,
                maximum,
                baseline: None,
                recent: None,
                last_shrink: None,
            }),
            connect_timeout,
            stopped: CancellationToken::new(),
        }
    }

    /// The rollout stops: hosts waiting for a turn, connecting or in their handshake end with
    /// [`Cut::Stopped`], and so does any that asks for a turn from now on.
    pub fn stop_starting(&self) {
        self.stopped.cancel();
    }

    /// Resolves once [`Admission::stop_starting`] is called.
    pub async fn stopping(&self) {
        self.stopped.cancelled().await
    }

    /// Runs one host's connect phase: waits for a permit (or `cancel`), then runs `connect`
    /// within `timeout`, counted from admission, and learns from how long it took. Its own
    /// failures (refused, rejected) say nothing about load and are passed on as they are.
    ///
    /// A connection not up within [`LEND_AFTER`] (`progress` says where it is), or up with a
    /// server that has sent nothing after [`SILENT_AFTER`], gives its permit back while it waits
    /// (see `idle`): a host that never answers (dead, behind a firewall that drops, a hung
    /// server) costs no CPU, and must not hold a turn that live hosts wait for. If its connection
    /// comes up (or its server speaks) after all, it is not polled until it has a permit again,
    /// and its timeout counts from then. The permit is taken before the TCP connect, not after: a connection waiting
    /// for its turn would hold one of the server's unauthenticated places (sshd's `MaxStartups`),
    /// and cost the server a process.
    ///
    /// Once the rollout stops ([`Admission::stop_starting`]), it ends with [`Cut::Stopped`]:
    /// the host is not to start its command.
    pub async fn connect<T, E>(
        &self,
        timeout: Duration,
        cancel: &CancellationToken,
        progress: &Progress,
        connect: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, Cut> {
        self.connect_phase(timeout, cancel, &self.stopped, progress, connect)
            .await
    }

    /// [`Admission::connect`] for a host whose command already started (attaching to it again
    /// after a lost connection): a stopped rollout does not stop it.
    pub async fn reconnect<T, E>(
        &self,
        timeout: Duration,
        cancel: &CancellationToken,
        progress: &Progress,
        connect: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, Cut> {
        let never = CancellationToken::new();
        self.connect_phase(timeout, cancel, &never, progress, connect)
            .await
    }

    async fn connect_phase<T, E>(
        &self,
        timeout: Duration,
        cancel: &CancellationToken,
        stopped: &CancellationToken,
        progress: &Progress,
        connect: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, Cut> {
        let mut connect = std::pin::pin!(connect);
        let mut permit = self.admit(cancel, stopped).await?;
        let mut admitted = Instant::now();
        // The connect timeout counts the time with a turn and the time lent, not the waits for
        // a turn: a lent host that gets one again has what was left.
        let mut deadline = admitted + timeout;
        // At most twice per leg (a jump host's leg, then the target's): each lend waits for the
        // progress to change (the connection up, the server's first bytes), which never goes
        // back.
        let result = loop {
            let first = tokio::select! {
                biased;
                () = cancel.cancelled() => Ok(Err(Cut::Cancelled)),
                () = stopped.cancelled() => Ok(Err(Cut::Stopped)),
                result = connect.as_mut() => Ok(Ok(result)),
                () = tokio::time::sleep_until(deadline) => Ok(Err(Cut::TimedOut)),
                waiting = self.idle(progress, admitted, timeout) => Err(waiting),
            };
            let waiting = match first {
                Ok(result) => break result,
                Err(waiting) => waiting,
            };
            // Lent: it waits without a turn, up to the same deadline, while it stays as idle.
            self.release(permit, Sample::Neutral);
            let changed = std::future::poll_fn(|cx| {
                if !waiting.holds(progress) {
                    return Poll::Ready(None);
                }
                match connect.as_mut().poll(cx) {
                    Poll::Ready(result) => Poll::Ready(Some(result)),
                    Poll::Pending if waiting.holds(progress) => Poll::Pending,
                    Poll::Pending => Poll::Ready(None),
                }
            });
            let ended = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Cut::Cancelled),
                () = stopped.cancelled() => return Err(Cut::Stopped),
                ended = changed => ended,
                () = tokio::time::sleep_until(deadline) => return Err(Cut::TimedOut),
            };
            if let Some(result) = ended {
                // Refused, no route, closed, or the like, late: nothing about load.
                return Ok(result);
            }
            // Up at last, or the server spoke: what follows costs CPU, and waits for a turn.
            let left = deadline.saturating_duration_since(Instant::now());
            permit = self.admit(cancel, stopped).await?;
            admitted = Instant::now();
            deadline = admitted + left;
        };
        // Connected as the rollout stopped: the command is not sent.
        let result = match result {
            Ok(Ok(_)) if stopped.is_cancelled() => Err(Cut::Stopped),
            result => result,
        };
        let sample = match &result {
            Ok(Ok(_)) => Sample::Completed(admitted.elapsed()),
            Err(Cut::TimedOut) => Sample::TimedOut,
            Ok(Err(_)) | Err(Cut::Cancelled | Cut::Stopped) => Sample::Neutral,
        };
        self.release(permit, sample);
        result
    }

    /// Resolves when a connection admitted at `admitted` has been idle long enough to lend its
    /// turn, with what it waits for; never while it works. Idle is: not connected after
    /// [`LEND_AFTER`] (no CPU is spent until the connection is up), or connected and not a byte
    /// from the server after [`SILENT_AFTER`], or four times what handshakes take here if that
    /// is longer (a hung sshd or agent, or a port that accepts for something else: a server
    /// merely slowed by load answers within what its handshakes take, and keeps its turn).
    async fn idle(&self, progress: &Progress, admitted: Instant, timeout: Duration) -> Waiting {
        tokio::time::sleep_until(admitted + LEND_AFTER.min(timeout / 2)).await;
        if progress.connecting() {
            return Waiting::Connection;
        }
        let recent = self.lock().recent.unwrap_or_default();
        let silent_after = SILENT_AFTER.max(recent * 4);
        if silent_after >= timeout {
            return std::future::pending().await;
        }
        tokio::time::sleep_until(admitted + silent_after).await;
        if progress.silent() {
            return Waiting::FirstBytes;
        }
        std::future::pending().await
    }

    /// A permit, or the run's interrupt, or the rollout's stop.
    async fn admit(
        &self,
        cancel: &CancellationToken,
        stopped: &CancellationToken,
    ) -> Result<SemaphorePermit<'_>, Cut> {
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Cut::Cancelled),
            () = stopped.cancelled() => Err(Cut::Stopped),
            permit = self.permits.acquire() => Ok(permit.expect("the semaphore is never closed")),
        }
    }

    /// The current limit, for tests and the debug log.
    pub fn limit(&self) -> usize {
        self.lock().capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn release(&self, permit: SemaphorePermit<'_>, sample: Sample) {
        let mut state = self.lock();
        // A fixed limit learns the latency too: it tells a slow server from a silent one.
        state.learn(sample, self.connect_timeout);
        let target = (state.limit as usize).clamp(state.minimum, state.maximum);
        if state.capacity > target {
            permit.forget();
            state.capacity -= 1;
        } else {
            drop(permit);
            if target > state.capacity {
                self.permits.add_permits(target - state.capacity);
                state.capacity = target;
            }
        }
    }
}

impl State {
    fn learn(&mut self, sample: Sample, connect_timeout: Duration) {
        let now = Instant::now();
        match sample {
            Sample::Neutral => {}
            // A host that does not answer at all (dead, or behind a firewall that drops) times
            // out as surely on an idle fleet: only when the handshakes that complete are slow
            // too is a timeout a sign of load.
            Sample::TimedOut if self.adaptive && self.congested(connect_timeout) => {
                self.shrink(now, 0.5, connect_timeout)
            }
            Sample::TimedOut => {}
            Sample::Completed(latency) => {
                let baseline = self.baseline.map_or(latency, |b| b.min(latency));
                self.baseline = Some(baseline);
                let recent = match self.recent {
                    // An average weighted 1/4 to the new sample, as TCP smooths its RTT.
                    Some(recent) => (recent * 3 + latency) / 4,
                    None => latency,
                };
                self.recent = Some(recent);
                if !self.adaptive {
                    return;
                }
                let growth = if recent <= baseline * FAST_FACTOR {
                    // No queue to speak of: one more per handshake, doubling every round.
                    1.0
                } else if !self.congested(connect_timeout) {
                    // Queueing, but well within the timeout: one more per round.
                    1.0 / self.limit.max(1.0)
                } else {
                    self.shrink(now, 0.75, recent);
                    return;
                };
                self.limit = (self.limit + growth).min(self.maximum as f64);
            }
        }
    }

    /// Whether the recent handshakes are slow enough to shrink the limit.
    fn congested(&self, connect_timeout: Duration) -> bool {
        self.recent
            .is_some_and(|recent| recent >= connect_timeout / TIMEOUT_SHARE)
    }

    /// Multiplies the limit by `factor`, unless it already shrank within the last `round`.
    fn shrink(&mut self, now: Instant, factor: f64, round: Duration) {
        if self
            .last_shrink
            .is_some_and(|last| now.duration_since(last) < round)
        {
            return;
        }
        self.last_shrink = Some(now);
        let before = self.limit;
        self.limit = (self.limit * factor).max(self.minimum as f64);
        tracing::debug!(
            before = before as usize,
            after = self.limit as usize,
            recent_ms = self.recent.map(|r| r.as_millis() as u64),
            baseline_ms = self.baseline.map(|b| b.as_millis() as u64),
            "handshake limit shrinks"
        );
    }
}

#[cfg(test)]
mod tests;
