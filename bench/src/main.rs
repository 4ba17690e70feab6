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
//! - [`cost`]: what one volley process cost (wall, CPU, peak RSS).

mod agents;
mod cost;
mod push;
mod ssh;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::agents::AgentOptions;
use crate::push::PushOptions;
use crate::ssh::SshOptions;

enum Mode {
    Ssh(SshOptions),
    Agents(AgentOptions),
    Push(PushOptions),
}

fn main() {
    match parse_args(std::env::args_os().skip(1).collect()) {
        Ok(Mode::Ssh(options)) => ssh::run(&options),
        Ok(Mode::Agents(options)) => agents::run(&options),
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
                    "unknown argument '{other}' (see bench/ssh.sh, bench/agents.sh and bench/push.sh)"
                ));
            }
        }
    }
    let hosts = hosts.unwrap_or(if agents || pushes { 500 } else { 200 });
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
