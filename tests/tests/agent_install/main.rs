//! End-to-end tests of `volley agent install|status|upgrade|renew|uninstall` against real sshd
//! hosts on loopback. The hosts are this machine, which has no systemd, so the agents run under
//! the fallback supervisor, each host with its own `agent_prefix` and `agent_port`. They need
//! `target/debug/volley` and `target/debug/volley-agent` (`cargo build --workspace --bins`).
//!
//! - `installation`: the fixture: the fleet's inventory with prefixes and ports, a PKI, and
//!   helpers to run `volley agent` and look at what it left on the hosts;
//! - `inputs`: bad input is one line and exit 64, before any host is contacted;
//! - `lifecycle`: one fleet through install, run, a second install, status, renew, a failed
//!   upgrade, uninstall, with the private keys looked for everywhere along the way;
//! - `rollout`: an install in batches under a failure budget, in the journal, and retried.
//! - `become`: a non-root SSH user, with and without `--become`, and where sudo wants a password.
//! - `certificates`: certificates install must replace, and a PKI that cannot sign.
//! - `layout`: the modes of the directories install makes, and which ones uninstall removes.
//! - `unknown_agent`: an agent the fallback supervisor does not know holds the port.
//!
//! They log in as root, as CI does, except `become`, whose users are made by the fixture.

mod r#become;
mod certificates;
mod inputs;
mod installation;
mod layout;
mod lifecycle;
mod rollout;
mod unknown_agent;
