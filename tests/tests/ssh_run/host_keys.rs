//! Host keys: volley trusts a host only when known_hosts proves it, and `--accept-new-host-keys`
//! records new hosts but never replaces a changed key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use volley_tests::keys::known_hosts_pattern;
use volley_tests::{FleetSpec, Host, HostKind, ProcessOutput, RunningProcess, SshFleet};

use crate::{EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome};

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks that `lines` hold one `[ADDR]:PORT ssh-ed25519 KEY` line per host of `hosts`, each
/// with the key that host's sshd presents.
fn assert_one_line_per_host(lines: &[String], hosts: &[&Host]) {
    let mut by_pattern = BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields.len() >= 3 && fields[1] == "ssh-ed25519",
            "not a plain known_hosts line: {line:?}"
        );
        assert!(
            by_pattern.insert(fields[0], fields[2]).is_none(),
            "{} is listed twice",
            fields[0]
        );
    }
    assert_eq!(by_pattern.len(), hosts.len(), "lines: {lines:#?}");
    for host in hosts {
        let pattern = known_hosts_pattern(host.socket);
        let key = host
            .host_key
            .as_ref()
            .expect("a served host has a key")
            .blob();
        assert_eq!(
            by_pattern.get(pattern.as_str()),
            Some(&key),
            "{} ({pattern})",
            host.name
        );
    }
}

/// Checks that volley listed on stderr exactly the keys of `hosts` as newly recorded, one line
/// each with the host's name, address and fingerprint.
fn assert_listed_as_recorded(output: &ProcessOutput, hosts: &[&Host]) {
    let mut listed: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| line.contains("recorded new host key"))
        .collect();
    listed.sort();
    let mut expected: Vec<String> = hosts
        .iter()
        .map(|host| {
            let key = host.host_key.as_ref().expect("a served host has a key");
            format!(
                "volley: recorded new host key for {} ({}): ED25519 {}",
                host.name,
                host.socket,
                key.fingerprint()
            )
        })
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "{}", output.describe());
}

#[test]
fn accept_new_host_keys_records_thirty_hosts_at_once() {
    let fleet = SshFleet::start(30);
    let known_hosts = fleet.dir().join("empty_known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let mut flags = fleet.flags();
    flags.known_hosts = known_hosts.clone();

    let output = fleet.run(flags.args([
        "-g",
        "all",
        "--accept-new-host-keys",
        "--json",
        "--",
        "true",
    ]));
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    assert_eq!(records.len(), 30, "{}", output.describe());
    for host in fleet.hosts() {
        expect_outcome(&output, &records, &host.name, "succeeded");
    }
    let hosts: Vec<&Host> = fleet.hosts().iter().collect();
    assert_one_line_per_host(&read_lines(&known_hosts), &hosts);
    assert_listed_as_recorded(&output, &hosts);

    // OpenSSH itself accepts the file.
    let mut checks: Vec<(&Host, RunningProcess)> = fleet
        .hosts()
        .iter()
        .map(|host| {
            let mut ssh = fleet.openssh_command(fleet.client_key().path(), &known_hosts);
            ssh.arg("-p")
                .arg(host.socket.port().to_string())
                .arg(format!("{}@{}", fleet.user(), host.socket.ip()))
                .arg("true");
            (host, RunningProcess::spawn(&mut ssh))
        })
        .collect();
    for (host, check) in &mut checks {
        let output = check.finish(Duration::from_secs(60));
        assert_eq!(
            output.code(),
            Some(0),
            "ssh to {} with the written file\n{}",
            host.name,
            output.describe()
        );
    }

    let output = fleet.run(flags.args([
        "-g",
        "all",
        "--accept-new-host-keys",
        "--json",
        "--",
        "true",
    ]));
    output.assert_code(EXIT_SUCCESS);
    assert_eq!(output.records_by_host().len(), 30);
    assert_listed_as_recorded(&output, &[]);
}

#[test]
fn accept_new_host_keys_still_refuses_a_changed_key() {
    let fleet = SshFleet::with_spec(
        FleetSpec::new(2)
            .with(HostKind::ChangedKey)
            .with(HostKind::UnknownKey),
    );
    let known_hosts = fleet.dir().join("accept_known_hosts");
    std::fs::copy(fleet.known_hosts(), &known_hosts).unwrap();
    let before = read_lines(&known_hosts);
    let mut flags = fleet.flags();
    flags.known_hosts = known_hosts.clone();

    let output = fleet.run(flags.args([
        "-g",
        "all",
        "--accept-new-host-keys",
        "--json",
        "--",
        "true",
    ]));
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    for name in ["h01", "h02", "h04"] {
        expect_outcome(&output, &records, name, "succeeded");
    }
    expect_outcome(&output, &records, "h03", "host_key_changed");

    let after = read_lines(&known_hosts);
    for line in &before {
        assert!(
            after.contains(line),
            "the line {line:?} was lost or changed: {after:#?}"
        );
    }
    let added: Vec<String> = after
        .iter()
        .filter(|line| !before.contains(line))
        .cloned()
        .collect();
    assert_one_line_per_host(&added, &[fleet.only(HostKind::UnknownKey)]);
    assert_listed_as_recorded(&output, &[fleet.only(HostKind::UnknownKey)]);
}

#[test]
fn missing_known_hosts_file_means_every_host_is_unknown() {
    let fleet = SshFleet::start(3);
    let mut flags = fleet.flags();
    flags.known_hosts = fleet.dir().join("no_such_known_hosts");

    let output = fleet.run(flags.args(["-g", "all", "--json", "--", "echo ran"]));
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    assert_eq!(records.len(), 3, "{}", output.describe());
    for host in fleet.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "host_key_unknown");
        assert_eq!(record.stdout, "");
    }
}
