//! Handshake admission: `--max-handshakes N` lets N hosts connect at once, and a host's connect
//! timeout counts from when its turn comes, not from the start of the run; hosts whose server
//! never speaks do not hold turns that live hosts wait for.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use volley_tests::hybrid::{InventoryHost, inventory_text};
use volley_tests::keys::known_hosts_line;
use volley_tests::{DelayRelay, FleetSpec, SshFleet, StallingPort};

use crate::{EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome};

/// Eight hosts 200 ms away, two handshakes at a time: four turns of several round trips each
/// take longer than the connect timeout, and still no host times out. With every handshake at
/// once the run would take one turn, well under it.
#[test]
fn handshakes_take_turns_and_each_hosts_timeout_starts_with_its_turn() {
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    let fleet = SshFleet::with_spec(FleetSpec::new(8));
    let relay = DelayRelay::new(Duration::from_millis(100)).expect("the delay relay");
    let mut hosts = Vec::new();
    let mut known_hosts = String::new();
    for host in fleet.hosts() {
        // The relay listens on another address than the host's, so that the two never collide.
        let octets = host.socket.ip().octets();
        let listen = Ipv4Addr::new(127, octets[1], octets[2].wrapping_add(128), octets[3]);
        let SocketAddr::V4(routed) = relay
            .route(listen.into(), host.socket.into())
            .expect("a route through the relay")
        else {
            unreachable!("an IPv4 listen address")
        };
        hosts.push(InventoryHost {
            name: host.name.clone(),
            address: *routed.ip(),
            port: Some(routed.port()),
            agent_port: None,
        });
        let key = host.host_key.as_ref().expect("every host has a key");
        let _ = writeln!(known_hosts, "{}", known_hosts_line(routed, key));
    }
    let mut flags = fleet.flags();
    flags.inventory = fleet.dir().join("delayed.toml");
    flags.known_hosts = fleet.dir().join("delayed_known_hosts");
    std::fs::write(&flags.inventory, inventory_text(&hosts)).unwrap();
    std::fs::write(&flags.known_hosts, known_hosts).unwrap();

    let names: Vec<&str> = hosts.iter().map(|host| host.name.as_str()).collect();
    let timeout = format!("{}s", CONNECT_TIMEOUT.as_secs());
    let started = Instant::now();
    let output = fleet.run(flags.args([
        "-w",
        &names.join(","),
        "--max-handshakes",
        "2",
        "--connect-timeout",
        &timeout,
        "--json",
        "--",
        "true",
    ]));
    let took = started.elapsed();
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        expect_outcome(&output, &records, &host.name, "succeeded");
    }
    assert!(
        took > CONNECT_TIMEOUT,
        "two handshakes at a time through a 200 ms round trip should outlast the connect \
         timeout ({CONNECT_TIMEOUT:?}), took {took:?}"
    );
}

/// Twelve hosts whose server takes the connection and never speaks (a hung sshd), four
/// handshakes at a time. The silent hosts cost no CPU while they wait, so they lend their turns
/// (after a second each): the live hosts run long before the silent ones' connect timeout,
/// whichever took the turns first, instead of after it.
#[test]
fn servers_that_never_speak_do_not_hold_live_hosts_back() {
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(12);
    let fleet = SshFleet::start(4);
    let silent: Vec<StallingPort> = (0..12)
        .map(|_| StallingPort::start(usize::MAX, fleet.host("h01").socket))
        .collect();
    let entry = |name: String, socket: std::net::SocketAddrV4| InventoryHost {
        name,
        address: *socket.ip(),
        port: Some(socket.port()),
        agent_port: None,
    };
    let mut hosts: Vec<InventoryHost> = silent
        .iter()
        .enumerate()
        .map(|(n, port)| entry(format!("a{:02}", n + 1), port.socket()))
        .collect();
    hosts.extend(
        fleet
            .hosts()
            .iter()
            .map(|host| entry(host.name.clone(), host.socket)),
    );
    let mut flags = fleet.flags();
    flags.inventory = fleet.dir().join("silent.toml");
    std::fs::write(&flags.inventory, inventory_text(&hosts)).unwrap();

    let timeout = format!("{}s", CONNECT_TIMEOUT.as_secs());
    let output = fleet.run(flags.args([
        "-w",
        "a[01-12],h[01-04]",
        "--max-handshakes",
        "4",
        "--connect-timeout",
        &timeout,
        "--json",
        "--",
        "true",
    ]));
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    for n in 1..=12 {
        expect_outcome(&output, &records, &format!("a{n:02}"), "connect_timeout");
    }
    // Without lending, a live host behind four silent ones would wait out their timeout.
    let limit = CONNECT_TIMEOUT.as_millis() as f64;
    for host in fleet.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "succeeded");
        assert!(
            record.total_ms < limit,
            "{} waited for the silent hosts' timeout: {record:?}",
            host.name
        );
    }
}
