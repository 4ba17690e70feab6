//! One outcome per host through the agent transport: success, a non-zero exit, a signal and a
//! command timeout, each recorded as run by `agent` in the JSON record.

use std::time::Duration;

use volley_tests::AgentFleet;
use volley_tests::remote::{SweepOnDrop, assert_none_left, unique_sleep, wait_until_running};
use volley_tests::volley::RUN_DEADLINE;

use crate::{EXIT_COMMAND_FAILED, EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome, reported_hosts};

/// How long a timed-out command gets to disappear from the host.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// How long a started command gets to show up on the hosts.
const RUNNING_WITHIN: Duration = Duration::from_secs(30);

/// `volley run -g all --transport agent --json [extra...] -- command` on `fleet`.
fn run_on_agents(fleet: &AgentFleet, extra: &[&str], command: &str) -> volley_tests::ProcessOutput {
    let mut args = vec!["-g", "all", "--transport", "agent", "--json"];
    args.extend_from_slice(extra);
    args.extend(["--", command]);
    fleet.run(fleet.run_args(args))
}

#[test]
fn success_streams_stdout_and_stderr_through_the_agent() {
    let fleet = AgentFleet::start(2);
    let output = run_on_agents(&fleet, &[], "echo hi; echo oops >&2");

    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    assert_eq!(reported_hosts(&records), ["a01", "a02"]);
    for host in fleet.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "succeeded", "agent");
        assert_eq!(record.exit_code, Some(0));
        assert_eq!((record.stdout.as_str(), record.stdout_bytes), ("hi\n", 3));
        assert_eq!((record.stderr.as_str(), record.stderr_bytes), ("oops\n", 5));
        assert!(
            record.connect_ms.is_some() && record.run_ms.is_some(),
            "{record:?}"
        );
    }
}

#[test]
fn a_non_zero_exit_is_reported_with_its_status() {
    let fleet = AgentFleet::start(2);
    let output = run_on_agents(&fleet, &[], "echo before; exit 3");

    output.assert_code(EXIT_COMMAND_FAILED);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "non_zero_exit", "agent");
        assert_eq!(record.exit_code, Some(3));
        assert_eq!(record.signal, None);
        assert_eq!(record.stdout, "before\n");
    }
}

#[test]
fn a_command_killed_by_a_signal_is_reported_by_its_name() {
    let fleet = AgentFleet::start(2);
    let output = run_on_agents(&fleet, &[], "kill -KILL $$");

    output.assert_code(EXIT_COMMAND_FAILED);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "signalled", "agent");
        assert_eq!(record.signal.as_deref(), Some("KILL"), "{record:?}");
        assert_eq!(record.exit_code, None);
    }
}

#[test]
fn a_command_timeout_stops_the_command_on_the_agent() {
    let fleet = AgentFleet::start(2);
    let sleep = unique_sleep("30.");
    let _sweep = SweepOnDrop(sleep.clone());
    let command = format!("{sleep}; echo never");
    let mut volley = fleet.spawn(fleet.run_args([
        "-g",
        "all",
        "--transport",
        "agent",
        "--json",
        "--timeout",
        "2s",
        "--",
        command.as_str(),
    ]));
    // The sleeps must really have run, or their absence later proves nothing.
    let running = wait_until_running(&sleep, 2, RUNNING_WITHIN, || volley.has_exited());
    assert_eq!(running.len(), 2, "`{sleep}` did not run on both agents");
    let output = volley.finish(RUN_DEADLINE);

    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "command_timeout", "agent");
        assert!(!record.stdout.contains("never"), "{record:?}");
        // Stopped after about two seconds, not after the sleep's thirty.
        assert!(record.total_ms < 20_000.0, "{record:?}");
    }
    assert_none_left(&sleep, GONE_WITHIN);
}
