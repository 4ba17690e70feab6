//! Stopping remote commands: a command timeout and SIGINT must leave nothing running on the
//! hosts, background children included. The hosts are this machine, so `pgrep` can tell.

use std::time::Duration;

use volley_tests::SshFleet;
use volley_tests::remote::{SweepOnDrop, assert_none_left, unique_sleep, wait_until_running};

use crate::{EXIT_INTERRUPTED, EXIT_NOT_REACHED, expect_outcome};

/// How long stopped commands get to disappear.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// How long a started command gets to show up on the hosts.
const RUNNING_WITHIN: Duration = Duration::from_secs(30);

#[test]
fn command_timeout_stops_the_command_and_its_background_child() {
    let fleet = SshFleet::start(2);
    let background = unique_sleep("3141.59");
    let foreground = unique_sleep("2718.28");
    let _sweep = (
        SweepOnDrop(background.clone()),
        SweepOnDrop(foreground.clone()),
    );
    let command = format!("{background} & {foreground}; echo never");

    let mut volley = fleet.spawn(fleet.flags().args([
        "-g",
        "all",
        "--timeout",
        "2s",
        "--json",
        "--",
        command.as_str(),
    ]));
    // Both sleeps must really have run, or their absence later proves nothing.
    for sleep in [&background, &foreground] {
        let running = wait_until_running(sleep, 2, RUNNING_WITHIN, || volley.has_exited());
        assert_eq!(
            running.len(),
            2,
            "`{sleep}` did not run on both hosts: {running:?}"
        );
    }
    let output = volley.finish(volley_tests::volley::RUN_DEADLINE);

    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        let record = expect_outcome(&output, &records, &host.name, "command_timeout");
        assert!(
            !record.stdout.contains("never"),
            "{}: {record:?}",
            host.name
        );
    }
    assert_none_left(&background, GONE_WITHIN);
    assert_none_left(&foreground, GONE_WITHIN);
}

#[test]
fn sigint_stops_the_remote_commands_and_exits_130() {
    let fleet = SshFleet::start(5);
    let sleep = unique_sleep("1618.03");
    let _sweep = SweepOnDrop(sleep.clone());

    let mut volley = fleet.spawn(fleet.flags().args(["-g", "all", "--", sleep.as_str()]));
    let running = wait_until_running(&sleep, 5, RUNNING_WITHIN, || volley.has_exited());
    assert_eq!(
        running.len(),
        5,
        "`{sleep}` did not start on all 5 hosts: {running:?}"
    );
    volley.interrupt();
    let output = volley.finish(Duration::from_secs(60));

    output.assert_code(EXIT_INTERRUPTED);
    // The partial summary names the hosts that were cut short.
    assert!(
        output.stderr.contains("cancelled"),
        "no summary\n{}",
        output.describe()
    );
    assert!(
        output.stderr.contains("h[01-05]"),
        "no folded hosts\n{}",
        output.describe()
    );
    assert_none_left(&sleep, GONE_WITHIN);
}
