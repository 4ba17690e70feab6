//! End-to-end tests of `volley push` and `volley fetch` against real sshd hosts and real
//! agents on loopback, every host with its own files: each server runs in a mount namespace of
//! its own, with a tmpfs at one shared path ([`volley_tests::isolation`]). They need root (as
//! CI has) and `target/debug/volley` and `target/debug/volley-agent` (`cargo build --workspace
//! --bins`).
//!
//! - `deployment`: the fixture: isolated SSH hosts and agents in one inventory;
//! - `changes`: unchanged and changed hosts, `--then` exactly where something changed, the
//!   journal's record of what changed, `--mode`, `--owner`, `--backup`, directories, a retry
//!   that owes `--then`, `--become` over SSH;
//! - `failures`: a full disk and a read-only destination fail their host and leave the old
//!   file; a path outside the agent's `push_roots` is refused; retry after a fix; a failing
//!   canary stops a batched push under the failure budget;
//! - `streaming`: a 100 MiB file with bounded memory; `kill -9` of volley mid-push leaves no
//!   partial file, over both transports;
//! - `fetch`: files come back into DIR/HOST/PATH;
//! - `inputs`: bad input is one line and exit 64, before any host is contacted.

mod changes;
mod deployment;
mod failures;
mod fetch;
mod inputs;
mod streaming;

pub use volley_tests::volley::RUN_DEADLINE;
