//! SIGHUP: the certificate, key and CA files are read again and new connections are served with
//! them, without a restart. This is how `volley agent renew` replaces a certificate without
//! downtime: running connections and executions keep going, the next handshake uses the new
//! certificate.
//!
//! The files are checked as at start (key mode, parseable PEM, key matching the certificate);
//! if anything is wrong, the agent logs why and keeps serving with what it had.

use std::sync::Arc;

use rustls::ServerConfig;
use tokio::signal::unix::Signal;
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::tls;

/// Rebuilds the TLS configuration on every SIGHUP and publishes it to the listener.
pub async fn on_hangup(
    config: AgentConfig,
    mut hangups: Signal,
    current: watch::Sender<Arc<ServerConfig>>,
) {
    while hangups.recv().await.is_some() {
        match tls::server_config(&config) {
            Ok(server) => {
                current.send_replace(server);
                tracing::info!(
                    certificate = %config.certificate.display(),
                    "SIGHUP: reloaded the certificate, key and CA"
                );
            }
            Err(error) => tracing::warn!(
                %error,
                "SIGHUP: reload refused; still serving with the previous certificate"
            ),
        }
    }
}
