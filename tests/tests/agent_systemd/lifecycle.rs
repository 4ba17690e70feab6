//! Three hosts under systemd through an agent's whole life. c01 is reached as root; c02 and c03
//! as a user with passwordless sudo and `become = true` in the inventory, as on servers where
//! nobody logs in as root.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use volley_tests::SystemdFleet;
use volley_tests::inventory::with_host_settings;
use volley_tests::report::expect_outcome_via;
use volley_tests::systemd_fleet::OPERATOR;
use volley_tests::volley::volley_agent_binary;

use crate::battery::{HOSTS, SOME_FAILED, SUCCEEDED, Systemd, UNIT, main_pid, show};
use crate::executor;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The unit as shipped; without an `agent_prefix` the host gets it unchanged.
const SHIPPED_UNIT: &str = include_str!("../../../deploy/volley-agent.service");
/// The exposure issue 8 asked of the unit, at most.
const MAX_EXPOSURE: f64 = 2.0;

/// The exposure `systemd-analyze security` gives the unit, from its last line.
fn exposure(analysis: &str) -> Option<f64> {
    let last = analysis
        .lines()
        .rfind(|line| line.contains("Overall exposure level"))?;
    last.split(": ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The exposure that `deploy/volley-agent.service` says it has.
fn documented_exposure() -> f64 {
    SHIPPED_UNIT
        .lines()
        .find_map(|line| line.strip_prefix("# Exposure under `systemd-analyze security`: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|figure| figure.parse().ok())
        .expect("deploy/volley-agent.service states its exposure")
}

#[test]
fn agents_are_installed_restarted_renewed_rolled_back_and_removed_under_systemd() {
    let fleet = SystemdFleet::start(HOSTS.len());
    let mut text = std::fs::read_to_string(fleet.inventory()).expect("the fleet's inventory");
    text = with_host_settings(&text, "c01", "user = \"root\"\n");
    for host in ["c02", "c03"] {
        text = with_host_settings(
            &text,
            host,
            &format!("user = \"{OPERATOR}\"\nbecome = true\n"),
        );
    }
    let inventory = fleet.dir().join("systemd.toml");
    std::fs::write(&inventory, text).expect("write the inventory");
    let systemd = Systemd { fleet, inventory };
    for host in HOSTS {
        let container = systemd.container(host);
        assert_eq!(
            container.check("systemctl is-active multi-user.target"),
            "active",
            "{host}: systemd did not reach multi-user.target"
        );
    }
    systemd.fleet.run(["pki", "init"]).assert_code(SUCCEEDED);

    // Install: the unit of deploy/, enabled, started; Type=notify's READY came with a status.
    let output = systemd.agent("install", &["-g", "all"]);
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    for host in HOSTS {
        let record = expect_outcome_via(&output, &records, host, "succeeded", "ssh");
        let listen = systemd.listen(host);
        assert_eq!(
            record.stdout,
            format!(
                "changed: binary, ca, certificate, config, unit, started; agent {VERSION} \
                 answers on {listen} under systemd\n"
            ),
            "{host}"
        );
        let container = systemd.container(host);
        let unit = std::fs::read_to_string(container.systemd_dir().join(UNIT))
            .unwrap_or_else(|e| panic!("{host}: no unit: {e}"));
        assert_eq!(
            unit, SHIPPED_UNIT,
            "{host}: the unit differs from deploy/'s"
        );
        let wanted = container
            .systemd_dir()
            .join("multi-user.target.wants")
            .join(UNIT);
        assert_eq!(
            std::fs::read_link(&wanted).ok(),
            Some(format!("/etc/systemd/system/{UNIT}").into()),
            "{host}: not enabled"
        );
        let shown = show(
            container,
            "Type,ActiveState,SubState,UnitFileState,StatusText,NRestarts",
        );
        let expected: BTreeMap<String, String> = [
            ("Type", "notify".to_string()),
            ("ActiveState", "active".to_string()),
            ("SubState", "running".to_string()),
            ("UnitFileState", "enabled".to_string()),
            ("StatusText", format!("serving on {listen}")),
            ("NRestarts", "0".to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        assert_eq!(shown, expected, "{host}");
        let binary = std::fs::metadata(container.usr_local().join("bin/volley-agent"))
            .unwrap_or_else(|e| panic!("{host}: no binary: {e}"));
        assert_eq!(
            (binary.uid(), binary.permissions().mode() & 0o777),
            (0, 0o755)
        );
        assert_eq!(
            container.check("stat -c '%a %U' /etc/volley/agent.key"),
            "600 root",
            "{host}"
        );
    }

    // Readiness: once `systemctl restart` returns, the agent accepts connections at once.
    let c01 = systemd.container("c01");
    let (address, port) = systemd.listen("c01").rsplit_once(':').map_or_else(
        || panic!("an address and a port"),
        |(a, p)| (a.to_string(), p.to_string()),
    );
    let restarted = c01.check(&format!(
        "bash -c 'systemctl restart {UNIT} && exec 3<>/dev/tcp/{address}/{port} && echo connected'"
    ));
    assert_eq!(restarted, "connected");

    // The agents run commands; auto picks them.
    let output = systemd.run(&["--transport", "auto"], "echo hello");
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    for host in HOSTS {
        let record = expect_outcome_via(&output, &records, host, "succeeded", "agent");
        assert_eq!(record.stdout, "hello\n");
    }

    // Commands run as transient units, outside the agent's sandbox, with the same results as
    // over SSH and through a directly-run agent.
    executor::commands_run_outside_the_agents_sandbox(&systemd);
    executor::the_same_probe_prints_the_same_over_ssh_and_through_the_agent(&systemd);
    executor::exit_codes_signals_and_streams_are_reported_as_on_the_direct_path(&systemd);
    executor::a_hundred_mebibytes_stream_through_with_backpressure(&systemd);
    executor::a_timeout_and_a_cancel_stop_the_whole_unit(&systemd);
    executor::stopping_the_agent_gives_commands_the_grace_period_then_stops_them(&systemd);
    executor::pushes_write_files_with_their_owner_and_mode_through_the_sandboxed_agent(&systemd);

    // kill -9 of volley: the command runs on, and `volley runs resume` collects it.
    executor::a_command_outlives_a_killed_volley_and_resume_collects_it(&systemd);

    // kill -9: systemd restarts the agent, which answers again and stops what the dead one ran.
    executor::a_killed_agent_is_restarted_and_its_commands_stopped(&systemd);
    let output = systemd.agent("status", &["-w", "c01"]);
    output.assert_code(SUCCEEDED);
    let status = &output.records()[0];
    assert!(
        status.transport == "agent"
            && status
                .stdout
                .starts_with(&format!("version={VERSION} reachable=yes ")),
        "{status:?}"
    );

    // Renew: a reload (SIGHUP), the same MainPID, a new certificate served.
    let pids: Vec<String> = HOSTS
        .iter()
        .map(|h| main_pid(systemd.container(h)))
        .collect();
    let certificates: Vec<String> = HOSTS
        .iter()
        .map(|h| systemd.container(h).check("cat /etc/volley/agent.pem"))
        .collect();
    let output = systemd.agent("renew", &["-g", "all"]);
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    for (index, host) in HOSTS.iter().enumerate() {
        let record = expect_outcome_via(&output, &records, host, "succeeded", "ssh");
        assert!(
            record.stdout.contains(", reloaded without a restart; "),
            "{host}: {record:?}"
        );
        let container = systemd.container(host);
        assert_eq!(main_pid(container), pids[index], "{host}: renew restarted");
        assert_ne!(
            container.check("cat /etc/volley/agent.pem"),
            certificates[index],
            "{host}: the certificate did not change"
        );
    }

    // An upgrade to a binary that cannot start: systemd's start fails, the previous binary is
    // put back and started, and it answers again.
    let broken = systemd.fleet.dir().join("broken-agent");
    std::fs::write(
        &broken,
        "#!/bin/sh\ncase \"$1\" in --version) echo 'volley-agent 9.9.9';; \
         *) echo 'cannot start' >&2; exit 1;; esac\n",
    )
    .expect("write the broken agent");
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let broken = broken.display().to_string();
    let output = systemd.agent("upgrade", &["-g", "all", "--agent-binary", &broken]);
    output.assert_code(SOME_FAILED);
    let records = output.records_by_host();
    let good = std::fs::read(volley_agent_binary()).expect("the agent binary");
    for host in HOSTS {
        let record = expect_outcome_via(&output, &records, host, "step_failed", "ssh");
        let reason = record.reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("service failed: systemctl restart failed (exit-code)")
                && reason.ends_with(&format!("; rolled back to {VERSION}, which answers again")),
            "{host}: {reason}"
        );
        let container = systemd.container(host);
        let binary = std::fs::read(container.usr_local().join("bin/volley-agent")).unwrap();
        assert!(binary == good, "{host}: the binary was not put back");
        assert_eq!(show(container, "ActiveState")["ActiveState"], "active");
    }
    let output = systemd.agent("status", &["-g", "all"]);
    output.assert_code(SUCCEEDED);
    for record in output.records() {
        assert!(
            record.transport == "agent"
                && record
                    .stdout
                    .starts_with(&format!("version={VERSION} reachable=yes ")),
            "{record:?}"
        );
    }

    // The unit's exposure, as systemd rates the loaded unit, is the one the unit states.
    let analysis = c01.check(&format!("systemd-analyze security --no-pager {UNIT}"));
    let measured = exposure(&analysis).unwrap_or_else(|| panic!("no exposure in:\n{analysis}"));
    eprintln!("systemd-analyze security {UNIT}: exposure {measured}");
    assert_eq!(
        measured,
        documented_exposure(),
        "deploy/volley-agent.service states another exposure than systemd measures:\n{analysis}"
    );
    assert!(
        measured <= MAX_EXPOSURE,
        "the agent's unit must rate {MAX_EXPOSURE} or below:\n{analysis}"
    );

    // Uninstall: stopped, disabled, every file gone; auto goes over SSH again.
    let output = systemd.agent("uninstall", &["-g", "all"]);
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    for host in HOSTS {
        let record = expect_outcome_via(&output, &records, host, "succeeded", "ssh");
        assert!(
            record.stdout.starts_with("changed: stopped, removed ")
                && record.stdout.ends_with(" files under /\n"),
            "{host}: {record:?}"
        );
        let container = systemd.container(host);
        assert!(
            !container.systemd_dir().join(UNIT).exists(),
            "{host}: unit left"
        );
        assert!(
            std::fs::symlink_metadata(
                container
                    .systemd_dir()
                    .join("multi-user.target.wants")
                    .join(UNIT)
            )
            .is_err(),
            "{host}: still enabled"
        );
        assert_eq!(
            show(container, "LoadState,ActiveState"),
            [("ActiveState", "inactive"), ("LoadState", "not-found")]
                .into_iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            "{host}"
        );
        let left = container.exec(
            "pgrep -x volley-agent; ls -d /etc/volley /usr/local/bin/volley-agent* 2>/dev/null",
        );
        assert_eq!(left.stdout, "", "{host}: left behind");
    }
    let output = systemd.run(&["--transport", "auto"], "true");
    output.assert_code(SUCCEEDED);
    for record in output.records() {
        assert_eq!(record.transport, "ssh", "{record:?}");
    }
}
