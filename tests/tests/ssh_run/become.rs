//! `--become` and the inventory's `become`: a non-root SSH user runs the command as root through
//! `sudo -n`; where sudo wants a password or refuses, the host gets an outcome that says so, and
//! the others run. The users are made on this machine (see `volley_tests::users`).

use std::ffi::OsString;
use std::time::Duration;

use volley_tests::inventory::with_host_settings;
use volley_tests::remote::{SweepOnDrop, assert_none_left, unique_sleep, wait_until_running};
use volley_tests::users::{self, Sudo};
use volley_tests::{FleetSpec, SshFleet};

use crate::{EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome};

/// `run --inventory INVENTORY --known-hosts ... -i KEY`, without `-l`: the user comes from the
/// inventory or from `extra`.
fn run_args(fleet: &SshFleet, inventory: &std::path::Path, extra: &[&str]) -> Vec<OsString> {
    let mut flags = fleet.flags();
    flags.inventory = inventory.to_path_buf();
    let mut args: Vec<OsString> = vec!["run".into()];
    args.extend(flags.connection());
    args.extend(extra.iter().map(OsString::from));
    args
}

#[test]
fn become_in_the_inventory_runs_as_root_or_says_why_sudo_would_not() {
    let fleet = SshFleet::start(3);
    let mut inventory = std::fs::read_to_string(fleet.inventory()).expect("the fleet's inventory");
    for (host, sudo) in [
        ("h01", Sudo::Passwordless),
        ("h02", Sudo::NeedsPassword),
        ("h03", Sudo::OnlyTrue),
    ] {
        let user = users::ensure(sudo);
        let settings = format!("user = \"{user}\"\nbecome = true\n");
        inventory = with_host_settings(&inventory, host, &settings);
    }
    let path = fleet.dir().join("become.toml");
    std::fs::write(&path, inventory).expect("write the inventory");

    let output = fleet.run(run_args(
        &fleet,
        &path,
        &["-g", "all", "--json", "--", r#"id -un; echo "$HOME""#],
    ));
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    let root = expect_outcome(&output, &records, "h01", "succeeded");
    assert_eq!(root.stdout, "root\n/root\n", "{root:?}");
    let password = expect_outcome(&output, &records, "h02", "auth_failed");
    let reason = password.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with(
            "authentication failed: sudo -n as volley-sudopw asks for a password, which volley \
             never types (--become): allow volley-sudopw NOPASSWD in sudoers"
        ),
        "{reason}"
    );
    let refused = expect_outcome(&output, &records, "h03", "auth_failed");
    let reason = refused.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with(
            "authentication failed: sudo refuses to run /bin/sh as root for volley-sudolim \
             (--become): "
        ) && reason.contains("is not allowed to execute"),
        "{reason}"
    );
    for record in [password, refused] {
        assert_eq!((record.stdout.as_str(), record.stderr.as_str()), ("", ""));
        assert!(record.connect_ms.is_some(), "{record:?}");
    }

    // The stream says it on the host's failure line, in one line.
    let output = fleet.run(run_args(&fleet, &path, &["-w", "h02", "--", "true"]));
    output.assert_code(EXIT_NOT_REACHED);
    let lines = output.stderr_of("h02");
    assert!(
        lines.len() == 1
            && lines[0].starts_with("volley: authentication failed: sudo -n as volley-sudopw"),
        "{}",
        output.describe()
    );
}

#[test]
fn the_become_flag_makes_a_sudo_user_root_and_stops_what_it_ran() {
    let fleet = SshFleet::start(1);
    let user = users::ensure(Sudo::Passwordless);
    let inventory = fleet.inventory().to_path_buf();
    let id = |extra: &[&str]| {
        let mut args = vec!["-g", "all", "-l", user, "--json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "id -un"]);
        let output = fleet.run(run_args(&fleet, &inventory, &args));
        output.assert_code(EXIT_SUCCESS);
        output.records()[0].stdout.clone()
    };
    assert_eq!(id(&[]), format!("{user}\n"));
    assert_eq!(id(&["--become"]), "root\n");

    // A timeout stops the command on the host although it runs as root under sudo.
    let sleep = unique_sleep("1414.21");
    let _sweep = SweepOnDrop(sleep.clone());
    let mut volley = fleet.spawn(run_args(
        &fleet,
        &inventory,
        &[
            "-g",
            "all",
            "-l",
            user,
            "--become",
            "--timeout",
            "2s",
            "--json",
            "--",
            &format!("{sleep}; echo never"),
        ],
    ));
    let running = wait_until_running(&sleep, 1, Duration::from_secs(30), || volley.has_exited());
    assert_eq!(running.len(), 1, "`{sleep}` never ran");
    let owner = std::fs::read_to_string(format!("/proc/{}/status", running[0])).unwrap_or_default();
    assert!(
        owner.lines().any(|line| line.starts_with("Uid:\t0\t")),
        "the command does not run as root:\n{owner}"
    );
    let output = volley.finish(volley_tests::volley::RUN_DEADLINE);
    output.assert_code(EXIT_NOT_REACHED);
    assert_eq!(output.records()[0].outcome, "command_timeout");
    assert_none_left(&sleep, Duration::from_secs(10));
}

/// A login shell that greets (Debian's bash reads `~/.bashrc` for the commands sshd runs) prints
/// before sudo's check: the check reads sudo's answer past the greeting.
#[test]
fn a_greeting_login_shell_does_not_hide_what_sudo_answers() {
    let fleet = SshFleet::with_spec(FleetSpec::new(1).with_login_environment());
    let user = users::ensure(Sudo::Greeted);
    let inventory = fleet.inventory().to_path_buf();
    let output = fleet.run(run_args(
        &fleet,
        &inventory,
        &[
            "-g", "all", "-l", user, "--become", "--json", "--", "id -un",
        ],
    ));
    output.assert_code(EXIT_SUCCESS);
    assert_eq!(
        output.records()[0].stdout,
        format!("{}root\n", users::GREETING),
        "{}",
        output.describe()
    );
}
