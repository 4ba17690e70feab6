//! Rollouts: batches, the batch delay, the failure budget, connect retries, the run journal
//! after `kill -9`, and `volley retry`.
//!
//! What ran where is proved on the hosts themselves: commands append a line to a marker file
//! named after the host's address (`ran-ADDR`, in the fleet's directory), so a host that never
//! ran has no file, and a host that ran twice has two lines.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use volley_tests::keys::known_hosts_line;
use volley_tests::remote::{SweepOnDrop, assert_none_left, per_host_command, unique_sleep};
use volley_tests::{FleetSpec, Host, HostKind, ProcessOutput, SshFleet, StallingPort};

use crate::{EXIT_INTERRUPTED, EXIT_NOT_REACHED, EXIT_USAGE, expect_outcome};

/// The failure budget stopped the rollout; some hosts were skipped.
const EXIT_ROLLOUT_STOPPED: i32 = 3;

/// The address of the host a command runs on, in shell.
const HOST_ADDRESS: &str = r#"$(echo "$SSH_CONNECTION" | cut -d' ' -f3)"#;

/// Shell that appends a line to this host's marker file.
fn mark(fleet: &SshFleet) -> String {
    format!(
        r#"echo ran >> "{}/ran-{HOST_ADDRESS}"; "#,
        fleet.dir().display()
    )
}

/// How many times the command ran on `host`, from its marker file.
fn runs_on(fleet: &SshFleet, host: &Host) -> usize {
    let path = fleet.dir().join(format!("ran-{}", host.socket.ip()));
    match std::fs::read_to_string(&path) {
        Ok(text) => text.lines().count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

fn assert_runs(fleet: &SshFleet, expected: &[(&str, usize)]) {
    let actual: Vec<(&str, usize)> = expected
        .iter()
        .map(|(name, _)| (*name, runs_on(fleet, fleet.host(name))))
        .collect();
    assert_eq!(actual, expected, "times the command ran on each host");
}

/// The ids of the runs recorded for this fleet, in name order (runs started in the same second
/// are in no particular order).
fn run_ids(fleet: &SshFleet) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(fleet.runs_dir())
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".jsonl").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The `OUTCOME` column of `volley runs show` for each host.
fn shown_outcomes(output: &ProcessOutput) -> Vec<(String, String)> {
    output
        .stdout
        .lines()
        .skip_while(|line| !line.starts_with("HOST "))
        .skip(1)
        .map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            (columns[0].to_string(), columns[2].to_string())
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(host, outcome)| (host.to_string(), outcome.to_string()))
        .collect()
}

#[test]
fn a_budget_exceeded_in_the_first_batch_stops_the_later_batches() {
    // h08 is dead: its refusal counts against the budget like h01's failed command.
    let fleet = SshFleet::with_spec(FleetSpec::new(7).with(HostKind::Dead));
    let command = mark(&fleet) + &per_host_command(&[(fleet.host("h01"), "exit 1")], "true");

    // Three batches: h08 h01 | h02 h03 h04 | h05 h06 h07.
    let output = fleet.run(fleet.flags().args([
        "-w",
        "h08,h[01-07]",
        "--batch",
        "2,3",
        "--max-failures",
        "1",
        "--json",
        "--",
        command.as_str(),
    ]));

    output.assert_code(EXIT_ROLLOUT_STOPPED);
    let records = output.records_by_host();
    expect_outcome(&output, &records, "h08", "unreachable");
    expect_outcome(&output, &records, "h01", "non_zero_exit");
    for name in ["h02", "h03", "h04", "h05", "h06", "h07"] {
        let record = expect_outcome(&output, &records, name, "skipped");
        assert_eq!(record.attempts, 0, "{name}");
        let batch = if name <= "h04" { 2 } else { 3 };
        assert_eq!(record.batch, batch, "{name}");
    }
    assert_eq!((records["h08"].batch, records["h01"].batch), (1, 1));
    // The hosts of the later batches never ran the command.
    assert_runs(
        &fleet,
        &[
            ("h01", 1),
            ("h02", 0),
            ("h03", 0),
            ("h04", 0),
            ("h05", 0),
            ("h06", 0),
            ("h07", 0),
        ],
    );
    for expected in [
        "volley: batch 1/3: h[01,08] (2 hosts)\n",
        "  skipped               6  h[02-07]\n",
        "volley: 1 of 3 batches ran; rollout stopped: 2 hosts failed, the failure budget allows 1; 6 hosts skipped\n",
    ] {
        assert!(
            output.stderr.contains(expected),
            "no {expected:?}\n{}",
            output.describe()
        );
    }
    assert!(
        !output.stderr.contains("batch 2/3"),
        "{}",
        output.describe()
    );
}

/// Without `--batch` every host has its slot at once (the default `-p` is above the fleet) and
/// waits there for a handshake turn: a failure with `--abort-on-failure` stops those that have
/// not started their command. One handshake at a time makes most of them wait.
#[test]
fn a_spent_budget_stops_the_hosts_still_waiting_for_a_handshake_turn() {
    let fleet = SshFleet::start(24);
    let command = mark(&fleet) + &per_host_command(&[(fleet.host("h01"), "exit 1")], "true");

    let output = fleet.run(fleet.flags().args([
        "-w",
        "h[01-24]",
        "--max-handshakes",
        "1",
        "--abort-on-failure",
        "--json",
        "--",
        command.as_str(),
    ]));

    output.assert_code(EXIT_ROLLOUT_STOPPED);
    let records = output.records_by_host();
    expect_outcome(&output, &records, "h01", "non_zero_exit");
    let mut skipped = 0;
    for host in &fleet.hosts()[1..] {
        let record = &records[&host.name];
        let ran = runs_on(&fleet, host);
        match record.outcome.as_str() {
            "succeeded" => assert_eq!(ran, 1, "{}", host.name),
            "skipped" => {
                assert_eq!((ran, record.attempts), (0, 0), "{}", host.name);
                skipped += 1;
            }
            other => panic!("{}: {other}\n{}", host.name, output.describe()),
        }
    }
    // How many connected before h01's failure depends on the machine's load; most do not.
    assert!(skipped >= 1, "no host was stopped\n{}", output.describe());
    let hosts = if skipped == 1 { "host" } else { "hosts" };
    let stopped = format!(
        "rollout stopped: 1 host failed, the failure budget allows 0; {skipped} {hosts} skipped\n"
    );
    assert!(
        output.stderr.contains(&stopped),
        "no {stopped:?}\n{}",
        output.describe()
    );
}

#[test]
fn each_batch_waits_for_the_previous_one_and_the_delay() {
    let fleet = SshFleet::start(4);
    let dir = fleet.dir().display().to_string();
    let command = format!(
        r#"date +%s.%N > "{dir}/start-{HOST_ADDRESS}"; sleep 0.3; date +%s.%N > "{dir}/end-{HOST_ADDRESS}""#
    );
    let delay = 2.0;

    let output = fleet.run(fleet.flags().args([
        "-g",
        "all",
        "--batch",
        "2",
        "--batch-delay",
        "2s",
        "--json",
        "--",
        command.as_str(),
    ]));

    output.assert_code(0);
    let records = output.records_by_host();
    let batches: Vec<u64> = records.values().map(|record| record.batch).collect();
    assert_eq!(batches, [1, 1, 2, 2]);
    let time = |what: &str, name: &str| -> f64 {
        let path = fleet
            .dir()
            .join(format!("{what}-{}", fleet.host(name).socket.ip()));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
    };
    let first_done = time("end", "h01").max(time("end", "h02"));
    let second_began = time("start", "h03").min(time("start", "h04"));
    assert!(
        second_began - first_done >= delay,
        "batch 2 began {:.3}s after batch 1 ended",
        second_began - first_done
    );
    for line in [
        "volley: batch 1/2: h[01-02] (2 hosts)\n",
        "volley: batch 2/2 starts in 2s (--batch-delay)\n",
        "volley: batch 2/2: h[03-04] (2 hosts)\n",
        "volley: 2 of 2 batches ran\n",
    ] {
        assert!(
            output.stderr.contains(line),
            "no {line:?}\n{}",
            output.describe()
        );
    }
}

#[test]
fn an_interrupt_during_the_batch_delay_stops_at_once() {
    let fleet = SshFleet::start(2);
    let command = mark(&fleet) + "true";
    let mut volley = fleet.spawn(fleet.flags().args([
        "-g",
        "all",
        "--batch",
        "1",
        "--batch-delay",
        "10m",
        "--json",
        "--",
        command.as_str(),
    ]));
    // h01's record is out: batch 1 is over, and the delay has begun.
    volley.wait_for_stdout(Duration::from_secs(60), |out| out.contains('\n'));
    let interrupted = Instant::now();
    volley.interrupt();
    let output = volley.finish(Duration::from_secs(60));

    assert!(
        interrupted.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        interrupted.elapsed()
    );
    output.assert_code(EXIT_INTERRUPTED);
    let records = output.records_by_host();
    expect_outcome(&output, &records, "h01", "succeeded");
    expect_outcome(&output, &records, "h02", "cancelled");
    assert_runs(&fleet, &[("h01", 1), ("h02", 0)]);
}

#[test]
fn after_kill_9_the_journal_has_every_host_that_had_finished() {
    let fleet = SshFleet::start(6);
    let sleep = unique_sleep("1414.21");
    let _sweep = SweepOnDrop(sleep.clone());
    let slow = format!("exec {sleep}");
    let command = per_host_command(
        &[
            (fleet.host("h02"), "exit 3"),
            (fleet.host("h04"), &slow),
            (fleet.host("h05"), &slow),
            (fleet.host("h06"), &slow),
        ],
        "true",
    );
    let mut volley =
        fleet.spawn(
            fleet
                .flags()
                .args(["-g", "all", "--json", "--", command.as_str()]),
        );
    // Three records out means three hosts reported, and so journalled.
    volley.wait_for_stdout(Duration::from_secs(60), |out| out.lines().count() >= 3);
    let killed = volley.kill_hard();
    let reported: Vec<String> = killed
        .stdout
        .lines()
        .map(|line| {
            volley_tests::report::parse_record(line)
                .unwrap_or_else(|e| panic!("{e}: {line}"))
                .host
        })
        .collect();
    assert_eq!(reported.len(), 3, "{}", killed.describe());

    let shown = fleet.run(["runs", "show", "last"]);
    shown.assert_code(0);
    assert_eq!(
        shown_outcomes(&shown),
        pairs(&[
            ("h01", "succeeded"),
            ("h02", "non_zero_exit"),
            ("h03", "succeeded"),
            ("h04", "not_finished"),
            ("h05", "not_finished"),
            ("h06", "not_finished"),
        ]),
        "{}",
        shown.describe()
    );
    assert!(
        shown.stdout.contains("no end recorded"),
        "{}",
        shown.describe()
    );
    let failed = fleet.run(["runs", "show", "last", "--failed"]);
    assert_eq!(failed.stdout, "h[02,04-06]\n", "{}", failed.describe());
    let listed = fleet.run(["runs"]);
    assert!(
        listed
            .stdout
            .contains("2 succeeded, 1 non_zero_exit, 3 not_finished (unfinished)"),
        "{}",
        listed.describe()
    );
    // The hosts' commands died with the connections.
    assert_none_left(&sleep, Duration::from_secs(10));
}

#[test]
fn retry_runs_on_exactly_the_hosts_that_failed() {
    let fleet = SshFleet::with_spec(FleetSpec::new(5).with(HostKind::Dead));
    // h02 and h04 fail the first time they run and succeed the second.
    let second_time = r#"[ "$(wc -l < "$m")" -ge 2 ] || exit 1"#;
    let command = format!(
        r#"m="{}/ran-{HOST_ADDRESS}"; echo ran >> "$m"; {}"#,
        fleet.dir().display(),
        per_host_command(
            &[
                (fleet.host("h02"), second_time),
                (fleet.host("h04"), second_time)
            ],
            "true"
        )
    );
    let first = fleet.run(
        fleet
            .flags()
            .args(["-g", "all", "--json", "--", command.as_str()]),
    );
    first.assert_code(EXIT_NOT_REACHED);
    let [original] = &run_ids(&fleet)[..] else {
        panic!("expected one run: {:?}", run_ids(&fleet))
    };
    assert!(
        first.stderr.contains(&format!(
            "`volley retry {original}` runs it again on the 3 hosts"
        )),
        "{}",
        first.describe()
    );

    let retry = fleet.run(["retry", "last"]);
    retry.assert_code(EXIT_NOT_REACHED);
    let records = retry.records_by_host();
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        ["h02", "h04", "h06"],
        "{}",
        retry.describe()
    );
    expect_outcome(&retry, &records, "h02", "succeeded");
    expect_outcome(&retry, &records, "h04", "succeeded");
    expect_outcome(&retry, &records, "h06", "unreachable");
    assert_runs(
        &fleet,
        &[("h01", 1), ("h02", 2), ("h03", 1), ("h04", 2), ("h05", 1)],
    );
    let retry_id = run_ids(&fleet)
        .into_iter()
        .find(|id| id != original)
        .expect("the retry is recorded");
    let shown = fleet.run(["runs", "show", "last"]);
    assert!(
        shown
            .stdout
            .starts_with(&format!("run       {retry_id} (retry of {original})\n")),
        "{}",
        shown.describe()
    );

    // Narrowed to a class: only the dead host, from the original run.
    let unreachable = fleet.run(["retry", original.as_str(), "--only", "unreachable"]);
    unreachable.assert_code(EXIT_NOT_REACHED);
    assert_eq!(
        unreachable.records_by_host().keys().collect::<Vec<_>>(),
        ["h06"]
    );
    let nothing = fleet.run(["retry", original.as_str(), "--only", "signalled"]);
    nothing.assert_code(0);
    assert!(
        nothing
            .stderr
            .starts_with("volley: nothing to retry: no host of run"),
        "{}",
        nothing.describe()
    );
    assert_runs(
        &fleet,
        &[("h01", 1), ("h02", 2), ("h03", 1), ("h04", 2), ("h05", 1)],
    );
}

#[test]
fn connect_failures_are_retried_and_failed_commands_are_not() {
    let fleet = SshFleet::with_spec(FleetSpec::new(3).with(HostKind::Dead));
    // `late` is h03 behind a port whose first connection hangs: that connect times out, and
    // the retry gets through.
    let late = StallingPort::start(1, fleet.host("h03").socket);
    let h03_key = fleet.host("h03").host_key.clone().expect("h03 is served");
    let known_hosts = with_line(
        fleet.known_hosts(),
        "known_hosts",
        &known_hosts_line(late.socket(), &h03_key),
        &fleet,
    );
    let inventory = with_line(
        fleet.inventory(),
        "inventory.toml",
        &format!(
            "\n[hosts.late]\naddress = \"{}\"\nport = {}\n",
            late.socket().ip(),
            late.socket().port()
        ),
        &fleet,
    );
    let mut flags = fleet.flags();
    flags.known_hosts = known_hosts;
    flags.inventory = inventory;
    let command = mark(&fleet) + &per_host_command(&[(fleet.host("h01"), "exit 1")], "true");

    let output = fleet.run(flags.args([
        "-w",
        "h01,h02,h04,late",
        "--retries",
        "2",
        "--connect-timeout",
        "2s",
        "--json",
        "--",
        command.as_str(),
    ]));

    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    let attempts =
        |name: &str, outcome: &str| expect_outcome(&output, &records, name, outcome).attempts;
    assert_eq!(
        attempts("h01", "non_zero_exit"),
        1,
        "a failed command is not retried"
    );
    assert_eq!(attempts("h02", "succeeded"), 1);
    assert_eq!(attempts("h04", "unreachable"), 3, "refused, retried twice");
    assert_eq!(
        attempts("late", "succeeded"),
        2,
        "timed out once, then through"
    );
    assert_eq!(late.accepted(), 2);
    // Two backoffs of at least 0.5s and 1s lie between the dead host's three refusals.
    assert!(records["h04"].total_ms >= 1500.0, "{:?}", records["h04"]);
    assert_runs(&fleet, &[("h01", 1), ("h02", 1), ("h03", 1)]);
}

/// A copy of the fleet's `file` with `line` appended, in the fleet's directory.
fn with_line(file: &std::path::Path, name: &str, line: &str, fleet: &SshFleet) -> PathBuf {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let path = fleet.dir().join(format!("rollout-{name}"));
    std::fs::write(&path, format!("{text}{line}\n"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

#[test]
fn bad_rollout_input_is_one_line_and_exit_64() {
    let fleet = SshFleet::start(1);
    for (args, expected) in [
        (
            &["--batch", "0"][..],
            "volley: --batch '0': a batch must hold at least one host\n",
        ),
        (
            &["--batch", "10x"],
            "volley: --batch '10x': '10x' is not a number of hosts (25) or a percentage (10%)\n",
        ),
        (
            &["--max-failures", "abc"],
            "volley: --max-failures 'abc': 'abc' is not a number of hosts (25) or a percentage (10%)\n",
        ),
    ] {
        let mut all = vec!["-g", "all"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "true"]);
        let output = fleet.run(fleet.flags().args(all));
        output.assert_code(EXIT_USAGE);
        assert_eq!(output.stderr, expected, "{args:?}");
    }
    for args in [
        &["runs", "show", "20991231T000000Z-beef"][..],
        &["retry", "nope"],
    ] {
        let output = fleet.run(args);
        output.assert_code(EXIT_USAGE);
        assert!(
            output.stderr.starts_with("volley: ") && output.stderr.lines().count() == 1,
            "{args:?}\n{}",
            output.describe()
        );
    }
    // Nothing ran, so nothing was recorded.
    assert_eq!(run_ids(&fleet), Vec::<String>::new());
}
