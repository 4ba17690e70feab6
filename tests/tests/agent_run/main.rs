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
//! - `stages`: failure reasons name the agent's address and the stage that failed or stalled.

mod hybrid;
mod outcomes;
mod output;
mod peers;
mod stages;
mod stopping;

pub use volley_tests::report::{
    EXIT_COMMAND_FAILED, EXIT_INTERRUPTED, EXIT_NOT_REACHED, EXIT_SUCCESS,
    expect_outcome_via as expect_outcome, reported_hosts,
};
