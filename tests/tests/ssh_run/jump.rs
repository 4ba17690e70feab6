//! Jump hosts: hosts that only a jump host can reach (their sshd runs in a network namespace of
//! the fleet's own, so a direct connection is refused) are reached through `ProxyJump` and
//! `-J`, one hop or several, each hop authenticated with its own key and its host key checked.

use volley_tests::jump::{GATE, INNER, NARROW_GATE};
use volley_tests::keys::known_hosts_pattern;
use volley_tests::{Host, JumpFleet, ProcessOutput, RunFlags};

use crate::{EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome};

const PRINT_CONNECTION: &str = r#"echo "$SSH_CONNECTION""#;

/// `volley run` on every host of `fleet` with `flags`, then `options`, as JSON. Each host's
/// connect runs up to three handshakes in a row on a shared, loaded machine, and nothing here is
/// meant to time out, so the connect timeout is generous.
fn run_all(fleet: &JumpFleet, flags: &RunFlags, options: &[&str], command: &str) -> ProcessOutput {
    let mut args = vec!["-g", "all", "--connect-timeout", "60s", "--json"];
    args.extend(options);
    args.extend(["--", command]);
    fleet.run(flags.args(args))
}

/// Every host of `fleet` succeeded and printed its own address and port as the server's end of
/// `$SSH_CONNECTION`.
fn assert_each_host_answered_itself(fleet: &JumpFleet, output: &ProcessOutput) {
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    assert_eq!(records.len(), fleet.hosts().len(), "{}", output.describe());
    for host in fleet.hosts() {
        let record = expect_outcome(output, &records, &host.name, "succeeded");
        assert!(
            record
                .stdout
                .trim_end()
                .ends_with(&host.connection_suffix()),
            "{}: {:?}",
            host.name,
            record.stdout
        );
    }
}

/// Every host of `fleet` ended with `outcome`, for a reason that starts as `expected` says.
fn assert_each_host(
    fleet: &JumpFleet,
    output: &ProcessOutput,
    outcome: &str,
    expected: impl Fn(&Host) -> String,
) {
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        let record = expect_outcome(output, &records, &host.name, outcome);
        let reason = record.reason.as_deref().unwrap_or_default();
        let expected = expected(host);
        assert!(
            reason.starts_with(&expected),
            "{}: {reason}\nnot {expected}",
            host.name
        );
    }
}

#[test]
fn proxy_jump_reaches_hosts_only_the_jump_host_can_reach_over_one_connection() {
    let fleet = JumpFleet::start(12);
    fleet.write_ssh_config("Host h*\n    ProxyJump gate\n");

    let output = run_all(&fleet, &fleet.flags(), &[], PRINT_CONNECTION);
    assert_each_host_answered_itself(&fleet, &output);
    // Twelve hosts, one login on the jump host: every host rode its own channel of it.
    assert_eq!(fleet.gate().accepted(), 1, "{}", fleet.logs());

    // Without the jump host nothing answers: the hosts cannot be reached from here.
    let output = run_all(&fleet, &fleet.flags(), &["-J", "none"], "true");
    assert_each_host(&fleet, &output, "unreachable", |host| {
        format!("unreachable: ssh {}: connection refused", host.socket)
    });
}

#[test]
fn two_jump_hosts_are_visited_in_order() {
    let fleet = JumpFleet::start(3);
    // narrow-gate forwards only to inner: the hosts are reached through both, in this order.
    let two_hops = ["-J", "narrow-gate,inner"];
    let output = run_all(&fleet, &fleet.flags(), &two_hops, PRINT_CONNECTION);
    assert_each_host_answered_itself(&fleet, &output);
    assert_eq!(fleet.narrow_gate().accepted(), 1, "{}", fleet.logs());

    // Through narrow-gate alone the hosts are out of its bounds, and the reason says so.
    let one_hop = ["-o", "ProxyJump=narrow-gate"];
    let output = run_all(&fleet, &fleet.flags(), &one_hop, "true");
    assert_each_host(&fleet, &output, "unreachable", |host| {
        format!(
            "unreachable: ssh {} via {NARROW_GATE}: jump host {NARROW_GATE} refuses to forward \
             there (its sshd's AllowTcpForwarding or PermitOpen)",
            host.socket
        )
    });
    assert_eq!(fleet.host_logins(), 3, "only the first run logged in");
}

#[test]
fn a_changed_key_on_a_jump_host_fails_every_host_and_names_the_jump_host() {
    let fleet = JumpFleet::start(3);
    let known_hosts = fleet.dir().join("changed_known_hosts");
    let inner = known_hosts_pattern(fleet.inner_socket());
    // inner is recorded with the key of another jump host.
    let text = fleet.known_hosts_text(&[INNER])
        + &format!("{inner} {}\n", fleet.jump_host_key(GATE).public());
    std::fs::write(&known_hosts, text).unwrap();
    let mut flags = fleet.flags();
    flags.known_hosts = known_hosts.clone();

    let output = run_all(&fleet, &flags, &["-J", "gate,inner"], "true");
    let presented = fleet.jump_host_key(INNER).fingerprint();
    assert_each_host(&fleet, &output, "host_key_changed", |_| {
        format!(
            "HOST KEY CHANGED (ssh jump host {INNER} ({}) via {GATE} presented {presented}, {}:",
            fleet.inner_socket(),
            known_hosts.display()
        )
    });
    let logins = fleet.host_logins();
    assert_eq!(logins, 0, "a host was reached\n{}", fleet.logs());
}

#[test]
fn a_new_jump_host_key_is_recorded_once_and_listed() {
    let fleet = JumpFleet::start(3);
    let known_hosts = fleet.dir().join("learning_known_hosts");
    std::fs::write(&known_hosts, fleet.known_hosts_text(&[INNER])).unwrap();
    let mut flags = fleet.flags();
    flags.known_hosts = known_hosts.clone();
    let presented = fleet.jump_host_key(INNER).fingerprint();

    let output = run_all(&fleet, &flags, &["-J", "gate,inner"], PRINT_CONNECTION);
    assert_each_host(&fleet, &output, "host_key_unknown", |_| {
        format!(
            "host key unknown (ssh jump host {INNER} ({}) via {GATE} presented {presented})",
            fleet.inner_socket()
        )
    });

    let accept = ["-J", "gate,inner", "--accept-new-host-keys"];
    let output = run_all(&fleet, &flags, &accept, PRINT_CONNECTION);
    assert_each_host_answered_itself(&fleet, &output);
    let recorded: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| line.starts_with("volley: recorded new host key"))
        .collect();
    assert_eq!(
        recorded,
        [format!(
            "volley: recorded new host key for {INNER} ({}): ED25519 {presented}",
            fleet.inner_socket()
        )],
        "{}",
        output.describe()
    );
    let written = std::fs::read_to_string(&known_hosts).unwrap();
    let line = format!(
        "{} {}",
        known_hosts_pattern(fleet.inner_socket()),
        fleet.jump_host_key(INNER).public()
    );
    assert_eq!(written.matches(&line).count(), 1, "{written}");
}

/// A jump host that refuses the login is dialled once for the run, not once per round of
/// handshakes: every host gets its refusal, and its sshd counts one failed login, not one per
/// round (which fail2ban would count against the operator).
#[test]
fn a_jump_host_that_refuses_the_login_is_dialled_once() {
    let fleet = JumpFleet::start(6);
    let output = run_all(
        &fleet,
        &fleet.flags(),
        &["-J", "volley-no-such-user@gate", "--max-handshakes", "2"],
        "true",
    );
    assert_each_host(&fleet, &output, "auth_failed", |_| {
        "authentication failed: ssh jump host gate".to_string()
    });
    assert_eq!(fleet.gate().accepted(), 1, "{}", fleet.logs());
}
