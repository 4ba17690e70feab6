//! The admission benchmark: `volley run -p N` on N sshd hosts with every handshake started at
//! once (`--max-handshakes N`, which is what volley did before handshake admission) and with
//! the adaptive default, first on the plain fleet, then on the same fleet made CPU-limited
//! (its sshd processes in a cgroup with a CPU quota, so that each handshake takes about 3x
//! longer). Prints, per case, the outcomes per kind and the wall time.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use volley_tests::SshFleet;
use volley_tests::volley::volley_command_at;

use crate::cgroup::CpuLimit;
use crate::cost::{load, run};

/// What the admission benchmark runs.
pub struct AdmissionOptions {
    pub volley: PathBuf,
    pub hosts: usize,
    pub connect_timeout: Duration,
    /// The CPU quota of the limited fleet, in CPUs.
    pub sshd_cpus: f64,
}

/// How many times a lone handshake is timed; the median is shown.
const LONE_RUNS: usize = 5;

/// How long the fleet gets to finish with the connections of a run before the next one.
const IDLE_WITHIN: Duration = Duration::from_secs(180);

pub fn run_benchmark(options: &AdmissionOptions) {
    let n = options.hosts;
    println!("starting {n} sshd-backed hosts on loopback...");
    let started = Instant::now();
    let fleet = SshFleet::start(n);
    println!(
        "  ready in {:.1}s ({} sshd processes)",
        started.elapsed().as_secs_f64(),
        fleet.sshd_pids().len()
    );
    let timeout = format!("{}ms", options.connect_timeout.as_millis());
    let lone_plain = lone_handshake(options, &fleet);

    println!(
        "\n`true` on {n} hosts, -p {n}, --connect-timeout {timeout}; load before: {}",
        load()
    );
    println!(
        "{:<12} {:<12} {:>8} {:>16} {:>9}  outcomes",
        "fleet", "handshakes", "wall", "slowest connect", "peak fds"
    );
    let mut walls = Vec::new();
    for (label, limit) in cases(n) {
        let ran = fleet_run(options, &fleet, limit);
        report("plain", label, &ran);
        walls.push(ran.wall);
    }

    let limit = CpuLimit::create(
        &format!("volley-bench-{}", std::process::id()),
        options.sshd_cpus,
    )
    .unwrap_or_else(|e| {
        eprintln!("volley-bench: cannot make a CPU-limited fleet: {e}");
        std::process::exit(1);
    });
    for pid in fleet.sshd_pids() {
        limit.add(pid).unwrap_or_else(|e| {
            eprintln!("volley-bench: {e}");
            std::process::exit(1);
        });
    }
    let lone_limited = lone_handshake(options, &fleet);
    for (label, handshakes) in cases(n) {
        let ran = fleet_run(options, &fleet, handshakes);
        report("cpu-limited", label, &ran);
        walls.push(ran.wall);
    }
    drop(limit);

    println!(
        "\na lone handshake (connect_ms of one host, median of {LONE_RUNS}): plain {:.0} ms, \
         cpu-limited {:.0} ms ({:.1}x; sshd processes limited to {:.2} CPU)",
        lone_plain.as_secs_f64() * 1000.0,
        lone_limited.as_secs_f64() * 1000.0,
        lone_limited.as_secs_f64() / lone_plain.as_secs_f64().max(1e-9),
        options.sshd_cpus
    );
    println!(
        "the fleet's throughput, adaptive runs: plain {:.0} hosts/s, cpu-limited {:.0} hosts/s \
         ({:.1}x slower)",
        n as f64 / walls[1].as_secs_f64(),
        n as f64 / walls[3].as_secs_f64(),
        walls[3].as_secs_f64() / walls[1].as_secs_f64().max(1e-9)
    );
    println!("load after: {}", load());
    println!(
        "\nall at once: --max-handshakes {n} with -p {n}: every handshake starts together, as \
         volley did before admission.\nadaptive: the default (starts at 8, grows while \
         handshakes stay fast, shrinks when they slow down).\nslowest connect: the longest \
         connect_ms of a host that got through, its wait for admission included.\npeak fds: \
         the most descriptors volley held at once (sampled every 50 ms).\ntarget: \
         adaptive ends with 0 connect_timeout where all at once ends with hundreds."
    );
}

/// The two ways of admitting handshakes: all at once, and the adaptive default.
fn cases(n: usize) -> [(&'static str, Option<usize>); 2] {
    [("all at once", Some(n)), ("adaptive", None)]
}

struct FleetRun {
    wall: Duration,
    outcomes: BTreeMap<String, usize>,
    /// The slowest connect phase of a host that got through (admission wait included).
    slowest_connect: Option<Duration>,
    /// The most descriptors volley held at once: admission opens a socket only when it admits.
    peak_fds: u64,
}

fn fleet_run(options: &AdmissionOptions, fleet: &SshFleet, handshakes: Option<usize>) -> FleetRun {
    // A storm leaves sshd processes still working on handshakes whose client has gone; on a
    // CPU-limited fleet they would slow the next run's first handshakes.
    wait_for_idle_fleet(fleet);
    let mut volley = volley_command_at(&options.volley, fleet.client_home());
    volley.args(common_args(options, fleet));
    let n = options.hosts.to_string();
    volley.args(["-p", n.as_str(), "-w", "@all"]);
    if let Some(limit) = handshakes {
        volley.args(["--max-handshakes", &limit.to_string()]);
    }
    volley.args(["--", "true"]);
    let ran = run(volley);
    if !(0..=3).contains(&ran.status) {
        eprintln!(
            "volley exited with status {}; its stderr:\n{}",
            ran.status, ran.stderr
        );
        std::process::exit(1);
    }
    let slowest_connect = ran
        .stdout
        .lines()
        .filter_map(|line| volley_tests::report::parse_record(line).ok()?.connect_ms)
        .max_by(f64::total_cmp)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0));
    FleetRun {
        wall: ran.cost.wall,
        outcomes: ran.outcomes(),
        slowest_connect,
        peak_fds: ran.cost.peak_fds,
    }
}

fn report(fleet: &str, label: &str, ran: &FleetRun) {
    let outcomes: Vec<String> = ran
        .outcomes
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect();
    let slowest = ran
        .slowest_connect
        .map_or_else(|| "-".to_string(), |d| format!("{:.2}s", d.as_secs_f64()));
    println!(
        "{fleet:<12} {label:<12} {:>7.1}s {slowest:>16} {:>9}  {}",
        ran.wall.as_secs_f64(),
        ran.peak_fds,
        outcomes.join(", ")
    );
}

/// The median `connect_ms` of one host run alone, `LONE_RUNS` times.
fn lone_handshake(options: &AdmissionOptions, fleet: &SshFleet) -> Duration {
    wait_for_idle_fleet(fleet);
    let mut times: Vec<f64> = (0..LONE_RUNS)
        .map(|_| {
            let mut volley = volley_command_at(&options.volley, fleet.client_home());
            volley.args(common_args(options, fleet));
            volley.args(["-w", &fleet.hosts()[0].name, "--", "true"]);
            let ran = run(volley);
            let line = ran.stdout.lines().next().unwrap_or_default();
            let record = volley_tests::report::parse_record(line).unwrap_or_else(|problem| {
                eprintln!("one host's run failed ({problem}):\n{}", ran.stderr);
                std::process::exit(1);
            });
            record.connect_ms.unwrap_or_else(|| {
                eprintln!("one host's run did not connect: {line}");
                std::process::exit(1);
            })
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Duration::from_secs_f64(times[LONE_RUNS / 2] / 1000.0)
}

/// Waits until the fleet's sshd listeners have no child left (every connection's process has
/// ended), for at most [`IDLE_WITHIN`]; a fleet that stays busy ends the benchmark.
fn wait_for_idle_fleet(fleet: &SshFleet) {
    let deadline = Instant::now() + IDLE_WITHIN;
    loop {
        let busy: usize = fleet.sshd_pids().into_iter().map(children).sum();
        if busy == 0 {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "volley-bench: the fleet still has {busy} connections' processes after {IDLE_WITHIN:?}"
            );
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many children process `pid` has.
fn children(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map_or(0, |text| text.split_whitespace().count())
}

fn common_args(options: &AdmissionOptions, fleet: &SshFleet) -> Vec<OsString> {
    let mut args = fleet.run_args();
    args.extend(
        [
            "--json",
            "--connect-timeout",
            &format!("{}ms", options.connect_timeout.as_millis()),
            "--timeout",
            "120s",
        ]
        .map(OsString::from),
    );
    args
}
