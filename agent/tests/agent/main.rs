//! End-to-end tests of `volley-agent`: the real binary, real certificates, real processes, on
//! loopback ports chosen by the kernel.
//!
//! - [`exec`]: running commands: output, exit, signals, timeouts, cancel, limits, `Info`.
//! - [`files`]: `Stat`, `Push` and `Fetch` under `push_roots`: refusals, limits, atomicity.
//! - [`peers`]: who may connect: every refused client gets an error and runs nothing.
//! - [`lifecycle`]: start-up checks, sd_notify, SIGTERM, memory, the audit log.
//! - [`reload`]: SIGHUP serves a new certificate without a restart.
//! - [`session`]: the user, shell, home, groups, umask and environment a command gets,
//!   `become_root`, and the refusals.
//! - the `keygen` subcommand is tested beside its code (`src/keygen.rs`).

mod exec;
mod files;
mod fixture;
mod lifecycle;
mod peers;
mod pki;
mod reload;
mod session;
