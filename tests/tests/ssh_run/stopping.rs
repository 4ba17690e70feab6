//! Stopping remote commands: a command timeout, and SIGINT, SIGTERM or SIGHUP to volley, must
//! leave nothing running on the hosts, background children included; a host that cannot
//! confirm the stop is in doubt, not stopped. The hosts are this machine, so `pgrep` can tell.

use std::time::Duration;

use volley_tests::SshFleet;
use volley_tests::process::RunningProcess;
use volley_tests::remote::{SweepOnDrop, assert_none_left, unique_sleep, wait_until_running};
use volley_tests::volley::RUN_DEADLINE;

use crate::{EXIT_IN_DOUBT, EXIT_INTERRUPTED, EXIT_NOT_REACHED, expect_outcome};

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
    let output = volley.finish(RUN_DEADLINE);

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

/// Ctrl-C, `kill` (SIGTERM) and a terminal's hangup (SIGHUP: the operator's own SSH session
/// dropped) all stop the run the same way: the commands are stopped, every host gets an outcome
/// in the summary and the journal, and volley exits 130.
#[test]
fn sigint_sigterm_and_sighup_stop_the_remote_commands_and_exit_130() {
    let fleet = SshFleet::start(5);
    for (signal, digits) in [("INT", "1618.03"), ("TERM", "1618.04"), ("HUP", "1618.05")] {
        let sleep = unique_sleep(digits);
        let _sweep = SweepOnDrop(sleep.clone());

        let mut volley = fleet.spawn(fleet.flags().args(["-g", "all", "--", sleep.as_str()]));
        let running = wait_until_running(&sleep, 5, RUNNING_WITHIN, || volley.has_exited());
        assert_eq!(
            running.len(),
            5,
            "`{sleep}` did not start on all 5 hosts: {running:?}"
        );
        volley.signal(signal);
        let output = volley.finish(Duration::from_secs(60));

        output.assert_code(EXIT_INTERRUPTED);
        // The partial summary names the hosts that were cut short.
        assert!(
            output.stderr.contains("cancelled"),
            "{signal}: no summary\n{}",
            output.describe()
        );
        assert!(
            output.stderr.contains("h[01-05]"),
            "{signal}: no folded hosts\n{}",
            output.describe()
        );
        assert_none_left(&sleep, GONE_WITHIN);
        let shown = RunningProcess::spawn(fleet.volley().args(["runs", "show", "last"]))
            .finish(RUN_DEADLINE);
        assert_eq!(
            (shown.stdout.lines())
                .filter(|line| line.starts_with("h0") && line.contains(" cancelled "))
                .count(),
            5,
            "{signal}: every host's outcome is recorded\n{}",
            shown.describe()
        );
    }
}

/// Started under `nohup` (SIGHUP ignored), a run outlives a hangup and goes on; Ctrl-C still
/// stops it.
#[test]
fn a_run_started_under_nohup_outlives_a_hangup() {
    let fleet = SshFleet::start(2);
    let sleep = unique_sleep("1618.06");
    let _sweep = SweepOnDrop(sleep.clone());
    let volley = fleet.volley();
    let mut nohup = std::process::Command::new("nohup");
    nohup.arg(volley.get_program());
    for (name, value) in volley.get_envs() {
        match value {
            Some(value) => nohup.env(name, value),
            None => nohup.env_remove(name),
        };
    }
    nohup.args(fleet.flags().args(["-g", "all", "--", sleep.as_str()]));
    let mut volley = RunningProcess::spawn(&mut nohup);
    let running = wait_until_running(&sleep, 2, RUNNING_WITHIN, || volley.has_exited());
    assert_eq!(running.len(), 2, "`{sleep}` did not start: {running:?}");

    volley.signal("HUP");
    // A volley that took the hangup would be stopping now; give it the time it takes.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!volley.has_exited(), "the hangup ended the run");
    assert_eq!(
        wait_until_running(&sleep, 2, RUNNING_WITHIN, || false).len(),
        2
    );

    volley.interrupt();
    let output = volley.finish(Duration::from_secs(60));
    output.assert_code(EXIT_INTERRUPTED);
    assert_none_left(&sleep, GONE_WITHIN);
}

/// A host whose connection stops answering while its command runs (a hung jump host, a
/// partition; here its sshd session processes are stopped) cannot get the stop at the timeout:
/// its command runs on, so the host is `in_doubt`, not `command_timeout` "and was stopped",
/// which a retry would run again.
#[test]
fn a_host_that_cannot_confirm_the_stop_at_the_timeout_is_in_doubt() {
    let fleet = SshFleet::start(1);
    let sleep = unique_sleep("40.");
    let _sweep = SweepOnDrop(sleep.clone());
    let mut volley = fleet.spawn(fleet.flags().args([
        "-g",
        "all",
        "--timeout",
        "3s",
        "--json",
        "--",
        sleep.as_str(),
    ]));
    let running = wait_until_running(&sleep, 1, RUNNING_WITHIN, || volley.has_exited());
    assert_eq!(running.len(), 1, "the command never ran");
    // Every sshd process above the command: the session's, not the listener.
    let session = volley_tests::remote::sshd_sessions_above(running[0], &fleet.sshd_pids());
    assert!(
        !session.is_empty(),
        "no sshd session process above the command"
    );
    let signal = |name: &str| {
        let pids: Vec<String> = session.iter().map(u32::to_string).collect();
        std::process::Command::new("kill")
            .args(["-s", name])
            .args(&pids)
            .status()
            .expect("kill runs");
    };
    signal("STOP");
    let output = volley.finish(Duration::from_secs(60));
    // It did run on: the stop never reached it (once its session goes on, the closed connection
    // stops it).
    let still = volley_tests::remote::processes(&sleep).len();
    signal("CONT");

    output.assert_code(EXIT_IN_DOUBT);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, &fleet.hosts()[0].name, "in_doubt");
    let reason = record.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("its timeout came, and the host did not confirm the stop within 5s"),
        "{reason}"
    );
    assert_eq!(still, 1, "{}", output.describe());
    assert_none_left(&sleep, GONE_WITHIN);
}

/// A command that ends by itself while it is being stopped (it ignores TERM and ends before
/// the KILL two seconds later) ended as it says: a success is not recorded as stopped, which
/// `volley retry` would run again, and a status of its own is its own.
#[test]
fn a_command_that_ends_by_itself_while_it_is_stopped_ended_as_it_says() {
    let fleet = SshFleet::start(1);
    let host = fleet.hosts()[0].name.clone();
    for (end, outcome) in [("exit 0", "succeeded"), ("exit 7", "non_zero_exit")] {
        let command = format!("trap '' TERM HUP INT; sleep 1.5; echo finished; {end}");
        let output = fleet.run(fleet.flags().args([
            "-w",
            host.as_str(),
            "--timeout",
            "1s",
            "--json",
            "--",
            command.as_str(),
        ]));
        let records = output.records_by_host();
        let record = expect_outcome(&output, &records, &host, outcome);
        assert_eq!(record.stdout, "finished\n", "{record:?}");
    }
}

/// Output that nobody reads (`| less` at a page) holds up volley's reporting; an interrupt
/// still stops the remote commands, and every host is journalled as it stops, though the
/// summary waits for the reader.
#[test]
fn an_interrupt_stops_and_records_every_host_while_its_output_is_not_read() {
    let fleet = SshFleet::start(2);
    let sleep = unique_sleep("1414.21");
    let _sweep = SweepOnDrop(sleep.clone());
    // Far more output than the pipe and volley's queues hold, then nothing.
    let command = format!("{sleep} & yes volley-unread | head -c 400000000; wait");
    let mut volley = fleet
        .volley()
        .args(fleet.flags().args(["-g", "all", "--", command.as_str()]))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("volley starts");
    let exited = std::cell::Cell::new(false);
    let running = wait_until_running(&sleep, 2, RUNNING_WITHIN, || exited.get());
    assert_eq!(running.len(), 2, "`{sleep}` did not start: {running:?}");
    // Long enough for the unread output to fill everything on the way.
    std::thread::sleep(Duration::from_secs(3));
    let interrupt = std::process::Command::new("kill")
        .args(["-s", "INT", &volley.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupt.success());

    assert_none_left(&sleep, GONE_WITHIN);
    let recorded = || {
        std::fs::read_dir(fleet.runs_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .map(|journal| journal.matches(r#""type":"host""#).count())
            .sum::<usize>()
    };
    let deadline = std::time::Instant::now() + GONE_WITHIN;
    while recorded() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = volley.kill();
    let _ = volley.wait();
    assert_eq!(recorded(), 2, "every host's outcome is journalled");
}
