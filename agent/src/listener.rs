//! Accepting connections: a TCP accept loop whose TLS handshakes each run in their own task,
//! feeding finished TLS streams to tonic.
//!
//! A handshake in its own task means a slow or silent client cannot hold up other accepts, and a
//! failed handshake (a refused certificate, a port scanner) drops that one connection and is
//! logged with the peer's address; nothing a peer does ends the accept loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// The stream of authenticated connections, for `serve_with_incoming_shutdown`. It ends when
/// `stop` is cancelled, which also closes the listening socket. Each handshake uses the TLS
/// configuration current when the connection came (see [`crate::reload`]).
pub fn incoming(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (connections, receiver) = mpsc::channel(PENDING_CONNECTIONS);
    tokio::spawn(accept_loop(listener, tls, connections, stop));
    ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    connections: mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
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
        tokio::spawn(async move {
            if let Some(tls) = handshake(&acceptor, tcp, peer).await {
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
