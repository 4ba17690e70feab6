//! The scheduler: every host of a plan through one transport, batch after batch, at most
//! `parallel` at a time.
//!
//! One tokio task per running host, no thread and no process per host. A host is started only
//! when a slot is free, so `parallel` bounds sockets and memory, not just work. Within those
//! slots, the run's [`Admission`] bounds how many hosts are in their connect phase at once. A
//! batch starts when the previous one has finished and the batch delay has passed (a run without
//! `--batch` is one batch). The failure budget is checked as each host finishes: once it is
//! exceeded no host starts any more, and the hosts that never started finish as `Skipped`,
//! those that had their slot but had not started their command too (they wait in
//! [`Admission`], which stops them). A
//! host's task retries connect-phase failures itself ([`connect_retry`](crate::connect_retry)),
//! against the `Transport` trait alone.
//!
//! Every host gets exactly one `Finished` event, whatever happens: success, failure, a panic in
//! its task, a stopped rollout, or an interrupt before it started. Nothing here prints.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
// tokio's clock reads like std's, and tests can pause it.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use volley_common::outcome::{Captured, HostReport, Outcome, Timings};

use crate::admission::Admission;
use crate::connect_retry;
use crate::entropy::XorShift;
use crate::event::{Event, RunEnd};
use crate::plan::RunPlan;
use crate::rollout::batch_of;
use crate::transport::{Ended, Job, OutputSink, RunLimits, Transport};

/// Runs the plan's command on all its hosts. Returns when every host has finished; after
/// `cancel`, hosts not yet started finish as `Cancelled` at once. `stop` stops the rollout as a
/// spent failure budget does (the journal cancels it when it cannot record the run): hosts
/// that have not started their command are skipped, those running finish.
pub async fn run(
    plan: Arc<RunPlan>,
    transport: Arc<dyn Transport>,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    stop: CancellationToken,
) -> RunEnd {
    let total = plan.hosts.len();
    let batches = plan.rollout.batches(total);
    let mut end = RunEnd {
        batches: batches.len(),
        allowed_failures: plan.rollout.allowed_failures(total),
        ..RunEnd::default()
    };
    let allowed = end.allowed_failures;
    let exceeded =
        |failures: usize| allowed.is_some_and(|allowed| failures > allowed) || stop.is_cancelled();
    let slots = Arc::new(Semaphore::new(plan.parallel));
    let admission = Arc::new(Admission::new(
        plan.handshakes,
        plan.parallel,
        plan.connect_timeout,
    ));
    let context = HostContext {
        plan: plan.clone(),
        transport: transport.clone(),
        limits: RunLimits {
            connect_timeout: plan.connect_timeout,
            command_timeout: plan.command_timeout,
        },
        events: events.clone(),
        cancel: cancel.clone(),
        admission: admission.clone(),
    };
    // Hosts waiting in admission see the stop there.
    let stopping = tokio::spawn({
        let (stop, admission) = (stop.clone(), admission.clone());
        async move {
            stop.cancelled().await;
            admission.stop_starting();
        }
    });
    let mut running = Running {
        tasks: JoinSet::new(),
        host_of_task: HashMap::new(),
        failures: 0,
        skipped: 0,
        allowed,
        admission: &admission,
        plan: &plan,
        transport: transport.as_ref(),
        events: &events,
    };
    let mut next = 0;
    let mut stopped = false;
    'rollout: for (index, batch) in batches.iter().enumerate() {
        if index > 0 {
            running.wait_all().await;
            if exceeded(running.failures) {
                stopped = true;
                break;
            }
            if !plan.rollout.delay.is_zero() {
                let waiting = Event::BatchWaiting {
                    batch: index + 1,
                    batches: batches.len(),
                    delay: plan.rollout.delay,
                };
                let _ = events.send(waiting).await;
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = stop.cancelled() => {
                        stopped = true;
                        break;
                    }
                    () = tokio::time::sleep(plan.rollout.delay) => {}
                }
            }
        }
        if cancel.is_cancelled() {
            break;
        }
        end.batches_started += 1;
        if plan.rollout.is_batched() {
            let started = Event::BatchStarted {
                batch: index + 1,
                batches: batches.len(),
                hosts: batch.clone(),
            };
            let _ = events.send(started).await;
        }
        for host in batch.clone() {
            let slot = loop {
                // Checked before every host, so a budget exceeded halfway through a batch that
                // is wider than `parallel` stops the rest of that batch too.
                if exceeded(running.failures) {
                    stopped = true;
                    break 'rollout;
                }
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break 'rollout,
                    () = stop.cancelled() => {
                        stopped = true;
                        break 'rollout;
                    }
                    // Finished hosts are counted before another one starts.
                    Some(joined) = running.tasks.join_next_with_id() => running.reap(joined).await,
                    slot = slots.clone().acquire_owned() => {
                        break slot.expect("the semaphore is never closed");
                    }
                }
            };
            let turn = Turn {
                host,
                batch: index + 1,
            };
            let task = running.tasks.spawn(run_host(turn, context.clone(), slot));
            running.host_of_task.insert(task.id(), host);
            next = host + 1;
        }
    }
    let never_started = if stopped {
        Outcome::Skipped
    } else {
        Outcome::Cancelled
    };
    for host in next..total {
        let report = report(
            &plan,
            Turn {
                host,
                batch: batch_of(&batches, host),
            },
            transport.as_ref(),
            never_started.clone(),
        );
        let _ = events
            .send(Event::Finished {
                host,
                report: Box::new(report),
            })
            .await;
    }
    running.wait_all().await;
    stopping.abort();
    tracing::debug!(
        limit = admission.limit(),
        "handshake admission at the end of the run"
    );
    end.failures = running.failures;
    // A budget spent by the last hosts stopped nothing: the rollout stopped only if it kept a
    // host from starting.
    end.stopped = stopped || running.skipped > 0;
    // The journal's stop, not the budget's, when it came (the budget alone stops nothing once
    // it has).
    end.stopped_by_journal = end.stopped && stop.is_cancelled();
    end
}

/// A host's place in the run: its number in the plan and its batch (from 1).
#[derive(Clone, Copy, Debug)]
struct Turn {
    host: usize,
    batch: usize,
}

/// The hosts' tasks, and the failures of those that finished.
struct Running<'a> {
    /// Each task returns how its host settled.
    tasks: JoinSet<Settled>,
    host_of_task: HashMap<tokio::task::Id, usize>,
    failures: usize,
    /// Hosts the stopped rollout kept from starting after they had their slot.
    skipped: usize,
    /// The failure budget: one failure more stops the rollout, in [`Admission`] too.
    allowed: Option<usize>,
    admission: &'a Admission,
    plan: &'a RunPlan,
    transport: &'a dyn Transport,
    events: &'a mpsc::Sender<Event>,
}

impl Running<'_> {
    async fn wait_all(&mut self) {
        while let Some(joined) = self.tasks.join_next_with_id().await {
            self.reap(joined).await;
        }
    }

    /// One more failure: when it spends the budget, no host starts any more.
    fn failed(&mut self) {
        self.failures += 1;
        if self.allowed.is_some_and(|allowed| self.failures > allowed) {
            self.admission.stop_starting();
        }
    }

    /// Counts a finished task, and stops the rollout when the budget is spent. A task that
    /// ended by panicking never sent its `Finished`: send one for it.
    async fn reap(&mut self, joined: Result<(tokio::task::Id, Settled), tokio::task::JoinError>) {
        match joined {
            Ok((id, settled)) => {
                self.host_of_task.remove(&id);
                match settled {
                    Settled::Succeeded => {}
                    Settled::Failed => self.failed(),
                    Settled::Skipped => self.skipped += 1,
                }
            }
            Err(error) => {
                self.failed();
                let Some(host) = self.host_of_task.remove(&error.id()) else {
                    return;
                };
                let batches = self.plan.rollout.batches(self.plan.hosts.len());
                let turn = Turn {
                    host,
                    batch: batch_of(&batches, host),
                };
                let outcome = Outcome::TransportError {
                    reason: format!("internal error: {error}"),
                };
                let report = report(self.plan, turn, self.transport, outcome);
                let _ = self
                    .events
                    .send(Event::Finished {
                        host,
                        report: Box::new(report),
                    })
                    .await;
            }
        }
    }
}

/// What every host's task of a run shares.
#[derive(Clone)]
struct HostContext {
    plan: Arc<RunPlan>,
    transport: Arc<dyn Transport>,
    limits: RunLimits,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    admission: Arc<Admission>,
}

/// How a host's task ended, as the failure budget counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    Succeeded,
    Failed,
    /// The stopped rollout kept it from starting: not a failure.
    Skipped,
}

/// Runs one host to its outcome, retrying connect-phase failures as `--retries` allows, and
/// returns how it settled.
async fn run_host(
    turn: Turn,
    context: HostContext,
    _slot: tokio::sync::OwnedSemaphorePermit,
) -> Settled {
    let HostContext {
        plan,
        transport,
        limits,
        events,
        cancel,
        admission,
    } = context;
    let host = turn.host;
    let started = Instant::now();
    let _ = events.send(Event::Started { host }).await;
    let mut output = OutputSink::new(host, events.clone(), plan.max_output);
    let mut attempts: u32 = 0;
    let mut random: Option<XorShift> = None;
    let execution_id = format!("{}/{}", plan.run_id, plan.hosts[host].name);
    // The outcome of the attempt before, when a connect failure is being retried.
    let mut failed_before: Option<Ended> = None;
    let ended = loop {
        attempts += 1;
        let job = Job {
            host: &plan.hosts[host],
            command: &plan.command,
            execution_id: &execution_id,
            limits,
            output: &mut output,
            stdin: plan.stdin.as_ref(),
            cancel: cancel.clone(),
            admission: &admission,
        };
        let ended = transport.run(job).await;
        // The rollout stopped before this attempt sent anything (transports give `Skipped`
        // only from admission and before a command is sent), or an interrupt came while it
        // waited for its turn or connected: it was not made, and the host did not start. A
        // retry's host keeps the failure before.
        let interrupted_unconnected = ended.outcome == Outcome::Cancelled
            && ended.connected_after.is_none()
            && ended.ran_for.is_none();
        if ended.outcome == Outcome::Skipped || interrupted_unconnected {
            attempts -= 1;
            break failed_before.unwrap_or(ended);
        }
        if attempts > plan.rollout.retries || !connect_retry::may_retry(&ended) {
            break ended;
        }
        let random = random.get_or_insert_with(|| XorShift::seeded(host as u64));
        let wait = connect_retry::backoff(attempts, random.next_u64());
        let transport_kind = ended.transport;
        tokio::select! {
            biased;
            // Interrupted while waiting to retry: the host did not finish.
            () = cancel.cancelled() => {
                break Ended::unconnected(Outcome::Cancelled, transport_kind);
            }
            // The rollout stopped: no retry, and the failure stands.
            () = admission.stopping() => break ended,
            () = tokio::time::sleep(wait) => {}
        }
        failed_before = Some(ended);
    };
    let (stdout, stderr, changed) = output.finish();
    let settled = match &ended.outcome {
        outcome if outcome.is_success() => Settled::Succeeded,
        Outcome::Skipped => Settled::Skipped,
        _ => Settled::Failed,
    };
    // A host the rollout stopped never ran: an agent passed over for SSH before it is no news.
    let fallback = ended.fallback.filter(|_| settled != Settled::Skipped);
    let report = HostReport {
        host: plan.hosts[host].name.clone(),
        transport: ended.transport,
        outcome: ended.outcome,
        timings: Timings {
            connect: ended.connected_after,
            run: ended.ran_for,
            // A resumed host's command ran mostly before the resume, which started it no
            // clock of its own: its total is at least the run time the agent measured.
            total: started.elapsed().max(ended.ran_for.unwrap_or_default()),
        },
        stdout,
        stderr,
        batch: turn.batch,
        attempts,
        fallback,
        changed,
    };
    let _ = events
        .send(Event::Finished {
            host,
            report: Box::new(report),
        })
        .await;
    settled
}

/// The report of a host that did not run: no timings, no output, no attempt.
fn report(plan: &RunPlan, turn: Turn, transport: &dyn Transport, outcome: Outcome) -> HostReport {
    HostReport {
        host: plan.hosts[turn.host].name.clone(),
        transport: transport.kind(),
        outcome,
        timings: Timings::default(),
        stdout: Captured::default(),
        stderr: Captured::default(),
        batch: turn.batch,
        attempts: 0,
        fallback: None,
        changed: None,
    }
}

#[cfg(test)]
mod tests;
