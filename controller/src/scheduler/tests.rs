//! The scheduler against a scripted transport on a paused clock: batches, the failure budget,
//! connect retries and interrupts, with time measured exactly.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use volley_common::inventory::TransportChoice;
use volley_common::outcome::TransportKind;

use super::*;
use crate::admission::HandshakeLimit;
use crate::cli::ColorChoice;
use crate::plan::HostSpec;
use crate::plan::JournalLimits;
use crate::plan::OutputMode;
use crate::rollout::{BatchSizes, FailureBudget, RolloutPlan};
use crate::transport::BoxFuture;
use crate::transport::stage::Progress;

/// How long every scripted attempt takes, and the connect phase at its start.
const ATTEMPT: Duration = Duration::from_millis(100);
const CONNECT: Duration = Duration::from_millis(10);

fn refused() -> Outcome {
    Outcome::Unreachable {
        reason: "connection refused".to_string(),
    }
}

/// A transport that answers each host from a script: one outcome per attempt, the last one
/// repeating; hosts not in the script succeed. It records when each attempt began and ended.
#[derive(Default)]
struct Scripted {
    outcomes: HashMap<String, Vec<Outcome>>,
    attempts: Mutex<Vec<Attempt>>,
    connecting: AtomicUsize,
    peak_connecting: AtomicUsize,
}

#[derive(Clone, Debug)]
struct Attempt {
    host: String,
    began: Instant,
    ended: Instant,
}

impl Scripted {
    fn new(script: &[(&str, Vec<Outcome>)]) -> Scripted {
        Scripted {
            outcomes: script
                .iter()
                .map(|(host, outcomes)| (host.to_string(), outcomes.clone()))
                .collect(),
            attempts: Mutex::new(Vec::new()),
            ..Scripted::default()
        }
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    fn hosts_tried(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.attempts().into_iter().map(|a| a.host).collect();
        hosts.dedup();
        hosts
    }
}

impl Transport for Scripted {
    fn kind(&self) -> TransportKind {
        TransportKind::Ssh
    }

    fn run<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Ended> {
        Box::pin(async move {
            let began = Instant::now();
            let tried = self
                .attempts()
                .iter()
                .filter(|a| a.host == job.host.name)
                .count();
            // The connect phase goes through the run's admission, as real transports do.
            let connecting = async {
                let now = self.connecting.fetch_add(1, Ordering::SeqCst) + 1;
                self.peak_connecting.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(CONNECT).await;
                self.connecting.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), ()>(())
            };
            // Connected at once: the whole connect phase is a handshake that takes a turn.
            let progress = Progress::connected();
            let admitted = job
                .admission
                .connect(
                    job.limits.connect_timeout,
                    &job.cancel,
                    &progress,
                    connecting,
                )
                .await;
            let unmade = match admitted {
                // The rollout stopped before this host's command: a real transport sends none.
                Err(crate::admission::Cut::Stopped) => Some(Outcome::Skipped),
                // Interrupted while waiting for a turn or connecting.
                Err(crate::admission::Cut::Cancelled) => Some(Outcome::Cancelled),
                _ => None,
            };
            if let Some(outcome) = unmade {
                return Ended::unconnected(outcome, TransportKind::Ssh);
            }
            tokio::time::sleep(ATTEMPT - CONNECT).await;
            let outcome = match self.outcomes.get(&job.host.name) {
                Some(outcomes) => outcomes[tried.min(outcomes.len() - 1)].clone(),
                None => Outcome::Succeeded,
            };
            self.attempts.lock().unwrap().push(Attempt {
                host: job.host.name.clone(),
                began,
                ended: Instant::now(),
            });
            // Connect-phase failures never got a session, as a real transport reports them.
            let connected = !matches!(
                outcome,
                Outcome::Unreachable { .. } | Outcome::ConnectTimeout { .. }
            );
            Ended {
                outcome,
                connected_after: connected.then_some(Duration::from_millis(10)),
                ran_for: connected.then_some(Duration::from_millis(90)),
                transport: TransportKind::Ssh,
                fallback: None,
            }
        })
    }
}

fn plan(hosts: usize, parallel: usize, rollout: RolloutPlan) -> RunPlan {
    RunPlan {
        run_id: "20261127T065812Z-3f9a".to_string(),
        hosts: (1..=hosts)
            .map(|n| HostSpec {
                name: format!("h{n}"),
                address: format!("h{n}"),
                port: 22,
                user: "ops".to_string(),
                identity_files: Vec::new(),
                identities_only: false,
                host: format!("h{n}"),
                agent_port: 7731,
                transport: TransportChoice::Ssh,
                agent_prefix: None,
                become_root: false,
                jump: Vec::new(),
            })
            .collect(),
        command: "true".to_string(),
        parallel,
        handshakes: HandshakeLimit::Adaptive,
        connect_timeout: Duration::from_secs(10),
        command_timeout: None,
        max_output: 1024,
        output: OutputMode::Json,
        color: ColorChoice::Never,
        prefix: true,
        out_dir: None,
        warnings: Vec::new(),
        shared_agents: Vec::new(),
        list_hosts: false,
        stdin: None,
        known_hosts: PathBuf::from("/dev/null"),
        accept_new_host_keys: false,
        identity_files: Vec::new(),
        identity_files_explicit: false,
        pki: PathBuf::from("/nonexistent/pki"),
        pki_given: false,
        rollout,
        journal: JournalLimits::default(),
    }
}

fn rollout(batch: Option<&str>, delay: Duration, budget: Option<&str>) -> RolloutPlan {
    RolloutPlan {
        batches: batch.map(|sizes| BatchSizes::parse(sizes).unwrap()),
        delay,
        budget: budget.map(|budget| FailureBudget::parse(budget).unwrap()),
        retries: 0,
    }
}

/// What a run emitted, and how it ended.
struct Outcomes {
    end: RunEnd,
    /// Each host's final report, by host number.
    reports: Vec<HostReport>,
    /// `(batch, hosts)` of each `BatchStarted`, in order.
    batches: Vec<(usize, Range<usize>)>,
    /// `(batch, delay)` of each `BatchWaiting`, in order.
    waits: Vec<(usize, Duration)>,
    /// Virtual time the run took.
    took: Duration,
}

async fn run_with(plan: RunPlan, transport: Arc<Scripted>, cancel: CancellationToken) -> Outcomes {
    run_stopping(plan, transport, cancel, CancellationToken::new()).await
}

/// [`run_with`], with the rollout's outside stop (the journal's).
async fn run_stopping(
    plan: RunPlan,
    transport: Arc<Scripted>,
    cancel: CancellationToken,
    stop: CancellationToken,
) -> Outcomes {
    let hosts = plan.hosts.len();
    let (events, mut received) = mpsc::channel(16);
    let collector = tokio::spawn(async move {
        let mut finished: Vec<Option<HostReport>> = vec![None; hosts];
        let mut batches = Vec::new();
        let mut waits = Vec::new();
        while let Some(event) = received.recv().await {
            match event {
                Event::Finished { host, report } => {
                    assert!(finished[host].is_none(), "host {host} finished twice");
                    finished[host] = Some(*report);
                }
                Event::BatchStarted { batch, hosts, .. } => batches.push((batch, hosts)),
                Event::BatchWaiting { batch, delay, .. } => waits.push((batch, delay)),
                Event::Executing { recorded, .. } => {
                    let _ = recorded.send(Ok(()));
                }
                Event::Started { .. } | Event::Output { .. } => {}
            }
        }
        (finished, batches, waits)
    });
    let began = Instant::now();
    let end = run(Arc::new(plan), transport, events, cancel, stop).await;
    let took = began.elapsed();
    let (finished, batches, waits) = collector.await.unwrap();
    let reports = finished
        .into_iter()
        .enumerate()
        .map(|(host, report)| report.unwrap_or_else(|| panic!("host {host} never finished")))
        .collect();
    Outcomes {
        end,
        reports,
        batches,
        waits,
        took,
    }
}

/// Cancels `token` (an interrupt, or the journal's stop) `after` a while of the paused clock.
fn cancel_after(token: &CancellationToken, after: Duration) -> tokio::task::JoinHandle<()> {
    let token = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        token.cancel();
    })
}

fn kinds(outcomes: &Outcomes) -> Vec<&'static str> {
    outcomes.reports.iter().map(|r| r.outcome.kind()).collect()
}

#[tokio::test(start_paused = true)]
async fn batches_run_one_after_the_other_with_the_delay_between() {
    let transport = Arc::new(Scripted::default());
    let delay = Duration::from_secs(30);
    let outcomes = run_with(
        plan(5, 512, rollout(Some("1,2"), delay, None)),
        transport.clone(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(outcomes.batches, [(1, 0..1), (2, 1..3), (3, 3..5)]);
    assert_eq!(
        outcomes.waits,
        [(2, delay), (3, delay)],
        "each delay is announced"
    );
    let batch_of: Vec<usize> = outcomes.reports.iter().map(|r| r.batch).collect();
    assert_eq!(batch_of, [1, 2, 2, 3, 3]);
    let attempts = transport.attempts();
    let by_host = |host: &str| attempts.iter().find(|a| a.host == host).unwrap().clone();
    for (earlier, later) in [("h1", "h2"), ("h1", "h3"), ("h3", "h4"), ("h2", "h5")] {
        let gap = by_host(later).began - by_host(earlier).ended;
        assert!(gap >= delay, "{later} began {gap:?} after {earlier} ended");
    }
    // Hosts of one batch run together.
    assert_eq!(by_host("h2").began, by_host("h3").began);
    assert_eq!(outcomes.took, 2 * delay + 3 * ATTEMPT);
    assert_eq!(
        outcomes.end,
        RunEnd {
            batches: 3,
            batches_started: 3,
            failures: 0,
            allowed_failures: None,
            stopped: false,
            stopped_by_journal: false,
        }
    );
}

#[tokio::test(start_paused = true)]
async fn parallel_still_bounds_the_hosts_of_a_batch() {
    let transport = Arc::new(Scripted::default());
    let outcomes = run_with(
        plan(7, 2, rollout(Some("5"), Duration::ZERO, None)),
        transport.clone(),
        CancellationToken::new(),
    )
    .await;
    let attempts = transport.attempts();
    for attempt in &attempts {
        let at_once = attempts
            .iter()
            .filter(|other| other.began <= attempt.began && attempt.began < other.ended)
            .count();
        assert!(at_once <= 2, "{at_once} hosts ran at once");
    }
    // Batch 1 (5 hosts, 2 at a time) takes three rounds; batch 2 (2 hosts) one.
    assert_eq!(outcomes.took, 4 * ATTEMPT);
    assert_eq!(outcomes.batches, [(1, 0..5), (2, 5..7)]);
}

#[tokio::test(start_paused = true)]
async fn an_exceeded_budget_stops_the_rollout_and_skips_the_rest() {
    // The unreachable host counts as a failure like the failed command: two exceed a budget
    // of one, and batches 2 and 3 never start.
    let transport = Arc::new(Scripted::new(&[
        ("h1", vec![refused()]),
        ("h2", vec![Outcome::NonZeroExit { code: 1 }]),
    ]));
    let outcomes = run_with(
        plan(
            8,
            512,
            rollout(Some("2,3"), Duration::from_secs(5), Some("1")),
        ),
        transport.clone(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(transport.hosts_tried(), ["h1", "h2"]);
    assert_eq!(
        kinds(&outcomes),
        [
            "unreachable",
            "non_zero_exit",
            "skipped",
            "skipped",
            "skipped",
            "skipped",
            "skipped",
            "skipped"
        ]
    );
    let batch_of: Vec<usize> = outcomes.reports.iter().map(|r| r.batch).collect();
    assert_eq!(batch_of, [1, 1, 2, 2, 2, 3, 3, 3]);
    assert!(outcomes.reports[2..].iter().all(|r| r.attempts == 0));
    assert_eq!(outcomes.batches, [(1, 0..2)]);
    assert_eq!(
        outcomes.end,
        RunEnd {
            batches: 3,
            batches_started: 1,
            failures: 2,
            allowed_failures: Some(1),
            stopped: true,
            stopped_by_journal: false,
        }
    );
    // Stopping does not wait out the batch delay.
    assert_eq!(outcomes.took, ATTEMPT);
}

#[tokio::test(start_paused = true)]
async fn failures_within_the_budget_do_not_stop_it() {
    let transport = Arc::new(Scripted::new(&[
        ("h1", vec![Outcome::NonZeroExit { code: 1 }]),
        (
            "h4",
            vec![Outcome::ConnectTimeout {
                reason: String::new(),
            }],
        ),
    ]));
    // 25% of 8 hosts allows two failures.
    let outcomes = run_with(
        plan(8, 512, rollout(Some("2"), Duration::ZERO, Some("25%"))),
        transport.clone(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(transport.hosts_tried().len(), 8);
    assert!(!outcomes.end.stopped);
    assert_eq!(outcomes.end.failures, 2);
    assert_eq!(outcomes.end.allowed_failures, Some(2));
}

#[tokio::test(start_paused = true)]
async fn the_budget_also_stops_a_batch_wider_than_parallel() {
    let transport = Arc::new(Scripted::new(&[(
        "h2",
        vec![Outcome::Signalled {
            signal: "KILL".to_string(),
        }],
    )]));
    let outcomes = run_with(
        plan(5, 1, rollout(None, Duration::ZERO, Some("0"))),
        transport.clone(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(transport.hosts_tried(), ["h1", "h2"]);
    assert_eq!(
        kinds(&outcomes),
        ["succeeded", "signalled", "skipped", "skipped", "skipped"]
    );
    assert!(outcomes.end.stopped);
    assert!(
        outcomes.batches.is_empty(),
        "an unbatched run announces no batch"
    );
}

/// With every host of the batch in a slot at once (`parallel` above the batch), hosts still
/// waiting for a handshake turn when the budget is spent do not start: they are skipped.
#[tokio::test(start_paused = true)]
async fn the_budget_stops_hosts_that_have_their_slot_but_wait_for_a_handshake() {
    let transport = Arc::new(Scripted::new(&[(
        "h1",
        vec![Outcome::NonZeroExit { code: 1 }],
    )]));
    let mut plan = plan(40, 512, rollout(None, Duration::ZERO, Some("0")));
    // Two handshakes at a time, 10 ms each: h1 fails at 100 ms, when 20 hosts have connected.
    plan.handshakes = HandshakeLimit::Fixed(2);
    let outcomes = run_with(plan, transport.clone(), CancellationToken::new()).await;
    let kinds = kinds(&outcomes);
    assert_eq!(kinds[0], "non_zero_exit");
    let started = 1 + kinds.iter().filter(|kind| **kind == "succeeded").count();
    assert!(
        (18..=22).contains(&started),
        "{started} hosts started: {kinds:?}"
    );
    assert!(
        kinds[started..].iter().all(|kind| *kind == "skipped"),
        "every host after those that connected in time is skipped: {kinds:?}"
    );
    assert_eq!(
        transport.hosts_tried().len(),
        started,
        "skipped hosts ran nothing"
    );
    assert!(outcomes.end.stopped);
    assert_eq!(outcomes.end.failures, 1, "skipped hosts are not failures");
}

/// A budget spent by hosts when every other had started stops nothing: the run is not said to
/// be stopped, and no host is skipped.
#[tokio::test(start_paused = true)]
async fn a_budget_spent_when_every_host_has_started_stops_nothing() {
    let transport = Arc::new(Scripted::new(&[(
        "h3",
        vec![Outcome::NonZeroExit { code: 1 }],
    )]));
    let outcomes = run_with(
        plan(3, 512, rollout(None, Duration::ZERO, Some("0"))),
        transport,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        kinds(&outcomes),
        ["succeeded", "succeeded", "non_zero_exit"]
    );
    assert!(!outcomes.end.stopped);
    assert_eq!(outcomes.end.failures, 1);
}

/// The journal's stop (it cannot record the run) stops the rollout as a spent budget does: the
/// host running finishes, the others are skipped, those in a slot and waiting for a handshake
/// turn too, and no batch starts after it.
#[tokio::test(start_paused = true)]
async fn a_stop_from_the_journal_skips_every_host_not_yet_running() {
    let transport = Arc::new(Scripted::new(&[]));
    let stop = CancellationToken::new();
    // h3 has connected (10 ms into its turn at 200 ms) when the stop comes at 250 ms.
    let stopper = cancel_after(&stop, ATTEMPT * 2 + ATTEMPT / 2);
    let outcomes = run_stopping(
        plan(6, 1, rollout(Some("4"), Duration::ZERO, None)),
        transport.clone(),
        CancellationToken::new(),
        stop,
    )
    .await;
    stopper.await.unwrap();
    assert_eq!(
        kinds(&outcomes),
        [
            "succeeded",
            "succeeded",
            "succeeded",
            "skipped",
            "skipped",
            "skipped"
        ]
    );
    assert_eq!(transport.hosts_tried(), ["h1", "h2", "h3"]);
    assert!(outcomes.end.stopped && outcomes.end.stopped_by_journal);
    assert_eq!(outcomes.end.batches_started, 1);

    // With every host in a slot at once, those waiting for a turn are stopped in admission.
    let transport = Arc::new(Scripted::new(&[]));
    let stop = CancellationToken::new();
    let mut plan = plan(40, 512, rollout(None, Duration::ZERO, None));
    // Two handshakes at a time, 10 ms each: 20 hosts have connected at 100 ms.
    plan.handshakes = HandshakeLimit::Fixed(2);
    let stopper = cancel_after(&stop, ATTEMPT + CONNECT / 2);
    let outcomes = run_stopping(plan, transport.clone(), CancellationToken::new(), stop).await;
    stopper.await.unwrap();
    let kinds = kinds(&outcomes);
    let started = kinds.iter().filter(|kind| **kind == "succeeded").count();
    assert!(
        (18..=24).contains(&started),
        "{started} hosts ran: {kinds:?}"
    );
    assert!(
        kinds[started..].iter().all(|kind| *kind == "skipped"),
        "{kinds:?}"
    );
    assert_eq!(transport.hosts_tried().len(), started);
    assert!(outcomes.end.stopped);
}

/// Ctrl-C while hosts wait for a handshake turn or connect: they did not start (no attempt,
/// so the summary counts them apart and prints no line each), the host running is cancelled
/// as it ends.
#[tokio::test(start_paused = true)]
async fn hosts_interrupted_before_they_connected_did_not_start() {
    let transport = Arc::new(Scripted::new(&[]));
    let mut plan = plan(4, 512, rollout(None, Duration::ZERO, None));
    // One handshake at a time, 10 ms each: at 15 ms h1 runs its command and h2 connects.
    plan.handshakes = HandshakeLimit::Fixed(1);
    let cancel = CancellationToken::new();
    let interrupt = cancel_after(&cancel, CONNECT + CONNECT / 2);
    let outcomes = run_with(plan, transport, cancel).await;
    interrupt.await.unwrap();
    let attempts: Vec<u32> = outcomes.reports.iter().map(|r| r.attempts).collect();
    assert_eq!(
        kinds(&outcomes),
        ["succeeded", "cancelled", "cancelled", "cancelled"]
    );
    assert_eq!(attempts, [1, 0, 0, 0]);
    assert!(outcomes.reports[1..].iter().all(HostReport::never_started));
}

#[tokio::test(start_paused = true)]
async fn connect_failures_are_retried_with_backoff_and_commands_are_not() {
    let transport = Arc::new(Scripted::new(&[
        (
            "h1",
            vec![
                refused(),
                Outcome::ConnectTimeout {
                    reason: String::new(),
                },
                Outcome::Succeeded,
            ],
        ),
        ("h2", vec![refused()]),
        ("h3", vec![Outcome::NonZeroExit { code: 1 }]),
        (
            "h4",
            vec![Outcome::TransportError {
                reason: "connection lost".to_string(),
            }],
        ),
    ]));
    let mut rollout = rollout(None, Duration::ZERO, None);
    rollout.retries = 2;
    let outcomes = run_with(
        plan(5, 512, rollout),
        transport.clone(),
        CancellationToken::new(),
    )
    .await;
    let attempts: Vec<u32> = outcomes.reports.iter().map(|r| r.attempts).collect();
    assert_eq!(attempts, [3, 3, 1, 1, 1]);
    assert_eq!(
        kinds(&outcomes),
        [
            "succeeded",
            "unreachable",
            "non_zero_exit",
            "transport_error",
            "succeeded"
        ]
    );
    // Two backoffs, of at least 0.5s and 1s, lie between h1's three attempts.
    let h1: Vec<Attempt> = transport
        .attempts()
        .into_iter()
        .filter(|a| a.host == "h1")
        .collect();
    assert!(h1[1].began - h1[0].ended >= Duration::from_millis(500));
    assert!(h1[2].began - h1[1].ended >= Duration::from_millis(1000));
    assert!(outcomes.reports[0].timings.total >= Duration::from_millis(1500) + 3 * ATTEMPT);
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_during_the_batch_delay_stops_at_once() {
    let transport = Arc::new(Scripted::default());
    let cancel = CancellationToken::new();
    cancel_after(&cancel, Duration::from_secs(10));
    let outcomes = run_with(
        plan(3, 512, rollout(Some("1"), Duration::from_secs(3600), None)),
        transport.clone(),
        cancel,
    )
    .await;
    assert_eq!(outcomes.took, Duration::from_secs(10));
    assert_eq!(transport.hosts_tried(), ["h1"]);
    assert_eq!(kinds(&outcomes), ["succeeded", "cancelled", "cancelled"]);
    assert_eq!(outcomes.end.batches_started, 1);
    assert!(!outcomes.end.stopped);
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_during_a_retry_backoff_cancels_the_host() {
    let transport = Arc::new(Scripted::new(&[("h1", vec![refused()])]));
    let cancel = CancellationToken::new();
    cancel_after(&cancel, ATTEMPT + Duration::from_millis(100));
    let mut rollout = rollout(None, Duration::ZERO, None);
    rollout.retries = 5;
    let outcomes = run_with(plan(1, 512, rollout), transport.clone(), cancel).await;
    assert_eq!(kinds(&outcomes), ["cancelled"]);
    assert_eq!(outcomes.reports[0].attempts, 1);
    assert_eq!(outcomes.took, ATTEMPT + Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn handshakes_are_admitted_apart_from_the_running_hosts() {
    let transport = Arc::new(Scripted::default());
    let mut plan = plan(40, 40, rollout(None, Duration::ZERO, None));
    plan.handshakes = HandshakeLimit::Fixed(4);
    let outcomes = run_with(plan, transport.clone(), CancellationToken::new()).await;
    assert!(kinds(&outcomes).iter().all(|kind| *kind == "succeeded"));
    // All 40 hold a slot at once, but only 4 connect at a time: 10 rounds of connects, then the
    // last host's command.
    assert_eq!(transport.peak_connecting.load(Ordering::SeqCst), 4);
    assert_eq!(outcomes.took, CONNECT * 10 + (ATTEMPT - CONNECT));
}
