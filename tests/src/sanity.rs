//! Proves the fixture right with the OpenSSH client, without volley: every normal host answers
//! at its own address, and every odd host fails for the reason it was built for.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::fleet::{ENCRYPTED_KEY_PASSPHRASE, FleetSpec, HostKind, SshFleet};
use crate::keys::known_hosts_pattern;
use crate::loopback::AddressBlock;
use crate::process::{ProcessOutput, RunningProcess};
use crate::relay::DelayRelay;
use crate::tools;

fn assert_refused(output: &ProcessOutput, why: &str, expected: &str) {
    assert_ne!(
        output.code(),
        Some(0),
        "{why}: ssh succeeded\n{}",
        output.describe()
    );
    assert!(
        output.stderr.contains(expected),
        "{why}: expected {expected:?}\n{}",
        output.describe()
    );
}

#[test]
fn openssh_reaches_every_normal_host_at_its_own_address() {
    // 17 hosts take two sshd processes.
    let fleet = SshFleet::start(17);
    let names: Vec<&str> = fleet
        .hosts()
        .iter()
        .map(|host| host.name.as_str())
        .collect();
    assert_eq!(names.first(), Some(&"h01"));
    assert_eq!(names.last(), Some(&"h17"));
    let mut addresses = std::collections::HashSet::new();
    for host in fleet.hosts() {
        assert!(host.socket.ip().is_loopback());
        assert!(
            addresses.insert(host.socket.ip()),
            "{} shares its address",
            host.name
        );
        let output = fleet.openssh(
            host,
            fleet.client_key().path(),
            r#"echo "$SSH_CONNECTION"; echo "$HOME""#,
        );
        output.assert_code(0);
        let lines: Vec<&str> = output.stdout.lines().collect();
        assert!(
            lines[0].ends_with(&host.connection_suffix()),
            "{}: {}",
            host.name,
            lines[0]
        );
        // Sessions get a clean HOME, so the login user's shell startup files stay out.
        assert!(
            lines[1].ends_with("/session-home"),
            "{}: HOME is {}",
            host.name,
            lines[1]
        );
    }
    let inventory = std::fs::read_to_string(fleet.inventory()).unwrap();
    for host in fleet.hosts() {
        let entry = format!(
            "[hosts.{}]\naddress = \"{}\"\nport = {}\n",
            host.name,
            host.socket.ip(),
            host.socket.port()
        );
        assert!(
            inventory.contains(&entry),
            "inventory lacks {entry}\n{inventory}"
        );
    }
}

#[test]
fn openssh_refuses_each_odd_host_for_its_own_reason() {
    let fleet = SshFleet::with_spec(
        FleetSpec::new(1)
            .with(HostKind::UnknownKey)
            .with(HostKind::ChangedKey)
            .with(HostKind::WrongClientKey)
            .with(HostKind::Dead),
    );
    let client = fleet.client_key().path();
    let wrong = fleet.wrong_key().path();
    let normal = fleet.only(HostKind::Normal);
    fleet.openssh(normal, client, "true").assert_code(0);

    let unknown = fleet.only(HostKind::UnknownKey);
    let output = fleet.openssh(unknown, client, "true");
    assert_refused(&output, "unknown key", "Host key verification failed");
    assert_refused(&output, "unknown key", "No ED25519 host key is known");

    let changed = fleet.only(HostKind::ChangedKey);
    let output = fleet.openssh(changed, client, "true");
    assert_refused(
        &output,
        "changed key",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
    );

    let wrong_key_host = fleet.only(HostKind::WrongClientKey);
    let output = fleet.openssh(wrong_key_host, wrong, "true");
    assert_refused(&output, "wrong key", "Permission denied (publickey)");
    let output = fleet.openssh(wrong_key_host, client, "true");
    assert_refused(
        &output,
        "fleet key on the wrong-key host",
        "Permission denied (publickey)",
    );
    let output = fleet.openssh(normal, wrong, "true");
    assert_refused(
        &output,
        "wrong key on a normal host",
        "Permission denied (publickey)",
    );

    let output = fleet.openssh(fleet.only(HostKind::Dead), client, "true");
    assert_refused(&output, "dead host", "Connection refused");

    // The log level shows authentication failures.
    assert!(
        fleet
            .sshd_logs()
            .contains("Connection closed by authenticating user")
    );

    let known_hosts = std::fs::read_to_string(fleet.known_hosts()).unwrap();
    let line_of = |kind| {
        let pattern = known_hosts_pattern(fleet.only(kind).socket);
        known_hosts
            .lines()
            .find(|line| line.starts_with(&format!("{pattern} ")))
            .map(str::to_string)
    };
    assert_eq!(line_of(HostKind::UnknownKey), None);
    let changed_line = line_of(HostKind::ChangedKey).expect("the changed host has a line");
    assert!(changed_line.starts_with(&format!(
        "{} ssh-ed25519 AAAA",
        known_hosts_pattern(changed.socket)
    )));
    assert!(!changed_line.ends_with(changed.host_key.as_ref().unwrap().blob()));
    assert_eq!(known_hosts.lines().count(), 4);

    let inventory = std::fs::read_to_string(fleet.inventory()).unwrap();
    let wrong_entry = format!("identity_file = \"{}\"", wrong.display());
    assert_eq!(inventory.matches(&wrong_entry).count(), 1, "{inventory}");
    assert!(inventory.contains("hosts = [\"h01\", \"h02\", \"h03\", \"h04\", \"h05\"]"));
}

#[test]
fn encrypted_key_is_authorized_but_needs_its_passphrase() {
    let fleet = SshFleet::with_spec(FleetSpec::new(1).with_encrypted_client_key());
    let host = &fleet.hosts()[0];
    let encrypted = fleet.encrypted_key().path();
    let without_passphrase = Command::new(tools::ssh_keygen())
        .args(["-y", "-P", "", "-f"])
        .arg(encrypted)
        .output()
        .unwrap();
    assert!(
        !without_passphrase.status.success(),
        "the key opens without a passphrase"
    );

    let output = fleet.openssh(host, encrypted, "true");
    assert_refused(&output, "encrypted key in batch mode", "Permission denied");

    let decrypted = fleet.dir().join("decrypted");
    std::fs::copy(encrypted, &decrypted).unwrap();
    tools::run_tool(
        Command::new(tools::ssh_keygen())
            .args(["-p", "-P", ENCRYPTED_KEY_PASSPHRASE, "-N", "", "-f"])
            .arg(&decrypted),
    );
    fleet.openssh(host, &decrypted, "true").assert_code(0);
}

#[test]
fn openssh_reaches_a_host_through_the_delay_relay() {
    let fleet = SshFleet::start(1);
    let host = &fleet.hosts()[0];
    let relay = DelayRelay::new(Duration::from_millis(25)).unwrap();
    let listen = AddressBlock::random().next_address();
    let entry = relay.route(listen.into(), host.socket.into()).unwrap();
    let started = Instant::now();
    let mut ssh = fleet.openssh_command(fleet.client_key().path(), fleet.known_hosts());
    ssh.arg("-o")
        .arg(format!("HostKeyAlias={}", known_hosts_pattern(host.socket)))
        .arg("-p")
        .arg(entry.port().to_string())
        .arg(format!("{}@{}", fleet.user(), entry.ip()))
        .arg(r#"echo "$SSH_CONNECTION""#);
    let output = RunningProcess::spawn(&mut ssh).finish(Duration::from_secs(60));
    output.assert_code(0);
    assert!(
        output
            .stdout
            .trim_end()
            .ends_with(&host.connection_suffix()),
        "{}",
        output.stdout
    );
    // An SSH login takes several round trips; one is a safe lower bound.
    assert!(
        started.elapsed() >= relay.added_round_trip(),
        "{:?}",
        started.elapsed()
    );
}
