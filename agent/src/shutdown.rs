//! Stopping on SIGTERM or SIGINT: stop accepting, let running executions finish within the grace
//! period, then kill what is left.
//!
//! The sequence, driven by `main`: the first signal cancels the `stop` token (tonic stops
//! accepting connections and sends GOAWAY; new `Exec` requests are refused), then [`drain`]
//! waits for running executions up to `shutdown_grace`. When the grace period ends, or a second
//! signal arrives, the `kill` token makes every execution kill its process group (TERM, then
//! KILL) and report how it ended; then the agent exits 0.

use std::io;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::exec::KILL_AFTER;

/// Beyond TERM-then-KILL, how long killed executions get to report before the agent gives up
/// waiting for them.
const REPORT_MARGIN: Duration = Duration::from_secs(3);

/// The signals that stop the agent. Installed before the agent reports itself ready, so that a
/// signal sent right after readiness is not lost (and does not kill the agent outright).
#[derive(Debug)]
pub struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    pub fn install() -> io::Result<StopSignals> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next stop signal and names it.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "TERM",
            _ = self.interrupt.recv() => "INT",
        }
    }
}

/// Waits for the running executions: up to `grace`, then kills them and waits for their reports.
pub async fn drain(
    executions: &TaskTracker,
    kill: &CancellationToken,
    grace: Duration,
    signals: &mut StopSignals,
) {
    executions.close();
    let reason = tokio::select! {
        () = executions.wait() => return,
        () = tokio::time::sleep(grace) => "the grace period is over",
        _ = signals.next() => "a second stop signal arrived",
    };
    tracing::warn!(
        running = executions.len(),
        "{reason}: killing the running executions"
    );
    kill.cancel();
    if tokio::time::timeout(KILL_AFTER + REPORT_MARGIN, executions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = executions.len(),
            "executions still reporting after the kill; exiting anyway"
        );
    }
}
