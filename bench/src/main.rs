//! `volley-bench`: times `volley run` on local fleets: real sshd hosts, and real agents next to
//! them. Figures are printed, never asserted: these machines are shared and noisy. All traffic
//! stays on loopback.
//!
//! - [`ssh`] (the default): one host versus the whole fleet, with and without added round-trip
//!   time (bench/ssh.sh).
//! - [`agents`] (`--agents`): the same N hosts through agents and through SSH, side by side,
//!   and the agents' idle memory (bench/agents.sh).
//! - [`push`] (`--push`): one file to N isolated SSH hosts and N isolated agents with `volley
//!   push`, and the same bytes by `volley run --stdin FILE -- 'cat > PATH'` (bench/push.sh).
//! - [`admission`] (`--admission`): every handshake at once versus adaptive admission, on a
//!   plain and on a CPU-limited sshd fleet ([`cgroup`]) (bench/admission.sh).
//! - [`scale`] (`--scale`): 10,000 hosts through a few agents that each serve many host names
//!   (bench/scale.sh).
//! - [`cost`]: what one volley process cost (wall, CPU, peak RSS, descriptors).

mod admission;
mod agents;
mod cgroup;
mod cost;
mod handshake;
mod push;
mod scale;
mod ssh;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::admission::AdmissionOptions;
use crate::agents::AgentOptions;
use crate::push::PushOptions;
use crate::scale::ScaleOptions;
use crate::ssh::SshOptions;

enum Mode {
    Ssh(SshOptions),
    Agents(AgentOptions),
    Admission(AdmissionOptions),
    Scale(ScaleOptions),
    Push(PushOptions),
}

fn main() {
    match parse_args(std::env::args_os().skip(1).collect()) {
        Ok(Mode::Ssh(options)) => ssh::run(&options),
        Ok(Mode::Agents(options)) => agents::run(&options),
        Ok(Mode::Admission(options)) => admission::run_benchmark(&options),
        Ok(Mode::Scale(options)) => scale::run_benchmark(&options),
        Ok(Mode::Push(options)) => push::run(&options),
        Err(message) => {
            eprintln!("volley-bench: {message}");
            std::process::exit(64);
        }
    }
}

fn parse_args(args: Vec<OsString>) -> Result<Mode, String> {
    let mut volley = PathBuf::from("target/release/volley");
    let mut agent: Option<PathBuf> = None;
    let mut hosts: Option<usize> = None;
    let mut rtt = Duration::from_millis(50);
    let mut commands = Vec::new();
    let mut with_rtt = true;
    let mut without_rtt = true;
    let mut agents = false;
    let mut admission = false;
    let mut scale = false;
    let mut agent_processes = 10;
    let mut baseline = 500;
    let mut held = 2000;
    let mut connect_timeout = Duration::from_secs(5);
    let mut sshd_cpus = 0.5;
    let mut pushes = false;
    let mut transports = vec!["agent", "ssh"];
    let mut size: usize = 1 << 20;
    let mut rounds = 3;
    let mut args = args
        .into_iter()
        .map(|arg| arg.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, text: String| {
            text.parse::<usize>()
                .map_err(|_| format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--volley" => volley = PathBuf::from(value("--volley")?),
            "--agent" => agent = Some(PathBuf::from(value("--agent")?)),
            "--hosts" => hosts = Some(number("--hosts", value("--hosts")?)?),
            "--rounds" => rounds = number("--rounds", value("--rounds")?)?,
            "--rtt-ms" => {
                let ms = number("--rtt-ms", value("--rtt-ms")?)?;
                rtt = Duration::from_millis(ms as u64);
            }
            "--command" => commands.push(value("--command")?),
            "--no-rtt" => with_rtt = false,
            "--only-rtt" => without_rtt = false,
            "--agents" => agents = true,
            "--admission" => admission = true,
            "--scale" => scale = true,
            "--agent-processes" => {
                agent_processes = number("--agent-processes", value("--agent-processes")?)?;
            }
            "--baseline" => baseline = number("--baseline", value("--baseline")?)?,
            "--held" => held = number("--held", value("--held")?)?,
            "--connect-timeout-ms" => {
                let ms = number("--connect-timeout-ms", value("--connect-timeout-ms")?)?;
                connect_timeout = Duration::from_millis(ms as u64);
            }
            "--sshd-cpus" => {
                let text = value("--sshd-cpus")?;
                sshd_cpus = text
                    .parse::<f64>()
                    .ok()
                    .filter(|cpus| (0.1..=64.0).contains(cpus))
                    .ok_or("--sshd-cpus takes a number of CPUs from 0.1 to 64")?;
            }
            "--push" => pushes = true,
            "--size" => size = number("--size", value("--size")?)?,
            "--transport" => {
                transports = match value("--transport")?.as_str() {
                    "agent" => vec!["agent"],
                    "ssh" => vec!["ssh"],
                    _ => return Err("--transport takes agent or ssh".to_string()),
                }
            }
            other => {
                return Err(format!(
                    "unknown argument '{other}' (see the scripts in bench/)"
                ));
            }
        }
    }
    if scale {
        let hosts = hosts.unwrap_or(10_000);
        if !(1..=50_000).contains(&hosts) || agent_processes == 0 || agent_processes > 100 {
            return Err(
                "--scale takes 1 to 50000 --hosts and 1 to 100 --agent-processes".to_string(),
            );
        }
        if baseline == 0 || baseline > hosts {
            return Err("--baseline must be between 1 and --hosts".to_string());
        }
        let agent = agent.unwrap_or_else(|| volley.with_file_name("volley-agent"));
        return Ok(Mode::Scale(ScaleOptions {
            volley,
            agent,
            hosts,
            agents: agent_processes,
            baseline,
            held,
        }));
    }
    let hosts = hosts.unwrap_or(if agents || admission || pushes {
        500
    } else {
        200
    });
    if hosts == 0 || hosts > 4000 {
        return Err("--hosts must be between 1 and 4000".to_string());
    }
    if pushes {
        if rounds == 0 || size == 0 {
            return Err("--rounds and --size must be at least 1".to_string());
        }
        let agent = agent.unwrap_or_else(|| volley.with_file_name("volley-agent"));
        return Ok(Mode::Push(PushOptions {
            volley,
            agent,
            hosts,
            rounds,
            size,
            transports,
        }));
    }
    if admission {
        return Ok(Mode::Admission(AdmissionOptions {
            volley,
            hosts,
            connect_timeout,
            sshd_cpus,
        }));
    }
    if !agents {
        if commands.is_empty() {
            commands = vec!["true".to_string(), "sleep 2".to_string()];
        }
        return Ok(Mode::Ssh(SshOptions {
            volley,
            hosts,
            rtt,
            commands,
            with_rtt,
            without_rtt,
        }));
    }
    if rounds == 0 {
        return Err("--rounds must be at least 1".to_string());
    }
    let command = match &commands[..] {
        [] => "true".to_string(),
        [command] => command.clone(),
        _ => return Err("--agents takes at most one --command".to_string()),
    };
    let agent = agent.unwrap_or_else(|| volley.with_file_name("volley-agent"));
    Ok(Mode::Agents(AgentOptions {
        volley,
        agent,
        hosts,
        rounds,
        command,
    }))
}
