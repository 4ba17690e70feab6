//! Choosing hosts: hosts files, exclusions, groups, ssh config aliases, and the input errors that
//! stop a run before it starts (exit 64).

use volley_tests::{ProcessOutput, SshFleet};

use crate::{EXIT_SUCCESS, EXIT_USAGE, expect_outcome, reported_hosts};

fn assert_all_succeeded(output: &ProcessOutput, expected_hosts: &[&str]) {
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    assert_eq!(
        reported_hosts(&records),
        expected_hosts,
        "{}",
        output.describe()
    );
    for host in expected_hosts {
        expect_outcome(output, &records, host, "succeeded");
    }
}

#[test]
fn hosts_file_with_comments_selects_its_hosts() {
    let fleet = SshFleet::start(6);
    let hosts_file = fleet.dir().join("hosts.txt");
    std::fs::write(
        &hosts_file,
        "# web tier\nh01\n\n  h[03-04]   # two at once\n# h05 is retired\nh06\n",
    )
    .unwrap();
    let output = fleet.run(fleet.flags().args([
        "--hosts-file".as_ref(),
        hosts_file.as_os_str(),
        "--json".as_ref(),
        "--".as_ref(),
        "true".as_ref(),
    ]));
    assert_all_succeeded(&output, &["h01", "h03", "h04", "h06"]);
}

#[test]
fn exclusions_by_range_and_glob_leave_hosts_out() {
    let fleet = SshFleet::start(12);
    let output =
        fleet.run(
            fleet
                .flags()
                .args(["-g", "all", "-x", "h0[2-3],h1*", "--json", "--", "true"]),
        );
    assert_all_succeeded(&output, &["h01", "h04", "h05", "h06", "h07", "h08", "h09"]);

    let output = fleet.run(
        fleet
            .flags()
            .args(["-w", "@all", "-x", "h05", "--json", "--", "true"]),
    );
    let expected: Vec<String> = fleet
        .hosts()
        .iter()
        .map(|host| host.name.clone())
        .filter(|name| name != "h05")
        .collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_all_succeeded(&output, &expected);
}

#[test]
fn input_errors_exit_64_before_any_host_runs() {
    let fleet = SshFleet::start(2);

    let output = fleet.run(fleet.flags().args(["-w", "h[01-", "--", "echo ran"]));
    output.assert_code(EXIT_USAGE);
    let lines: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line expected\n{}", output.describe());
    assert!(
        lines[0].contains("h[01-"),
        "the pattern is not quoted: {}",
        lines[0]
    );
    assert!(!output.stdout.contains("ran"), "{}", output.describe());

    let bad_inventory = fleet.dir().join("bad-inventory.toml");
    let text = std::fs::read_to_string(fleet.inventory()).unwrap();
    let port = fleet.host("h01").socket.port();
    let text = text.replace(&format!("port = {port}\n"), "port = \"abc\"\n");
    std::fs::write(&bad_inventory, text).unwrap();
    let mut flags = fleet.flags();
    flags.inventory = bad_inventory;
    let output = fleet.run(flags.args(["-w", "h01", "--", "echo ran"]));
    output.assert_code(EXIT_USAGE);
    assert!(
        output.stderr.contains("bad-inventory.toml") && output.stderr.contains("port"),
        "the message names neither the file nor the key\n{}",
        output.describe()
    );
    assert!(!output.stdout.contains("ran"), "{}", output.describe());

    let output = fleet.run(fleet.flags().args(["-g", "nosuchgroup", "--", "echo ran"]));
    output.assert_code(EXIT_USAGE);
    assert!(
        output.stderr.contains("nosuchgroup"),
        "{}",
        output.describe()
    );
    assert!(!output.stdout.contains("ran"), "{}", output.describe());
}

#[test]
fn ssh_config_alias_reaches_its_host() {
    let fleet = SshFleet::start(2);
    let print_connection = r#"echo "$SSH_CONNECTION""#;
    let alias_for = |alias: &str, name: &str| {
        let socket = fleet.host(name).socket;
        format!(
            "Host {alias}\n    HostName {}\n    Port {}\n",
            socket.ip(),
            socket.port()
        )
    };

    // The default config file, ~/.ssh/config, in the fleet's HOME.
    let config = fleet.client_home().join(".ssh/config");
    std::fs::write(&config, alias_for("web-alias", "h02")).unwrap();
    let output =
        fleet.run(
            fleet
                .flags()
                .args(["-w", "web-alias", "--json", "--", print_connection]),
        );
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, "web-alias", "succeeded");
    let suffix = fleet.host("h02").connection_suffix();
    assert!(
        record.stdout.trim_end().ends_with(&suffix),
        "{:?}",
        record.stdout
    );

    // Another file named with -F.
    let other = fleet.dir().join("other_ssh_config");
    std::fs::write(&other, alias_for("db-alias", "h01")).unwrap();
    let output = fleet.run(fleet.flags().args([
        "-F".as_ref(),
        other.as_os_str(),
        "-w".as_ref(),
        "db-alias".as_ref(),
        "--json".as_ref(),
        "--".as_ref(),
        print_connection.as_ref(),
    ]));
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, "db-alias", "succeeded");
    let suffix = fleet.host("h01").connection_suffix();
    assert!(
        record.stdout.trim_end().ends_with(&suffix),
        "{:?}",
        record.stdout
    );
}

#[test]
fn ssh_config_volley_cannot_honour_stops_the_run_before_any_connection() {
    let fleet = SshFleet::start(2);
    let config = fleet.client_home().join(".ssh/config");
    let included = fleet.client_home().join(".ssh/conf.d/lab.conf");
    std::fs::create_dir_all(included.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        "Include conf.d/*.conf\nHost h02\n    User nobody\n",
    )
    .unwrap();
    std::fs::write(
        &included,
        "# lab hosts\nHost h01 lab*\n    ProxyCommand nc %h %p\n",
    )
    .unwrap();
    let refusals = [
        (
            fleet.flags().args(["-w", "h01,h02", "--", "echo ran"]),
            format!(
                "volley: ssh config {}:3: ProxyCommand applies to h01, but volley reaches hosts \
                 directly or through ProxyJump (-J) only",
                included.display()
            ),
        ),
        (
            fleet.flags().args([
                "-w",
                "h02",
                "-o",
                "StrictHostKeyChecking=no",
                "--",
                "echo ran",
            ]),
            "volley: -o 'StrictHostKeyChecking=no': StrictHostKeyChecking has no effect in \
             volley: volley always checks host keys strictly (see --accept-new-host-keys)"
                .to_string(),
        ),
    ];
    for (args, expected) in refusals {
        let output = fleet.run(args);
        output.assert_code(EXIT_USAGE);
        let lines: Vec<&str> = output.stderr.lines().collect();
        assert_eq!(lines, [expected.as_str()], "{}", output.describe());
        assert_eq!(output.stdout, "");
    }
    assert!(
        !fleet.sshd_logs().contains("Accepted publickey"),
        "a host was logged in to\n{}",
        fleet.sshd_logs()
    );
    // A block that applies to no targeted host is no obstacle (-l beats the config's user).
    let output = fleet.run(fleet.flags().args(["-w", "h02", "--json", "--", "true"]));
    output.assert_code(EXIT_SUCCESS);
}
