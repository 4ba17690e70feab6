//! Around a run: `--out-dir` keeps each host's output in files, `-N` streams bare lines, and
//! `--list-hosts` shows what would be dialled without running anything.

use volley_tests::remote::per_host_command;
use volley_tests::{FleetSpec, HostKind, SshFleet};

use crate::EXIT_SUCCESS;

#[test]
fn out_dir_keeps_each_host_s_output_and_the_outcome_lists() {
    let fleet = SshFleet::with_spec(FleetSpec::new(2).with(HostKind::Dead));
    let command = per_host_command(
        &[(fleet.host("h02"), "echo bad >&2; exit 3")],
        "printf 'line1\\nline2\\n'; echo note >&2",
    );
    let dir = fleet.dir().join("out/today");
    let output = fleet.run(fleet.flags().args([
        "-g".as_ref(),
        "all".as_ref(),
        "--out-dir".as_ref(),
        dir.as_os_str(),
        "--".as_ref(),
        command.as_str().as_ref(),
    ]));
    output.assert_code(2);
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", output.describe()))
    };
    assert_eq!(read("h01.stdout"), "line1\nline2\n");
    assert_eq!(read("h01.stderr"), "note\n");
    assert_eq!(read("h02.stdout"), "");
    assert_eq!(read("h02.stderr"), "bad\n");
    // The dead host was tried: its files exist, empty.
    assert_eq!(read("h03.stdout"), "");
    assert_eq!(read("succeeded"), "h01\n");
    assert_eq!(read("failed"), "h02\nh03\n");
    // The terminal stream goes on as usual.
    assert_eq!(
        output.stdout_of("h01"),
        ["line1", "line2"],
        "{}",
        output.describe()
    );

    // A directory that cannot be made is an input error before anything runs.
    let blocked = fleet.dir().join("a-file");
    std::fs::write(&blocked, "").unwrap();
    let output = fleet.run(fleet.flags().args([
        "-w".as_ref(),
        "h01".as_ref(),
        "--out-dir".as_ref(),
        blocked.join("sub").as_os_str(),
        "--".as_ref(),
        "echo ran".as_ref(),
    ]));
    output.assert_code(crate::EXIT_USAGE);
    assert!(
        output.stderr.starts_with("volley: --out-dir "),
        "{}",
        output.describe()
    );
    assert!(!output.stdout.contains("ran"), "{}", output.describe());
}

/// A retry into the run's `--out-dir` lists the whole run, as it stands: the hosts it did not
/// take keep their place in `succeeded` or `failed` (a list used as the next host list must
/// not drop a host that still failed), through a retry of the retry too.
#[test]
fn a_retry_s_out_dir_lists_are_of_the_whole_run() {
    let fleet = SshFleet::start(3);
    let go = fleet.dir().join("go");
    let command = per_host_command(
        &[
            (
                fleet.host("h02"),
                &format!("test -e {} || exit 1", go.display()),
            ),
            (fleet.host("h03"), "exit 1"),
        ],
        "echo done",
    );
    let dir = fleet.dir().join("out");
    let output = fleet.run(fleet.flags().args([
        "-g".as_ref(),
        "all".as_ref(),
        "--out-dir".as_ref(),
        dir.as_os_str(),
        "--".as_ref(),
        command.as_str().as_ref(),
    ]));
    output.assert_code(1);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(
        (read("succeeded"), read("failed")),
        ("h01\n".into(), "h02\nh03\n".into())
    );

    std::fs::write(&go, "").unwrap();
    for _ in 0..2 {
        let output = volley_tests::RunningProcess::spawn(fleet.volley().args(["retry", "last"]))
            .finish(volley_tests::volley::RUN_DEADLINE);
        output.assert_code(1);
        assert_eq!(
            (read("succeeded"), read("failed")),
            ("h01\nh02\n".into(), "h03\n".into()),
            "{}",
            output.describe()
        );
        assert_eq!(read("h01.stdout"), "done\n", "not the retry's: kept");
    }
}

#[test]
fn no_prefix_streams_bare_lines() {
    let fleet = SshFleet::start(2);
    let output = fleet.run(fleet.flags().args(["-g", "all", "-N", "--", "echo same"]));
    output.assert_code(EXIT_SUCCESS);
    assert_eq!(output.stdout, "same\nsame\n", "{}", output.describe());
}

#[test]
fn list_hosts_shows_what_would_be_dialled_and_runs_nothing() {
    let fleet = SshFleet::start(2);
    let h02 = fleet.host("h02").socket;
    let output = fleet.run(
        fleet
            .flags()
            .args(["-g", "all", "-x", "h01", "--list-hosts"]),
    );
    output.assert_code(EXIT_SUCCESS);
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", output.describe());
    assert!(
        lines[0].starts_with("HOST") && lines[0].contains("TRANSPORT"),
        "{}",
        lines[0]
    );
    let words: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        words,
        [
            "h02",
            fleet.user(),
            &h02.ip().to_string(),
            &h02.port().to_string(),
            "auto",
            "7731",
            "no",
            "-"
        ]
    );

    let output = fleet.run(fleet.flags().args([
        "-w",
        "h01",
        "--transport",
        "ssh",
        "--list-hosts",
        "--json",
    ]));
    output.assert_code(EXIT_SUCCESS);
    let record: serde_json::Value = serde_json::from_str(output.stdout.trim()).unwrap();
    assert_eq!(record["host"], "h01");
    assert_eq!(record["port"], fleet.host("h01").socket.port());
    assert_eq!(record["transport"], "ssh");
    assert_eq!(record["agent_port"], serde_json::Value::Null);

    // An agent operation lists the same hosts, reached over SSH whatever their transport.
    let inventory = fleet.inventory().to_string_lossy().into_owned();
    let output = fleet.run([
        "agent",
        "install",
        "--inventory",
        inventory.as_str(),
        "-w",
        "h01",
        "--list-hosts",
    ]);
    output.assert_code(EXIT_SUCCESS);
    let row: Vec<&str> = output
        .stdout
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row.first(), Some(&"h01"), "{}", output.describe());
    assert_eq!(row.get(4), Some(&"ssh"), "{}", output.describe());

    // Through agents, a jump host is not used: said, since the list shows it.
    let output = fleet.run(fleet.flags().args([
        "-w",
        "h01",
        "--transport",
        "agent",
        "-J",
        "bastion",
        "--list-hosts",
    ]));
    output.assert_code(EXIT_SUCCESS);
    assert_eq!(
        output.stderr,
        "volley: warning: h01 has jump hosts, which the agent transport does not use: their \
         agents are dialled directly\n",
        "{}",
        output.describe()
    );

    // Nothing ran, so nothing was journalled.
    let output = fleet.run(["runs"]);
    assert!(
        output.stdout.starts_with("no runs recorded"),
        "{}",
        output.describe()
    );
}
