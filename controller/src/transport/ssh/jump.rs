//! Connections to jump hosts, shared by every host of the run whose route starts the same way.
//!
//! 500 hosts behind one bastion cost one SSH login there, not 500: the first host that needs a
//! jump host starts its connection (in a task of its own, bounded by the connect timeout),
//! later ones wait for the same connection, and each carries its own SSH connection to its host
//! over a `direct-tcpip` channel of it. One connection per bastion also stays clear of its
//! sshd's `MaxStartups`, which drops simultaneous handshakes beyond a handful.
//!
//! A failed jump host connection is handed to every host waiting for it, and to every host that
//! comes for it after: for the rest of the run where the jump host refused the login or its key
//! (trying again would only fail again, and add to its sshd's failed logins, which fail2ban
//! counts), for [`FAILURE_HOLD`] otherwise (a host that came a moment later would dial a dead
//! or hung jump host again; a host retried after its backoff tries again). A connection that
//! closed is replaced. Connections live until the run ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use volley_common::outcome::Outcome;

use super::connect::{Connection, Endpoint, Shared};
use crate::plan::JumpHost;
use crate::transport::BoxFuture;
use crate::transport::stage::Progress;

type Made = Option<Result<Arc<Connection>, Outcome>>;

/// How long a jump host's failure that may pass (refused, unreachable, timed out) is handed to
/// the hosts that come for it, rather than dialled again: shorter than the shortest backoff of
/// `--retries`, longer than a round of handshake admission.
pub const FAILURE_HOLD: Duration = Duration::from_millis(500);

/// The run's jump host connections, by route: `[a]` is the connection to `a`, `[a, b]` the one
/// to `b` through `a`.
#[derive(Default)]
pub struct JumpPool {
    slots: Mutex<HashMap<Vec<JumpHost>, Slot>>,
    next_id: AtomicU64,
}

struct Slot {
    id: u64,
    /// How far the connection got, for hosts whose connect timeout expires while they wait.
    progress: Progress,
    made: watch::Receiver<Made>,
    /// When the connection failed, if it did.
    failed_at: Option<Instant>,
}

impl JumpPool {
    /// An authenticated connection to the last jump host of `route`, through the ones before
    /// it. `progress` follows the connection's while the caller waits.
    pub fn get<'a>(
        &'a self,
        shared: &'a Arc<Shared>,
        route: &'a [JumpHost],
        timeout: Duration,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<Arc<Connection>, Outcome>> {
        Box::pin(async move {
            let (mut made, connecting) = self.slot(shared, route, timeout);
            progress.follow(&connecting);
            let result = match made.wait_for(Option::is_some).await {
                Ok(made) => made.clone(),
                Err(_) => None,
            };
            result.unwrap_or_else(|| {
                Err(Outcome::TransportError {
                    reason: "the connection to the jump host was abandoned".to_string(),
                })
            })
        })
    }

    /// The slot of `route`: the one in use, or a new one whose connection is started now.
    fn slot(
        &self,
        shared: &Arc<Shared>,
        route: &[JumpHost],
        timeout: Duration,
    ) -> (watch::Receiver<Made>, Progress) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(route) {
            let usable = match &*slot.made.borrow() {
                None => true,
                Some(Ok(connection)) => !connection.handle.is_closed(),
                Some(Err(outcome)) => {
                    lasting(outcome) || slot.failed_at.is_some_and(|at| at.elapsed() < FAILURE_HOLD)
                }
            };
            if usable {
                return (slot.made.clone(), slot.progress.clone());
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let progress = Progress::default();
        let (sender, made) = watch::channel(None);
        slots.insert(
            route.to_vec(),
            Slot {
                id,
                progress: progress.clone(),
                made: made.clone(),
                failed_at: None,
            },
        );
        tokio::spawn(connect(
            shared.clone(),
            route.to_vec(),
            timeout,
            progress.clone(),
            id,
            sender,
        ));
        (made, progress)
    }

    fn failed(&self, route: &[JumpHost], id: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(route).filter(|slot| slot.id == id) {
            slot.failed_at = Some(Instant::now());
        }
    }
}

/// A jump host's failure that holds for the whole run: its login or its key was refused.
fn lasting(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::AuthFailed { .. }
            | Outcome::HostKeyUnknown { .. }
            | Outcome::HostKeyChanged { .. }
    )
}

/// Makes the connection of one slot and hands it to whoever waits.
async fn connect(
    shared: Arc<Shared>,
    route: Vec<JumpHost>,
    timeout: Duration,
    progress: Progress,
    id: u64,
    sender: watch::Sender<Made>,
) {
    let attempt = async {
        let before = &route[..route.len().saturating_sub(1)];
        let through = match before.is_empty() {
            true => None,
            false => Some(
                shared
                    .jumps
                    .get(&shared, before, timeout, &progress)
                    .await?,
            ),
        };
        let endpoint = Endpoint::jump_host(&route).ok_or_else(|| Outcome::TransportError {
            reason: "an empty route to a jump host".to_string(),
        })?;
        let via = before.last().map(|hop| hop.name.as_str());
        let connection = shared
            .connect_leg(&endpoint, through, via, &progress)
            .await?;
        Ok(Arc::new(connection))
    };
    let made = match tokio::time::timeout(timeout, attempt).await {
        Ok(made) => made,
        Err(_) => Err(Outcome::ConnectTimeout {
            reason: progress.stalled(timeout),
        }),
    };
    if made.is_err() {
        shared.jumps.failed(&route, id);
    }
    // Nobody may be waiting any more (their own timeouts expired): that is fine.
    let _ = sender.send(Some(made));
}
