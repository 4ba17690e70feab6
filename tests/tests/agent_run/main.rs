//! End-to-end tests of `volley run` through real `volley-agent` processes on loopback, with real
//! certificates made by `volley pki` (the fixture is the `volley_tests` library). They need
//! `target/debug/volley` and `target/debug/volley-agent`: build them first with
//! `cargo build -p volley -p volley-agent`; without them every test here fails, saying so.
//!
//! Modules, one area each:
//! - `outcomes`: success, non-zero exit, signal and timeout through agents, and the JSON record.
//! - `stopping`: SIGINT stops the commands on the agents; an agent that dies mid-command leaves
//!   its host in doubt, and the command is not run again over SSH or by a retry.
//! - `output`: 100 MiB of output all reach the controller, keep the agent's memory bounded, and
//!   are kept truncated in `--json`.
//! - `peers`: who the controller refuses and who refuses the controller; nothing runs then.
//! - `hybrid`: agent hosts, SSH hosts and dead addresses in one run with `auto`.
//! - `stages`: failure reasons name the agent's address and the stage that failed or stalled.
//! - `hardening`: 1,200 idle connections against an agent started with 1,024 descriptors do
//!   not keep a controller out; `volley pki issue` refuses controller identities.
//! - `semantics`: the same probe as the same user over SSH and through an agent prints the
//!   same, 5 MB of live output included; a user the host lacks is `auth_failed` on both.
//! - `resume`: `volley runs resume` after `kill -9` of volley, after a cut and restored network
//!   (a network namespace of the test's own), and with an agent that forgot the execution.

mod hardening;
mod hybrid;
mod outcomes;
mod output;
mod peers;
mod resume;
mod semantics;
mod stages;
mod stopping;

pub use volley_tests::report::{
    EXIT_COMMAND_FAILED, EXIT_IN_DOUBT, EXIT_INTERRUPTED, EXIT_NOT_REACHED, EXIT_SUCCESS,
    EXIT_USAGE, expect_outcome_via as expect_outcome, reported_hosts,
};
