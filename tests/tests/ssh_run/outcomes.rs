//! One outcome per host, the `--json` record, the exit statuses, and credentials.

use volley_tests::remote::per_host_command;
use volley_tests::{FleetSpec, HostKind, SshFleet};

use crate::{EXIT_COMMAND_FAILED, EXIT_NOT_REACHED, EXIT_SUCCESS, EXIT_USAGE, expect_outcome};

const PRINT_CONNECTION: &str = r#"echo "$SSH_CONNECTION""#;

#[test]
fn fifty_hosts_each_report_their_own_address() {
    let fleet = SshFleet::start(50);

    let output = fleet.run(
        fleet
            .flags()
            .args(["-g", "all", "--json", "--", PRINT_CONNECTION]),
    );
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    assert_eq!(records.len(), 50, "{}", output.describe());
    for host in fleet.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "succeeded");
        assert_eq!(record.transport, "ssh");
        assert_eq!(record.exit_code, Some(0));
        assert_eq!(record.signal, None);
        // $SSH_CONNECTION: client address, client port, server address, server port.
        let fields: Vec<&str> = record.stdout.split_whitespace().collect();
        let (address, port) = (host.socket.ip().to_string(), host.socket.port().to_string());
        assert_eq!(
            fields.get(2..),
            Some(&[address.as_str(), port.as_str()][..]),
            "{}: {:?}",
            host.name,
            record.stdout
        );
        assert_eq!(record.stdout_bytes, record.stdout.len() as u64);
        assert!(!record.stdout_truncated && !record.stderr_truncated);
    }

    let output = fleet.run(fleet.flags().args(["-g", "all", "--", PRINT_CONNECTION]));
    output.assert_code(EXIT_SUCCESS);
    assert_eq!(output.stdout.lines().count(), 50, "{}", output.describe());
    for host in fleet.hosts() {
        let lines = output.stdout_of(&host.name);
        assert_eq!(
            lines.len(),
            1,
            "{}: {lines:?}\n{}",
            host.name,
            output.describe()
        );
        assert!(
            lines[0].ends_with(&host.connection_suffix()),
            "{}: {}",
            host.name,
            lines[0]
        );
    }
}

/// h01-h04 succeed, h05 exits 3, h06 kills itself, h07 is dead, h08 has an unknown key, h09 a
/// changed key, h10 refuses the client key.
fn mixed_fleet() -> SshFleet {
    SshFleet::with_spec(
        FleetSpec::new(6)
            .with(HostKind::Dead)
            .with(HostKind::UnknownKey)
            .with(HostKind::ChangedKey)
            .with(HostKind::WrongClientKey),
    )
}

fn mixed_command(fleet: &SshFleet) -> String {
    per_host_command(
        &[
            (fleet.host("h05"), "exit 3"),
            (fleet.host("h06"), "kill -KILL $$"),
        ],
        "echo ok",
    )
}

#[test]
fn mixed_fleet_gets_one_outcome_kind_per_host_in_one_run() {
    let fleet = mixed_fleet();
    let command = mixed_command(&fleet);

    let output = fleet.run(
        fleet
            .flags()
            .args(["-g", "all", "--json", "--", command.as_str()]),
    );
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    assert_eq!(records.len(), 10, "{}", output.describe());
    for name in ["h01", "h02", "h03", "h04"] {
        let record = expect_outcome(&output, &records, name, "succeeded");
        assert_eq!(record.stdout, "ok\n");
    }
    let exited = expect_outcome(&output, &records, "h05", "non_zero_exit");
    assert_eq!(
        (exited.exit_code, exited.signal.as_deref()),
        (Some(3), None)
    );
    let signalled = expect_outcome(&output, &records, "h06", "signalled");
    assert_eq!(
        (signalled.exit_code, signalled.signal.as_deref()),
        (None, Some("KILL"))
    );
    for (name, outcome) in [
        ("h07", "unreachable"),
        ("h08", "host_key_unknown"),
        ("h09", "host_key_changed"),
        ("h10", "auth_failed"),
    ] {
        let record = expect_outcome(&output, &records, name, outcome);
        assert_eq!(record.exit_code, None, "{name}");
        assert_eq!(record.stdout, "", "{name} ran the command");
    }
    let unreachable = &records["h07"];
    assert!(
        unreachable.reason.as_deref().is_some_and(|r| !r.is_empty()),
        "{unreachable:?}"
    );

    // The default form: every host that did not succeed says why on stderr.
    let output = fleet.run(fleet.flags().args(["-g", "all", "--", command.as_str()]));
    output.assert_code(EXIT_NOT_REACHED);
    for host in fleet.hosts() {
        let says_why = output
            .stderr_of(&host.name)
            .iter()
            .any(|line| line.starts_with("volley: "));
        let succeeds = ["h01", "h02", "h03", "h04"].contains(&host.name.as_str());
        assert_eq!(says_why, !succeeds, "{}\n{}", host.name, output.describe());
        let expected_stdout: &[&str] = if succeeds { &["ok"] } else { &[] };
        assert_eq!(
            output.stdout_of(&host.name),
            expected_stdout,
            "{}",
            host.name
        );
    }
}

#[test]
fn command_failures_alone_exit_1_and_are_folded_in_the_summary() {
    let fleet = SshFleet::start(9);
    let failing: Vec<_> = ["h03", "h07", "h08", "h09"]
        .iter()
        .map(|n| (fleet.host(n), "exit 3"))
        .collect();
    let command = per_host_command(&failing, "echo ok");

    let output = fleet.run(fleet.flags().args(["-g", "all", "--", command.as_str()]));
    output.assert_code(EXIT_COMMAND_FAILED);
    for host in fleet.hosts() {
        let failed = failing.iter().any(|(failing, _)| failing.name == host.name);
        let expected_stdout: &[&str] = if failed { &[] } else { &["ok"] };
        assert_eq!(
            output.stdout_of(&host.name),
            expected_stdout,
            "{}",
            host.name
        );
        let says_why = output
            .stderr_of(&host.name)
            .iter()
            .any(|line| line.starts_with("volley: "));
        assert_eq!(says_why, failed, "{}\n{}", host.name, output.describe());
    }
    assert!(
        output.stderr.contains("h[03,07-09]"),
        "summary\n{}",
        output.describe()
    );

    let output = fleet.run(
        fleet
            .flags()
            .args(["-w", "h01", "--json", "--", "kill -KILL $$"]),
    );
    output.assert_code(EXIT_COMMAND_FAILED);
    expect_outcome(&output, &output.records_by_host(), "h01", "signalled");

    let output = fleet.run(
        fleet
            .flags()
            .args(["-w", "h[01-02],h[04-06]", "--", command.as_str()]),
    );
    output.assert_code(EXIT_SUCCESS);
    assert_eq!(output.stdout.lines().count(), 5, "{}", output.describe());
}

#[test]
fn mixed_fleet_without_the_odd_hosts_exits_0() {
    let fleet = mixed_fleet();
    let output = fleet.run(
        fleet
            .flags()
            .args(["-w", "h[01-04]", "--json", "--", "true"]),
    );
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    assert_eq!(
        crate::reported_hosts(&records),
        ["h01", "h02", "h03", "h04"]
    );
}

#[test]
fn encrypted_identity_fails_auth_without_prompting() {
    let fleet = SshFleet::with_spec(FleetSpec::new(3).with_encrypted_client_key());
    let mut flags = fleet.flags();
    flags.identity = fleet.encrypted_key().path().to_path_buf();

    // stdin is /dev/null and the run has a deadline: a prompt would fail the test.
    let output = fleet.run(flags.args(["-g", "all", "--json", "--", "echo ran"]));
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    assert_eq!(records.len(), 3, "{}", output.describe());
    for host in fleet.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "auth_failed");
        let reason = record.reason.as_deref().unwrap_or_default().to_lowercase();
        assert!(
            reason.contains("encrypted"),
            "{}: reason {:?}",
            host.name,
            record.reason
        );
        assert_eq!(record.stdout, "");
    }
}

/// As ssh does, a private key of the operator's that others may read is not used: named with
/// `-i`, the run stops before any connection, saying why; made private, the same file works.
#[test]
fn a_private_key_others_may_read_is_refused_as_ssh_refuses_it() {
    use std::os::unix::fs::PermissionsExt;
    let fleet = SshFleet::start(1);
    let key = fleet.dir().join("readable_key");
    std::fs::copy(fleet.client_key().path(), &key).expect("copy the client key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut flags = fleet.flags();
    flags.identity = key.clone();

    let output = fleet.run(flags.args(["-g", "all", "--", "echo ran"]));
    output.assert_code(EXIT_USAGE);
    assert_eq!(
        output.stderr.trim_end(),
        format!(
            "volley: identity file {0}: permissions 0644 are too open: a private key must be \
             readable by its owner only (chmod 600 {0}), as ssh requires",
            key.display()
        ),
        "{}",
        output.describe()
    );
    assert_eq!(output.stdout, "");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let output = fleet.run(flags.args(["-g", "all", "--", "echo ran"]));
    output.assert_code(EXIT_SUCCESS);

    // A default key (not named) others may read is not used either; a host that fails for want
    // of it says why.
    let ssh_dir = fleet.client_home().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).expect("the client's ~/.ssh");
    let default = ssh_dir.join("id_ed25519");
    std::fs::copy(fleet.client_key().path(), &default).expect("copy the client key");
    std::fs::set_permissions(&default, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let known_hosts = fleet.known_hosts().to_str().expect("UTF-8").to_string();
    let inventory = fleet.inventory().to_str().expect("UTF-8").to_string();
    let output = fleet.run([
        "run",
        "--inventory",
        &inventory,
        "--known-hosts",
        &known_hosts,
        "-l",
        fleet.user(),
        "-g",
        "all",
        "--json",
        "--",
        "echo ran",
    ]);
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, "h01", "auth_failed");
    assert!(
        record
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains(&format!(
                "{}: permissions 0644 are too open",
                default.display()
            )),
        "{record:?}"
    );
}

/// A connection that ends in the middle of a command (here its sshd session process is killed)
/// is a `transport_error` that says how it ended, not only that it did.
#[test]
fn a_connection_lost_mid_command_says_how_it_ended() {
    use std::time::Duration;
    use volley_tests::remote::{SweepOnDrop, unique_sleep, wait_until_running};

    let fleet = SshFleet::start(1);
    let sleep = unique_sleep("60.");
    let _sweep = SweepOnDrop(sleep.clone());
    let mut volley = fleet.spawn(
        fleet
            .flags()
            .args(["-g", "all", "--json", "--", sleep.as_str()]),
    );
    let running = wait_until_running(&sleep, 1, Duration::from_secs(30), || volley.has_exited());
    assert_eq!(running.len(), 1, "the command never ran");
    // The session's sshd process: the nearest ancestor of the command that is sshd.
    let sessions = volley_tests::remote::sshd_sessions_above(running[0], &fleet.sshd_pids());
    let session = *sessions.first().expect("an sshd above the command");
    volley_tests::remote::kill_all(&[session]);
    let output = volley.finish(Duration::from_secs(60));

    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    let host = &fleet.hosts()[0].name;
    let record = expect_outcome(&output, &records, host, "transport_error");
    let reason = record.reason.as_deref().unwrap_or_default();
    assert!(
        reason.ends_with(
            "the connection closed before the command reported its exit: it ended without an \
             SSH goodbye (the server's session process died, or something on the way cut the \
             connection)"
        ),
        "{reason:?}"
    );
}
