//! One fleet through an agent's whole life: install on five hosts (and a sixth where it cannot
//! work), `volley run` through the agents, a second install that changes nothing, status, renew,
//! an agent that stopped, an upgrade, an upgrade to a binary that cannot start, uninstall. Private keys are looked for in every log,
//! every file of the controller and everything volley printed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use volley_tests::SshFleet;
use volley_tests::remote::{kill_all, wait_until_gone};

use crate::installation::{Installation, agent_command_line, files_under, record};

const GOOD: [&str; 5] = ["h01", "h02", "h03", "h04", "h05"];
const BROKEN: &str = "h06";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit statuses of volley.
const SUCCEEDED: i32 = 0;
const SOME_FAILED: i32 = 1;

#[test]
fn agents_are_installed_used_renewed_rolled_back_and_removed() {
    let installation = Installation::new(SshFleet::start(6), &[BROKEN]);

    // Install: five hosts get an agent; the sixth reports why not.
    let output = installation.agent("install", &["-g", "all"]);
    output.assert_code(SOME_FAILED);
    let records = output.records_by_host();
    for host in GOOD {
        let record = record(&output, &records, host);
        assert_eq!(record.outcome, "succeeded", "{host}: {record:?}");
        assert_eq!(record.transport, "ssh");
        let port = installation.ports[host];
        assert!(
            record
                .stdout
                .starts_with("changed: binary, ca, certificate, config, started; ")
                && record
                    .stdout
                    .contains(&format!(":{port} under the fallback supervisor")),
            "{host}: {}",
            record.stdout
        );
        let key = std::fs::metadata(installation.file(host, "etc/volley/agent.key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600, "{host}: key mode");
        for file in [
            "etc/volley/agent.key",
            "usr/local/bin/volley-agent",
            "etc/volley/agent.pem",
        ] {
            let owner = std::fs::metadata(installation.file(host, file))
                .unwrap()
                .uid();
            assert_eq!(owner, 0, "{host}: {file} is not owned by root");
        }
        assert_eq!(
            installation.agent_pids(host).len(),
            1,
            "{host}: agent processes"
        );
    }
    let broken = record(&output, &records, BROKEN);
    assert_eq!(broken.outcome, "step_failed", "{broken:?}");
    let reason = broken.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("binary failed: ") && reason.contains("Not a directory"),
        "{reason}"
    );
    let keys: Vec<String> = GOOD
        .iter()
        .flat_map(|host| installation.key_lines(host))
        .collect();
    assert!(keys.len() >= GOOD.len(), "{keys:?}");

    // `auto` reaches the five through their agents, and the sixth over SSH.
    let output = installation.run(&["--transport", "auto"], "echo hello");
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    for host in GOOD {
        let record = record(&output, &records, host);
        assert_eq!(
            (
                record.outcome.as_str(),
                record.transport.as_str(),
                record.stdout.as_str()
            ),
            ("succeeded", "agent", "hello\n"),
            "{host}"
        );
    }
    let broken = record(&output, &records, BROKEN);
    assert_eq!(
        (broken.outcome.as_str(), broken.transport.as_str()),
        ("succeeded", "ssh")
    );

    // A second install finds nothing to do.
    let pids: Vec<Vec<u32>> = GOOD.iter().map(|h| installation.agent_pids(h)).collect();
    let output = installation.agent("install", &["-g", "all", "-x", BROKEN]);
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    for host in GOOD {
        let record = record(&output, &records, host);
        assert!(
            record.stdout.starts_with("unchanged; "),
            "{host}: {}",
            record.stdout
        );
    }
    let after: Vec<Vec<u32>> = GOOD.iter().map(|h| installation.agent_pids(h)).collect();
    assert_eq!(pids, after, "an unchanged install restarted agents");

    // Status: version, reachability and expiry, through the agent; the sixth over SSH.
    let output = installation.agent("status", &["-g", "all"]);
    output.assert_code(SOME_FAILED);
    let records = output.records_by_host();
    for host in GOOD {
        let record = record(&output, &records, host);
        assert_eq!(
            (record.outcome.as_str(), record.transport.as_str()),
            ("succeeded", "agent")
        );
        let expected = format!("version={VERSION} reachable=yes certificate_expires=");
        assert!(
            record.stdout.starts_with(&expected),
            "{host}: {}",
            record.stdout
        );
        assert!(
            record.stdout.contains(" days_left=82"),
            "{host}: {}",
            record.stdout
        );
    }
    let broken = record(&output, &records, BROKEN);
    assert_eq!(
        (broken.outcome.as_str(), broken.transport.as_str()),
        ("step_failed", "ssh")
    );
    assert_eq!(broken.stdout, "version=none reachable=no installed=no\n");

    // Renew: a new key on the host, a new certificate served, no restart.
    let pid = installation.agent_pids("h01");
    let old_certificate = std::fs::read(installation.file("h01", "etc/volley/agent.pem")).unwrap();
    let output = installation.agent("renew", &["-w", "h01"]);
    output.assert_code(SUCCEEDED);
    let renewed = &output.records()[0];
    assert!(
        renewed.stdout.contains("reloaded without a restart"),
        "{renewed:?}"
    );
    assert_eq!(
        installation.agent_pids("h01"),
        pid,
        "renew restarted the agent"
    );
    let certificate = std::fs::read(installation.file("h01", "etc/volley/agent.pem")).unwrap();
    assert_ne!(certificate, old_certificate);
    let mut keys = keys;
    keys.extend(installation.key_lines("h01"));

    // An agent that stopped: status says so over SSH, and install starts it again.
    let stopped = installation.agent_pids("h03");
    kill_all(&stopped);
    assert!(
        wait_until_gone(
            &agent_command_line(installation.prefix("h03")),
            Duration::from_secs(10)
        )
        .is_empty()
    );
    let output = installation.agent("status", &["-w", "h03"]);
    output.assert_code(SOME_FAILED);
    let status = &output.records()[0];
    assert_eq!(
        (status.outcome.as_str(), status.transport.as_str()),
        ("step_failed", "ssh")
    );
    assert!(
        status.stdout.starts_with(&format!(
            "version={VERSION} reachable=no running=no certificate_expires="
        )),
        "{status:?}"
    );
    let output = installation.agent("install", &["-w", "h03"]);
    output.assert_code(SUCCEEDED);
    assert!(
        output.records()[0].stdout.starts_with("changed: started; "),
        "{}",
        output.describe()
    );

    // An upgrade to another binary swaps it, keeps the old one as .prev and restarts.
    let original = std::fs::read(installation.file("h02", "usr/local/bin/volley-agent")).unwrap();
    let mut other = original.clone();
    other.extend_from_slice(b"\0another build");
    let other_binary = installation.fleet.dir().join("other-agent");
    std::fs::write(&other_binary, &other).unwrap();
    std::fs::set_permissions(&other_binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pids: Vec<Vec<u32>> = GOOD.iter().map(|h| installation.agent_pids(h)).collect();
    let binary = other_binary.display().to_string();
    let output = installation.agent(
        "upgrade",
        &["-g", "all", "-x", BROKEN, "--agent-binary", &binary],
    );
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    for (host, before) in GOOD.iter().zip(&pids) {
        let record = record(&output, &records, host);
        assert!(
            record.stdout.starts_with("changed: binary, restarted; "),
            "{host}: {record:?}"
        );
        let installed =
            std::fs::read(installation.file(host, "usr/local/bin/volley-agent")).unwrap();
        let previous =
            std::fs::read(installation.file(host, "usr/local/bin/volley-agent.prev")).unwrap();
        assert!(
            installed == other && previous == original,
            "{host}: binary or .prev wrong"
        );
        let after = installation.agent_pids(host);
        assert!(
            after.len() == 1 && after != *before,
            "{host}: not restarted: {before:?} {after:?}"
        );
    }

    // An upgrade to a binary that cannot start is rolled back; the old agents keep serving.
    let good_binary =
        std::fs::read(installation.file("h02", "usr/local/bin/volley-agent")).unwrap();
    let broken_binary = installation.fleet.dir().join("broken-agent");
    std::fs::write(
        &broken_binary,
        "#!/bin/sh\ncase \"$1\" in --version) echo 'volley-agent 9.9.9';; *) echo 'cannot start' >&2; exit 1;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken_binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = broken_binary.display().to_string();
    let output = installation.agent(
        "upgrade",
        &["-g", "all", "-x", BROKEN, "--agent-binary", &binary],
    );
    output.assert_code(SOME_FAILED);
    let records = output.records_by_host();
    for host in GOOD {
        let record = record(&output, &records, host);
        let reason = record.reason.as_deref().unwrap_or_default();
        assert_eq!(record.outcome, "step_failed", "{host}: {record:?}");
        assert!(
            reason.starts_with("verify failed: ")
                && reason.contains("cannot start")
                && reason.ends_with(&format!("rolled back to {VERSION}, which answers again")),
            "{host}: {reason}"
        );
        let binary = std::fs::read(installation.file(host, "usr/local/bin/volley-agent")).unwrap();
        assert!(binary == good_binary, "{host}: the binary was not put back");
    }
    let output = installation.agent("status", &["-g", "all", "-x", BROKEN]);
    output.assert_code(SUCCEEDED);
    for record in output.records() {
        assert!(
            record
                .stdout
                .starts_with(&format!("version={VERSION} reachable=yes")),
            "{record:?}"
        );
    }

    // No private key anywhere but in its own file: not in the fleet's logs (sshd, agents), not
    // in the controller's HOME, not in anything volley printed.
    let key_files: Vec<PathBuf> = GOOD
        .iter()
        .map(|host| installation.file(host, "etc/volley/agent.key"))
        .collect();
    let mut searched = 0;
    for file in files_under(installation.fleet.dir()) {
        if key_files.contains(&file) {
            continue;
        }
        let Ok(text) = std::fs::read(&file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        for line in &keys {
            assert!(
                !text.contains(line.as_str()),
                "a private key is in {}",
                file.display()
            );
        }
        searched += 1;
    }
    assert!(searched > 20, "only {searched} files searched");
    let printed = installation.printed.borrow().clone();
    for line in &keys {
        assert!(
            !printed.contains(line.as_str()),
            "volley printed a private key"
        );
    }
    let own = std::fs::read_to_string(&key_files[0]).unwrap();
    assert!(
        keys.iter().any(|line| own.contains(line.as_str())),
        "the search cannot find keys"
    );

    // Uninstall: nothing left but the log with its audit records of what ran, no process, and
    // `auto` goes over SSH again.
    let output = installation.agent("uninstall", &["-g", "all"]);
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    for host in GOOD {
        let record = record(&output, &records, host);
        assert!(
            record.stdout.starts_with("changed: stopped, removed "),
            "{host}: {record:?}"
        );
        let left = files_under(installation.prefix(host));
        let log = installation.prefix(host).join("var/log/volley-agent.log");
        assert_eq!(left, std::slice::from_ref(&log), "{host}");
        let audit = std::fs::read_to_string(&log).unwrap();
        assert!(
            audit.contains("exec started"),
            "{host}: no audit record in\n{audit}"
        );
        let running = wait_until_gone(
            &agent_command_line(installation.prefix(host)),
            Duration::from_secs(10),
        );
        assert!(
            running.is_empty(),
            "{host}: agent still running: {running:?}"
        );
    }
    let broken = record(&output, &records, BROKEN);
    assert_eq!(broken.stdout, "unchanged: no agent was installed\n");
    let output = installation.run(&["--transport", "auto"], "true");
    output.assert_code(SUCCEEDED);
    for record in output.records() {
        assert_eq!(record.transport, "ssh", "{record:?}");
    }
}
