//! `volley agent` as a non-root SSH user: told to use `--become` without it; through `sudo -n`
//! with it, every operation (status, install, renew, upgrade, uninstall) reads, writes and
//! removes root's files; where sudo asks for a password the host fails the step `become` and
//! nothing is written.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use volley_tests::SshFleet;
use volley_tests::remote::wait_until_gone;
use volley_tests::users::{self, Sudo};

use crate::installation::{Installation, agent_command_line, files_under, record};

const SUCCEEDED: i32 = 0;
const SOME_FAILED: i32 = 1;

#[test]
fn a_sudo_user_manages_agents_with_become_and_a_password_is_a_clear_failure() {
    let installation = Installation::new(SshFleet::start(2), &[]);
    let sudo_user = users::ensure(Sudo::Passwordless);
    let password_user = users::ensure(Sudo::NeedsPassword);

    // Without --become a non-root user is told how to become root, and nothing is written.
    let output = installation.agent_as(sudo_user, "install", &["-w", "h01"]);
    output.assert_code(SOME_FAILED);
    let records = output.records_by_host();
    let refused = record(&output, &records, "h01");
    let reason = refused.reason.as_deref().unwrap_or_default();
    assert!(
        refused.outcome == "step_failed"
            && reason.starts_with(
                "probe failed: the SSH user volley-sudo is not root: log in as root, or give \
                 --become"
            ),
        "{refused:?}"
    );
    assert!(files_under(installation.prefix("h01")).is_empty());

    // Where sudo wants a password the step `become` fails, before anything is written.
    let output = installation.agent_as(password_user, "install", &["-w", "h02", "--become"]);
    output.assert_code(SOME_FAILED);
    let records = output.records_by_host();
    let failed = record(&output, &records, "h02");
    let reason = failed.reason.as_deref().unwrap_or_default();
    assert!(
        failed.outcome == "step_failed"
            && reason.starts_with(
                "become failed: sudo -n as volley-sudopw asks for a password, which volley \
                 never types (--become)"
            ),
        "{failed:?}"
    );
    assert!(files_under(installation.prefix("h02")).is_empty());

    // Status asks over SSH where no agent answers; without --become it says what it could not
    // see, with it it reads as root.
    let output = installation.agent_as(sudo_user, "status", &["-w", "h01"]);
    output.assert_code(SOME_FAILED);
    let status = &output.records()[0];
    assert_eq!(
        status.reason.as_deref(),
        Some(
            "status failed: no agent is installed that volley-sudo can see (not root: give \
             --become)"
        ),
        "{status:?}"
    );
    let output = installation.agent_as(sudo_user, "status", &["-w", "h01", "--become"]);
    output.assert_code(SOME_FAILED);
    let status = &output.records()[0];
    assert_eq!(
        (
            status.stdout.as_str(),
            status.reason.as_deref().unwrap_or_default()
        ),
        (
            "version=none reachable=no installed=no\n",
            "status failed: no agent is installed"
        ),
        "{status:?}"
    );

    // With --become every operation goes through sudo and the files are root's.
    let output = installation.agent_as(sudo_user, "install", &["-w", "h01", "--become"]);
    output.assert_code(SUCCEEDED);
    let installed = &output.records()[0];
    assert!(
        installed
            .stdout
            .starts_with("changed: binary, ca, certificate, config, started; "),
        "{installed:?}"
    );
    for file in [
        "usr/local/bin/volley-agent",
        "etc/volley/agent.key",
        "etc/volley/agent.toml",
    ] {
        let metadata = std::fs::metadata(installation.file("h01", file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(metadata.uid(), 0, "{file} is not root's");
    }
    let key = std::fs::metadata(installation.file("h01", "etc/volley/agent.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    let pids = installation.agent_pids("h01");
    assert_eq!(pids.len(), 1, "agent processes: {pids:?}");

    let output = installation.agent_as(sudo_user, "renew", &["-w", "h01", "--become"]);
    output.assert_code(SUCCEEDED);
    assert!(
        output.records()[0]
            .stdout
            .contains("reloaded without a restart"),
        "{}",
        output.describe()
    );
    assert_eq!(installation.agent_pids("h01"), pids, "renew restarted");

    let output = installation.agent_as(sudo_user, "upgrade", &["-w", "h01", "--become"]);
    output.assert_code(SUCCEEDED);
    assert!(
        output.records()[0].stdout.starts_with("unchanged; "),
        "{}",
        output.describe()
    );

    let output = installation.agent_as(sudo_user, "uninstall", &["-w", "h01", "--become"]);
    output.assert_code(SUCCEEDED);
    assert!(
        output.records()[0]
            .stdout
            .starts_with("changed: stopped, removed "),
        "{}",
        output.describe()
    );
    // All but the log, which keeps the audit records of what ran.
    assert_eq!(
        files_under(installation.prefix("h01")),
        [installation.prefix("h01").join("var/log/volley-agent.log")]
    );
    let left = wait_until_gone(
        &agent_command_line(installation.prefix("h01")),
        Duration::from_secs(10),
    );
    assert!(left.is_empty(), "the agent still runs: {left:?}");
}
