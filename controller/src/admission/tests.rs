//! Admission against simulated fleets on a paused clock: a handshake's latency is the fleet's
//! base latency plus a cost per handshake already in flight when it starts (a CPU-bound server
//! queues). Time is exact, so the figures are too.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::task::JoinSet;

use super::*;

/// The progress of an attempt whose connection is up: its handshake takes a turn.
fn up() -> Progress {
    Progress::connected()
}

/// A host's own failure (refused, say): nothing the limit learns from.
#[derive(Debug, PartialEq, Eq)]
struct Refused;

/// A fleet whose handshakes take `base + per_in_flight * (handshakes in flight)`.
struct Fleet {
    base: Duration,
    per_in_flight: Duration,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// The slowest completed handshake, in milliseconds.
    slowest: AtomicUsize,
}

impl Fleet {
    fn new(base_ms: u64, per_in_flight_ms: u64) -> Arc<Fleet> {
        Arc::new(Fleet {
            base: Duration::from_millis(base_ms),
            per_in_flight: Duration::from_millis(per_in_flight_ms),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            slowest: AtomicUsize::new(0),
        })
    }

    async fn handshake(&self) -> Result<(), Refused> {
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        // A timed-out handshake is dropped mid-sleep: it leaves the count all the same.
        let _leaves = InFlight(&self.in_flight);
        self.peak.fetch_max(before + 1, Ordering::SeqCst);
        let latency = self.base + self.per_in_flight * before as u32;
        tokio::time::sleep(latency).await;
        self.slowest
            .fetch_max(latency.as_millis() as usize, Ordering::SeqCst);
        Ok(())
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a simulated run came to.
#[derive(Debug)]
struct Ran {
    completed: usize,
    timed_out: usize,
    peak_in_flight: usize,
    slowest: Duration,
    wall: Duration,
}

/// `hosts` handshakes at once (as `parallel` slots would start them) through `admission`.
async fn run(admission: Arc<Admission>, fleet: Arc<Fleet>, hosts: usize, timeout: Duration) -> Ran {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..hosts {
        let (admission, fleet) = (admission.clone(), fleet.clone());
        tasks.spawn(async move {
            let cancel = CancellationToken::new();
            admission
                .connect(timeout, &cancel, &up(), fleet.handshake())
                .await
        });
    }
    let (mut completed, mut timed_out) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.expect("no task panics") {
            Ok(Ok(())) => completed += 1,
            Err(Cut::TimedOut) => timed_out += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    Ran {
        completed,
        timed_out,
        peak_in_flight: fleet.peak.load(Ordering::SeqCst),
        slowest: Duration::from_millis(fleet.slowest.load(Ordering::SeqCst) as u64),
        wall: started.elapsed(),
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn all_at_once_collapses_where_the_adaptive_limit_times_out_nobody() {
    // 30 ms alone, 20 ms more per handshake in flight: 500 at once would take 10 s each.
    let all_at_once = run(
        Arc::new(Admission::new(HandshakeLimit::Fixed(500), 500, TIMEOUT)),
        Fleet::new(30, 20),
        500,
        TIMEOUT,
    )
    .await;
    assert!(all_at_once.timed_out > 200, "{all_at_once:?}");

    let adaptive = Arc::new(Admission::new(HandshakeLimit::Adaptive, 500, TIMEOUT));
    let ran = run(adaptive.clone(), Fleet::new(30, 20), 500, TIMEOUT).await;
    assert_eq!((ran.completed, ran.timed_out), (500, 0), "{ran:?}");
    // Well clear of the timeout, and not much slower than one at a time would go.
    assert!(ran.slowest < TIMEOUT / 4, "{ran:?}");
    assert!(ran.wall < Duration::from_secs(20), "{ran:?}");
    assert!(adaptive.limit() >= MINIMUM, "{}", adaptive.limit());
}

#[tokio::test(start_paused = true)]
async fn a_fast_fleet_grows_the_limit_up_to_parallel() {
    let admission = Arc::new(Admission::new(HandshakeLimit::Adaptive, 300, TIMEOUT));
    assert_eq!(admission.limit(), INITIAL);
    let ran = run(admission.clone(), Fleet::new(10, 0), 2000, TIMEOUT).await;
    assert_eq!(ran.completed, 2000);
    assert_eq!(admission.limit(), 300, "{ran:?}");
    assert_eq!(ran.peak_in_flight, 300, "{ran:?}");
    // 8, 16, 32, ... then 300 at a time, 10 ms a round: well under a second.
    assert!(ran.wall < Duration::from_millis(200), "{ran:?}");
}

#[tokio::test(start_paused = true)]
async fn the_limit_shrinks_when_latency_rises_and_grows_back_when_it_falls() {
    let admission = Arc::new(Admission::new(HandshakeLimit::Adaptive, 1000, TIMEOUT));
    run(admission.clone(), Fleet::new(10, 0), 3000, TIMEOUT).await;
    let grown = admission.limit();
    assert!(grown >= 500, "{grown}");
    // The same fleet, now queueing: each handshake in flight adds 2 ms, so the grown limit
    // makes handshakes take 2 s, past a tenth of the timeout.
    let slow = run(admission.clone(), Fleet::new(10, 2), 3000, TIMEOUT).await;
    assert_eq!(slow.timed_out, 0, "{slow:?}");
    let shrunk = admission.limit();
    // It settles where handshakes take about a tenth of the timeout: 250 in flight, 500 ms.
    assert!((150..=400).contains(&shrunk), "{grown} -> {shrunk}");
    run(admission.clone(), Fleet::new(10, 0), 5000, TIMEOUT).await;
    assert!(
        admission.limit() > shrunk * 2,
        "{shrunk} -> {}",
        admission.limit()
    );
}

#[tokio::test(start_paused = true)]
async fn a_fixed_limit_is_exact() {
    let admission = Arc::new(Admission::new(HandshakeLimit::Fixed(7), 500, TIMEOUT));
    let ran = run(admission.clone(), Fleet::new(50, 0), 100, TIMEOUT).await;
    assert_eq!(ran.peak_in_flight, 7);
    assert_eq!(admission.limit(), 7);
    // 100 handshakes of 50 ms, 7 at a time: 15 rounds.
    assert_eq!(ran.wall, Duration::from_millis(750));
}

#[tokio::test(start_paused = true)]
async fn the_connect_timeout_counts_from_admission() {
    // One at a time, 3 s each, 5 s allowed: the second waits 3 s for its turn and still
    // completes, because its 5 s start when it is admitted.
    let admission = Arc::new(Admission::new(HandshakeLimit::Fixed(1), 2, TIMEOUT));
    let ran = run(admission, Fleet::new(3000, 0), 2, TIMEOUT).await;
    assert_eq!((ran.completed, ran.timed_out), (2, 0), "{ran:?}");
    assert_eq!(ran.wall, Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn timeouts_on_a_slow_fleet_halve_the_limit_down_to_its_floor() {
    let admission = Arc::new(Admission::new(HandshakeLimit::Adaptive, 500, TIMEOUT));
    // Handshakes that complete, slowly: the fleet is loaded.
    run(admission.clone(), Fleet::new(1000, 0), 16, TIMEOUT).await;
    let grown = admission.limit();
    let hung = Fleet::new(60_000, 0);
    let ran = run(admission.clone(), hung, 100, TIMEOUT).await;
    assert_eq!(ran.timed_out, 100);
    // Halved once per round of timeouts, down to the floor.
    assert!(grown >= 16, "{grown}");
    assert_eq!(admission.limit(), MINIMUM);
}

#[tokio::test(start_paused = true)]
async fn dead_hosts_among_fast_ones_do_not_throttle_the_fleet() {
    // Every third host never answers; the others answer in 10 ms.
    let admission = Arc::new(Admission::new(HandshakeLimit::Adaptive, 600, TIMEOUT));
    let fast = Fleet::new(10, 0);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for host in 0..600 {
        let (admission, fast) = (admission.clone(), fast.clone());
        tasks.spawn(async move {
            let cancel = CancellationToken::new();
            if host % 3 == 0 {
                let dead = std::future::pending::<Result<(), Refused>>();
                admission.connect(TIMEOUT, &cancel, &up(), dead).await
            } else {
                admission
                    .connect(TIMEOUT, &cancel, &up(), fast.handshake())
                    .await
            }
        });
    }
    let mut timed_out = 0;
    while let Some(result) = tasks.join_next().await {
        timed_out += usize::from(result.unwrap() == Err(Cut::TimedOut));
    }
    assert_eq!(timed_out, 200);
    // The dead ones time out together, in one connect timeout or two, while the live ones
    // grew the limit past them.
    assert!(started.elapsed() <= TIMEOUT * 2, "{:?}", started.elapsed());
    assert!(admission.limit() > 200, "{}", admission.limit());
}

#[tokio::test(start_paused = true)]
async fn failures_that_say_nothing_about_load_leave_the_limit_alone() {
    let admission = Admission::new(HandshakeLimit::Adaptive, 500, TIMEOUT);
    let cancel = CancellationToken::new();
    for _ in 0..100 {
        let refused = admission
            .connect(TIMEOUT, &cancel, &up(), async { Err::<(), _>(Refused) })
            .await;
        assert_eq!(refused, Ok(Err(Refused)));
    }
    assert_eq!(admission.limit(), INITIAL);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_ends_the_wait_for_a_permit() {
    let admission = Arc::new(Admission::new(HandshakeLimit::Fixed(1), 2, TIMEOUT));
    let cancel = CancellationToken::new();
    let holder = {
        let (admission, cancel) = (admission.clone(), cancel.clone());
        tokio::spawn(async move {
            admission
                .connect(
                    TIMEOUT,
                    &cancel,
                    &up(),
                    std::future::pending::<Result<(), Refused>>(),
                )
                .await
        })
    };
    tokio::task::yield_now().await;
    let waiter = {
        let (admission, cancel) = (admission.clone(), cancel.clone());
        tokio::spawn(async move {
            admission
                .connect(TIMEOUT, &cancel, &up(), async { Ok::<(), Refused>(()) })
                .await
        })
    };
    tokio::task::yield_now().await;
    cancel.cancel();
    assert_eq!(holder.await.unwrap(), Err(Cut::Cancelled));
    assert_eq!(waiter.await.unwrap(), Err(Cut::Cancelled));
}

#[test]
fn a_parallel_below_the_floor_bounds_everything() {
    let admission = Admission::new(HandshakeLimit::Adaptive, 2, TIMEOUT);
    assert_eq!(admission.limit(), 2);
    let state = admission.lock();
    assert_eq!((state.minimum, state.maximum), (2, 2));
}

/// `idle` hosts whose connection never completes, each with a `progress` of its own from
/// `progress`, then 10 live hosts: how long the live ones took, once the idle ones all
/// ended as they did.
async fn live_hosts_behind(idle: usize, progress: fn() -> Progress) -> Duration {
    let admission = Arc::new(Admission::new(HandshakeLimit::Adaptive, 600, TIMEOUT));
    let fast = Fleet::new(10, 0);
    let mut stuck = JoinSet::new();
    for _ in 0..idle {
        let admission = admission.clone();
        stuck.spawn(async move {
            let cancel = CancellationToken::new();
            let never = std::future::pending::<Result<(), Refused>>();
            admission
                .connect(TIMEOUT, &cancel, &progress(), never)
                .await
        });
    }
    tokio::task::yield_now().await;
    let started = Instant::now();
    let mut live = JoinSet::new();
    for _ in 0..10 {
        let (admission, fast) = (admission.clone(), fast.clone());
        live.spawn(async move {
            let cancel = CancellationToken::new();
            admission
                .connect(TIMEOUT, &cancel, &up(), fast.handshake())
                .await
        });
    }
    while let Some(result) = live.join_next().await {
        assert_eq!(result.unwrap(), Ok(Ok(())));
    }
    let took = started.elapsed();
    while let Some(result) = stuck.join_next().await {
        assert_eq!(result.unwrap(), Err(Cut::TimedOut));
    }
    took
}

/// A host that never answers its TCP connect costs no CPU: it lends its turn after
/// [`LEND_AFTER`], so a run of them first holds the live hosts behind them back by that much
/// per round of the limit, not by their connect timeout.
#[tokio::test(start_paused = true)]
async fn hosts_still_connecting_lend_their_turn() {
    // Its connection is never up: its progress never leaves the TCP connect.
    let took = live_hosts_behind(100, Progress::default).await;
    // The 100 dead hosts lend the 8 turns after LEND_AFTER, round after round; the live ones
    // then take two rounds of 10 ms.
    let rounds = 100_u32.div_ceil(INITIAL as u32);
    assert!(
        took <= LEND_AFTER * rounds + Duration::from_millis(20),
        "{took:?}"
    );
    assert!(took < TIMEOUT);
}

/// A server that takes the connection and never speaks (a hung sshd, a port that accepts for
/// something else) costs no CPU either: its connection lends its turn after [`SILENT_AFTER`]
/// and times out without it, so live hosts behind such hosts wait that long per round of the
/// limit, not for the connect timeout.
#[tokio::test(start_paused = true)]
async fn hosts_whose_server_never_speaks_lend_their_turn() {
    let took = live_hosts_behind(16, Progress::silent_server).await;
    // Two rounds of the 8 turns held by silent hosts, then the live ones.
    let rounds = 16_u32.div_ceil(INITIAL as u32);
    assert!(
        took <= SILENT_AFTER * rounds + Duration::from_millis(50),
        "{took:?}"
    );
}

/// Four handshakes of 2 s under `limit`, then a host whose server is silent for 3 s: whether
/// that host kept its turn while it waited.
async fn a_silent_server_keeps_its_turn_after_slow_handshakes(limit: HandshakeLimit) -> bool {
    let admission = Admission::new(limit, 600, Duration::from_secs(60));
    let cancel = CancellationToken::new();
    let taking = |seconds| async move {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        Ok::<(), Refused>(())
    };
    for _ in 0..4 {
        let done = admission
            .connect(Duration::from_secs(60), &cancel, &up(), taking(2))
            .await;
        assert_eq!(done, Ok(Ok(())));
    }
    let before = admission.permits.available_permits();
    let watch = async {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        admission.permits.available_permits()
    };
    let progress = Progress::silent_server();
    let (done, during) = tokio::join!(
        admission.connect(Duration::from_secs(60), &cancel, &progress, taking(3)),
        watch
    );
    assert_eq!(done, Ok(Ok(())));
    during == before - 1
}

/// A server that is slow to speak because handshakes here are slow keeps its turn: lending it
/// would admit more handshakes to an overloaded fleet. Handshakes of 2 s: four times that is
/// past [`SILENT_AFTER`], and a server silent for 3 s is not lent.
#[tokio::test(start_paused = true)]
async fn a_server_slow_where_every_handshake_is_slow_keeps_its_turn() {
    assert!(a_silent_server_keeps_its_turn_after_slow_handshakes(HandshakeLimit::Adaptive).await);
}

/// Under a fixed limit too: the latency is learned whatever the limit.
#[tokio::test(start_paused = true)]
async fn a_fixed_limit_also_learns_what_handshakes_take() {
    assert!(a_silent_server_keeps_its_turn_after_slow_handshakes(HandshakeLimit::Fixed(2)).await);
}

/// A stopped rollout ends the hosts waiting for a turn, and those connecting, with
/// `Cut::Stopped`, and admits none after; a reconnect (to a command already sent) is not
/// stopped.
#[tokio::test(start_paused = true)]
async fn a_stopped_rollout_admits_no_host_but_reconnects_go_on() {
    let admission = Arc::new(Admission::new(HandshakeLimit::Fixed(1), 4, TIMEOUT));
    let cancel = CancellationToken::new();
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<(), Refused>(())
    };
    let holding = {
        let (admission, cancel) = (admission.clone(), cancel.clone());
        tokio::spawn(async move { admission.connect(TIMEOUT, &cancel, &up(), slow()).await })
    };
    let waiting = {
        let (admission, cancel) = (admission.clone(), cancel.clone());
        tokio::spawn(async move { admission.connect(TIMEOUT, &cancel, &up(), slow()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    admission.stop_starting();
    assert_eq!(
        holding.await.unwrap(),
        Err(Cut::Stopped),
        "in its handshake"
    );
    assert_eq!(
        waiting.await.unwrap(),
        Err(Cut::Stopped),
        "waiting for a turn"
    );
    let after = admission.connect(TIMEOUT, &cancel, &up(), slow()).await;
    assert_eq!(after, Err(Cut::Stopped), "asking after the stop");
    let again = admission.reconnect(TIMEOUT, &cancel, &up(), slow()).await;
    assert_eq!(again, Ok(Ok(())), "a reconnect");
}

/// A host lent while connecting that comes up late has what was left of its connect timeout
/// once it has a turn again, not a new one: the time lent counts, the wait for a turn does not.
#[tokio::test(start_paused = true)]
async fn a_lent_host_keeps_what_was_left_of_its_timeout() {
    let admission = Admission::new(HandshakeLimit::Fixed(1), 4, TIMEOUT);
    let cancel = CancellationToken::new();
    let progress = Progress::default();
    let leg = crate::transport::stage::Leg::new(
        crate::transport::stage::Protocol::Ssh,
        "ssh late:22".to_string(),
        None,
    );
    progress.on(&leg);
    let started = Instant::now();
    // Up after 4 s, then a handshake that never ends: 1 s of the 5 s is left.
    let late = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        leg.reach(crate::transport::stage::Stage::Secured);
        std::future::pending::<Result<(), Refused>>().await
    };
    let result = admission.connect(TIMEOUT, &cancel, &progress, late).await;
    assert_eq!(result, Err(Cut::TimedOut));
    assert_eq!(started.elapsed(), TIMEOUT);
}
