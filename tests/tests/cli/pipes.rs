//! A reader that goes away (`| head -1`) ends volley quietly: exit 141 as for any tool a closed
//! pipe ends, nothing on stderr, no panic; the run is stopped on the hosts and journalled.

use std::ffi::OsString;
use std::time::Duration;

use volley_tests::SshFleet;
use volley_tests::loopback::AddressBlock;
use volley_tests::pipe::into_head;
use volley_tests::remote::{SweepOnDrop, assert_none_left, unique_sleep};
use volley_tests::volley::RUN_DEADLINE;

use crate::EXIT_BROKEN_PIPE;

/// A command that prints a line, then keeps printing slowly until stopped; its `sleep` has a
/// unique command line, so that `pgrep` can tell whether it still runs on the hosts.
fn chatty(sleep: &str) -> String {
    format!("echo first; while :; do echo more; {sleep}; done")
}

#[test]
fn head_closing_stdout_stops_the_run_quietly_and_it_is_journalled() {
    let fleet = SshFleet::start(3);
    let sleep = unique_sleep("0.1");
    let _sweep = SweepOnDrop(sleep.clone());
    let command = chatty(&sleep);
    let run = into_head(
        fleet
            .volley()
            .args(fleet.flags().args(["-g", "all", "--", command.as_str()])),
        1,
        false,
        RUN_DEADLINE,
    );
    assert_eq!(
        run.status.code(),
        Some(EXIT_BROKEN_PIPE),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr.is_empty(),
        "stderr is not quiet\n{}",
        run.describe()
    );
    assert!(
        run.head.ends_with(": first\n") && run.head.lines().count() == 1,
        "{}",
        run.describe()
    );
    // The commands were stopped on the hosts, not left printing to no one.
    assert_none_left(&sleep, Duration::from_secs(10));

    let shown = fleet.run(["runs", "show", "last"]);
    shown.assert_code(0);
    assert!(
        shown.stdout.contains("exit status 141"),
        "{}",
        shown.describe()
    );
    for host in fleet.hosts() {
        let row = shown
            .stdout
            .lines()
            .find(|line| line.starts_with(&format!("{} ", host.name)))
            .unwrap_or_else(|| panic!("{} is not journalled\n{}", host.name, shown.describe()));
        assert!(row.contains("cancelled"), "{row}\n{}", shown.describe());
    }
}

#[test]
fn head_closing_stdout_and_stderr_together_ends_quietly_too() {
    let fleet = SshFleet::start(2);
    let sleep = unique_sleep("0.1");
    let _sweep = SweepOnDrop(sleep.clone());
    let command = format!("{} >&2", chatty(&sleep));
    let run = into_head(
        fleet
            .volley()
            .args(fleet.flags().args(["-g", "all", "--", command.as_str()])),
        3,
        true,
        RUN_DEADLINE,
    );
    assert_eq!(
        run.status.code(),
        Some(EXIT_BROKEN_PIPE),
        "{}",
        run.describe()
    );
    assert_eq!(run.head.lines().count(), 3, "{}", run.describe());
    for line in run.head.lines() {
        assert!(
            line.starts_with("h01: ") || line.starts_with("h02: "),
            "not a host line: {line:?}\n{}",
            run.describe()
        );
    }
    assert_none_left(&sleep, Duration::from_secs(10));
}

#[test]
fn runs_show_into_head_ends_quietly() {
    let fleet = SshFleet::start(1);
    // Enough hosts that `runs show` writes far more than a pipe holds: refused at once, on
    // loopback addresses where nothing listens.
    let address = AddressBlock::random().next_address();
    // 8000 hosts: even `--list` (one short name a line) is more than a pipe's 64 KiB.
    let targets = format!("{address}:[1-8000]");
    let output = fleet.run(fleet.flags().args(["-w", targets.as_str(), "--", "true"]));
    output.assert_code(2);

    for extra in [&[][..], &["--list"][..]] {
        let mut args: Vec<OsString> = vec!["runs".into(), "show".into(), "last".into()];
        args.extend(extra.iter().map(OsString::from));
        let run = into_head(fleet.volley().args(&args), 1, false, RUN_DEADLINE);
        assert_eq!(
            run.status.code(),
            Some(EXIT_BROKEN_PIPE),
            "{}",
            run.describe()
        );
        assert!(run.stderr.is_empty(), "{}", run.describe());
        assert_eq!(run.head.lines().count(), 1, "{}", run.describe());
    }
}

#[test]
fn a_run_that_prints_nothing_more_still_stops_when_the_reader_goes_away() {
    let fleet = SshFleet::start(2);
    let sleep = unique_sleep("600.");
    let _sweep = SweepOnDrop(sleep.clone());
    // One line, then ten minutes of silence: no write of volley's would meet the closed pipe.
    let command = format!("echo first; {sleep}");
    let run = into_head(
        fleet
            .volley()
            .args(fleet.flags().args(["-g", "all", "--", command.as_str()])),
        1,
        false,
        Duration::from_secs(60),
    );
    assert_eq!(
        run.status.code(),
        Some(EXIT_BROKEN_PIPE),
        "{}",
        run.describe()
    );
    assert!(run.stderr.is_empty(), "{}", run.describe());
    assert_none_left(&sleep, Duration::from_secs(10));
}

#[test]
fn runs_into_head_ends_quietly() {
    let fleet = SshFleet::start(1);
    let output = fleet.run(fleet.flags().args(["-w", "h01", "--", "true"]));
    output.assert_code(0);
    // `volley runs` lists one line per run: a real run's journal, copied under 2,000 ids, makes
    // a list longer than a pipe holds.
    let runs = fleet.runs_dir();
    let original = std::fs::read_dir(&runs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .expect("the run's journal");
    let text = std::fs::read_to_string(&original).unwrap();
    let id = original.file_stem().unwrap().to_string_lossy().into_owned();
    for n in 0..2000 {
        let copy = format!("20250101T{:06}Z-{:04x}", n, n % 0xffff);
        std::fs::write(runs.join(format!("{copy}.jsonl")), text.replace(&id, &copy)).unwrap();
    }
    let run = into_head(
        fleet.volley().args(["runs", "-n", "5000"]),
        1,
        false,
        RUN_DEADLINE,
    );
    assert_eq!(
        run.status.code(),
        Some(EXIT_BROKEN_PIPE),
        "{}",
        run.describe()
    );
    assert!(run.stderr.is_empty(), "{}", run.describe());
    assert!(run.head.starts_with("RUN "), "{}", run.describe());
}
