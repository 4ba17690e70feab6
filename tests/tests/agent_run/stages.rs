//! An agent that could not be reached says what was dialled and where it stopped: refused, no
//! answer to the TCP connect, TCP connected but no TLS answer, a server that is not TLS (an HTTP
//! server, an sshd), a certificate that does not name the host. Each against a real listener or
//! agent, all in one run through the agent transport.

use std::net::SocketAddrV4;

use volley_tests::hybrid::{InventoryHost, inventory_text};
use volley_tests::listeners::{FullPort, TextPort};
use volley_tests::loopback::{AddressBlock, free_port};
use volley_tests::{AgentFleet, AgentFleetSpec, AgentKind, StallingPort};

use crate::{EXIT_NOT_REACHED, expect_outcome};

fn entry(name: &str, socket: SocketAddrV4) -> InventoryHost {
    InventoryHost {
        name: name.to_string(),
        address: *socket.ip(),
        port: None,
        agent_port: Some(socket.port()),
    }
}

#[test]
fn each_agent_failure_says_what_was_dialled_and_where_it_stopped() {
    let fleet = AgentFleet::with_spec(AgentFleetSpec::new(1).with(AgentKind::NamesAnotherHost));
    let impostor = fleet.only(AgentKind::NamesAnotherHost);
    let address = AddressBlock::random().next_address();
    let refused = SocketAddrV4::new(address, free_port(address));
    let unanswered = FullPort::start();
    let silent = StallingPort::start(usize::MAX, fleet.host("a01").socket);
    let http = TextPort::closing(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    let sshd = TextPort::start(b"SSH-2.0-OpenSSH_9.2p1\r\n");
    let hosts = [
        InventoryHost::agent(fleet.host("a01")),
        InventoryHost::agent(impostor),
        entry("refused", refused),
        entry("unanswered", unanswered.socket()),
        entry("silent", silent.socket()),
        entry("http", http.socket()),
        entry("sshd", sshd.socket()),
    ];
    let inventory = fleet.dir().join("stages.toml");
    std::fs::write(&inventory, inventory_text(&hosts)).unwrap();
    // The agents that stall get a short connect timeout; those that answer a long one, so that
    // a loaded machine cannot turn their answer into a timeout.
    let run = |targets: &str, timeout: &str| {
        let output = fleet.run([
            "run".as_ref(),
            "--inventory".as_ref(),
            inventory.as_os_str(),
            "--pki".as_ref(),
            fleet.pki().dir().as_os_str(),
            "--transport".as_ref(),
            "agent".as_ref(),
            "--connect-timeout".as_ref(),
            timeout.as_ref(),
            "-w".as_ref(),
            targets.as_ref(),
            "--json".as_ref(),
            "--".as_ref(),
            "true".as_ref(),
        ]);
        output.assert_code(EXIT_NOT_REACHED);
        output
    };
    let stalled = run("unanswered,silent", "2s");
    let answered = run(&format!("a01,{},refused,http,sshd", impostor.name), "60s");
    let records = answered.records_by_host();
    expect_outcome(&answered, &records, "a01", "succeeded", "agent");
    let reason = |name: &str, outcome: &str| {
        let output = if ["unanswered", "silent"].contains(&name) {
            &stalled
        } else {
            &answered
        };
        let records = output.records_by_host();
        let record = expect_outcome(output, &records, name, outcome, "agent");
        record.reason.clone().unwrap_or_default()
    };
    assert_eq!(
        reason("refused", "unreachable"),
        format!("unreachable: agent {refused}: connection refused")
    );
    assert_eq!(
        reason("unanswered", "connect_timeout"),
        format!(
            "connect timed out: agent {}: no answer to the TCP connect within 2s",
            unanswered.socket()
        )
    );
    assert_eq!(
        reason("silent", "connect_timeout"),
        format!(
            "connect timed out: agent {}: TCP connected, but no TLS answer within 2s",
            silent.socket()
        )
    );
    assert_eq!(
        reason("http", "tls_rejected"),
        format!(
            "TLS rejected: agent {}: not a TLS server: it sent \"HTTP/1.1 400 Bad Request\"",
            http.socket()
        )
    );
    assert_eq!(
        reason("sshd", "tls_rejected"),
        format!(
            "TLS rejected: agent {}: not a TLS server: it sent \"SSH-2.0-OpenSSH_9.2p1\"",
            sshd.socket()
        )
    );
    let wrong_name = reason(&impostor.name, "tls_rejected");
    let expected = format!(
        "TLS rejected: agent {}: TLS handshake: invalid peer certificate",
        impostor.socket
    );
    assert!(wrong_name.starts_with(&expected), "{wrong_name}");
}
