//! Types that the Volley controller and agent share.
//!
//! Layout:
//! - [`target`]: target patterns (`web[01-20]`, `user@host:port`, `@group`) and their expansion.
//! - [`fold`]: the reverse, folding host names back into range form for summaries.
//! - [`outcome`]: the result model, one closed [`outcome::Outcome`] per host.
//! - [`duration`], [`size`]: `30s` and `1MiB` as written on the command line and in files.
//! - [`exec`]: what an agent is asked to run and what it reports, free of protocol types.
//! - [`inventory`]: the TOML inventory of groups, per-host settings and run settings.
//! - [`journal`]: the run journal's records (JSON Lines), written by the controller, read back by
//!   `volley runs` and `volley retry`.
//! - [`transfer`]: files on hosts for `volley push` and `volley fetch`: what a destination
//!   holds, what an agent is asked to write or read.
#![forbid(unsafe_code)]

pub mod certificate;
pub mod duration;
pub mod exec;
pub mod fold;
pub mod inventory;
pub mod journal;
pub mod outcome;
pub mod size;
pub mod target;
pub mod transfer;
