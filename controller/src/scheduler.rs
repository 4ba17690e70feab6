//! The scheduler: every host of a plan through one transport, at most `parallel` at a time.
//!
//! One tokio task per running host, no thread and no process per host. A host is started only
//! when a slot is free, so `parallel` bounds sockets and memory, not just work. Every host gets
//! exactly one `Finished` event, whatever happens: success, failure, a panic in its task, or an
//! interrupt before it started. Nothing here prints.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use volley_common::outcome::{Captured, HostReport, Outcome, Timings};

use crate::plan::RunPlan;
use crate::transport::{Event, Job, OutputSink, RunLimits, Transport};

/// Runs the plan's command on all its hosts. Returns when every host has finished; after
/// `cancel`, hosts not yet started finish as `Cancelled` at once.
pub async fn run(
    plan: Arc<RunPlan>,
    transport: Arc<dyn Transport>,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(plan.parallel));
    let limits = RunLimits {
        connect_timeout: plan.connect_timeout,
        command_timeout: plan.command_timeout,
    };
    let mut running = JoinSet::new();
    let mut host_of_task = HashMap::new();
    let mut next = 0;
    while next < plan.hosts.len() {
        // Finished tasks are reaped as we go, so a failed task's host is reported promptly.
        while let Some(result) = running.try_join_next_with_id() {
            reap(
                result,
                &mut host_of_task,
                &plan,
                transport.as_ref(),
                &events,
            )
            .await;
        }
        let slot = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let host = next;
        next += 1;
        let task = running.spawn(run_host(
            host,
            plan.clone(),
            transport.clone(),
            limits,
            events.clone(),
            cancel.clone(),
            slot,
        ));
        host_of_task.insert(task.id(), host);
    }
    for host in next..plan.hosts.len() {
        let report = report(
            &plan,
            host,
            transport.as_ref(),
            Outcome::Cancelled,
            Timings::default(),
        );
        let _ = events.send(Event::Finished { host, report }).await;
    }
    while let Some(result) = running.join_next_with_id().await {
        reap(
            result,
            &mut host_of_task,
            &plan,
            transport.as_ref(),
            &events,
        )
        .await;
    }
}

async fn run_host(
    host: usize,
    plan: Arc<RunPlan>,
    transport: Arc<dyn Transport>,
    limits: RunLimits,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let _ = events.send(Event::Started { host }).await;
    let mut output = OutputSink::new(host, events.clone(), plan.max_output);
    let job = Job {
        host: &plan.hosts[host],
        command: &plan.command,
        limits,
        output: &mut output,
        cancel,
    };
    let ended = transport.run(job).await;
    let (stdout, stderr) = output.finish();
    let timings = Timings {
        connect: ended.connected_after,
        run: ended.ran_for,
        total: started.elapsed(),
    };
    let report = HostReport {
        host: plan.hosts[host].name.clone(),
        transport: ended.transport,
        outcome: ended.outcome,
        timings,
        stdout,
        stderr,
    };
    let _ = events.send(Event::Finished { host, report }).await;
}

/// A task that ended by panicking never sent its `Finished`: send one for it.
async fn reap(
    result: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    host_of_task: &mut HashMap<tokio::task::Id, usize>,
    plan: &RunPlan,
    transport: &dyn Transport,
    events: &mpsc::Sender<Event>,
) {
    match result {
        Ok((id, ())) => {
            host_of_task.remove(&id);
        }
        Err(error) => {
            let Some(host) = host_of_task.remove(&error.id()) else {
                return;
            };
            let outcome = Outcome::TransportError {
                reason: format!("internal error: {error}"),
            };
            let report = report(plan, host, transport, outcome, Timings::default());
            let _ = events.send(Event::Finished { host, report }).await;
        }
    }
}

fn report(
    plan: &RunPlan,
    host: usize,
    transport: &dyn Transport,
    outcome: Outcome,
    timings: Timings,
) -> HostReport {
    HostReport {
        host: plan.hosts[host].name.clone(),
        transport: transport.kind(),
        outcome,
        timings,
        stdout: Captured::default(),
        stderr: Captured::default(),
    }
}
