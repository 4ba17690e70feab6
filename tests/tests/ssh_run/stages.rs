//! A host that could not be reached says what was dialled and where it stopped: refused, no
//! answer to the TCP connect, TCP connected but no SSH banner, non-SSH text, a key exchange that
//! stalls or fails, authentication. Each against a real listener, all in one run.

use std::net::SocketAddrV4;

use volley_tests::hybrid::{InventoryHost, inventory_text};
use volley_tests::keys::KeyPair;
use volley_tests::listeners::{FullPort, TextPort};
use volley_tests::sshd::{Sshd, SshdConfig};
use volley_tests::{FleetSpec, HostKind, SshFleet, StallingPort};

use crate::{EXIT_NOT_REACHED, expect_outcome};

fn entry(name: &str, socket: SocketAddrV4) -> InventoryHost {
    InventoryHost {
        name: name.to_string(),
        address: *socket.ip(),
        port: Some(socket.port()),
        agent_port: None,
    }
}

#[test]
fn each_failure_says_what_was_dialled_and_where_it_stopped() {
    let fleet = SshFleet::with_spec(
        FleetSpec::new(1)
            .with(HostKind::Dead)
            .with(HostKind::WrongClientKey),
    );
    let unanswered = FullPort::start();
    let silent = StallingPort::start(usize::MAX, fleet.host("h01").socket);
    let http = TextPort::closing(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    let banner_only = TextPort::start(b"SSH-2.0-Stalled_1.0\r\n");
    // A real sshd that offers only a key exchange volley does not speak.
    let kex_dir = fleet.dir().join("kex-sshd");
    std::fs::create_dir_all(&kex_dir).unwrap();
    let kex_key = KeyPair::generate(&kex_dir.join("host_ed25519"), None);
    let kex_socket = volley_tests::loopback::AddressBlock::random().next_free_socket();
    let _kex_sshd = Sshd::start(
        &kex_dir,
        &SshdConfig {
            listen: &[kex_socket],
            host_key: kex_key.path(),
            authorized_keys: kex_key.path(),
            session_home: Some(&kex_dir),
            refuse_keys_on: &[],
            extra: "KexAlgorithms sntrup761x25519-sha512@openssh.com\n",
        },
    );
    let refused = fleet.host("h02").socket;
    let wrong_key = fleet.host("h03").socket;
    let hosts = [
        entry("refused", refused),
        entry("unanswered", unanswered.socket()),
        entry("silent", silent.socket()),
        entry("http", http.socket()),
        entry("banner", banner_only.socket()),
        entry("kex", kex_socket),
    ];
    let inventory = fleet.dir().join("stages.toml");
    std::fs::write(&inventory, inventory_text(&hosts)).unwrap();
    let mut flags = fleet.flags();
    flags.inventory = inventory;
    // The hosts that stall get a short connect timeout; those that answer a long one, so that a
    // loaded machine cannot turn their answer into a timeout.
    let run = |targets: &str, timeout: &str| {
        let output = fleet.run(flags.args([
            "-w",
            targets,
            "--connect-timeout",
            timeout,
            "--json",
            "--",
            "true",
        ]));
        output.assert_code(EXIT_NOT_REACHED);
        output
    };
    let stalled = run("unanswered,silent,banner", "2s");
    let answered = run("refused,http,kex", "60s");
    let reason = |name: &str, outcome: &str| {
        let output = if ["unanswered", "silent", "banner"].contains(&name) {
            &stalled
        } else {
            &answered
        };
        let records = output.records_by_host();
        let record = expect_outcome(output, &records, name, outcome);
        record.reason.clone().unwrap_or_default()
    };
    assert_eq!(
        reason("refused", "unreachable"),
        format!("unreachable: ssh {refused}: connection refused")
    );
    assert_eq!(
        reason("unanswered", "connect_timeout"),
        format!(
            "connect timed out: ssh {}: no answer to the TCP connect within 2s",
            unanswered.socket()
        )
    );
    assert_eq!(
        reason("silent", "connect_timeout"),
        format!(
            "connect timed out: ssh {}: TCP connected, but no SSH banner within 2s",
            silent.socket()
        )
    );
    assert_eq!(
        reason("http", "transport_error"),
        format!(
            "transport error: ssh {}: not an SSH server: it sent \"HTTP/1.1 400 Bad Request\"",
            http.socket()
        )
    );
    assert_eq!(
        reason("banner", "connect_timeout"),
        format!(
            "connect timed out: ssh {}: key exchange with SSH-2.0-Stalled_1.0 did not finish \
             within 2s",
            banner_only.socket()
        )
    );
    let kex = reason("kex", "transport_error");
    let expected = format!("transport error: ssh {kex_socket}: key exchange with SSH-2.0-OpenSSH");
    assert!(
        kex.starts_with(&expected) && kex.contains("No common Kex algorithm"),
        "{kex}"
    );

    // Authentication, on the fleet's own inventory.
    let output = fleet.run(fleet.flags().args(["-w", "h03", "--json", "--", "true"]));
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, "h03", "auth_failed");
    assert_eq!(
        record.reason.as_deref(),
        Some(
            format!(
                "authentication failed: ssh {wrong_key}: the server refused user {} with each \
                 of 2 keys",
                fleet.user()
            )
            .as_str()
        )
    );
}

/// An sshd past its `MaxStartups` (here one connection not yet logged in holds its only place)
/// turns volley away with "Exceeded MaxStartups": a busy server, not "not an SSH server", and
/// `--retries` tries it again.
#[test]
fn a_server_past_its_max_startups_is_busy_and_retried() {
    let fleet = SshFleet::start(1);
    let dir = fleet.dir().join("busy-sshd");
    std::fs::create_dir_all(&dir).unwrap();
    let key = KeyPair::generate(&dir.join("host_ed25519"), None);
    let socket = volley_tests::loopback::AddressBlock::random().next_free_socket();
    let _sshd = Sshd::start(
        &dir,
        &SshdConfig {
            listen: &[socket],
            host_key: key.path(),
            authorized_keys: key.path(),
            session_home: Some(&dir),
            refuse_keys_on: &[],
            extra: "MaxStartups 2:100:2\nLoginGraceTime 60\n",
        },
    );
    // Its places, held: connections that read the banner and never log in, until it turns one
    // away (a readiness probe may still hold one).
    let mut holders = Vec::new();
    let turned_away = (0..10).any(|_| {
        let mut holder = std::net::TcpStream::connect(socket).expect("the busy sshd listens");
        let mut banner = [0u8; 64];
        let read = std::io::Read::read(&mut holder, &mut banner).unwrap_or(0);
        holders.push(holder);
        banner[..read].starts_with(b"Exceeded MaxStartups")
    });
    assert!(turned_away, "the sshd never turned a connection away");
    let inventory = fleet.dir().join("busy.toml");
    std::fs::write(&inventory, inventory_text(&[entry("busy", socket)])).unwrap();
    let mut flags = fleet.flags();
    flags.inventory = inventory;

    let output = fleet.run(flags.args(["-w", "busy", "--retries", "1", "--json", "--", "true"]));
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, "busy", "unreachable");
    assert_eq!(record.attempts, 2, "{record:?}");
    assert_eq!(
        record.reason.as_deref(),
        Some(
            format!(
                "unreachable: ssh {socket}: the server turned the connection away: \"Exceeded \
                 MaxStartups\" (too many connections not yet logged in, its sshd's MaxStartups)"
            )
            .as_str()
        )
    );
    drop(holders);
}
