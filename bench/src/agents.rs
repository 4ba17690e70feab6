//! The agent benchmark: N local `volley-agent` processes next to an N-host sshd fleet, and
//! `volley run` on all N through each transport, side by side in one run.
//!
//! Prints, per transport, the wall time, the controller's CPU time and peak RSS (median of the
//! rounds), the ratio SSH / agent, and every agent's resident memory when idle: after start-up
//! and again after the runs (mean and max).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use volley_tests::agents::Binaries;
use volley_tests::volley::volley_command_at;
use volley_tests::{AgentFleet, AgentFleetSpec, SshFleet};

use crate::cost::{Cost, measure, status_kib};

/// What the agent benchmark runs.
pub struct AgentOptions {
    pub volley: PathBuf,
    pub agent: PathBuf,
    pub hosts: usize,
    pub rounds: usize,
    pub command: String,
}

/// Flags common to both transports: every host at once, limits that never bind.
const RUN_FLAGS: [&str; 8] = [
    "-g",
    "all",
    "-p",
    "2000",
    "--connect-timeout",
    "60s",
    "--timeout",
    "120s",
];

pub fn run(options: &AgentOptions) {
    let n = options.hosts;
    println!("starting {n} sshd-backed hosts on loopback...");
    let started = Instant::now();
    let ssh = SshFleet::start(n);
    println!(
        "  ready in {:.1}s ({} sshd processes)",
        started.elapsed().as_secs_f64(),
        n.div_ceil(16)
    );
    println!("starting {n} agents on loopback (PKI by volley pki, one process per host)...");
    let started = Instant::now();
    let agents = AgentFleet::with_spec(AgentFleetSpec::new(n).with_binaries(Binaries {
        volley: options.volley.clone(),
        agent: options.agent.clone(),
    }));
    println!("  ready in {:.1}s\n", started.elapsed().as_secs_f64());
    let idle_at_start = agent_rss(&agents);

    let agent_run = || {
        let mut volley = agents.volley();
        volley.args(agents.run_args(RUN_FLAGS));
        volley.args(["--transport", "agent", "--", &options.command]);
        volley
    };
    let ssh_run = || {
        let mut volley = volley_command_at(&options.volley, ssh.client_home());
        let mut args: Vec<OsString> = ssh.run_args();
        args.extend(RUN_FLAGS.iter().map(OsString::from));
        volley.args(args);
        volley.args(["--transport", "ssh", "--", &options.command]);
        volley
    };
    // Alternating rounds spread any drift of a shared machine over both transports.
    let mut agent_costs = Vec::new();
    let mut ssh_costs = Vec::new();
    for _ in 0..options.rounds {
        agent_costs.push(measure(agent_run()));
        ssh_costs.push(measure(ssh_run()));
    }
    let agent = median(&agent_costs);
    let over_ssh = median(&ssh_costs);

    println!(
        "`{}` on {n} hosts, median of {} rounds:",
        options.command, options.rounds
    );
    println!(
        "{:<10} {:>10} {:>12} {:>14} {:>16}",
        "transport", "wall", "cpu", "cpu/host", "peak rss"
    );
    for (name, cost) in [("agent", agent), ("ssh", over_ssh)] {
        println!(
            "{:<10} {:>9.2}s {:>11.2}s {:>11.3} ms {:>12.1} MiB",
            name,
            cost.wall.as_secs_f64(),
            cost.cpu.as_secs_f64(),
            cost.cpu.as_secs_f64() * 1000.0 / n as f64,
            cost.peak_rss_kib as f64 / 1024.0
        );
    }
    println!(
        "ssh/agent: wall {:.1}x, cpu {:.1}x",
        ratio(over_ssh.wall, agent.wall),
        ratio(over_ssh.cpu, agent.cpu)
    );
    println!(
        "rounds (wall agent / ssh): {}",
        agent_costs
            .iter()
            .zip(&ssh_costs)
            .map(|(a, s)| format!(
                "{:.2}s / {:.2}s",
                a.wall.as_secs_f64(),
                s.wall.as_secs_f64()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let idle_after = agent_rss(&agents);
    println!("\nidle agent RSS (VmRSS), {n} agents:");
    for (when, rss) in [
        ("after start", idle_at_start),
        ("after the runs", idle_after),
    ] {
        println!(
            "  {when:<15} mean {:.2} MiB, max {:.2} MiB",
            mean(&rss) / 1024.0,
            rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0
        );
    }
    let peak: Vec<u64> = agents
        .agents()
        .iter()
        .map(|agent| status_kib(agent.pid(), "VmHWM").unwrap_or(0))
        .collect();
    println!(
        "  peak (VmHWM)    mean {:.2} MiB, max {:.2} MiB",
        mean(&peak) / 1024.0,
        peak.iter().copied().max().unwrap_or(0) as f64 / 1024.0
    );
    println!(
        "\ncpu: the controller's user+system CPU (wait4); peak rss: the controller's VmHWM.\n\
         targets: agent path at least 5x faster than SSH at 500 hosts; idle agent under 10 MiB."
    );
}

/// Every agent's VmRSS in KiB; an agent that died fails the benchmark.
fn agent_rss(agents: &AgentFleet) -> Vec<u64> {
    agents
        .agents()
        .iter()
        .map(|agent| {
            status_kib(agent.pid(), "VmRSS")
                .unwrap_or_else(|| panic!("the agent at {} is gone", agent.listen()))
        })
        .collect()
}

/// The round with the median wall time.
fn median(costs: &[Cost]) -> Cost {
    let mut sorted = costs.to_vec();
    sorted.sort_by_key(|cost| cost.wall);
    sorted[sorted.len() / 2]
}

fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64().max(1e-9)
}

fn mean(values: &[u64]) -> f64 {
    values.iter().sum::<u64>() as f64 / values.len().max(1) as f64
}
