//! `auto` over mixed fleets: agent hosts go through their agents, hosts without an agent over
//! SSH (real sshd), dead addresses are unreachable, each recorded with its transport; and a host
//! whose TLS handshake fails, on either side, falls back to SSH, since nothing ran.

use volley_tests::hybrid::{InventoryHost, inventory_text};
use volley_tests::{
    AgentFleet, AgentFleetSpec, AgentKind, FleetSpec, HostKind, RunFlags, SshFleet,
};

use crate::{EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome, reported_hosts};

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
    for host in ssh.hosts_of(HostKind::Normal) {
        let record = expect_outcome(&output, &records, &host.name, "succeeded", "ssh");
        assert_eq!(record.stdout, "ok\n");
    }
    for host in ssh.hosts_of(HostKind::Dead) {
        let record = records
            .get(&host.name)
            .unwrap_or_else(|| panic!("no record for {}\n{}", host.name, output.describe()));
        assert_eq!(record.outcome, "unreachable", "{record:?}");
    }
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
}
