//! `auto` over mixed fleets: agent hosts go through their agents, hosts without an agent over
//! SSH (real sshd), dead addresses are unreachable, each recorded with its transport; and a host
//! whose TLS handshake fails, on either side, falls back to SSH, since nothing ran. A fallback is
//! visible: in `--json`, the journal, the summary, the failure lines and `volley runs show`.

use volley_tests::hybrid::{InventoryHost, inventory_text};
use volley_tests::{
    AgentFleet, AgentFleetSpec, AgentKind, FleetSpec, HostKind, RunFlags, SshFleet,
};

use volley_tests::HostRecord;

use crate::{EXIT_COMMAND_FAILED, EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome, reported_hosts};

#[test]
fn agents_ssh_hosts_and_dead_addresses_in_one_auto_run() {
    let ssh = SshFleet::with_spec(FleetSpec::new(10).with(HostKind::Dead).with(HostKind::Dead));
    let agents = AgentFleet::start(10);
    let hosts: Vec<InventoryHost> = agents
        .hosts()
        .iter()
        .map(InventoryHost::agent)
        .chain(ssh.hosts().iter().map(InventoryHost::ssh))
        .collect();
    let inventory = ssh.dir().join("hybrid.toml");
    std::fs::write(&inventory, inventory_text(&hosts)).expect("the fleet's directory is writable");
    let flags = RunFlags {
        inventory,
        pki: Some(agents.pki().dir().to_path_buf()),
        ..ssh.flags()
    };

    // No --transport: auto is the default.
    let output = ssh.run(flags.args(["-g", "all", "--json", "--", "echo ok"]));

    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    assert_eq!(reported_hosts(&records).len(), 22, "{}", output.describe());
    for host in agents.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "succeeded", "agent");
        assert_eq!(record.stdout, "ok\n");
    }
    for host in agents.hosts() {
        assert_eq!(records[&host.name].fallback, None);
    }
    for host in ssh.hosts_of(HostKind::Normal) {
        let record = expect_outcome(&output, &records, &host.name, "succeeded", "ssh");
        assert_eq!(record.stdout, "ok\n");
        assert_eq!(fallback_reason(record), Some("no_agent"));
    }
    for host in ssh.hosts_of(HostKind::Dead) {
        let record = expect_outcome(&output, &records, &host.name, "unreachable", "ssh");
        assert_eq!(fallback_reason(record), Some("no_agent"));
    }
    assert!(
        output.stderr.contains("volley: 22 hosts in ")
            && output
                .stderr
                .contains(": 20 succeeded, 2 failed; 12 over ssh, 10 over agent\n")
            && output
                .stderr
                .contains("\n  unreachable           2  h[11-12] (ssh)\n")
            && output
                .stderr
                .contains("volley: 12 hosts fell back to SSH: no agent answered: h[01-12]\n"),
        "{}",
        output.describe()
    );
    // Every agent ran the command once, and no agent ran more than its own host's.
    for agent in agents.agents() {
        assert_eq!(
            agent.log().matches("exec started").count(),
            1,
            "{}",
            agent.log()
        );
    }
}

#[test]
fn auto_falls_back_to_ssh_when_the_tls_handshake_fails_on_either_side() {
    // Two hosts with sshd and an agent on the same address: a01's agent presents a certificate
    // for another host, which the controller refuses; a02's agent allows another controller
    // identity only, so it refuses the controller.
    let ssh = SshFleet::start(2);
    let agents = AgentFleet::with_spec(
        AgentFleetSpec::new(0)
            .with(AgentKind::NamesAnotherHost)
            .with(AgentKind::Normal)
            .allowing(&["another-controller"])
            .on_addresses(ssh.hosts().iter().map(|host| *host.socket.ip())),
    );
    let hosts: Vec<InventoryHost> = agents
        .hosts()
        .iter()
        .zip(ssh.hosts())
        .map(|(agent, ssh_host)| InventoryHost::both(agent, ssh_host))
        .collect();
    let inventory = ssh.dir().join("fallback.toml");
    std::fs::write(&inventory, inventory_text(&hosts)).expect("the fleet's directory is writable");
    let flags = RunFlags {
        inventory,
        pki: Some(agents.pki().dir().to_path_buf()),
        ..ssh.flags()
    };

    let output = ssh.run(flags.args(["-g", "all", "--json", "--", "echo ok"]));

    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    for host in agents.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "succeeded", "ssh");
        assert_eq!(record.stdout, "ok\n");
    }
    for agent in agents.agents() {
        assert!(!agent.log().contains("exec started"), "{}", agent.log());
    }

    // Each fallback says which side refused: in --json, ...
    let fallback = |host: &str| records[host].fallback.clone().expect("a fallback");
    assert_eq!(fallback("a01").reason, "agent_certificate_rejected");
    assert!(fallback("a01").detail.starts_with("TLS rejected: "));
    assert_eq!(
        fallback("a02").reason,
        "controller_certificate_refused",
        "{:?}",
        fallback("a02")
    );
    // ... in the summary, ...
    for line in [
        "volley: 1 host fell back to SSH: agent certificate rejected: a01\n",
        "volley: 1 host fell back to SSH: the agent refused our certificate: a02\n",
    ] {
        assert!(output.stderr.contains(line), "{}", output.describe());
    }
    // ... in the run's journal, ...
    let journal = std::fs::read_dir(ssh.runs_dir())
        .expect("the runs directory")
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).expect("a journal"))
        .next()
        .expect("one journal");
    for (host, reason) in [
        ("a01", "agent_certificate_rejected"),
        ("a02", "controller_certificate_refused"),
    ] {
        let line = journal
            .lines()
            .find(|line| line.contains(&format!(r#""type":"host","host":"{host}""#)))
            .unwrap_or_else(|| panic!("no journal line for {host}:\n{journal}"));
        let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(entry["transport"], "ssh", "{line}");
        assert_eq!(entry["fallback"]["reason"], reason, "{line}");
    }
    // ... in `volley runs show`, ...
    let shown = ssh.run(["runs", "show", "last"]);
    shown.assert_code(EXIT_SUCCESS);
    assert!(
        shown.stdout.contains("TRANSPORT")
            && shown.stdout.lines().any(|line| line.starts_with("a01 ")
                && line.contains(" ssh ")
                && line.contains("fell back to SSH: agent certificate rejected (TLS rejected: ")),
        "{}",
        shown.describe()
    );
    // ... and in the failure lines of the stream.
    let failed = ssh.run(flags.args(["-g", "all", "--", "exit 3"]));
    failed.assert_code(EXIT_COMMAND_FAILED);
    assert_eq!(
        failed.stderr_of("a01"),
        [
            "volley: exited with status 3 (ssh, fell back from the agent: agent certificate rejected)"
        ]
    );
    assert_eq!(
        failed.stderr_of("a02"),
        [
            "volley: exited with status 3 (ssh, fell back from the agent: the agent refused our certificate)"
        ]
    );
}

/// The `reason` of a record's fallback, if it fell back.
fn fallback_reason(record: &HostRecord) -> Option<&str> {
    record
        .fallback
        .as_ref()
        .map(|fallback| fallback.reason.as_str())
}
