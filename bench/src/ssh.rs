//! The SSH benchmark: `volley run` on one host and on a fleet of real sshd hosts, with and
//! without added round-trip time.
//!
//! For each case (a command, with or without added round-trip time) it runs volley once on one
//! host and once on the whole fleet, and prints the wall time, the controller's CPU time and peak
//! RSS per host, and the ratio of the fleet's wall time to one host's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use volley_tests::inventory::toml_string;
use volley_tests::keys::known_hosts_line;
use volley_tests::volley::volley_command_at;
use volley_tests::{DelayRelay, SshFleet};

use crate::cost::{Cost, measure};

/// What the SSH benchmark runs.
pub struct SshOptions {
    pub volley: PathBuf,
    pub hosts: usize,
    pub rtt: Duration,
    pub commands: Vec<String>,
    pub with_rtt: bool,
    pub without_rtt: bool,
}

/// Times `true` (or `options.commands`) on one host and on the whole fleet, with and without
/// added round-trip time, and prints one line per case.
pub fn run(options: &SshOptions) {
    println!(
        "starting a fleet of {} sshd-backed hosts on loopback...",
        options.hosts
    );
    let started = Instant::now();
    let fleet = SshFleet::start(options.hosts);
    println!(
        "fleet ready in {:.1}s ({} sshd processes)\n",
        started.elapsed().as_secs_f64(),
        options.hosts.div_ceil(16)
    );
    let relay = DelayRelay::new(options.rtt / 2)
        .unwrap_or_else(|e| panic!("cannot start the delay relay: {e}"));
    let delayed = options
        .with_rtt
        .then(|| Target::through_relay(&fleet, &relay));
    let direct = Target::direct(&fleet);

    println!(
        "{:<10} {:>6} {:>6} {:>10} {:>10} {:>7} {:>13} {:>15} {:>13}",
        "command", "rtt", "hosts", "one host", "fleet", "ratio", "cpu/host", "rss/host", "peak rss"
    );
    let mut targets = Vec::new();
    if options.without_rtt {
        targets.push((Duration::ZERO, &direct));
    }
    if let Some(delayed) = &delayed {
        targets.push((relay.added_round_trip(), delayed));
    }
    for command in &options.commands {
        for (rtt, target) in &targets {
            let one = run_volley(
                &options.volley,
                &fleet,
                target,
                fleet.hosts()[0].name.clone(),
                command,
            );
            let all = run_volley(&options.volley, &fleet, target, "@all".to_string(), command);
            let hosts = options.hosts as f64;
            println!(
                "{:<10} {:>4}ms {:>6} {:>9.2}s {:>9.2}s {:>6.2}x {:>10.3} ms {:>11.1} KiB {:>9.1} MiB",
                command,
                rtt.as_millis(),
                options.hosts,
                one.wall.as_secs_f64(),
                all.wall.as_secs_f64(),
                all.wall.as_secs_f64() / one.wall.as_secs_f64(),
                all.cpu.as_secs_f64() * 1000.0 / hosts,
                all.peak_rss_kib.saturating_sub(one.peak_rss_kib) as f64 / hosts,
                all.peak_rss_kib as f64 / 1024.0,
            );
        }
    }
    println!(
        "\ncpu/host: the controller's user+system CPU for the fleet run / hosts.\n\
         rss/host: (the fleet run's peak RSS - the one-host run's) / hosts; peak rss: the fleet run's."
    );
}

/// Where volley is pointed: the inventory and known_hosts of the hosts, directly or through the
/// relay.
struct Target {
    inventory: PathBuf,
    known_hosts: PathBuf,
}

impl Target {
    fn direct(fleet: &SshFleet) -> Target {
        Target {
            inventory: fleet.inventory().to_path_buf(),
            known_hosts: fleet.known_hosts().to_path_buf(),
        }
    }

    /// Routes every host through the delaying relay, on fresh loopback addresses, and writes an
    /// inventory and known_hosts for those addresses.
    fn through_relay(fleet: &SshFleet, relay: &DelayRelay) -> Target {
        let mut inventory = String::from("[groups.all]\nhosts = [");
        let mut known_hosts = String::new();
        let names: Vec<String> = fleet
            .hosts()
            .iter()
            .map(|host| toml_string(&host.name))
            .collect();
        inventory.push_str(&names.join(", "));
        inventory.push_str("]\n");
        for host in fleet.hosts() {
            // The relay's listening address differs from the host's, so the two never collide.
            let octets = host.socket.ip().octets();
            let listen =
                std::net::Ipv4Addr::new(127, octets[1], octets[2].wrapping_add(128), octets[3]);
            let routed = relay
                .route(listen.into(), host.socket.into())
                .unwrap_or_else(|e| panic!("cannot route {listen} to {}: {e}", host.socket));
            let std::net::SocketAddr::V4(routed) = routed else {
                unreachable!("an IPv4 listen address")
            };
            let _ = write!(
                inventory,
                "\n[hosts.{}]\naddress = \"{}\"\nport = {}\n",
                host.name,
                routed.ip(),
                routed.port()
            );
            let key = host
                .host_key
                .as_ref()
                .expect("every host of a normal fleet has a key");
            let _ = writeln!(known_hosts, "{}", known_hosts_line(routed, key));
        }
        let dir = fleet.dir();
        let target = Target {
            inventory: dir.join("relayed.toml"),
            known_hosts: dir.join("relayed_known_hosts"),
        };
        std::fs::write(&target.inventory, inventory).expect("the fleet's directory is writable");
        std::fs::write(&target.known_hosts, known_hosts)
            .expect("the fleet's directory is writable");
        target
    }
}

fn run_volley(
    volley: &Path,
    fleet: &SshFleet,
    target: &Target,
    targets: String,
    command: &str,
) -> Cost {
    let mut process = volley_command_at(volley, fleet.client_home());
    process
        .arg("run")
        .arg("--inventory")
        .arg(&target.inventory)
        .arg("--known-hosts")
        .arg(&target.known_hosts)
        .arg("-i")
        .arg(fleet.client_key().path())
        .args([
            "-l",
            fleet.user(),
            "-p",
            "2000",
            "--connect-timeout",
            "60s",
            "--timeout",
            "120s",
            "-w",
        ])
        .arg(targets)
        .arg("--")
        .arg(command);
    measure(process)
}
