//! End-to-end tests of `volley agent` on hosts managed by systemd: containers that boot this
//! machine's OS with systemd as PID 1 (`volley_tests::SystemdFleet`), each with its own sshd on
//! its own loopback address. They need root, `systemd-nspawn` (`tests/need-systemd.sh`), and
//! `target/debug/volley` and `target/debug/volley-agent` (`cargo build --workspace --bins`).
//! A container that cannot boot fails the test; nothing here is ever skipped.
//!
//! Run alone: `cargo nextest run -p volley-tests --test agent_systemd`.
//!
//! - `lifecycle`: three hosts, one logged into as root and two as a sudo user with `become`,
//!   through install (unit installed and enabled, Type=notify readiness), `kill -9` restarted by
//!   systemd, renew as a reload, an upgrade to a broken binary rolled back, the unit's exposure
//!   under `systemd-analyze security`, and uninstall.
//! - `executor`: on those hosts, commands run as transient units of PID 1, outside the hardened
//!   agent's sandbox, with the results they have over SSH and through a directly-run agent.
//! - `battery`: the fleet and the helpers both use.

mod battery;
mod executor;
mod lifecycle;
