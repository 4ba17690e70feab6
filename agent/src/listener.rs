//! Accepting connections: a TCP accept loop whose TLS handshakes each run in their own task,
//! feeding finished TLS streams to tonic.
//!
//! A handshake in its own task means a slow or silent client cannot hold up other accepts, and a
//! failed handshake (a refused certificate, a port scanner) drops that one connection and is
//! logged with the peer's address; nothing a peer does ends the accept loop.
//!
//! Handshakes in progress are capped (`limits.max_concurrent_handshakes`). Past the cap a new
//! connection is not made to wait: the oldest handshake still in progress is dropped instead.
//! A controller sends its ClientHello at once and finishes in milliseconds, while idle or
//! slow-loris connections sit at the front of the queue: so a flood of silent connections
//! costs the agent at most the cap in descriptors and memory, and a controller that comes
//! after them still gets through at once, instead of waiting for them to time out.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::tls;

/// A client gets this long to finish its handshake; then the connection is dropped, so that
/// half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After `accept()` failed for lack of descriptors or memory, wait before trying again instead of
/// spinning; the pending connection is still there.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Handshaken connections waiting for tonic to pick them up.
const PENDING_CONNECTIONS: usize = 32;

/// Dropped handshakes are logged as a count at most this often, so a flood does not flood the
/// log too.
const DROPPED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The stream of authenticated connections, for `serve_with_incoming_shutdown`. It ends when
/// `stop` is cancelled, which also closes the listening socket. Each handshake uses the TLS
/// configuration current when the connection came (see [`crate::reload`]).
pub fn incoming(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    max_handshakes: usize,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (connections, receiver) = mpsc::channel(PENDING_CONNECTIONS);
    let handshakes = Handshakes::new(max_handshakes);
    tokio::spawn(accept_loop(listener, tls, connections, handshakes, stop));
    ReceiverStream::new(receiver)
}

/// The handshakes in progress, oldest first, each with the token that drops it.
struct Handshakes {
    cap: usize,
    state: Arc<Mutex<HandshakeState>>,
}

struct HandshakeState {
    next: u64,
    running: VecDeque<(u64, CancellationToken)>,
    /// Dropped since the last warning.
    dropped: u64,
    last_warning: Option<Instant>,
}

impl Handshakes {
    fn new(cap: usize) -> Handshakes {
        Handshakes {
            cap: cap.max(1),
            state: Arc::new(Mutex::new(HandshakeState {
                next: 0,
                running: VecDeque::new(),
                dropped: 0,
                last_warning: None,
            })),
        }
    }

    /// Registers a new handshake, dropping the oldest ones past the cap. Returns its id and the
    /// token that is cancelled if it is dropped in turn.
    fn admit(&self) -> (u64, CancellationToken) {
        let mut state = self.lock();
        while state.running.len() >= self.cap {
            if let Some((_, oldest)) = state.running.pop_front() {
                oldest.cancel();
                state.dropped += 1;
            }
        }
        let due = state
            .last_warning
            .is_none_or(|last| last.elapsed() >= DROPPED_LOG_INTERVAL);
        if state.dropped > 0 && due {
            tracing::warn!(
                dropped = state.dropped,
                cap = self.cap,
                "more TLS handshakes than limits.max_concurrent_handshakes at once: the oldest \
                 ones were dropped (idle or slow clients, or a flood)"
            );
            state.dropped = 0;
            state.last_warning = Some(Instant::now());
        }
        let id = state.next;
        state.next += 1;
        let token = CancellationToken::new();
        state.running.push_back((id, token.clone()));
        (id, token)
    }

    /// A handshake ended, one way or another.
    fn done(state: &Mutex<HandshakeState>, id: u64) {
        let mut state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(position) = state.running.iter().position(|(running, _)| *running == id) {
            state.running.remove(position);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HandshakeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    connections: mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
    handshakes: Handshakes,
    stop: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return,
            () = connections.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    if out_of_resources(&error) {
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            },
        };
        // Output chunks and events are small writes that should leave at once.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let connections = connections.clone();
        let (id, dropped) = handshakes.admit();
        let state = handshakes.state.clone();
        tokio::spawn(async move {
            let handshaken = tokio::select! {
                tls = handshake(&acceptor, tcp, peer) => tls,
                () = dropped.cancelled() => {
                    tracing::debug!(%peer, "TLS handshake dropped: too many in progress");
                    None
                }
            };
            Handshakes::done(&state, id);
            if let Some(tls) = handshaken {
                // The receiver is gone only when the agent is stopping; the connection just
                // closes then.
                let _ = connections.send(Ok(tls)).await;
            }
        });
    }
}

fn out_of_resources(error: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(error),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            match tls::refusal(&error) {
                Some(reason) => tracing::warn!(%peer, %reason, "TLS handshake refused"),
                None => tracing::debug!(%peer, %error, "TLS handshake failed"),
            }
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_oldest_handshakes_are_dropped() {
        let handshakes = Handshakes::new(2);
        let (_, first) = handshakes.admit();
        let (second_id, second) = handshakes.admit();
        let (_, third) = handshakes.admit();
        assert!(first.is_cancelled(), "the oldest goes");
        assert!(!second.is_cancelled() && !third.is_cancelled());
        // A handshake that ended leaves room: the next one drops nobody.
        Handshakes::done(&handshakes.state, second_id);
        let (_, fourth) = handshakes.admit();
        assert!(!second.is_cancelled() && !third.is_cancelled() && !fourth.is_cancelled());
        assert_eq!(handshakes.lock().running.len(), 2);
        // The first drop was told at once; the next ones wait for the interval.
        assert!(handshakes.lock().last_warning.is_some());
    }
}
