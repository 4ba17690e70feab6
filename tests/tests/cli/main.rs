//! End-to-end tests of how `volley` behaves as a Unix command, against real sshd fleets on
//! loopback: pipes whose reader goes away, terminals and files, usage errors, the documents
//! generated from its flags, and the operator's conveniences around a run. They need
//! `target/debug/volley` and `target/debug/volley-agent` (`cargo build -p volley -p volley-agent`); without it every test here fails, saying so.
//!
//! Modules, one area each:
//! - `files`: `--out-dir` files and host lists, `-N`, `--list-hosts`.
//! - `pipes`: `volley ... | head -1` and `2>&1 | head` end quietly; the run is stopped and
//!   journalled; the same for `volley runs` and `volley runs show`.
//! - `retry`: overrides given to `volley retry`, journalled and kept by a retry of the retry;
//!   no retry hint when only host keys or credentials failed.
//! - `stdin`: `--hosts-file -`, and `--stdin` over SSH and agents, with a timeout still
//!   stopping the command.
//! - `terminal`: colour only where a terminal is, no log lines unless `VOLLEY_LOG` asks.
//! - `docs`: bash completes with `volley completions bash`; the man pages render with nroff.
//! - `usage`: clap's whole message for usage errors, help for bare `volley`, input errors that
//!   name their input (empty targets, inventory types, a named PKI that is not there),
//!   `--timeout 0`.

mod docs;
mod files;
mod pipes;
mod retry;
mod stdin;
mod terminal;
mod usage;

pub use volley_tests::report::{EXIT_SUCCESS, EXIT_USAGE};

/// What a shell reports for a tool that a closed pipe ended: 128 + SIGPIPE.
pub const EXIT_BROKEN_PIPE: i32 = 141;
