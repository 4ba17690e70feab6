//! One command, one meaning: the same probe, run by the same user on the same machine, over SSH
//! (a real sshd giving its sessions the user's own login environment) and through an agent,
//! prints the same thing (signals ignored at the start included), 5 MB of output included, on the live stream in full; `--json` keeps
//! the capped copy and the true byte count on both. Also: a user the host does not have is
//! `auth_failed` through the agent, as over SSH, and nothing runs; `--become` through the agent
//! runs the command in root's session, naming the user who asked.

use std::collections::BTreeSet;

use volley_tests::agentd::CANARY;
use volley_tests::hybrid::{InventoryHost, inventory_text};
use volley_tests::remote::{SweepOnDrop, unique_sleep, wait_until_running};
use volley_tests::users::{self, LocalUser};
use volley_tests::{AgentFleet, AgentFleetSpec, FleetSpec, RunFlags, SshFleet};

use crate::{EXIT_COMMAND_FAILED, EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome};

/// The user both transports run the probe as: neither root nor the one running the tests.
const PROBE_USER: &str = "volley-probe";

/// Lines of `seq -f '%09g'`: ten bytes each, 5 MB in all.
const LINES: usize = 500_000;

/// What the probe prints before its 5 MB; `ignored` is the set of standard signals (1 to 31) that
/// the session's processes start with ignored, `fds` the descriptors they start with (`ls`'s,
/// with the one it reads the list from).
const HEADER_COMMAND: &str = "echo $0 $HOME; umask; pwd; id; ulimit -n; \
    echo ignored $(( 0x$(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/self/status) & 0x7fffffff )); \
    echo fds $(ls /proc/self/fd); env | sort";

/// The variables only an SSH connection has: they may be, and are, the only difference.
const SSH_ONLY: &[&str] = &["SSH_CLIENT", "SSH_CONNECTION"];

/// The `--max-output` of the runs: the kept copy, not the live stream.
const KEPT: usize = 1 << 20;

fn probe() -> String {
    format!("{HEADER_COMMAND}; seq -f '%09g' 1 {LINES}")
}

/// An sshd host (login environment) and an agent on the same address, one inventory entry,
/// and the flags that run as the probe user.
struct Machine {
    ssh: SshFleet,
    agents: AgentFleet,
    flags: RunFlags,
    name: String,
    /// Where the host's agent listens.
    agent: std::net::SocketAddrV4,
}

fn machine(user: &LocalUser) -> Machine {
    let ssh = SshFleet::with_spec(FleetSpec::new(1).with_login_environment());
    let ssh_host = ssh.hosts()[0].clone();
    // A root-only file the agent inherits open from its launcher: its commands must not.
    let secret = ssh.dir().join("root-only");
    std::fs::write(&secret, "secret").expect("the fleet's directory is writable");
    let agents = AgentFleet::with_spec(
        AgentFleetSpec::new(1)
            .on_addresses([*ssh_host.socket.ip()])
            .inheriting(&secret),
    );
    let agent_host = agents.hosts()[0].clone();
    let inventory = ssh.dir().join("machine.toml");
    std::fs::write(
        &inventory,
        inventory_text(&[InventoryHost::both(&agent_host, &ssh_host)]),
    )
    .expect("the fleet's directory is writable");
    let flags = RunFlags {
        inventory,
        pki: Some(agents.pki().dir().to_path_buf()),
        user: user.name.clone(),
        ..ssh.flags()
    };
    Machine {
        ssh,
        agents,
        flags,
        name: agent_host.name,
        agent: agent_host.socket,
    }
}

/// The probe's lines on the live stream of a run through `transport`.
fn live_lines(machine: &Machine, transport: &str) -> Vec<String> {
    let output = machine.ssh.run(machine.flags.args([
        "-g",
        "all",
        "--transport",
        transport,
        "--",
        probe().as_str(),
    ]));
    output.assert_code(EXIT_SUCCESS);
    assert!(
        output.stderr_of(&machine.name).is_empty(),
        "{transport}: {}",
        output.describe()
    );
    output
        .stdout_of(&machine.name)
        .into_iter()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_same_probe_prints_the_same_over_ssh_and_through_the_agent() {
    let user = users::plain(PROBE_USER);
    let machine = machine(&user);

    let over_ssh = live_lines(&machine, "ssh");
    let via_agent = live_lines(&machine, "agent");

    // The live stream carried everything, on both.
    let header = |lines: &[String]| lines.len() - LINES;
    for (transport, lines) in [("ssh", &over_ssh), ("agent", &via_agent)] {
        assert!(lines.len() > LINES, "{transport}: {} lines", lines.len());
        let tail = &lines[header(lines)..];
        assert_eq!(
            tail.first().map(String::as_str),
            Some("000000001"),
            "{transport}"
        );
        assert_eq!(
            tail.last().map(String::as_str),
            Some("000500000"),
            "{transport}"
        );
    }
    // Only what belongs to an SSH connection differs, and it is there over SSH only.
    let ssh_only = |line: &String| {
        SSH_ONLY
            .iter()
            .any(|name| line.starts_with(&format!("{name}=")))
    };
    assert_eq!(
        over_ssh.iter().filter(|line| ssh_only(line)).count(),
        SSH_ONLY.len(),
        "{over_ssh:?}"
    );
    let ssh_compared: Vec<&String> = over_ssh.iter().filter(|line| !ssh_only(line)).collect();
    let agent_compared: Vec<&String> = via_agent.iter().collect();
    if ssh_compared != agent_compared {
        fn header_of<'a>(lines: &[&'a String]) -> Vec<&'a String> {
            lines[..lines.len().saturating_sub(LINES)].to_vec()
        }
        panic!(
            "the probe differs:\nover ssh: {:#?}\nthrough the agent: {:#?}",
            header_of(&ssh_compared),
            header_of(&agent_compared)
        );
    }

    // And what they agree on is the user's login session.
    let home = user.home.display().to_string();
    let shell_name = user.shell.rsplit('/').next().unwrap_or_default();
    let lines = &via_agent[..header(&via_agent)];
    assert_eq!(lines[0], format!("{shell_name} {home}"));
    assert_eq!(lines[1], "0022");
    assert_eq!(lines[2], home);
    assert!(
        lines[3].starts_with(&format!("uid={}({PROBE_USER}) gid={}(", user.uid, user.gid))
            && lines[3].contains("(users)"),
        "{}",
        lines[3]
    );
    assert!(lines[5].starts_with("ignored "), "{}", lines[5]);
    assert_eq!(lines[6], "fds 0 1 2 3");
    let names: BTreeSet<&str> = lines[7..]
        .iter()
        .map(|line| line.split('=').next().unwrap_or_default())
        .collect();
    let mut expected: BTreeSet<&str> = [
        "HOME", "LOGNAME", "MAIL", "PATH", "PWD", "SHELL", "SHLVL", "USER", "_",
    ]
    .into();
    if std::env::var_os("TZ").is_some() {
        // sshd and the agent both pass their own TZ on.
        expected.insert("TZ");
    }
    assert_eq!(names, expected, "{lines:#?}");
    assert!(!lines.iter().any(|line| line.contains(CANARY)));
    for expected in [
        format!("USER={PROBE_USER}"),
        format!("HOME={home}"),
        format!("MAIL=/var/mail/{PROBE_USER}"),
        format!("SHELL={}", user.shell),
        "PATH=/usr/local/bin:/usr/bin:/bin:/usr/games".to_string(),
    ] {
        assert!(lines.contains(&expected), "no {expected} in {lines:#?}");
    }
}

#[test]
fn json_keeps_the_capped_copy_and_counts_every_byte_on_both_transports() {
    let user = users::plain(PROBE_USER);
    let machine = machine(&user);
    let mut bytes = Vec::new();
    for transport in ["ssh", "agent"] {
        let output = machine.ssh.run(machine.flags.args([
            "-g",
            "all",
            "--transport",
            transport,
            "--json",
            "--max-output",
            "1MiB",
            "--",
            probe().as_str(),
        ]));
        output.assert_code(EXIT_SUCCESS);
        let records = output.records_by_host();
        let record = expect_outcome(&output, &records, &machine.name, "succeeded", transport);
        assert!(record.stdout_truncated, "{transport}: {record:?}");
        assert_eq!(record.stdout.len(), KEPT, "{transport}");
        assert!(record.stdout_bytes > (LINES * 10) as u64, "{transport}");
        bytes.push(record.stdout_bytes);
    }
    // The SSH session has two variables more (SSH_CLIENT, SSH_CONNECTION); nothing else.
    let ssh_only: u64 = {
        let output = machine.ssh.run(machine.flags.args([
            "-g",
            "all",
            "--transport",
            "ssh",
            "--",
            "env | grep -E '^(SSH_CLIENT|SSH_CONNECTION)=' | wc -c",
        ]));
        output.assert_code(EXIT_SUCCESS);
        let counted = output.stdout_of(&machine.name);
        counted
            .first()
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count: {}", output.describe()))
    };
    assert_eq!(bytes[0], bytes[1] + ssh_only, "ssh, agent: {bytes:?}");
}

/// A shell that exits 130 is not a command killed by SIGINT, on either transport; one that kills
/// itself is, by the signal's name.
#[test]
fn exit_statuses_and_signal_deaths_are_told_apart_alike_on_both_transports() {
    let user = users::plain(PROBE_USER);
    let machine = machine(&user);
    for (command, kind, exit_code, signal) in [
        ("echo before; exit 130", "non_zero_exit", Some(130), None),
        (
            "echo before; kill -USR1 $$",
            "signalled",
            None,
            Some("USR1"),
        ),
    ] {
        for transport in ["ssh", "agent"] {
            let output = machine.ssh.run(machine.flags.args([
                "-g",
                "all",
                "--transport",
                transport,
                "--json",
                "--",
                command,
            ]));
            output.assert_code(EXIT_COMMAND_FAILED);
            let records = output.records_by_host();
            let record = expect_outcome(&output, &records, &machine.name, kind, transport);
            assert_eq!(
                (record.exit_code, record.signal.as_deref()),
                (exit_code, signal),
                "{transport}: {command}"
            );
            assert_eq!(record.stdout, "before\n", "{transport}: {command}");
            // No shell's job message ("User defined signal 1") is added on the way.
            assert_eq!(record.stderr, "", "{transport}: {command}");
        }
    }
}

/// A command that exits while a process it left in the background holds its output open (a
/// daemon started without redirecting it) ends at its exit, by its exit status, on both
/// transports: not a timeout, and what it left runs on, as after ssh.
#[test]
fn a_command_whose_background_job_holds_its_output_ends_at_its_exit_on_both_transports() {
    let user = users::plain(PROBE_USER);
    let machine = machine(&user);
    for transport in ["ssh", "agent"] {
        let sleep = unique_sleep("40.");
        let _sweep = SweepOnDrop(sleep.clone());
        let command = format!("({sleep} &); echo started; exit 3");
        let began = std::time::Instant::now();
        let output = machine.ssh.run(machine.flags.args([
            "-g",
            "all",
            "--transport",
            transport,
            "--timeout",
            "30s",
            "--json",
            "--",
            command.as_str(),
        ]));
        let took = began.elapsed();
        output.assert_code(EXIT_COMMAND_FAILED);
        let records = output.records_by_host();
        let record = expect_outcome(&output, &records, &machine.name, "non_zero_exit", transport);
        assert_eq!(record.exit_code, Some(3), "{transport}");
        assert_eq!(record.stdout, "started\n", "{transport}");
        assert!(
            took < std::time::Duration::from_secs(20),
            "{transport}: took {took:?}"
        );
        let running = wait_until_running(&sleep, 1, std::time::Duration::from_secs(5), || false);
        assert_eq!(
            running.len(),
            1,
            "{transport}: the background job was stopped"
        );

        // What such a job prints after the exit, with no pause as long as the wait, is
        // collected: the wait counts from the last output, not from the exit.
        let chatty = "(for i in $(seq 1 30); do echo $i; sleep 0.1; done &); exit 0";
        let output = machine.ssh.run(machine.flags.args([
            "-g",
            "all",
            "--transport",
            transport,
            "--json",
            "--",
            chatty,
        ]));
        output.assert_code(EXIT_SUCCESS);
        let records = output.records_by_host();
        let record = expect_outcome(&output, &records, &machine.name, "succeeded", transport);
        assert_eq!(record.stdout.lines().count(), 30, "{transport}: {record:?}");
    }
}

#[test]
fn a_user_the_host_does_not_have_is_auth_failed_through_the_agent_and_runs_nothing() {
    let probe_user = users::plain(PROBE_USER);
    let machine = machine(&probe_user);
    let marker = machine.ssh.dir().join("ran");
    let command = format!("echo ran >> '{}'", marker.display());
    let flags = RunFlags {
        user: "no-such-user-volley".to_string(),
        ..machine.flags.clone()
    };
    for transport in ["ssh", "agent"] {
        let output = machine.ssh.run(flags.args([
            "-g",
            "all",
            "--transport",
            transport,
            "--json",
            "--",
            command.as_str(),
        ]));
        output.assert_code(EXIT_NOT_REACHED);
        let records = output.records_by_host();
        let record = expect_outcome(&output, &records, &machine.name, "auth_failed", transport);
        if transport == "agent" {
            assert_eq!(
                record.reason.as_deref(),
                Some(
                    format!(
                        "authentication failed: agent {} refused: there is no user \
                         'no-such-user-volley' on this host",
                        machine.agent
                    )
                    .as_str()
                )
            );
        }
    }
    assert!(!marker.exists(), "the command ran");
    let log = machine.agents.agent(&machine.name).log();
    assert!(
        log.contains("exec refused") && !log.contains("exec started"),
        "{log}"
    );
}

#[test]
fn become_through_the_agent_runs_in_roots_session_and_names_who_asked() {
    let user = users::plain(PROBE_USER);
    let machine = machine(&user);
    let output = machine.ssh.run(machine.flags.args([
        "-g",
        "all",
        "--transport",
        "agent",
        "--become",
        "--json",
        "--",
        "id -u; echo $USER $HOME $SUDO_USER; pwd",
    ]));
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, &machine.name, "succeeded", "agent");
    let root = users::lookup("root").expect("root");
    let home = root.home.display();
    assert_eq!(
        record.stdout,
        format!("0\nroot {home} {PROBE_USER}\n{home}\n")
    );
    let log = machine.agents.agent(&machine.name).log();
    assert!(
        log.contains(&format!("asked_as=Some(\"{PROBE_USER}\")"))
            && log.contains("become_root=true"),
        "the audit says who asked: {log}"
    );
}
