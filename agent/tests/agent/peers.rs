//! Who may use the agent: only a client certificate from the agent's CA naming an allowed
//! controller. Every other peer gets an error, and the command it sent never runs: each would
//! `touch` a marker file, and the marker must not exist. And the handshake the allowed controller
//! gets.

use volley_common::exec::ExitStatus;

use crate::fixture::{
    AGENT_NAME, Agent, Authority, CONTROLLER, Credentials, Options, PATIENCE, run, shell,
};

/// Sends `touch MARKER` as `credentials`; asserts an error, no marker, and an agent that still
/// serves the allowed controller afterwards.
pub async fn assert_refused(agent: &Agent, credentials: Option<&Credentials>, name: &str) {
    let marker = agent.path(&format!("{name}-ran"));
    let touch = shell(&format!("touch {}", marker.display()));
    let outcome = match agent.client(credentials).await {
        Err(error) => Err(error.to_string()),
        Ok(mut client) => match client.exec(touch).await {
            Err(status) => Err(format!("{status:?}")),
            Ok(response) => Ok(response.into_inner().message().await),
        },
    };
    assert!(
        !matches!(outcome, Ok(Ok(Some(_)))),
        "{name}: the agent answered: {outcome:?}"
    );
    // The accept loop survived the refused peer, and the allowed controller's command ran
    // after the refused one was sent: had that one run, its marker would be there by now.
    let mut controller = agent.controller().await;
    let after = run(&mut controller, shell("true")).await;
    assert_eq!(after.exited.status, ExitStatus::Code(0));
    assert!(!marker.exists(), "{name}: the refused peer's command ran");
    assert!(
        !agent.log().contains(&format!("{name}-ran")),
        "{name}: the refused command reached the agent's audit: {}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowed_controller_runs_commands() {
    let agent = Agent::start(Options::default());
    let marker = agent.path("controller-ran");
    let mut client = agent.controller().await;
    let ran = run(&mut client, shell(&format!("touch {}", marker.display()))).await;
    assert_eq!(ran.exited.status, ExitStatus::Code(0));
    assert!(
        marker.exists(),
        "the marker proves a command that runs leaves it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let agent = Agent::start(Options::default());
    assert_refused(&agent, None, "no-certificate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let agent = Agent::start(Options::default());
    let stranger = Authority::new("Another CA").controller(CONTROLLER);
    assert_refused(&agent, Some(&stranger), "other-ca").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let agent = Agent::start(Options::default());
    let expired = agent.ca.expired_controller(CONTROLLER);
    assert_refused(&agent, Some(&expired), "expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_name_not_allowed_is_refused() {
    let agent = Agent::start(Options::default());
    let intruder = agent.ca.controller("intruder");
    assert_refused(&agent, Some(&intruder), "not-allowed").await;
    let log = agent.log();
    assert!(
        log.contains("TLS handshake refused") && log.contains("CN 'intruder'"),
        "the refusal is logged with the name: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agents_certificate_is_refused() {
    let agent = Agent::start(Options::default());
    let other_agent = agent.ca.agent("web01.test");
    assert_refused(&agent, Some(&other_agent), "agent-certificate").await;
    // The agent's own certificate, with its own name, is no controller either.
    let itself = agent.ca.agent(AGENT_NAME);
    assert_refused(&agent, Some(&itself), "own-name").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_name_without_the_client_auth_usage_is_refused() {
    let agent = Agent::start(Options::default());
    let no_usage = agent.ca.controller_without_usage(CONTROLLER);
    assert_refused(&agent, Some(&no_usage), "no-client-auth").await;
    let log = agent.log();
    assert!(
        log.contains("lacks the clientAuth extended key usage"),
        "the refusal says why: {log}"
    );
}

/// The handshake a controller gets: the agent follows the client's cipher-suite order (the
/// controller offers AES-128-GCM first) and sends no session tickets, which no controller would
/// ever use. Read past the handshake, up to the agent's first HTTP/2 frame: tickets come
/// before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_takes_the_controllers_suite_and_sends_no_session_tickets() {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let agent = Agent::start(Options::default());
    let credentials = agent.ca.controller(CONTROLLER);
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(agent.ca.certificate().as_bytes()) {
        roots.add(certificate.expect("the CA")).expect("the CA");
    }
    let chain = CertificateDer::pem_slice_iter(credentials.certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("the controller's certificate");
    let key = PrivateKeyDer::from_pem_slice(credentials.key.as_bytes()).expect("its key");
    let wanted = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.suite() != wanted.suite());
    provider.cipher_suites.insert(0, wanted);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];

    let tcp = tokio::net::TcpStream::connect(agent.address)
        .await
        .expect("connect");
    let name = ServerName::try_from(AGENT_NAME).expect("a name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the handshake");
    // The HTTP/2 preface and an empty SETTINGS frame; the agent answers with its SETTINGS.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("the preface");
    let mut first = [0u8; 9];
    tokio::time::timeout(PATIENCE, tls.read_exact(&mut first))
        .await
        .expect("the agent answers in time")
        .expect("the agent's first frame");
    assert_eq!(
        first[3], 0x04,
        "the agent's first frame is SETTINGS: {first:?}"
    );

    let connection = tls.get_ref().1;
    assert_eq!(
        connection.negotiated_cipher_suite().map(|s| s.suite()),
        Some(wanted.suite())
    );
    assert_eq!(connection.tls13_tickets_received(), 0);
}
