//! The directories of an agent's layout: made as a package would make them, and removed by
//! uninstall only where they are the layout's own.

use std::os::unix::fs::PermissionsExt;

use volley_tests::SshFleet;

use crate::installation::Installation;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn missing_directories_are_made_0755_but_the_config_directory_stays_private() {
    let installation = Installation::new(SshFleet::start(1), &[]);
    let host = installation.fleet.hosts()[0].name.clone();
    installation.agent("install", &["-w", &host]).assert_code(0);
    for dir in [
        "usr",
        "usr/local",
        "usr/local/bin",
        "etc",
        "run",
        "var",
        "var/log",
    ] {
        assert_eq!(mode(&installation.file(&host, dir)), 0o755, "{dir}");
    }
    assert_eq!(mode(&installation.file(&host, "etc/volley")), 0o700);
}

#[test]
fn uninstall_removes_the_layouts_directories_and_no_others() {
    let installation = Installation::new(SshFleet::start(1), &[]);
    let host = installation.fleet.hosts()[0].name.clone();
    installation.agent("install", &["-w", &host]).assert_code(0);
    let others = ["srv/www/uploads", "var/lib/app", "usr/local/share"];
    for dir in others {
        std::fs::create_dir_all(installation.file(&host, dir)).unwrap();
    }
    installation
        .agent("uninstall", &["-w", &host])
        .assert_code(0);
    for dir in others {
        assert!(installation.file(&host, dir).is_dir(), "{dir} was removed");
    }
    for dir in ["etc", "run", "usr/local/bin"] {
        assert!(!installation.file(&host, dir).exists(), "{dir} is left");
    }
    // The log stays, and so its directory: it holds the audit records of what ran.
    assert!(
        installation
            .file(&host, "var/log/volley-agent.log")
            .is_file()
    );
}

/// Settings the operator put in the agent's config below the install's line are kept by the
/// next install that rewrites the config (here for a new agent port): `allow_root = false`
/// still keeps root out through the agent.
/// Installs the one host's agent, then adds `settings` below its config's line: the config's
/// path and text, and the host.
fn installed_with_settings(
    installation: &Installation,
    settings: &str,
) -> (std::path::PathBuf, String, String) {
    let host = installation.fleet.hosts()[0].name.clone();
    installation.agent("install", &["-w", &host]).assert_code(0);
    let config = installation.file(&host, "etc/volley/agent.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(settings);
    std::fs::write(&config, &text).unwrap();
    (config, text, host)
}

/// Gives the host another agent port in the inventory, so that the install's part of the
/// config changes; returns the new port and the inventory as it was.
fn move_agent_port(installation: &Installation, host: &str) -> (u16, String) {
    let old = installation.ports[host];
    let new = volley_tests::loopback::free_port(*installation.fleet.hosts()[0].socket.ip());
    let inventory = std::fs::read_to_string(&installation.inventory).unwrap();
    let moved = inventory.replace(
        &format!("agent_port = {old}\n"),
        &format!("agent_port = {new}\n"),
    );
    assert_ne!(moved, inventory, "the port is in the inventory");
    std::fs::write(&installation.inventory, moved).unwrap();
    (new, inventory)
}

#[test]
fn an_install_keeps_the_operators_own_settings_in_the_config() {
    let installation = Installation::new(SshFleet::start(1), &[]);
    let (config, _, host) =
        installed_with_settings(&installation, "[session]\nallow_root = false\n");

    // Another agent port: the install's part of the config changes, and the agent restarts.
    let (new, _) = move_agent_port(&installation, &host);
    let output = installation.agent("install", &["-w", &host]);
    output.assert_code(0);
    assert!(output.stdout.contains("config"), "{}", output.describe());

    let rewritten = std::fs::read_to_string(&config).unwrap();
    assert!(rewritten.contains(&format!(":{new}\"\n")), "{rewritten}");
    assert!(
        rewritten.ends_with("[session]\nallow_root = false\n"),
        "{rewritten}"
    );
    let output = installation.run(&["--transport", "agent"], "id -u");
    let records = output.records_by_host();
    let record = &records[&host];
    assert_eq!(record.outcome, "auth_failed", "{}", output.describe());
    assert!(
        record
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("allow_root")),
        "{record:?}"
    );
    // Refused before it started: nothing ran, and a retry of the unreached takes the host.
    assert_eq!(record.run_ms, None, "{record:?}");
    let retry = installation.volley(["retry", "last", "--only", "unreached", "--list-hosts"]);
    retry.assert_code(0);
    assert!(retry.stdout.contains(&host), "{}", retry.describe());
}

/// Settings kept below the line that the agent cannot take (here a misspelt key) would stop it
/// at the restart the install makes: the agent there checks the config first, the install
/// fails naming it, and the old config and the running agent are left as they were.
#[test]
fn an_install_does_not_write_a_config_its_agent_cannot_read() {
    let installation = Installation::new(SshFleet::start(1), &[]);
    let (config, text, host) =
        installed_with_settings(&installation, "[session]\nallow_rot = false\n");

    // Another agent port: the install's part of the config changes, so it would be rewritten.
    let (_, inventory) = move_agent_port(&installation, &host);
    let output = installation.agent("install", &["-w", &host]);
    output.assert_code(1);
    let reason = output.records()[0].reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("config failed: ")
            && reason.contains("refused by the agent, so it was not written")
            && reason.contains("allow_rot"),
        "{}",
        output.describe()
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    assert!(
        !installation
            .file(&host, "etc/volley/agent.toml.new")
            .exists()
    );
    // What the install asked, asked by hand: 78 (EX_CONFIG) and the agent's one line, then 0
    // once the key is spelt right.
    let binary = installation.file(&host, "usr/local/bin/volley-agent");
    let check = || {
        std::process::Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .output()
            .unwrap()
    };
    let refused = check();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(78), "{said}");
    assert!(
        said.starts_with("volley-agent check-config: ")
            && said.contains("allow_rot")
            && said.lines().count() == 1,
        "{said}"
    );
    std::fs::write(&config, text.replace("allow_rot", "allow_root")).unwrap();
    let accepted = check();
    assert!(accepted.status.success(), "{accepted:?}");

    // The agent that ran before still runs, on its old port.
    std::fs::write(&installation.inventory, &inventory).unwrap();
    let output = installation.run(&["--transport", "agent"], "true");
    assert_eq!(
        output.records_by_host()[&host].outcome,
        "succeeded",
        "{}",
        output.describe()
    );
}
