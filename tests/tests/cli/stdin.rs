//! stdin: `--hosts-file -` reads the targets from volley's stdin; `--stdin FILE|-` sends the
//! same bytes to every host's command, over SSH and through agents, and a timeout still stops
//! a command that was given input.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use volley_tests::loopback::AddressBlock;
use volley_tests::pipe::on_terminal_with_stderr_to_file;
use volley_tests::remote::{SweepOnDrop, assert_none_left, unique_sleep, wait_until_running};
use volley_tests::volley::{RUN_DEADLINE, volley_binary};
use volley_tests::{AgentFleet, ProcessOutput, RunningProcess, SshFleet};

use crate::EXIT_SUCCESS;

/// 300 KB of every byte value, NUL and newlines included: more than a pipe or an SSH window
/// holds at once.
fn input(dir: &Path) -> (std::path::PathBuf, String) {
    let bytes: Vec<u8> = (0..300_000u32).map(|n| (n * 7 % 256) as u8).collect();
    let path = dir.join("input.bin");
    std::fs::write(&path, &bytes).unwrap();
    let cksum = Command::new("cksum").arg(&path).output().unwrap();
    let sum = String::from_utf8(cksum.stdout).unwrap();
    // `cksum FILE` prints `CRC SIZE FILE`; from stdin it prints `CRC SIZE`.
    let sum = sum.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    (path, format!("{sum}\n"))
}

/// SHA-256 of `text`, as sha256sum prints it.
fn sha256(text: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8(output.stdout).unwrap()[..64].to_string()
}

fn run_with_stdin(command: &mut Command, stdin: &Path) -> ProcessOutput {
    RunningProcess::spawn_with_stdin(command, File::open(stdin).unwrap()).finish(RUN_DEADLINE)
}

#[test]
fn every_ssh_host_reads_the_same_bytes_from_a_file_or_from_volley_s_stdin() {
    let fleet = SshFleet::start(3);
    let (path, sum) = input(fleet.dir());

    let output = fleet.run(fleet.flags().args([
        "-g".as_ref(),
        "all".as_ref(),
        "--json".as_ref(),
        "--stdin".as_ref(),
        path.as_os_str(),
        "--".as_ref(),
        "cksum".as_ref(),
    ]));
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        let record =
            volley_tests::report::expect_outcome(&output, &records, &host.name, "succeeded");
        assert_eq!(record.stdout, sum, "{}", host.name);
    }

    // `-`: volley's own stdin, read once and sent to every host.
    let output = run_with_stdin(
        fleet.volley().args(
            fleet
                .flags()
                .args(["-w", "h01,h02", "--stdin", "-", "--", "cksum"]),
        ),
        &path,
    );
    output.assert_code(EXIT_SUCCESS);
    for name in ["h01", "h02"] {
        assert_eq!(
            output.stdout_of(name),
            [sum.trim_end()],
            "{}",
            output.describe()
        );
    }
}

/// A retry of a `--stdin -` run reads volley's stdin again. Given none (`< /dev/null`, as from
/// cron), it is refused: the hosts' `cat > FILE` would have emptied their file. Other input
/// than the run's is said, and sent.
#[test]
fn a_retry_given_no_input_where_its_run_had_some_is_refused() {
    let fleet = SshFleet::start(1);
    let conf = fleet.dir().join("app.conf");
    let input = fleet.dir().join("input");
    std::fs::write(&input, "setting = 1\n").unwrap();
    let command = format!("cat > {}; exit 1", conf.display());
    let output = run_with_stdin(
        fleet.volley().args(
            fleet
                .flags()
                .args(["-w", "h01", "--stdin", "-", "--", &command]),
        ),
        &input,
    );
    output.assert_code(1);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "setting = 1\n");
    let id = output
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("volley: run "))
        .and_then(|rest| rest.split(':').next())
        .expect("the run's id")
        .to_string();

    let refused = run_with_stdin(fleet.volley().args(["retry", &id]), Path::new("/dev/null"));
    refused.assert_code(64);
    assert_eq!(
        refused.stderr,
        format!(
            "volley: run {id}'s command read 12 bytes on its stdin, and the retry's stdin is empty: give it the same input (volley retry {id} < FILE)\n"
        )
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "setting = 1\n");
    // Listing its hosts sends nothing: no input is needed for that.
    let listed = run_with_stdin(
        fleet.volley().args(["retry", &id, "--list-hosts"]),
        Path::new("/dev/null"),
    );
    listed.assert_code(EXIT_SUCCESS);

    std::fs::write(&input, "setting = 2\n").unwrap();
    let other = run_with_stdin(fleet.volley().args(["retry", &id]), &input);
    other.assert_code(1);
    let said = format!(
        "volley: the retry's --stdin (12 bytes, SHA-256 {}...) is not what run {id}'s command read (12 bytes, SHA-256 {}...): the hosts get the retry's\n",
        &sha256("setting = 2\n")[..12],
        &sha256("setting = 1\n")[..12]
    );
    assert!(other.stderr.starts_with(&said), "{}", other.describe());
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "setting = 2\n");
}

#[test]
fn hosts_file_dash_reads_the_targets_from_stdin() {
    let fleet = SshFleet::start(3);
    let list = fleet.dir().join("list");
    // A refusing address too, so that there is something to retry.
    let dead = format!("{}:1", AddressBlock::random().next_address());
    std::fs::write(&list, format!("# from a pipe\nh01\nh03\n{dead}\n")).unwrap();
    let output = run_with_stdin(
        fleet
            .volley()
            .args(fleet.flags().args(["--hosts-file", "-", "--", "echo here"])),
        &list,
    );
    output.assert_code(2);
    assert_eq!(output.stdout_of("h01"), ["here"], "{}", output.describe());
    assert_eq!(output.stdout_of("h03"), ["here"], "{}", output.describe());
    assert!(output.stdout_of("h02").is_empty(), "{}", output.describe());

    // A retry needs no list again: it takes the hosts it retries from the journal, and reads
    // nothing from its stdin (here a terminal, which would wait for typing).
    let home = fleet.client_home().to_string_lossy().into_owned();
    let state = format!("{home}/.local/state");
    let run = on_terminal_with_stderr_to_file(
        &volley_binary(),
        &["retry".into(), "last".into(), "--json".into()],
        &[("HOME", home.as_str()), ("XDG_STATE_HOME", state.as_str())],
        fleet.dir(),
        RUN_DEADLINE,
    );
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(
        run.terminal.contains(&format!("\"host\":\"{dead}\""))
            && !run.terminal.contains("\"host\":\"h01\""),
        "{run:?}"
    );

    // stdin cannot feed both.
    let output = run_with_stdin(
        fleet.volley().args(fleet.flags().args([
            "--hosts-file",
            "-",
            "--stdin",
            "-",
            "--",
            "true",
        ])),
        &list,
    );
    output.assert_code(crate::EXIT_USAGE);
}

#[test]
fn a_timeout_stops_a_command_that_was_given_input() {
    let fleet = SshFleet::start(2);
    let (path, _) = input(fleet.dir());
    let sleep = unique_sleep("4141.59");
    let _sweep = SweepOnDrop(sleep.clone());
    let command = format!("wc -c > /dev/null; {sleep} & {sleep}");
    let mut volley = fleet.spawn(fleet.flags().args([
        "-g".as_ref(),
        "all".as_ref(),
        "--json".as_ref(),
        "--timeout".as_ref(),
        "3s".as_ref(),
        "--stdin".as_ref(),
        path.as_os_str(),
        "--".as_ref(),
        command.as_str().as_ref(),
    ]));
    let running = wait_until_running(&sleep, 4, Duration::from_secs(30), || volley.has_exited());
    assert_eq!(running.len(), 4, "the commands did not start: {running:?}");
    let output = volley.finish(RUN_DEADLINE);
    output.assert_code(2);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        volley_tests::report::expect_outcome(&output, &records, &host.name, "command_timeout");
    }
    assert_none_left(&sleep, Duration::from_secs(10));
}

#[test]
fn every_agent_reads_the_same_bytes() {
    let fleet = AgentFleet::start(2);
    let (path, sum) = input(fleet.dir());
    let output = fleet.run(fleet.run_args([
        "-g".as_ref(),
        "all".as_ref(),
        "--transport".as_ref(),
        "agent".as_ref(),
        "--json".as_ref(),
        "--stdin".as_ref(),
        path.as_os_str(),
        "--".as_ref(),
        "cksum".as_ref(),
    ]));
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        let record = volley_tests::report::expect_outcome_via(
            &output,
            &records,
            &host.name,
            "succeeded",
            "agent",
        );
        assert_eq!(record.stdout, sum, "{}", host.name);
    }
}
