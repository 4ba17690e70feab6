//! `volley-bench`: times `volley run` on a local fleet of real sshd hosts.
//!
//! For each case (a command, with or without added round-trip time) it runs volley once on one
//! host and once on the whole fleet, and prints the wall time, the controller's CPU time and peak
//! RSS per host, and the ratio of the fleet's wall time to one host's. Figures are printed, never
//! asserted: these machines are shared and noisy. All traffic stays on loopback.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use volley_tests::inventory::toml_string;
use volley_tests::keys::known_hosts_line;
use volley_tests::{DelayRelay, SshFleet};

/// What one volley process cost.
#[derive(Clone, Copy, Debug)]
struct Cost {
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
}

struct Options {
    volley: PathBuf,
    hosts: usize,
    rtt: Duration,
    commands: Vec<String>,
    with_rtt: bool,
    without_rtt: bool,
}

fn main() {
    let options = match parse_args(std::env::args_os().skip(1).collect()) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("volley-bench: {message}");
            std::process::exit(64);
        }
    };
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
    let mut process = Command::new(volley);
    process
        .env("HOME", fleet.client_home())
        .env_remove("SSH_AUTH_SOCK")
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
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    // Reaped by wait4 below, which std's Child cannot do while also reporting CPU time.
    #[allow(clippy::zombie_processes)]
    let child = process
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", volley.display()));
    let pid = child.id();
    let peak = watch_peak_rss(pid);
    // The summary is small; read it before reaping so the pipe never fills.
    let stderr =
        std::io::read_to_string(child.stderr.expect("stderr is piped")).unwrap_or_default();
    let (status, cpu) = wait_with_cpu(pid);
    let wall = started.elapsed();
    let peak_rss_kib = peak.join().unwrap_or(0);
    if status != 0 {
        eprintln!("volley exited with status {status}; its stderr:\n{stderr}");
        std::process::exit(1);
    }
    Cost {
        wall,
        cpu,
        peak_rss_kib,
    }
}

/// Polls the child's high-water RSS (VmHWM) until it exits, and returns the last value read.
/// `ru_maxrss` cannot serve: Linux carries the forking parent's peak into it across exec.
fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let path = format!("/proc/{pid}/status");
        let mut peak = 0;
        // Bounded like every load loop here: at most 10 minutes of 10 ms polls.
        for _ in 0..60_000 {
            let Ok(status) = std::fs::read_to_string(&path) else {
                break;
            };
            let hwm = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok());
            match hwm {
                Some(hwm) => peak = hwm,
                // A zombie has no memory left to report; its peak was read before.
                None => break,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    })
}

/// Reaps `pid` and returns its exit status (or 128 + signal) with its user+system CPU time,
/// which std's `wait` does not report.
fn wait_with_cpu(pid: u32) -> (i32, Duration) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    #[allow(unsafe_code)]
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; `status` and `usage` are valid for writes.
    #[allow(unsafe_code)]
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(
        reaped,
        pid,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (code, time(usage.ru_utime) + time(usage.ru_stime))
}

fn parse_args(args: Vec<OsString>) -> Result<Options, String> {
    let mut options = Options {
        volley: PathBuf::from("target/release/volley"),
        hosts: 200,
        rtt: Duration::from_millis(50),
        commands: Vec::new(),
        with_rtt: true,
        without_rtt: true,
    };
    let mut args = args
        .into_iter()
        .map(|arg| arg.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--volley" => options.volley = PathBuf::from(value("--volley")?),
            "--hosts" => {
                options.hosts = value("--hosts")?
                    .parse()
                    .map_err(|_| "--hosts takes a number")?
            }
            "--rtt-ms" => {
                let ms: u64 = value("--rtt-ms")?
                    .parse()
                    .map_err(|_| "--rtt-ms takes a number")?;
                options.rtt = Duration::from_millis(ms);
            }
            "--command" => options.commands.push(value("--command")?),
            "--no-rtt" => options.with_rtt = false,
            "--only-rtt" => options.without_rtt = false,
            other => return Err(format!("unknown argument '{other}' (see bench/ssh.sh)")),
        }
    }
    if options.hosts == 0 || options.hosts > 4000 {
        return Err("--hosts must be between 1 and 4000".to_string());
    }
    if options.commands.is_empty() {
        options.commands = vec!["true".to_string(), "sleep 2".to_string()];
    }
    Ok(options)
}
