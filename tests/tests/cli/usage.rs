//! Usage errors keep clap's whole message, bare `volley` prints help, and input errors name
//! what is wrong: empty targets, inventory keys of the wrong type, `--timeout 0`.

use volley_tests::SshFleet;
use volley_tests::volley::volley_command;

use crate::{EXIT_SUCCESS, EXIT_USAGE};

#[test]
fn bare_volley_prints_help_on_stdout_and_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let output = volley_tests::RunningProcess::spawn(&mut volley_command(home.path()))
        .finish(volley_tests::volley::RUN_DEADLINE);
    output.assert_code(EXIT_SUCCESS);
    assert!(
        output.stdout.contains("Usage: volley"),
        "{}",
        output.describe()
    );
    for subcommand in ["run", "runs", "retry", "agent", "completions"] {
        assert!(
            output.stdout.contains(&format!("\n  {subcommand} ")),
            "help does not list {subcommand}\n{}",
            output.describe()
        );
    }
    assert!(output.stderr.is_empty(), "{}", output.describe());
}

#[test]
fn a_usage_error_keeps_clap_s_whole_message_and_exits_64() {
    let fleet = SshFleet::start(1);
    // The command is missing: clap names it, shows the usage with `--`, and the help tip.
    let output = fleet.run(["run", "-w", "h01"]);
    output.assert_code(EXIT_USAGE);
    for part in [
        "the following required arguments were not provided",
        "<COMMAND>",
        "Usage: volley run",
        "-- <COMMAND>",
        "--help",
    ] {
        assert!(
            output.stderr.contains(part),
            "no {part:?}\n{}",
            output.describe()
        );
    }
    assert!(output.stdout.is_empty(), "{}", output.describe());

    // An unknown flag: clap's suggestion is kept too.
    let output = fleet.run(["run", "--paralel", "3", "-w", "h01", "--", "true"]);
    output.assert_code(EXIT_USAGE);
    assert!(
        output.stderr.contains("--parallel"),
        "{}",
        output.describe()
    );
}

#[test]
fn empty_targets_say_what_named_no_host() {
    let fleet = SshFleet::start(1);
    let output = fleet.run(fleet.flags().args(["-w", "", "--", "true"]));
    output.assert_code(EXIT_USAGE);
    assert_eq!(
        output.stderr,
        "volley: no targets: -w '' names no host\n",
        "{}",
        output.describe()
    );
    let empty = fleet.dir().join("empty-hosts");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let output = fleet.run(fleet.flags().args([
        "--hosts-file".as_ref(),
        empty.as_os_str(),
        "--".as_ref(),
        "true".as_ref(),
    ]));
    output.assert_code(EXIT_USAGE);
    assert!(
        output.stderr.contains("names no host") && output.stderr.contains("empty-hosts"),
        "{}",
        output.describe()
    );
}

#[test]
fn inventory_values_of_the_wrong_type_are_refused_naming_the_key() {
    let fleet = SshFleet::start(1);
    let inventory = fleet.dir().join("typed.toml");
    let text = std::fs::read_to_string(fleet.inventory()).unwrap();
    std::fs::write(&inventory, format!("user = 5\n{text}")).unwrap();
    let mut flags = fleet.flags();
    flags.inventory = inventory;
    let output = fleet.run(flags.args(["-w", "h01", "--", "echo ran"]));
    output.assert_code(EXIT_USAGE);
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.describe());
    assert!(
        output.stderr.contains("typed.toml") && output.stderr.contains("key `user`"),
        "{}",
        output.describe()
    );
    assert!(!output.stdout.contains("ran"), "{}", output.describe());
}

#[test]
fn timeout_zero_lifts_the_inventory_s_timeout() {
    let fleet = SshFleet::start(1);
    let inventory = fleet.dir().join("timeout.toml");
    let text = std::fs::read_to_string(fleet.inventory()).unwrap();
    std::fs::write(&inventory, format!("timeout = \"1s\"\n{text}")).unwrap();
    let mut flags = fleet.flags();
    flags.inventory = inventory;
    let command = "sleep 1.5; echo done";
    let output = fleet.run(flags.args(["-w", "h01", "--json", "--", command]));
    output.assert_code(2);
    assert!(
        output.stdout.contains("command_timeout"),
        "{}",
        output.describe()
    );

    let output = fleet.run(flags.args(["-w", "h01", "--timeout", "0", "--json", "--", command]));
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    volley_tests::report::expect_outcome(&output, &records, "h01", "succeeded");
}

/// A PKI directory the operator named must be there: a typo would run the whole fleet over SSH
/// without a word. The default one missing (no agents yet) is SSH, as before.
#[test]
fn a_named_pki_that_is_not_there_is_refused() {
    let fleet = SshFleet::start(1);
    let missing = fleet.dir().join("no-such-pki");
    let mut flags = fleet.flags();
    flags.pki = Some(missing.clone());
    let output = fleet.run(flags.args(["-w", "h01", "--", "echo ran"]));
    output.assert_code(EXIT_USAGE);
    assert_eq!(
        output.stderr,
        format!(
            "volley: pki {}: no such directory (`volley pki init --pki DIR` makes one)\n",
            missing.display()
        ),
        "{}",
        output.describe()
    );
    let output = fleet.run(fleet.flags().args(["-w", "h01", "--", "echo ran"]));
    output.assert_code(EXIT_SUCCESS);
    assert_eq!(output.stdout, "h01: ran\n", "{}", output.describe());
}
