//! End-to-end tests of `volley run` against fleets of real sshd processes on loopback (the
//! fixture is the `volley_tests` library). They need `target/debug/volley`: build it first with
//! `cargo build -p volley`; without it every test here fails, saying so.
//!
//! Modules, one area each:
//! - `outcomes`: one outcome per host, the JSON record, exit statuses, credentials.
//! - `output`: the `HOST: line` stream, stdout versus stderr, big output, `--gather`.
//! - `stopping`: command timeouts and SIGINT stop the remote commands.
//! - `host_keys`: known_hosts checking and `--accept-new-host-keys`.
//! - `targets`: choosing hosts (hosts files, exclusions, ssh config aliases) and input errors.
//! - `rollout`: batches, the failure budget, connect retries, the run journal and `volley retry`.

mod host_keys;
mod outcomes;
mod output;
mod rollout;
mod stopping;
mod targets;

use std::collections::BTreeMap;

use volley_tests::{HostRecord, ProcessOutput};

/// Exit statuses of `volley run`.
pub const EXIT_SUCCESS: i32 = 0;
pub const EXIT_COMMAND_FAILED: i32 = 1;
pub const EXIT_NOT_REACHED: i32 = 2;
pub const EXIT_USAGE: i32 = 64;
pub const EXIT_INTERRUPTED: i32 = 130;

/// The record of `host`, which must have `outcome`; fails with the whole run otherwise.
pub fn expect_outcome<'a>(
    output: &ProcessOutput,
    records: &'a BTreeMap<String, HostRecord>,
    host: &str,
    outcome: &str,
) -> &'a HostRecord {
    let record = records
        .get(host)
        .unwrap_or_else(|| panic!("no record for {host}\n{}", output.describe()));
    assert_eq!(
        record.outcome,
        outcome,
        "{host}: {record:?}\n{}",
        output.describe()
    );
    record
}

/// The hosts that have a record, in name order.
pub fn reported_hosts(records: &BTreeMap<String, HostRecord>) -> Vec<&str> {
    records.keys().map(String::as_str).collect()
}
