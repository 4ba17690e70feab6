//! The push benchmark: one file to N isolated SSH hosts and N isolated agents with `volley
//! push`, and the same bytes sent by `volley run --stdin FILE -- 'cat > PATH'` for comparison.
//!
//! Every host runs in a mount namespace of its own with its own tmpfs (see
//! `volley_tests::isolation`), so each one really receives and writes the file. Every round
//! pushes new random content, so every host changes; a last run pushes the same content again
//! to time a fleet that is already up to date. Prints, per case, the wall time, the controller's
//! CPU time (per host) and peak RSS, and the CPU the servers spent (the agents, or the sshd
//! processes with their sessions) and the whole machine, median of the rounds, and each round's
//! figures as it ends: on a 2-core machine the wall time cannot go below the machine's CPU over
//! two.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use volley_tests::agents::Binaries;
use volley_tests::hybrid::{InventoryHost, inventory_text};
use volley_tests::isolation::Isolation;
use volley_tests::volley::volley_command_at;
use volley_tests::{AgentFleet, AgentFleetSpec, FleetSpec, SshFleet};

use crate::cost::{Cost, measure};

/// What the push benchmark runs.
pub struct PushOptions {
    pub volley: PathBuf,
    pub agent: PathBuf,
    pub hosts: usize,
    pub rounds: usize,
    pub size: usize,
    /// `agent`, `ssh`, or both.
    pub transports: Vec<&'static str>,
}

/// Every host at once, limits that never bind.
const RUN_FLAGS: [&str; 7] = [
    "-p",
    "2000",
    "--connect-timeout",
    "60s",
    "--timeout",
    "300s",
    "--json",
];

struct Bench<'a> {
    options: &'a PushOptions,
    ssh: SshFleet,
    agents: AgentFleet,
    inventory: PathBuf,
    local: PathBuf,
    remote: PathBuf,
}

impl Bench<'_> {
    /// `volley SUBCOMMAND` on the hosts of `transport` (SSH hosts `h...`, agents `a...`), with
    /// `extra` after the common flags.
    fn volley(&self, subcommand: &str, transport: &str, extra: &[OsString]) -> Command {
        let flags = volley_tests::RunFlags {
            inventory: self.inventory.clone(),
            pki: Some(self.agents.pki().dir().to_path_buf()),
            ..self.ssh.flags()
        };
        let mut args = flags.args_of(subcommand, RUN_FLAGS);
        let others = if transport == "agent" { "h*" } else { "a*" };
        args.extend(["-g", "all", "-x", others, "--transport", transport].map(OsString::from));
        args.extend(extra.iter().cloned());
        let mut command = volley_command_at(&self.options.volley, self.ssh.client_home());
        command.args(args);
        command
    }

    fn push(&self, transport: &str) -> Command {
        let paths = [self.local.clone().into(), self.remote.clone().into()];
        self.volley("push", transport, &paths)
    }

    fn cat(&self, transport: &str) -> Command {
        let extra = [
            "--stdin".into(),
            self.local.clone().into(),
            "--".into(),
            format!("cat > {}", self.remote.display()).into(),
        ];
        self.volley("run", transport, &extra)
    }

    /// New random content in the local file, so that every host differs.
    fn new_content(&self) -> Vec<u8> {
        let mut content = Vec::with_capacity(self.options.size);
        std::fs::File::open("/dev/urandom")
            .and_then(|random| {
                random
                    .take(self.options.size as u64)
                    .read_to_end(&mut content)
            })
            .expect("read /dev/urandom");
        std::fs::write(&self.local, &content).expect("write the local file");
        content
    }

    /// Fails the benchmark unless every host of `transport` holds `content`: its figures would
    /// mean nothing.
    fn check(&self, case: &str, transport: &str, content: &[u8]) {
        let files: Vec<_> = if transport == "agent" {
            let hosts = self.agents.hosts().iter();
            hosts.map(|h| self.agents.files(&h.name)).collect()
        } else {
            self.ssh
                .hosts()
                .iter()
                .map(|h| self.ssh.files(&h.name))
                .collect()
        };
        let wrong = files
            .iter()
            .filter(|files| files.read(&self.remote).as_deref() != Some(content))
            .count();
        assert_eq!(
            wrong, 0,
            "{case}: {wrong} hosts do not hold the pushed file"
        );
    }

    /// The pids of the servers of `transport`'s hosts.
    fn servers(&self, transport: &str) -> Vec<u32> {
        if transport == "agent" {
            self.agents
                .agents()
                .iter()
                .map(|agent| agent.pid())
                .collect()
        } else {
            let hosts = self.ssh.hosts().iter();
            hosts.map(|host| self.ssh.files(&host.name).pid).collect()
        }
    }

    /// Runs `command` once, with the CPU its servers, and the whole machine, spent meanwhile.
    fn once(&self, transport: &str, command: Command) -> Round {
        let servers = self.servers(transport);
        let before = cpu_of(&servers);
        // Read right around the run, so that reading the servers' CPU is not counted in it.
        let machine = machine_busy();
        let cost = measure(command);
        let machine = machine_busy().saturating_sub(machine);
        Round {
            cost,
            servers: cpu_of(&servers).saturating_sub(before),
            machine,
        }
    }

    /// Runs `command` on fresh content `rounds` times; the median by wall time.
    fn time(&self, case: &str, transport: &str, command: impl Fn() -> Command) -> Round {
        let mut costs = Vec::new();
        for round in 1..=self.options.rounds {
            let content = self.new_content();
            let measured = self.once(transport, command());
            let Round {
                cost,
                servers,
                machine,
            } = measured;
            println!(
                "  {case}, round {round}: {:.2}s wall, {:.2}s cpu, {:.2}s server cpu, \
                 {:.2}s machine cpu",
                cost.wall.as_secs_f64(),
                cost.cpu.as_secs_f64(),
                servers.as_secs_f64(),
                machine.as_secs_f64()
            );
            costs.push(measured);
            self.check(case, transport, &content);
        }
        costs.sort_by_key(|round| round.cost.wall);
        costs[costs.len() / 2]
    }
}

/// What one run of a case cost.
#[derive(Clone, Copy)]
struct Round {
    cost: Cost,
    /// The CPU the servers (agents, or sshd processes and their sessions) spent meanwhile.
    servers: Duration,
    /// All busy CPU of the machine meanwhile.
    machine: Duration,
}

pub fn run(options: &PushOptions) {
    let n = options.hosts;
    let mount_point = tempfile::Builder::new()
        .prefix("volley-bench-push-")
        .tempdir()
        .expect("a mount point");
    let isolation = Isolation {
        mount_point: mount_point.path().to_path_buf(),
        size: format!("{}k", (options.size * 3).div_ceil(1024) + 1024),
    };
    let on = |transport| options.transports.contains(&transport);
    let ssh_hosts = if on("ssh") { n } else { 0 };
    let agent_hosts = if on("agent") { n } else { 0 };
    println!("starting {ssh_hosts} isolated sshd hosts (one sshd and one tmpfs each)...");
    let started = Instant::now();
    let ssh = SshFleet::with_spec(FleetSpec::new(ssh_hosts).isolated(isolation.clone()));
    println!("  ready in {:.1}s", started.elapsed().as_secs_f64());
    println!("starting {agent_hosts} isolated agents (one tmpfs each)...");
    let started = Instant::now();
    let agents = AgentFleet::with_spec(
        AgentFleetSpec::new(agent_hosts)
            .isolated(isolation)
            .with_binaries(Binaries {
                volley: options.volley.clone(),
                agent: options.agent.clone(),
            }),
    );
    println!("  ready in {:.1}s\n", started.elapsed().as_secs_f64());
    let mut entries: Vec<InventoryHost> = ssh.hosts().iter().map(InventoryHost::ssh).collect();
    entries.extend(agents.hosts().iter().map(InventoryHost::agent));
    let inventory = ssh.dir().join("bench.toml");
    std::fs::write(&inventory, inventory_text(&entries)).expect("write the inventory");
    let bench = Bench {
        options,
        local: ssh.dir().join("payload.bin"),
        remote: mount_point.path().join("payload.bin"),
        ssh,
        agents,
        inventory,
    };

    let mut rows: Vec<(String, Option<Round>)> = Vec::new();
    for &transport in &options.transports {
        let case = format!("push over {transport}");
        let pushed = bench.time(&case, transport, || bench.push(transport));
        rows.push((format!("push, {transport}"), Some(pushed)));
        // The same content again: every host is already up to date.
        let again = bench.once(transport, bench.push(transport));
        rows.push((format!("push unchanged, {transport}"), Some(again)));
    }
    let stdin = has_stdin(&options.volley);
    for &transport in &options.transports {
        let case = format!("run --stdin 'cat >', {transport}");
        let cost = stdin.then(|| bench.time(&case, transport, || bench.cat(transport)));
        rows.push((case, cost));
    }

    println!(
        "{} of random bytes to {n} hosts per transport, median of {} rounds:",
        size_text(options.size),
        options.rounds
    );
    println!(
        "{:<30} {:>9} {:>10} {:>13} {:>12} {:>12} {:>12}",
        "case", "wall", "cpu", "cpu/host", "peak rss", "server cpu", "machine cpu"
    );
    for (case, cost) in &rows {
        match cost {
            Some(Round {
                cost,
                servers,
                machine,
            }) => println!(
                "{case:<30} {:>8.2}s {:>9.2}s {:>10.3} ms {:>8.1} MiB {:>11.2}s {:>11.2}s",
                cost.wall.as_secs_f64(),
                cost.cpu.as_secs_f64(),
                cost.cpu.as_secs_f64() * 1000.0 / n as f64,
                cost.peak_rss_kib as f64 / 1024.0,
                servers.as_secs_f64(),
                machine.as_secs_f64()
            ),
            None => println!("{case:<30} n/a: this volley run has no --stdin FILE (issue 10)"),
        }
    }
    println!(
        "\ncpu: the controller's user+system CPU (wait4); peak rss: the controller's VmHWM;\n\
         server cpu: what the agents, or the sshd processes and their sessions, spent meanwhile;\n\
         machine cpu: all busy CPU time of the machine meanwhile (/proc/stat, without steal).\n\
         target: the agent push of 1 MiB to 500 hosts in under 2 s."
    );
    println!("load average at the end: {}", load_average());
}

/// Whether `volley run` takes `--stdin FILE`.
fn has_stdin(volley: &Path) -> bool {
    Command::new(volley)
        .args(["run", "--help"])
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("--stdin"))
}

fn size_text(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// The machine's busy CPU time so far: every CPU's user, nice, system, irq and softirq time
/// from /proc/stat (not idle, iowait or steal).
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let ticks: u64 = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|fields| {
            let fields: Vec<u64> = fields
                .split_whitespace()
                .map(|field| field.parse().unwrap_or(0))
                .collect();
            [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum()
        })
        .expect("/proc/stat starts with the cpu line");
    Duration::from_secs_f64(ticks as f64 / clock_ticks())
}

/// User and system CPU of `pids` and of the children they reaped (an sshd's sessions), from
/// /proc/PID/stat.
fn cpu_of(pids: &[u32]) -> Duration {
    let ticks = clock_ticks();
    let total: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // The fields after the command name, which is in parentheses and may hold spaces.
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .map(|field| field.parse().unwrap_or(0))
                .collect();
            // utime, stime, cutime, cstime: fields 14 to 17 of the line, 12 to 15 here.
            Some(fields.get(11..15)?.iter().sum::<u64>())
        })
        .sum();
    Duration::from_secs_f64(total as f64 / ticks)
}

/// Clock ticks per second, as /proc counts CPU time; asked of `getconf` once, not in the middle
/// of a measurement.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_string())
}
