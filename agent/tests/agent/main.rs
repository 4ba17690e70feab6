//! End-to-end tests of `volley-agent`: the real binary, real certificates, real processes, on
//! loopback ports chosen by the kernel.
//!
//! - [`exec`]: running commands: output, exit, signals, timeouts, limits, `Info`.
//! - [`attach`]: executions outlive their stream: `Attach` and `Cancel` by id, one run per id,
//!   retention of finished executions.
//! - [`files`]: `Stat`, `Push` and `Fetch` under `push_roots`: refusals, limits, atomicity.
//! - [`peers`]: who may connect: every refused client gets an error and runs nothing; the
//!   handshake an allowed controller gets (its cipher-suite order, no session tickets).
//! - [`lifecycle`]: start-up checks, sd_notify, SIGTERM, memory, the audit log.
//! - [`reload`]: SIGHUP serves a new certificate and a new `allowed_controllers` without a
//!   restart.
//! - [`session`]: the user, shell, home, groups, umask and environment a command gets,
//!   `become_root`, and the refusals.
//! - the `keygen` subcommand is tested beside its code (`src/keygen.rs`).

mod attach;
mod exec;
mod files;
mod fixture;
mod lifecycle;
mod peers;
mod pki;
mod reload;
mod session;
