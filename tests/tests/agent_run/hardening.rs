//! The agent under a flood of idle connections, as the issue found it: started with a 1,024
//! descriptor limit, held 1,200 silent TCP connections, it ran out of descriptors and new
//! controllers waited for the silent ones to time out. Now it raises its limit and caps the
//! handshakes in progress, dropping the oldest: a controller gets its commands through within a
//! short connect timeout while the 1,200 connections are still held open, and its commands get
//! the limit it was started with, not the raised one. Also: `volley pki issue` refuses a
//! controller identity as an agent name.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use volley_tests::report::EXIT_USAGE;
use volley_tests::{AgentFleet, AgentFleetSpec};

use crate::{EXIT_SUCCESS, expect_outcome};

/// The open-file limit the agent is started with, and the idle connections held against it.
const AGENT_NOFILE: u64 = 1024;
const IDLE_CONNECTIONS: usize = 1200;

/// Descriptors this test needs for itself: the idle connections and some room.
const OWN_NOFILE: u64 = 2048;

/// The controller's connect timeout: before the fix it waited 11 s behind the idle connections.
const CONNECT_TIMEOUT: &str = "5s";

/// Each of these runs is one `Exec` on the agent.
const RUNS: usize = 3;

#[test]
fn a_controller_gets_its_commands_through_while_idle_connections_hold_the_agent() {
    let own = rlimit::increase_nofile_limit(OWN_NOFILE).expect("the open-file limit");
    assert!(
        own >= OWN_NOFILE,
        "this test holds {IDLE_CONNECTIONS} connections and needs an open-file limit of \
         {OWN_NOFILE}; the hard limit allows {own}"
    );
    let fleet = AgentFleet::with_spec(AgentFleetSpec::new(1).with_open_file_limit(AGENT_NOFILE));
    let agent = fleet.agent("a01");
    let address = SocketAddr::V4(agent.listen());

    // The agent raised its own limit at start.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid()))
        .expect("the agent's /proc limits");
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line")
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3], open_files[4],
        "soft limit not raised to the hard limit: {limits}"
    );

    // Silent connections: TCP only, not a byte of TLS. Each is accepted by the agent and waits
    // in a handshake that never comes.
    let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|n| {
            TcpStream::connect_timeout(&address, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("idle connection {n} to {address}: {e}"))
        })
        .collect();

    for run in 0..RUNS {
        let output = fleet.run(fleet.run_args([
            "-g",
            "all",
            "--transport",
            "agent",
            "--connect-timeout",
            CONNECT_TIMEOUT,
            "--json",
            "--",
            "cat /etc/hostname /proc/self/status >/dev/null && ulimit -n",
        ]));
        output.assert_code(EXIT_SUCCESS);
        let records = output.records_by_host();
        let record = expect_outcome(&output, &records, "a01", "succeeded", "agent");
        assert_eq!(
            record.stdout,
            format!("{AGENT_NOFILE}\n"),
            "run {run}: {record:?}"
        );
    }
    let log = agent.log();
    assert!(
        log.contains("the oldest ones were dropped"),
        "the cap never came into play:\n{log}"
    );
    assert!(!log.contains("Too many open files"), "{log}");
    drop(idle);
}

#[test]
fn pki_issue_refuses_a_controller_identity_as_an_agent_name() {
    let fleet = AgentFleet::start(1);
    let pki = fleet.pki().dir().to_str().expect("a UTF-8 path");
    for name in ["volley-controller", "Volley-Controller"] {
        let output = fleet.run(["pki", "issue", "--pki", pki, name]);
        output.assert_code(EXIT_USAGE);
        assert_eq!(
            output.stderr,
            format!(
                "volley: '{name}' is a controller identity: an agent certificate must not carry \
                 it (agents would take the name for a controller's); give the host another name\n"
            )
        );
        assert!(!fleet.pki().certificate(name).exists(), "{name} was issued");
    }
}
