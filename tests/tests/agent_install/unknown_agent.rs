//! An agent the fallback supervisor does not know (its pid file lost, or started by hand) keeps
//! its port through a restart: the agent started in its place exits at once. Install must not
//! take the old one's answer for the new one's, and uninstall must not remove the files of an
//! agent it could not stop.

use std::time::Duration;

use volley_tests::SshFleet;
use volley_tests::remote::{kill_all, wait_until_gone};

use crate::installation::{Installation, agent_command_line};

const SOME_FAILED: i32 = 1;

#[test]
fn an_agent_whose_pid_file_was_lost_fails_install_and_uninstall_until_it_is_stopped() {
    let installation = Installation::new(SshFleet::start(1), &[]);
    let host = installation.fleet.hosts()[0].clone();
    installation
        .agent("install", &["-w", &host.name])
        .assert_code(0);
    let old = installation.agent_pids(&host.name);
    assert_eq!(old.len(), 1, "{old:?}");
    std::fs::remove_file(installation.file(&host.name, "run/volley-agent.pid")).unwrap();

    let output = installation.agent("install", &["-w", &host.name]);
    output.assert_code(SOME_FAILED);
    let record = &output.records()[0];
    assert_eq!(record.outcome, "step_failed", "{}", output.describe());
    let reason = record.reason.as_deref().unwrap_or_default();
    let address = format!("{}:{}", host.socket.ip(), installation.ports[&host.name]);
    assert!(
        reason.starts_with("verify failed: ")
            && reason.contains(&format!(
                "another process (pid {}) holds {address}: stop it first",
                old[0]
            ))
            && reason.contains("Address already in use"),
        "{reason}"
    );
    assert_eq!(installation.agent_pids(&host.name), old);

    let files = [
        "usr/local/bin/volley-agent",
        "etc/volley/agent.toml",
        "etc/volley/agent.key",
        "etc/volley/agent.pem",
    ];
    let output = installation.agent("uninstall", &["-w", &host.name]);
    output.assert_code(SOME_FAILED);
    let reason = output.records()[0].reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("remove failed: ")
            && reason.contains(&format!(
                "answers on {address} after the stop (pid {})",
                old[0]
            ))
            && reason.ends_with("nothing was removed"),
        "{reason}"
    );
    for file in files {
        assert!(
            installation.file(&host.name, file).exists(),
            "uninstall removed {file}"
        );
    }

    kill_all(&old);
    let prefix = installation.prefix(&host.name);
    assert!(wait_until_gone(&agent_command_line(prefix), Duration::from_secs(10)).is_empty());
    let output = installation.agent("uninstall", &["-w", &host.name]);
    output.assert_code(0);
    for file in files {
        assert!(
            !installation.file(&host.name, file).exists(),
            "{file} is left"
        );
    }
}
