//! The scale rig: thousands of hosts through agents on one machine. A few `volley-agent`
//! processes (10 by default) each serve many hosts: they run in a network namespace of the
//! rig's own that answers on every address of 198.19.0.0/16 ([`Partition::serving_range`]),
//! each listening on `0.0.0.0` on a port of its own, so that every host has an address of its
//! own (`h00001` at 198.19.0.1, ...), as in a real fleet. Every agent's certificate, issued by
//! the rig's CA (made by `volley pki init`), names its share of the hosts. volley makes one TCP
//! connection and one TLS handshake per host and checks each host's name against the
//! certificate it is served, exactly as against a fleet of separate agents.
//!
//! It runs `true` on the first 500 hosts, then on all of them (with the default `-p`, then with
//! every host at once), and `exec sleep 15` on 2000 hosts at once (so that their sessions are all
//! open together: what a connected host costs). It prints for each run the wall time, the
//! controller's CPU per host, its peak RSS and descriptors, the outcomes, and what the journal
//! recorded; then the wall of the big run against the 500-host run scaled by the host count,
//! and the agents' memory.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use volley_tests::Partition;
use volley_tests::agentd::{AgentConfig, AgentLaunch, Agentd, config_text};
use volley_tests::agents::CONTROLLER_IDENTITY;
use volley_tests::inventory::toml_string;
use volley_tests::pki::Pki;
use volley_tests::volley::volley_command_at;

use crate::cost::{Ran, load, run, status_kib};
use crate::handshake;

/// What the scale rig runs.
pub struct ScaleOptions {
    pub volley: PathBuf,
    pub agent: PathBuf,
    pub hosts: usize,
    pub agents: usize,
    /// The small run the big one is compared with.
    pub baseline: usize,
    /// How many hosts hold a session at once in the last run (each runs a sleeping process).
    pub held: usize,
}

/// How long the held sessions last.
const HOLD_SECONDS: u64 = 15;

/// Descriptors the rig needs beyond one per host (volley's own, the agents' pipes).
const FD_MARGIN: u64 = 1024;

/// The first agent's port; the others follow.
const AGENT_PORT: u16 = 7731;

pub fn run_benchmark(options: &ScaleOptions) {
    check_fd_limit(options.hosts as u64 + FD_MARGIN);
    let dir = tempfile::Builder::new()
        .prefix("volley-scale-")
        .tempdir()
        .unwrap_or_else(|e| fail(&format!("cannot make the rig's directory: {e}")));
    let started = Instant::now();
    let rig = Rig::start(options, dir.path());
    println!(
        "{} hosts served by {} agents (one certificate each naming {} hosts) ready in {:.1}s; load {}",
        options.hosts,
        options.agents,
        options.hosts.div_ceil(options.agents),
        started.elapsed().as_secs_f64(),
        load()
    );
    println!(
        "\n{:<14} {:<7} {:>7} {:>8} {:>9} {:>10} {:>10} {:>8}  {:<24} journalled",
        "command", "hosts", "-p", "wall", "cpu", "cpu/host", "peak rss", "peak fds", "outcomes"
    );
    let baseline = rig.run(options.baseline, None, "true");
    let default = rig.run(options.hosts, None, "true");
    let all_at_once = rig.run(options.hosts, Some(options.hosts), "true");
    // Connections held open together: what each costs the controller (`--held 0` skips it).
    let held = options.held.min(options.hosts);
    let holding =
        (held > 0).then(|| rig.run(held, Some(held), &format!("exec sleep {HOLD_SECONDS}")));

    let scaled = baseline.wall.as_secs_f64() * options.hosts as f64 / options.baseline as f64;
    println!(
        "\nwall of {} hosts (default -p) / ({}-host wall x {}): {:.2} (target: at most 2)",
        options.hosts,
        options.baseline,
        options.hosts / options.baseline,
        default.wall.as_secs_f64() / scaled
    );
    for (label, big) in [("default -p", &default), ("all at once", &all_at_once)] {
        println!(
            "{label}: controller cpu {:.3} ms/host (target: at most 0.5), peak rss {:.0} MiB \
             (target: at most 1024), {} descriptors at peak",
            big.cpu_per_host_ms, big.peak_rss_mib, big.peak_fds
        );
    }
    if let Some(holding) = holding {
        let open = holding.peak_fds.saturating_sub(baseline.peak_fds).max(1);
        println!(
            "{held} sessions held: peak rss {:.0} MiB with {} descriptors open at peak: about \
             {:.0} KiB per open connection (peak rss above the {}-host run's, per descriptor \
             above its)",
            holding.peak_rss_mib,
            holding.peak_fds,
            (holding.peak_rss_mib - baseline.peak_rss_mib).max(0.0) * 1024.0 / open as f64,
            options.baseline
        );
    }
    handshake_floor(dir.path(), options.hosts.div_ceil(options.agents));
    let (mean, max) = rig.agents_peak_rss();
    println!(
        "agents' peak RSS (VmHWM): mean {mean:.1} MiB, max {max:.1} MiB, for {} hosts each",
        options.hosts.div_ceil(options.agents)
    );
    println!("load after: {}", load());
    println!(
        "\ncpu/host: the controller's user+system CPU / hosts (wait4). peak rss: its VmHWM. \
         peak fds: the most descriptors it held (sampled every 50 ms).\njournalled: host \
         records / started records (execution ids) in the run's journal."
    );
}

/// The agents, the PKI and the inventory of the rig; the agents are killed on drop, then their
/// namespace goes.
struct Rig {
    agents: Vec<Agentd>,
    _partition: Partition,
    inventory: PathBuf,
    pki: PathBuf,
    client_home: PathBuf,
    volley: PathBuf,
}

/// What one run came to.
struct Figures {
    wall: Duration,
    cpu_per_host_ms: f64,
    peak_rss_mib: f64,
    peak_fds: u64,
}

impl Rig {
    fn start(options: &ScaleOptions, root: &Path) -> Rig {
        let client_home = make_dir(&root.join("client-home"));
        let pki_dir = root.join("pki");
        Pki::init(&options.volley, &client_home, &pki_dir, CONTROLLER_IDENTITY);
        let issuer = issuer(&pki_dir);
        let partition = Partition::serving_range();
        let port = |agent: usize| AGENT_PORT + u16::try_from(agent).expect("a port");
        let names: Vec<String> = (1..=options.hosts).map(|n| format!("h{n:05}")).collect();
        // Host n is served by agent n % agents, so that any run of consecutive hosts spreads
        // over every agent.
        let served_by = |host: usize| host % options.agents;
        let mut agents = Vec::new();
        for index in 0..options.agents {
            let hosts: Vec<&str> = names
                .iter()
                .enumerate()
                .filter(|(host, _)| served_by(*host) == index)
                .map(|(_, name)| name.as_str())
                .collect();
            let (certificate, key) = issue(&issuer, &format!("agent{index:02}"), &hosts);
            let certificate_path = root.join(format!("agent{index:02}.pem"));
            let key_path = root.join(format!("agent{index:02}.key"));
            write(&certificate_path, &certificate, 0o644);
            write(&key_path, &key, 0o600);
            let config = root.join(format!("agent{index:02}.toml"));
            // Every address of the namespace, on the agent's own port.
            let mut text = config_text(&AgentConfig {
                listen: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port(index)),
                certificate: &certificate_path,
                key: &key_path,
                ca: &pki_dir.join("ca.pem"),
                allowed_controllers: &[CONTROLLER_IDENTITY.to_string()],
                push_roots: None,
            });
            // Every host of the agent may run at once.
            let _ = write!(
                text,
                "[limits]\nmax_concurrent_execs = {}\n",
                hosts.len() + 16
            );
            write(&config, &text, 0o644);
            agents.push(Agentd::launch(AgentLaunch {
                netns: Some(partition.name().to_string()),
                ..AgentLaunch::new(
                    &options.agent,
                    &config,
                    // Where readiness is checked: the address of one of its hosts.
                    SocketAddrV4::new(partition.address(index), port(index)),
                    &make_dir(&root.join(format!("agent{index:02}-home"))),
                )
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for agent in &mut agents {
            agent.wait_until_ready(deadline);
        }
        let inventory = root.join("inventory.toml");
        let mut text = String::from("[groups.all]\nhosts = [");
        text.push_str(
            &names
                .iter()
                .map(|name| toml_string(name))
                .collect::<Vec<_>>()
                .join(", "),
        );
        text.push_str("]\n");
        for (host, name) in names.iter().enumerate() {
            let _ = write!(
                text,
                "\n[hosts.{name}]\naddress = \"{}\"\nagent_port = {}\n",
                partition.address(host),
                port(served_by(host))
            );
        }
        write(&inventory, &text, 0o644);
        Rig {
            agents,
            _partition: partition,
            inventory,
            pki: pki_dir,
            client_home,
            volley: options.volley.clone(),
        }
    }

    /// `volley run --transport agent --json -- true` on the first `hosts` hosts, `-p parallel`
    /// (volley's default when `None`); prints its line.
    fn run(&self, hosts: usize, parallel: Option<usize>, command: &str) -> Figures {
        let before = self.journals();
        let mut volley = volley_command_at(&self.volley, &self.client_home);
        volley
            .arg("run")
            .arg("--inventory")
            .arg(&self.inventory)
            .arg("--pki")
            .arg(&self.pki)
            .args(["--transport", "agent", "--json", "--timeout", "60s", "-w"])
            .arg(format!("h[00001-{hosts:05}]"));
        if let Some(parallel) = parallel {
            volley.args(["-p", &parallel.to_string()]);
        }
        volley.args(["--", command]);
        let ran = run(volley);
        let outcomes = outcome_text(&ran);
        let (host_records, started_records) = self.journalled(&before);
        let cost = ran.cost;
        let figures = Figures {
            wall: cost.wall,
            cpu_per_host_ms: cost.cpu.as_secs_f64() * 1000.0 / hosts as f64,
            peak_rss_mib: cost.peak_rss_kib as f64 / 1024.0,
            peak_fds: cost.peak_fds,
        };
        let parallel = parallel.map_or_else(|| "default".to_string(), |p| p.to_string());
        println!(
            "{command:<14} {hosts:<7} {parallel:>7} {:>7.2}s {:>8.2}s {:>7.3} ms {:>6.0} MiB {:>8}  {outcomes:<24} {host_records} / {started_records}",
            cost.wall.as_secs_f64(),
            cost.cpu.as_secs_f64(),
            figures.cpu_per_host_ms,
            figures.peak_rss_mib,
            figures.peak_fds,
        );
        if ran.status != 0 {
            eprintln!(
                "volley exited with status {}; its stderr ends:\n{}",
                ran.status,
                tail(&ran.stderr)
            );
        }
        figures
    }

    /// The journals written so far.
    fn journals(&self) -> Vec<PathBuf> {
        let runs = self.client_home.join(".local/state/volley/runs");
        match std::fs::read_dir(&runs) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Host and started records in the one journal that is not among `before`.
    fn journalled(&self, before: &[PathBuf]) -> (usize, usize) {
        let new: Vec<PathBuf> = self
            .journals()
            .into_iter()
            .filter(|path| !before.contains(path))
            .collect();
        let [journal] = &new[..] else {
            fail(&format!("volley wrote {} journals, not one", new.len()));
        };
        let text = std::fs::read_to_string(journal)
            .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", journal.display())));
        let count = |kind: &str| {
            let tag = format!("{{\"type\":\"{kind}\"");
            text.lines().filter(|line| line.starts_with(&tag)).count()
        };
        (count("host"), count("started"))
    }

    /// Mean and max of the agents' peak RSS, in MiB.
    fn agents_peak_rss(&self) -> (f64, f64) {
        let peaks: Vec<f64> = self
            .agents
            .iter()
            .map(|agent| status_kib(agent.pid(), "VmHWM").unwrap_or(0) as f64 / 1024.0)
            .collect();
        let mean = peaks.iter().sum::<f64>() / peaks.len().max(1) as f64;
        (mean, peaks.iter().copied().fold(0.0, f64::max))
    }
}

/// `9990 succeeded, 10 transport_error`.
fn outcome_text(ran: &Ran) -> String {
    ran.outcomes()
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints the controller's share of one host's TLS handshake, measured in memory
/// ([`handshake`]), with the certificate of the rig's first agent and with one that names a
/// single host, as each agent of a real fleet has: the part of the CPU per host that no change
/// short of not shaking hands in every run can remove.
fn handshake_floor(root: &Path, names_each: usize) {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display())))
    };
    let pki = root.join("pki");
    let (ca, controller_certificate, controller_key) = (
        read(pki.join("ca.pem")),
        read(pki.join("controller.pem")),
        read(pki.join("controller.key")),
    );
    let share = |agent_certificate: &str, agent_key: &str| {
        let ends = handshake::Ends {
            ca: &ca,
            controller_certificate: &controller_certificate,
            controller_key: &controller_key,
            agent_certificate,
            agent_key,
        };
        handshake::client_share(&ends, "h00001", 200)
            .unwrap_or_else(|e| fail(&format!("the in-memory handshake failed: {e}")))
            .as_secs_f64()
            * 1000.0
    };
    let rig = share(
        &read(root.join("agent00.pem")),
        &read(root.join("agent00.key")),
    );
    let (certificate, key) = issue(&issuer(&pki), "h00001", &["h00001"]);
    let single = share(&certificate, &key);
    println!(
        "controller's share of one TLS handshake, in memory (no socket, no HTTP/2): {rig:.3} ms \
         with the rig's certificates ({names_each} names each), {single:.3} ms with one naming \
         one host: {:.0}% of the 0.5 ms target",
        single / 0.5 * 100.0
    );
}

/// The rig's CA, as `volley pki init` made it.
fn issuer(pki: &Path) -> Issuer<'static, KeyPair> {
    let read = |name: &str| {
        std::fs::read_to_string(pki.join(name))
            .unwrap_or_else(|e| fail(&format!("cannot read {name} of the PKI: {e}")))
    };
    let key = KeyPair::from_pem(&read("ca.key"))
        .unwrap_or_else(|e| fail(&format!("ca.key is not a key: {e}")));
    Issuer::from_ca_cert_pem(&read("ca.pem"), key)
        .unwrap_or_else(|e| fail(&format!("ca.pem is not a CA: {e}")))
}

/// An agent certificate as `volley pki issue` makes one (serverAuth only), naming every host
/// the agent serves; its key as PEM.
fn issue(issuer: &Issuer<'static, KeyPair>, common_name: &str, hosts: &[&str]) -> (String, String) {
    let mut params =
        CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .unwrap_or_else(|e| fail(&format!("bad host names: {e}")));
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .unwrap_or_else(|e| fail(&format!("cannot make a key: {e}")));
    let certificate = params
        .signed_by(&key, issuer)
        .unwrap_or_else(|e| fail(&format!("cannot sign: {e}")));
    (certificate.pem(), key.serialize_pem())
}

/// Fails loudly when this process may not open one descriptor per host (bench/scale.sh raises
/// the limit for itself and what it starts).
fn check_fd_limit(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<u64>().ok())
        .unwrap_or(0);
    if soft < needed {
        fail(&format!(
            "the open-file limit is {soft}, and {needed} are needed: run bench/scale.sh, which raises it (or `ulimit -n {needed}`)"
        ));
    }
}

fn make_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", path.display())));
    path.to_path_buf()
}

/// Writes a new file, created with `mode` (a key is never readable by others, even briefly).
fn write(path: &Path, text: &str, mode: u32) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn fail(message: &str) -> ! {
    eprintln!("volley-bench: {message}");
    std::process::exit(1);
}
