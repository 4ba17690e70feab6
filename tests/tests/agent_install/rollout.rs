//! An install is a run: a canary batch whose failure stops the rollout under the failure
//! budget, the journal that `volley runs show` reads, and `volley retry` that installs again on
//! the hosts that did not succeed, and only on them.

use volley_tests::SshFleet;

use crate::installation::{Installation, record};

/// Exit statuses of volley.
const SUCCEEDED: i32 = 0;
const ROLLOUT_STOPPED: i32 = 3;

#[test]
fn an_install_rolls_out_in_batches_is_journalled_and_retried() {
    // h1 cannot be installed (its prefix is a file) and is the canary.
    let installation = Installation::new(SshFleet::start(4), &["h01"]);
    let output = installation.agent(
        "install",
        &["-g", "all", "--batch", "1,50%", "--abort-on-failure"],
    );
    output.assert_code(ROLLOUT_STOPPED);
    let records = output.records_by_host();
    let canary = record(&output, &records, "h01");
    assert_eq!(
        (canary.outcome.as_str(), canary.batch),
        ("step_failed", 1),
        "{canary:?}"
    );
    for host in ["h02", "h03", "h04"] {
        let record = record(&output, &records, host);
        assert_eq!(record.outcome, "skipped", "{host}: {record:?}");
        assert!(
            installation.agent_pids(host).is_empty(),
            "{host} got an agent"
        );
    }

    let shown = installation.volley(["runs", "show", "last"]);
    shown.assert_code(SUCCEEDED);
    assert!(
        shown.stdout.contains("command   volley agent install\n"),
        "{}",
        shown.describe()
    );
    assert!(
        shown
            .stdout
            .contains("rollout stopped by the failure budget"),
        "{}",
        shown.describe()
    );

    // The canary's problem fixed, a retry installs on every host that did not succeed.
    std::fs::remove_file(installation.prefix("h01")).unwrap();
    // The recorded arguments carry --json.
    let output = installation.volley(["retry", "last"]);
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    assert_eq!(records.len(), 4, "{}", output.describe());
    for host in ["h01", "h02", "h03", "h04"] {
        let record = record(&output, &records, host);
        assert!(
            record
                .stdout
                .starts_with("changed: binary, ca, certificate, config, started; "),
            "{host}: {record:?}"
        );
        assert_eq!(installation.agent_pids(host).len(), 1, "{host}");
    }
    let shown = installation.volley(["runs", "show", "last"]);
    assert!(shown.stdout.contains("(retry of "), "{}", shown.describe());
    assert!(
        shown.stdout.contains("command   volley agent install\n"),
        "{}",
        shown.describe()
    );

    // Nothing left to retry: every host succeeded.
    let output = installation.volley(["retry", "last"]);
    output.assert_code(SUCCEEDED);
    assert!(
        output.stderr.contains("nothing to retry"),
        "{}",
        output.describe()
    );
    installation
        .agent("uninstall", &["-g", "all"])
        .assert_code(SUCCEEDED);
}
