//! The end-to-end fixture of Volley: real OpenSSH sshd processes and real `volley-agent`
//! processes on loopback addresses, and what tests and benchmarks need around them. Nothing here
//! is a mock; nothing leaves 127.0.0.0/8.
//!
//! Layout:
//! - [`fleet`]: [`SshFleet`], N named hosts (some of them odd on purpose, see [`HostKind`]) with
//!   their keys, known_hosts and inventory.
//! - [`agents`]: [`AgentFleet`], N named agent hosts (some odd on purpose, see [`AgentKind`])
//!   with a PKI made by `volley pki` ([`pki`]) and an inventory; [`agentd`]: one agent process.
//! - [`hybrid`]: one inventory mixing agent hosts, SSH hosts and dead addresses.
//! - [`systemd_fleet`]: [`SystemdFleet`], N hosts that are containers booted with systemd as
//!   PID 1 ([`container`]), each with its own sshd on its own loopback address.
//! - [`volley`]: the volley binary, run in a clean environment against a fleet.
//! - [`report`]: reading what volley printed, `--json` records strictly.
//! - [`remote`]: per-host commands and the processes a run leaves on the hosts.
//! - [`pipe`]: volley into a real pipe closed by its reader (`| head -1`), and on a pseudo-terminal.
//! - [`relay`]: [`DelayRelay`], added latency for benchmarks.
//! - [`stalling`]: [`StallingPort`], a host that times out at first and then answers.
//! - [`isolation`]: hosts that each have their own files (a private mount namespace per
//!   server), for `volley push` and `volley fetch`.
//! - [`listeners`]: odd listeners for connect-stage failures: a port that never answers, one
//!   that writes fixed text (HTTP, a bare SSH banner) and then stays silent.
//! - [`jump`]: [`JumpFleet`], hosts that only jump hosts can reach, in a [`netns`] namespace,
//!   behind [`inetd`] gates.
//! - [`users`]: non-root users with and without sudo rights, for `--become`, and a plain one
//!   that the same command runs as over SSH and through an agent.
//! - [`sshd`], [`keys`], [`inventory`], [`loopback`], [`process`], [`tools`]: the parts the fleet
//!   is built from.
//!
//! Invariant: a missing tool or binary fails the test that needs it, with what to install or
//! build; no test passes by skipping.
#![forbid(unsafe_code)]

pub mod agentd;
pub mod agents;
pub mod container;
pub mod fleet;
pub mod hybrid;
pub mod inetd;
pub mod inventory;
pub mod isolation;
pub mod jump;
pub mod keys;
pub mod listeners;
pub mod loopback;
pub mod netns;
pub mod pipe;
pub mod pki;
pub mod process;
pub mod relay;
pub mod remote;
pub mod report;
pub mod sshd;
pub mod stalling;
pub mod systemd_fleet;
pub mod tools;
pub mod users;
pub mod volley;

#[cfg(test)]
mod sanity;

pub use agents::{AgentFleet, AgentFleetSpec, AgentHost, AgentKind};
pub use fleet::{FleetSpec, Host, HostKind, SshFleet};
pub use jump::JumpFleet;
pub use process::{ProcessOutput, RunningProcess};
pub use relay::DelayRelay;
pub use report::HostRecord;
pub use stalling::StallingPort;
pub use systemd_fleet::SystemdFleet;
pub use volley::RunFlags;
