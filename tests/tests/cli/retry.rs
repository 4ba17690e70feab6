//! `volley retry` with overrides: flags given to a retry replace the recorded ones, are
//! journalled, and still hold in a retry of that retry; the retry hint is not offered when only
//! host keys or credentials failed.

use std::path::Path;

use serde_json::Value;
use volley_tests::process::RunningProcess;
use volley_tests::remote::per_host_command;
use volley_tests::volley::RUN_DEADLINE;
use volley_tests::{FleetSpec, HostKind, SshFleet};

/// The id in `volley: run ID: ...`, the line that ends a run with failures.
fn run_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("volley: run "))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no run line in\n{stderr}"))
        .to_string()
}

/// The header of the journal of run `id`.
fn header(runs: &Path, id: &str) -> Value {
    let text = std::fs::read_to_string(runs.join(format!("{id}.jsonl")))
        .unwrap_or_else(|e| panic!("no journal for {id}: {e}"));
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

#[test]
fn a_retry_takes_overrides_and_a_retry_of_it_keeps_them() {
    let fleet = SshFleet::with_spec(
        FleetSpec::new(2)
            .with(HostKind::UnknownKey)
            .with(HostKind::Dead),
    );
    let command = per_host_command(&[(fleet.host("h02"), "exit 3")], "echo ok");

    // Only an unknown host key failed: a plain retry would fail the same way.
    let output = fleet.run(fleet.flags().args(["-w", "h03", "--", "true"]));
    output.assert_code(2);
    assert!(
        output.stderr.contains("no retry offered"),
        "{}",
        output.describe()
    );
    assert!(
        !output.stderr.contains("volley retry"),
        "{}",
        output.describe()
    );

    let output = fleet.run(fleet.flags().args(["-g", "all", "--", command.as_str()]));
    output.assert_code(2);
    assert!(
        output.stderr.contains("`volley retry"),
        "{}",
        output.describe()
    );
    let original = run_id(&output.stderr);

    // The retry accepts the new key, runs one host at a time with a timeout, and prints JSON.
    let output = fleet.run([
        "retry",
        original.as_str(),
        "-p",
        "1",
        "--timeout",
        "5s",
        "--json",
        "--accept-new-host-keys",
    ]);
    output.assert_code(2);
    let records = output.records_by_host();
    assert_eq!(
        records.keys().map(String::as_str).collect::<Vec<_>>(),
        ["h02", "h03", "h04"],
        "{}",
        output.describe()
    );
    volley_tests::report::expect_outcome(&output, &records, "h03", "succeeded");
    volley_tests::report::expect_outcome(&output, &records, "h02", "non_zero_exit");
    let first = run_id(&output.stderr);
    let recorded = header(&fleet.runs_dir(), &first);
    assert_eq!(recorded["retry_of"], original.as_str());
    assert_eq!(recorded["options"]["parallel"], 1);
    assert_eq!(recorded["options"]["timeout_ms"], 5000);
    assert_eq!(recorded["retry_overrides"].as_array().unwrap().len(), 1);

    // The retry of the retry: gathered output now, and still one host at a time within 5 s.
    let output = fleet.run(["retry", "last", "--gather"]);
    output.assert_code(2);
    assert!(output.stdout.contains("h02 (1)"), "{}", output.describe());
    assert!(
        !output.stdout.contains('{'),
        "still JSON\n{}",
        output.describe()
    );
    let second = run_id(&output.stderr);
    let recorded = header(&fleet.runs_dir(), &second);
    assert_eq!(recorded["retry_of"], first.as_str());
    assert_eq!(recorded["hosts"], serde_json::json!(["h02", "h04"]));
    assert_eq!(recorded["options"]["parallel"], 1);
    assert_eq!(recorded["options"]["timeout_ms"], 5000);
    assert_eq!(recorded["retry_overrides"].as_array().unwrap().len(), 2);
}

/// A retry reads the relative paths of its run's arguments from the directory the run ran in,
/// wherever it is started: a relative `--inventory` names the same file. A path given to the
/// retry itself (`--out-dir`) is the operator's, from where the retry is started.
#[test]
fn a_retry_reads_its_runs_relative_paths_from_where_the_run_ran() {
    let fleet = SshFleet::with_spec(FleetSpec::new(1).with(HostKind::Dead));
    let flags = fleet.flags();
    let (first, elsewhere) = (fleet.dir().join("first"), fleet.dir().join("elsewhere"));
    for dir in [&first, &elsewhere] {
        std::fs::create_dir(dir).expect("the fleet's directory is writable");
    }
    std::fs::copy(&flags.inventory, first.join("inventory.toml")).expect("a copy");
    // Another inventory of the same name, without the host to retry.
    std::fs::write(
        elsewhere.join("inventory.toml"),
        "[groups.all]\nhosts = [\"h01\"]\n",
    )
    .expect("a scratch inventory");
    let volley_in = |dir: &Path, args: &[&std::ffi::OsStr]| {
        RunningProcess::spawn(fleet.volley().current_dir(dir).args(args)).finish(RUN_DEADLINE)
    };
    let connection = [
        "--known-hosts".as_ref(),
        flags.known_hosts.as_os_str(),
        "-i".as_ref(),
        flags.identity.as_os_str(),
        "-l".as_ref(),
        flags.user.as_ref(),
    ];
    let mut args: Vec<&std::ffi::OsStr> = vec!["run".as_ref(), "--inventory".as_ref()];
    args.push("inventory.toml".as_ref());
    args.extend(connection);
    args.extend(["-g", "all", "--", "true"].map(std::ffi::OsStr::new));
    let output = volley_in(&first, &args);
    output.assert_code(2);

    let retry = ["retry", "last", "--json", "--out-dir", "out"].map(std::ffi::OsStr::new);
    let output = volley_in(&elsewhere, &retry);
    // With the other directory's inventory h02 would be gone (exit 64); it is retried.
    output.assert_code(2);
    let records = output.records_by_host();
    assert_eq!(
        records.keys().map(String::as_str).collect::<Vec<_>>(),
        ["h02"],
        "{}",
        output.describe()
    );
    volley_tests::report::expect_outcome(&output, &records, "h02", "unreachable");
    assert!(
        elsewhere.join("out/h02.stdout").exists(),
        "{}",
        output.describe()
    );
    assert!(!first.join("out").exists());
    let recorded = header(&fleet.runs_dir(), &run_id(&output.stderr));
    assert_eq!(recorded["cwd"], first.display().to_string());

    // And its retry, from a third place, still writes where the first retry was told.
    std::fs::remove_dir_all(elsewhere.join("out")).expect("the output directory is ours");
    let output = volley_in(
        fleet.dir(),
        &["retry", "last", "--json"].map(std::ffi::OsStr::new),
    );
    output.assert_code(2);
    assert!(
        elsewhere.join("out/h02.stdout").exists(),
        "{}",
        output.describe()
    );
    assert!(!fleet.dir().join("out").exists() && !first.join("out").exists());

    // A run whose directory is gone is not taken up from another one.
    std::fs::remove_dir_all(&first).expect("the run's directory is ours");
    let output = volley_in(&elsewhere, &["retry", "last"].map(std::ffi::OsStr::new));
    output.assert_code(64);
    assert!(
        output.stderr.contains(&format!(
            "ran in {}, which cannot be entered (file not found)",
            first.display()
        )),
        "{}",
        output.describe()
    );
}

/// A run still going is neither retried nor resumed: its hosts have not ended, and a retry
/// would run the command a second time where it is running. `runs show` says it is going.
#[test]
fn a_run_still_going_is_not_retried() {
    let fleet = SshFleet::start(2);
    let mut running = RunningProcess::spawn(fleet.volley().args(fleet.flags().args([
        "-g",
        "all",
        "--",
        "echo started; sleep 30",
    ])));
    running.wait_for_stdout(RUN_DEADLINE, |out| out.matches("started").count() == 2);
    let id = std::fs::read_dir(fleet.runs_dir())
        .unwrap()
        .flatten()
        .find_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".jsonl").map(str::to_string)
        })
        .expect("the running run's journal");
    let still_going = format!(
        "volley: run {id} is still going (or being resumed): its volley holds the journal; wait until it has ended (a host still running would run twice)\n"
    );
    for subcommand in [vec!["retry", "last"], vec!["runs", "resume", "last"]] {
        let output = RunningProcess::spawn(fleet.volley().args(&subcommand)).finish(RUN_DEADLINE);
        output.assert_code(64);
        assert_eq!(output.stderr, still_going, "{subcommand:?}");
    }
    let shown =
        RunningProcess::spawn(fleet.volley().args(["runs", "show", "last"])).finish(RUN_DEADLINE);
    shown.assert_code(0);
    assert!(
        shown
            .stdout
            .contains("ended     not yet: the run is still going")
            && shown
                .stdout
                .contains("no outcome yet: the run is still going"),
        "{}",
        shown.describe()
    );
    running.kill_hard();
    // Its volley gone, the run is a retry's to take.
    let output = RunningProcess::spawn(fleet.volley().args(["retry", "last", "--list-hosts"]))
        .finish(RUN_DEADLINE);
    output.assert_code(0);
}

/// A retry holds its run: a second retry of the same run while the first runs (another
/// terminal, a cron job) is refused, instead of running the command again on every host the
/// first one runs it on.
#[test]
fn a_run_being_retried_is_not_retried_again() {
    let fleet = SshFleet::start(2);
    let go = fleet.dir().join("go");
    let command = format!(
        "if [ -e {} ]; then echo started; sleep 30; fi; exit 1",
        go.display()
    );
    let output = RunningProcess::spawn(
        fleet
            .volley()
            .args(fleet.flags().args(["-g", "all", "--", &command])),
    )
    .finish(RUN_DEADLINE);
    output.assert_code(1);
    let id = run_id(&output.stderr);
    std::fs::write(&go, "").unwrap();
    let mut first = RunningProcess::spawn(fleet.volley().args(["retry", &id]));
    first.wait_for_stdout(RUN_DEADLINE, |out| out.matches("started").count() == 2);
    let second = RunningProcess::spawn(fleet.volley().args(["retry", &id])).finish(RUN_DEADLINE);
    second.assert_code(64);
    assert_eq!(
        second.stderr,
        format!(
            "volley: run {id} is being retried by another volley: wait until that retry has ended (a host it runs would run twice)\n"
        )
    );
    // The run itself has ended: it is not shown as still going while it is retried.
    let shown =
        RunningProcess::spawn(fleet.volley().args(["runs", "show", &id])).finish(RUN_DEADLINE);
    shown.assert_code(0);
    assert!(
        !shown.stdout.contains("still going"),
        "{}",
        shown.describe()
    );
    first.kill_hard();
    // The first retry gone, the run is another retry's to take.
    let output = RunningProcess::spawn(fleet.volley().args(["retry", &id, "--list-hosts"]))
        .finish(RUN_DEADLINE);
    output.assert_code(0);
}

/// A retry runs with the settings its run took from `VOLLEY_*` variables, as with its flags:
/// a recorded variable not set where the retry runs still applies; one set there to another
/// value applies instead, and the retry says so.
#[test]
fn a_retry_keeps_the_settings_its_run_took_from_variables() {
    let fleet = SshFleet::start(1);
    let finish =
        |command: &mut std::process::Command| RunningProcess::spawn(command).finish(RUN_DEADLINE);
    let command = "sleep 3; echo done";
    let mut run = fleet.volley();
    run.args(fleet.flags().args(["-g", "all", "--", command]))
        .env("VOLLEY_TIMEOUT", "1s");
    let output = finish(&mut run);
    output.assert_code(2);
    let original = run_id(&output.stderr);
    let recorded = header(&fleet.runs_dir(), &original);
    assert_eq!(recorded["variables"]["VOLLEY_TIMEOUT"], "1s");

    // Not set now: the run's 1 s holds, and the command times out again.
    let output = finish(fleet.volley().args(["retry", "last", "--json"]));
    output.assert_code(2);
    let records = output.records_by_host();
    volley_tests::report::expect_outcome(&output, &records, "h01", "command_timeout");
    let retry = run_id(&output.stderr);
    assert_eq!(
        header(&fleet.runs_dir(), &retry)["options"]["timeout_ms"],
        1000
    );

    // Set now to another value: that one applies, and is said.
    let mut again = fleet.volley();
    again
        .args(["retry", original.as_str(), "--json"])
        .env("VOLLEY_TIMEOUT", "30s");
    let output = finish(&mut again);
    output.assert_code(0);
    assert!(
        output.stderr.contains(&format!(
            "volley: VOLLEY_TIMEOUT is '30s' here and was '1s' for run {original}: '30s' applies\n"
        )),
        "{}",
        output.describe()
    );
}

/// A run killed while a command that ignores TERM still ran on an SSH host: the host stops it
/// when the connection goes (TERM, then KILL two seconds later), and a retry started right
/// away waits that out before it runs the command again, so that the two never run at once.
#[test]
fn a_retry_of_a_killed_run_waits_for_the_commands_it_left_to_stop() {
    let fleet = SshFleet::start(1);
    let log = fleet.dir().join("overlap.log");
    let command = format!(
        "trap '' TERM HUP INT; echo start >> {log}; echo started; sleep 1.5; echo end >> {log}",
        log = log.display()
    );
    let mut running = RunningProcess::spawn(fleet.volley().args(fleet.flags().args([
        "-g",
        "all",
        "--",
        command.as_str(),
    ])));
    running.wait_for_stdout(RUN_DEADLINE, |out| out.contains("started"));
    running.kill_hard();
    let output = RunningProcess::spawn(fleet.volley().args(["retry", "last"])).finish(RUN_DEADLINE);
    output.assert_code(0);
    assert!(
        output
            .stderr
            .contains("ended without its record's end (killed?): waiting 3s for the hosts"),
        "{}",
        output.describe()
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log, "start\nend\nstart\nend\n", "the two ran at once");
}
