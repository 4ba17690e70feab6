//! The controller's share of one host's TLS handshake, with no socket, no HTTP/2 and no
//! scheduler: what the agent transport cannot pay less than per host while every run makes a
//! full handshake with every agent.
//!
//! A rustls client and server, configured as volley and `volley-agent` configure theirs (ring,
//! TLS 1.3 with AES-128-GCM first, the client certificate required and checked under the CA,
//! the host's name checked against the agent's certificate, no session tickets), shake hands in
//! memory, on one thread; only the time spent in the client's calls is counted. The fastest of
//! five batches is reported, so that other load on the machine inflates it as little as it can.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// The PEM texts of the two ends.
pub struct Ends<'a> {
    pub ca: &'a str,
    pub controller_certificate: &'a str,
    pub controller_key: &'a str,
    pub agent_certificate: &'a str,
    pub agent_key: &'a str,
}

const BATCHES: u32 = 5;

/// The client's CPU time for one handshake with an agent serving `ends.agent_certificate` as
/// `host`: the fastest of five batches of `per_batch` handshakes.
pub fn client_share(ends: &Ends<'_>, host: &str, per_batch: u32) -> Result<Duration, String> {
    let client = Arc::new(client_config(ends)?);
    let server = Arc::new(server_config(ends)?);
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let mut fastest = Duration::MAX;
    for _ in 0..BATCHES {
        let mut spent = Duration::ZERO;
        for _ in 0..per_batch {
            spent += handshake(&client, &server, name.clone())?;
        }
        fastest = fastest.min(spent / per_batch.max(1));
    }
    Ok(fastest)
}

/// One handshake, to its end on both sides; the time spent in the client's calls.
fn handshake(
    client_config: &Arc<ClientConfig>,
    server_config: &Arc<ServerConfig>,
    name: ServerName<'static>,
) -> Result<Duration, String> {
    let mut spent = Duration::ZERO;
    let started = Instant::now();
    let mut client =
        ClientConnection::new(client_config.clone(), name).map_err(|e| format!("client: {e}"))?;
    spent += started.elapsed();
    let mut server =
        ServerConnection::new(server_config.clone()).map_err(|e| format!("server: {e}"))?;
    let mut wire = Vec::new();
    for _ in 0..8 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(spent);
        }
        let started = Instant::now();
        while client.wants_write() {
            client.write_tls(&mut wire).map_err(|e| e.to_string())?;
        }
        spent += started.elapsed();
        deliver(&mut wire, |bytes| {
            server.read_tls(bytes)?;
            server
                .process_new_packets()
                .map_err(std::io::Error::other)?;
            Ok(())
        })?;
        while server.wants_write() {
            server.write_tls(&mut wire).map_err(|e| e.to_string())?;
        }
        let started = Instant::now();
        deliver(&mut wire, |bytes| {
            client.read_tls(bytes)?;
            client
                .process_new_packets()
                .map_err(std::io::Error::other)?;
            Ok(())
        })?;
        spent += started.elapsed();
    }
    Err("the handshake did not end in 8 flights".to_string())
}

/// Feeds every byte of `wire` to `take`, then empties it.
fn deliver(
    wire: &mut Vec<u8>,
    mut take: impl FnMut(&mut &[u8]) -> std::io::Result<()>,
) -> Result<(), String> {
    let mut rest = &wire[..];
    while !rest.is_empty() {
        take(&mut rest).map_err(|e| e.to_string())?;
    }
    wire.clear();
    Ok(())
}

/// ring's suites with AES-128-GCM-SHA256 first, as volley offers them.
fn provider() -> CryptoProvider {
    let mut provider = ring::default_provider();
    let first = ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    provider
        .cipher_suites
        .retain(|s| s.suite() != first.suite());
    provider.cipher_suites.insert(0, first);
    provider
}

fn roots(ca: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots
            .add(certificate.map_err(|e| format!("ca.pem: {e}"))?)
            .map_err(|e| format!("ca.pem: {e}"))?;
    }
    Ok(roots)
}

fn chain(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: {e}"))
}

fn key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("{what}: {e}"))
}

fn client_config(ends: &Ends<'_>) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ends.ca)?)
        .with_client_auth_cert(
            chain(ends.controller_certificate, "controller certificate")?,
            key(ends.controller_key, "controller key")?,
        )
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

fn server_config(ends: &Ends<'_>) -> Result<ServerConfig, String> {
    let provider = Arc::new(ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ends.ca)?), provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            chain(ends.agent_certificate, "agent certificate")?,
            key(ends.agent_key, "agent key")?,
        )
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}
