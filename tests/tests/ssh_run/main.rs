//! End-to-end tests of `volley run` against fleets of real sshd processes on loopback (the
//! fixture is the `volley_tests` library). They need `target/debug/volley`: build it first with
//! `cargo build -p volley`; without it every test here fails, saying so.
//!
//! Modules, one area each:
//! - `outcomes`: one outcome per host, the JSON record, exit statuses, credentials.
//! - `agent_keys`: keys an ssh-agent holds, in ssh's order, and `IdentitiesOnly`.
//! - `output`: the `HOST: line` stream, stdout versus stderr, big output, `--gather`.
//! - `stopping`: command timeouts, and SIGINT, SIGTERM or SIGHUP, stop the remote commands.
//! - `host_keys`: known_hosts checking and `--accept-new-host-keys`.
//! - `jump`: hosts only jump hosts can reach, through `ProxyJump` and `-J`.
//! - `stages`: failure reasons name what was dialled and the stage that failed or stalled.
//! - `targets`: choosing hosts (hosts files, exclusions, ssh config aliases) and input errors.
//! - `rollout`: batches, the failure budget, connect retries, the run journal and `volley retry`.
//! - `become`: `--become` and the inventory's `become`, as root through `sudo -n` or a reason.
//! - `admission`: `--max-handshakes`, and the connect timeout counted from a host's turn.

mod admission;
mod agent_keys;
mod r#become;
mod host_keys;
mod jump;
mod outcomes;
mod output;
mod rollout;
mod stages;
mod stopping;
mod targets;

pub use volley_tests::report::{
    EXIT_COMMAND_FAILED, EXIT_IN_DOUBT, EXIT_INTERRUPTED, EXIT_NOT_REACHED, EXIT_SUCCESS,
    EXIT_USAGE, expect_outcome, reported_hosts,
};
