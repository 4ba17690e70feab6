//! `volley demo`: a throwaway local fleet of real agents, and a run on it through the agent
//! transport.
//!
//! In a temporary directory: a fresh PKI, one certificate and config per agent, N `volley-agent`
//! processes each on its own loopback address, and an inventory naming them. Then `volley run`
//! (this same binary, as a child) runs the command on all of them, streaming and then gathered.
//! Everything is stopped and removed at the end, also when a step fails.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::cli::DemoArgs;
use crate::pki::{DEFAULT_IDENTITY, Pki};
use crate::plan::DEFAULT_AGENT_PORT;

const DEFAULT_COMMAND: &str = "echo \"hello from $(hostname) via volley-agent $PPID\"";
const GATHERED_COMMAND: &str = "uname -sr";
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The agents of the demo, killed when dropped.
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for agent in &mut self.0 {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    if args.hosts == 0 || args.hosts > 2000 {
        return Err(crate::UsageError("--hosts: between 1 and 2000".to_string()).into());
    }
    let volley = std::env::current_exe().context("cannot find the volley binary's own path")?;
    let agent_binary = volley.with_file_name("volley-agent");
    if !agent_binary.is_file() {
        anyhow::bail!(
            "{} is missing: build it with cargo build -p volley-agent",
            agent_binary.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("volley-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let pki = Pki::new(dir.path().join("pki"));
    pki.init(DEFAULT_IDENTITY)?;

    say!(
        "volley demo: starting {} agents on loopback addresses (PKI and configs in {})",
        args.hosts,
        dir.path().display()
    );
    let addresses = free_addresses(args.hosts)?;
    let width = args.hosts.to_string().len().max(2);
    let mut inventory = String::from("transport = \"agent\"\n[groups.demo]\nhosts = [");
    let mut agents = Agents(Vec::new());
    for (index, address) in addresses.iter().enumerate() {
        let name = format!("agent{:0width$}", index + 1);
        let _ = write!(
            inventory,
            "{}\"{name}\"",
            if index == 0 { "" } else { ", " }
        );
        agents.0.push(start_agent(
            &agent_binary,
            &pki,
            dir.path(),
            &name,
            *address,
        )?);
    }
    inventory.push_str("]\n");
    for (index, address) in addresses.iter().enumerate() {
        let name = format!("agent{:0width$}", index + 1);
        let _ = write!(
            inventory,
            "\n[hosts.{name}]\naddress = \"{}\"\nagent_port = {}\n",
            address.ip(),
            address.port()
        );
    }
    let inventory_path = dir.path().join("inventory.toml");
    std::fs::write(&inventory_path, inventory).context("cannot write the demo inventory")?;
    wait_ready(&addresses, &mut agents)?;

    let custom = !args.command.is_empty();
    let command = if custom {
        args.command.join(" ")
    } else {
        DEFAULT_COMMAND.to_string()
    };
    let run = |extra: &[&str], command: &str| -> anyhow::Result<u8> {
        say!("\n$ volley run -g demo {} -- {command}", extra.join(" "));
        let status = Command::new(&volley)
            // The demo's runs are journalled with the rest of the throwaway fleet, not among
            // the operator's own runs.
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .arg("run")
            .arg("--inventory")
            .arg(&inventory_path)
            .arg("--pki")
            .arg(&pki.dir)
            .args(["-g", "demo"])
            .args(extra)
            .arg("--")
            .arg(command)
            .status()
            .context("cannot run volley")?;
        Ok(status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .unwrap_or(crate::exit::INTERNAL))
    };
    let mut status = run(&[], &command)?;
    if !custom {
        // The same fleet again, gathered: identical output is printed once, as `clush -b` does.
        status = status.max(run(&["--gather"], GATHERED_COMMAND)?);
    }
    drop(agents);
    say!(
        "\nvolley demo: stopped the agents and removed {}",
        dir.path().display()
    );
    Ok(status)
}

/// `count` loopback addresses on which the agent port is free, in a /16 of 127.0.0.0/8 picked
/// from the clock so that two demos at once rarely meet.
fn free_addresses(count: usize) -> anyhow::Result<Vec<SocketAddrV4>> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    let second = 100 + (seed % 100) as u8;
    let mut addresses = Vec::with_capacity(count);
    for n in 0..u32::try_from(count * 2).unwrap_or(u32::MAX) {
        if addresses.len() == count {
            break;
        }
        let ip = Ipv4Addr::new(127, second, (n / 250) as u8, (n % 250 + 1) as u8);
        let address = SocketAddrV4::new(ip, DEFAULT_AGENT_PORT);
        if TcpListener::bind(address).is_ok() {
            addresses.push(address);
        }
    }
    anyhow::ensure!(
        addresses.len() == count,
        "could not find {count} free loopback addresses for the demo"
    );
    Ok(addresses)
}

fn start_agent(
    binary: &Path,
    pki: &Pki,
    dir: &Path,
    name: &str,
    address: SocketAddrV4,
) -> anyhow::Result<Child> {
    let issued = pki.issue_agent(name, &[std::net::IpAddr::V4(*address.ip())])?;
    let config = dir.join(format!("{name}.toml"));
    let text = format!(
        "listen = \"{address}\"\ncertificate = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nallowed_controllers = [\"{DEFAULT_IDENTITY}\"]\n",
        issued.certificate.display(),
        issued.key.display(),
        pki.ca_certificate().display()
    );
    std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))
        .context("cannot create an agent log")?;
    Command::new(binary)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

/// Waits (bounded) until every agent accepts connections; an agent that exits fails the demo
/// with its log's path.
fn wait_ready(addresses: &[SocketAddrV4], agents: &mut Agents) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    for (address, agent) in addresses.iter().zip(agents.0.iter_mut()) {
        loop {
            if TcpStream::connect_timeout(&(*address).into(), Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = agent.try_wait() {
                anyhow::bail!(
                    "the agent at {address} exited ({status}); see its log next to its config"
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the agent at {address} did not start listening within {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}
