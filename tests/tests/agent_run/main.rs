//! End-to-end tests of `volley run` through real `volley-agent` processes on loopback, with real
//! certificates made by `volley pki` (the fixture is the `volley_tests` library). They need
//! `target/debug/volley` and `target/debug/volley-agent`: build them first with
//! `cargo build -p volley -p volley-agent`; without them every test here fails, saying so.
//!
//! Modules, one area each:
//! - `outcomes`: success, non-zero exit, signal and timeout through agents, and the JSON record.
//! - `stopping`: SIGINT stops the commands on the agents; an agent that dies mid-command is a
//!   transport error, and the command is not run again over SSH.
//! - `output`: 100 MiB of output keep the agent's memory bounded and are reported truncated.
//! - `peers`: who the controller refuses and who refuses the controller; nothing runs then.
//! - `hybrid`: agent hosts, SSH hosts and dead addresses in one run with `auto`.

mod hybrid;
mod outcomes;
mod output;
mod peers;
mod stopping;

use std::collections::BTreeMap;

use volley_tests::{HostRecord, ProcessOutput};

/// Exit statuses of `volley run`.
pub const EXIT_SUCCESS: i32 = 0;
pub const EXIT_COMMAND_FAILED: i32 = 1;
pub const EXIT_NOT_REACHED: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

/// The record of `host`, which must have `outcome` and have gone through `transport`; fails
/// with the whole run otherwise.
pub fn expect_outcome<'a>(
    output: &ProcessOutput,
    records: &'a BTreeMap<String, HostRecord>,
    host: &str,
    outcome: &str,
    transport: &str,
) -> &'a HostRecord {
    let record = records
        .get(host)
        .unwrap_or_else(|| panic!("no record for {host}\n{}", output.describe()));
    assert_eq!(
        (record.outcome.as_str(), record.transport.as_str()),
        (outcome, transport),
        "{host}: {record:?}\n{}",
        output.describe()
    );
    record
}

/// The hosts that have a record, in name order.
pub fn reported_hosts(records: &BTreeMap<String, HostRecord>) -> Vec<&str> {
    records.keys().map(String::as_str).collect()
}
