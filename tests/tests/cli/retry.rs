//! `volley retry` with overrides: flags given to a retry replace the recorded ones, are
//! journalled, and still hold in a retry of that retry; the retry hint is not offered when only
//! host keys or credentials failed.

use std::path::Path;

use serde_json::Value;
use volley_tests::remote::per_host_command;
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
