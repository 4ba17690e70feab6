//! The `HOST: line` stream, stdout kept apart from stderr, big output, and `--gather`.

use volley_tests::loopback::AddressBlock;
use volley_tests::remote::per_host_command;
use volley_tests::volley::{RUN_DEADLINE, volley_command};
use volley_tests::{ProcessOutput, RunningProcess, SshFleet};

use crate::{EXIT_COMMAND_FAILED, EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome};

#[test]
fn stdout_and_stderr_stay_apart() {
    let fleet = SshFleet::start(3);
    let output = fleet.run(
        fleet
            .flags()
            .args(["-g", "all", "--", "echo out; echo err >&2"]),
    );
    output.assert_code(EXIT_SUCCESS);
    let mut stdout: Vec<&str> = output.stdout.lines().collect();
    stdout.sort_unstable();
    assert_eq!(
        stdout,
        ["h01: out", "h02: out", "h03: out"],
        "{}",
        output.describe()
    );
    for host in fleet.hosts() {
        assert_eq!(
            output.stderr_of(&host.name),
            ["err"],
            "{}\n{}",
            host.name,
            output.describe()
        );
    }
}

/// `seq 1 1500000` prints about 10 MiB.
const LAST_NUMBER: u64 = 1_500_000;

fn seq_bytes(last: u64) -> u64 {
    (1..=last).map(|n| n.to_string().len() as u64 + 1).sum()
}

#[test]
fn ten_mebibytes_arrive_intact_and_the_json_copy_is_capped() {
    let fleet = SshFleet::start(1);
    let seq = format!("seq 1 {LAST_NUMBER}");
    assert!(seq_bytes(LAST_NUMBER) > 10 * 1024 * 1024);

    // The stream is never capped, so all of it passes the default 1 MiB cap of the kept copy.
    let output = fleet.run(fleet.flags().args(["-w", "h01", "--", seq.as_str()]));
    output.assert_code(EXIT_SUCCESS);
    let mut expected = 1;
    for line in output.stdout.lines() {
        assert_eq!(
            line,
            format!("h01: {expected}"),
            "line {expected} of the stream"
        );
        expected += 1;
    }
    assert_eq!(expected - 1, LAST_NUMBER, "lines in the stream");

    let output = fleet.run(fleet.flags().args([
        "-w",
        "h01",
        "--max-output",
        "64KiB",
        "--json",
        "--",
        seq.as_str(),
    ]));
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, "h01", "succeeded");
    assert!(record.stdout_truncated, "stdout_truncated is false");
    assert_eq!(record.stdout_bytes, seq_bytes(LAST_NUMBER));
    assert!(
        !record.stdout.is_empty() && record.stdout.len() <= 64 * 1024,
        "{}",
        record.stdout.len()
    );
    let full: String = (1..=LAST_NUMBER)
        .take(20_000)
        .map(|n| format!("{n}\n"))
        .collect();
    assert!(
        full.starts_with(&record.stdout),
        "the kept copy is not the head of the output"
    );
    assert!(!record.stderr_truncated);
    assert_eq!(record.stderr_bytes, 0);
}

/// The header of the block that holds line `index`: the nearest line above it that is not blank
/// and not a ruler of punctuation.
fn header_above<'a>(lines: &[&'a str], index: usize) -> &'a str {
    lines[..index]
        .iter()
        .rev()
        .find(|line| line.chars().any(char::is_alphanumeric))
        .copied()
        .unwrap_or("")
}

#[test]
fn gather_prints_identical_output_once_under_the_folded_hosts() {
    let fleet = SshFleet::start(21);
    let command = per_host_command(&[(fleet.host("h21"), "echo other; exit 5")], "echo same");
    let output = fleet.run(
        fleet
            .flags()
            .args(["-g", "all", "--gather", "--", command.as_str()]),
    );
    output.assert_code(EXIT_COMMAND_FAILED);

    let lines: Vec<&str> = output.stdout.lines().collect();
    let positions = |text: &str| -> Vec<usize> {
        lines
            .iter()
            .enumerate()
            .filter(|(_, line)| line.trim() == text)
            .map(|(i, _)| i)
            .collect()
    };
    let same = positions("same");
    assert_eq!(
        same.len(),
        1,
        "`same` is not printed once\n{}",
        output.describe()
    );
    let header = header_above(&lines, same[0]);
    assert!(
        header.contains("h[01-20]") && !header.contains("h21"),
        "header {header:?}"
    );

    let other = positions("other");
    assert_eq!(
        other.len(),
        1,
        "`other` is not printed once\n{}",
        output.describe()
    );
    let header = header_above(&lines, other[0]);
    assert!(
        header.contains("h21") && !header.contains("h[01"),
        "header {header:?}"
    );

    assert!(
        output.stdout_of("h01").is_empty(),
        "--gather still streamed\n{}",
        output.describe()
    );
}

/// `-w 'A.B.C.[1-12]:PORT'` on addresses where nothing listens: every host is refused. No sshd is
/// needed. Gives the pattern and what volley printed.
fn run_refused(extra: &[&str]) -> (String, ProcessOutput) {
    let home = tempfile::tempdir().unwrap();
    let socket = AddressBlock::random().next_free_socket();
    let [a, b, c, _] = socket.ip().octets();
    let pattern = format!("{a}.{b}.{c}.[1-12]:{}", socket.port());
    let mut volley = volley_command(home.path());
    volley.args(["run", "-w", &pattern]).args(extra);
    let output = RunningProcess::spawn(volley.args(["--", "true"])).finish(RUN_DEADLINE);
    output.assert_code(EXIT_NOT_REACHED);
    (pattern, output)
}

#[test]
fn hosts_named_with_a_port_fold_on_their_address_in_the_summary() {
    let (pattern, output) = run_refused(&[]);
    assert!(
        output.stderr.contains(&format!("  12  {pattern} (ssh)\n")),
        "the summary does not fold the hosts to {pattern}\n{}",
        output.describe()
    );
}

#[test]
fn gather_groups_hosts_refused_alike_under_one_header() {
    let (pattern, output) = run_refused(&["--gather"]);
    let headers: Vec<&str> = output
        .stdout
        .lines()
        .filter(|line| !line.starts_with("---"))
        .collect();
    let expected = format!("{pattern} (12): unreachable: ssh {pattern}: connection refused");
    assert_eq!(headers, [expected.as_str()], "{}", output.describe());
}
