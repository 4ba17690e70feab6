//! Stopping: SIGINT stops the commands on the agents, background children included; an agent
//! that dies in the middle of a command leaves that host `in_doubt` (its command may still run),
//! and neither `auto` (over SSH, although sshd serves the same host) nor `volley retry` runs the
//! command again; so does one that stops answering and cannot confirm the stop at the timeout.
//! A command the agent's own `max_timeout` stops before the run's `--timeout` says so.

use std::path::Path;
use std::time::Duration;

use volley_tests::hybrid::{InventoryHost, inventory_text};
use volley_tests::remote::{SweepOnDrop, assert_none_left, unique_sleep, wait_until_running};
use volley_tests::volley::RUN_DEADLINE;
use volley_tests::{AgentFleet, AgentFleetSpec, RunFlags, SshFleet};

use crate::{EXIT_IN_DOUBT, EXIT_INTERRUPTED, EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome};

/// How long stopped commands get to disappear.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// How long a started command gets to show up on the hosts.
const RUNNING_WITHIN: Duration = Duration::from_secs(30);

#[test]
fn sigint_stops_the_commands_and_their_background_children_on_the_agents() {
    let fleet = AgentFleet::start(3);
    let background = unique_sleep("3141.59");
    let foreground = unique_sleep("2718.28");
    let _sweep = (
        SweepOnDrop(background.clone()),
        SweepOnDrop(foreground.clone()),
    );
    let command = format!("{background} & {foreground}");

    let mut volley = fleet.spawn(fleet.run_args([
        "-g",
        "all",
        "--transport",
        "agent",
        "--json",
        "--",
        command.as_str(),
    ]));
    // Both sleeps must really run on every agent, or their absence later proves nothing.
    for sleep in [&background, &foreground] {
        let running = wait_until_running(sleep, 3, RUNNING_WITHIN, || volley.has_exited());
        assert_eq!(running.len(), 3, "`{sleep}` did not run on all 3 agents");
    }
    volley.interrupt();
    let output = volley.finish(Duration::from_secs(60));

    output.assert_code(EXIT_INTERRUPTED);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        expect_outcome(&output, &records, &host.name, "cancelled", "agent");
    }
    assert_none_left(&background, GONE_WITHIN);
    assert_none_left(&foreground, GONE_WITHIN);
}

#[test]
fn an_agent_killed_mid_command_leaves_the_host_in_doubt_and_the_command_is_not_run_again() {
    // One host with both an agent and sshd, on the same address.
    let ssh = SshFleet::start(1);
    let ssh_host = &ssh.hosts()[0];
    let mut agents =
        AgentFleet::with_spec(AgentFleetSpec::new(1).on_addresses([*ssh_host.socket.ip()]));
    let agent_host = agents.hosts()[0].clone();
    let inventory = ssh.dir().join("both.toml");
    std::fs::write(
        &inventory,
        inventory_text(&[InventoryHost::both(&agent_host, ssh_host)]),
    )
    .expect("the fleet's directory is writable");
    let flags = RunFlags {
        inventory,
        pki: Some(agents.pki().dir().to_path_buf()),
        ..ssh.flags()
    };

    let marker = ssh.dir().join("ran");
    let sleep = unique_sleep("20.");
    // The agent's death orphans the command; nobody is left to stop it.
    let _sweep = SweepOnDrop(sleep.clone());
    let command = format!("echo run >> '{}'; {sleep}", marker.display());
    let mut volley = ssh.spawn(flags.args(["-g", "all", "--json", "--", command.as_str()]));
    let running = wait_until_running(&sleep, 1, RUNNING_WITHIN, || volley.has_exited());
    assert_eq!(running.len(), 1, "the command did not start on the agent");
    assert_eq!(lines(&marker), 1);
    agents.kill(&agent_host.name);
    let output = volley.finish(RUN_DEADLINE);

    output.assert_code(EXIT_IN_DOUBT);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, &agent_host.name, "in_doubt", "agent");
    let reason = record.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("could not attach again") && reason.contains("volley runs resume"),
        "{record:?}"
    );
    assert_eq!(
        lines(&marker),
        1,
        "the command ran again after the agent died\n{}",
        output.describe()
    );
    // Nor does a retry run it again, unless asked for the hosts in doubt by name.
    let mut retry = ssh.volley();
    let retried =
        volley_tests::RunningProcess::spawn(retry.args(["retry", "last"])).finish(RUN_DEADLINE);
    retried.assert_code(EXIT_SUCCESS);
    assert!(
        retried
            .stderr
            .contains("leaving out 1 host(s) whose command may still be running"),
        "{}",
        retried.describe()
    );
    assert_eq!(lines(&marker), 1, "the retry ran the command again");

    // Without its agent the host is served over SSH: the fallback was there to be taken.
    let output = ssh.run(flags.args(["-g", "all", "--json", "--", "echo over-ssh"]));
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, &agent_host.name, "succeeded", "ssh");
    assert_eq!(record.stdout, "over-ssh\n");
}

/// An agent that stops answering in the middle of a command (stopped, overloaded) cannot confirm
/// the command was stopped at its timeout: the host is `in_doubt`, not `command_timeout`, which
/// a retry would run again where the command may have run whole.
#[test]
fn an_agent_that_does_not_confirm_the_stop_at_the_timeout_leaves_the_host_in_doubt() {
    let fleet = AgentFleet::start(1);
    let host = fleet.hosts()[0].name.clone();
    let (started, marker) = (fleet.dir().join("started"), fleet.dir().join("done"));
    let command = format!(
        "echo >> '{}'; sleep 2; echo >> '{}'",
        started.display(),
        marker.display()
    );
    let mut volley = fleet.spawn(fleet.run_args([
        "-g",
        "all",
        "--transport",
        "agent",
        "--timeout",
        "1s",
        "--json",
        "--",
        command.as_str(),
    ]));
    let deadline = std::time::Instant::now() + RUNNING_WITHIN;
    while lines(&started) == 0 && std::time::Instant::now() < deadline && !volley.has_exited() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lines(&started), 1, "the command did not start");
    let agent = fleet.agent(&host).pid().to_string();
    let signal = |name: &str| {
        volley_tests::tools::run_tool(
            std::process::Command::new(volley_tests::tools::kill()).args(["-s", name, &agent]),
        )
    };
    signal("STOP");
    let output = volley.finish(RUN_DEADLINE);
    signal("CONT");

    output.assert_code(EXIT_IN_DOUBT);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, &host, "in_doubt", "agent");
    let reason = record.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("the agent did not confirm it stopped the command")
            && reason.contains("volley runs resume"),
        "{record:?}"
    );
    // It did run to its end, the agent frozen the while.
    assert_eq!(lines(&marker), 1);
}

/// The lines of `path`; none if it does not exist.
fn lines(path: &Path) -> usize {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// An agent's `max_timeout` shorter than the run's `--timeout` (or where the run gives none)
/// stops the command first: the outcome names the agent's limit, since the operator's did not
/// apply. Where `--timeout` is the shorter, the outcome is the plain one.
#[test]
fn a_command_the_agent_s_max_timeout_stops_says_whose_limit_it_was() {
    let mut fleet = AgentFleet::start(1);
    let config = fleet.agents()[0].config().to_path_buf();
    let mut text = std::fs::read_to_string(&config).expect("the agent's config is readable");
    text.push_str("\n[limits]\nmax_timeout = \"1s\"\n");
    std::fs::write(&config, text).expect("the agent's config is writable");
    fleet.restart("a01");

    let sleep = unique_sleep("30.");
    let _sweep = SweepOnDrop(sleep.clone());
    let cases = [
        (
            Some("30s"),
            Some(
                "timed out: the agent's max_timeout stopped the command after 1s (before --timeout 30s)",
            ),
        ),
        (
            None,
            Some(
                "timed out: the agent's max_timeout stopped the command after 1s (the run gave no --timeout)",
            ),
        ),
        (Some("500ms"), Some("command timed out and was stopped")),
    ];
    for (timeout, reason) in cases {
        let mut args = vec!["-g", "all", "--transport", "agent", "--json"];
        if let Some(timeout) = timeout {
            args.extend(["--timeout", timeout]);
        }
        args.extend(["--", sleep.as_str()]);
        let output = fleet.run(fleet.run_args(args));
        output.assert_code(EXIT_NOT_REACHED);
        let records = output.records_by_host();
        let record = expect_outcome(&output, &records, "a01", "command_timeout", "agent");
        assert_eq!(record.reason.as_deref(), reason, "--timeout {timeout:?}");
    }
    assert_none_left(&sleep, GONE_WITHIN);
}
