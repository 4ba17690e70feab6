//! `volley push` and `volley fetch`: files to and from every host, as one more operation that
//! the scheduler runs like a command.
//!
//! Push and fetch are [`Transport`]s, so targets, `-p`, batches, the failure budget, connect
//! retries, interrupts, outcomes, reports, the run journal and `volley retry` apply to them
//! without code of their own. Each host is reached as `volley run` reaches it (its agent where
//! one answers, SSH elsewhere: [`host`]); a host that fails is one outcome among the others.
//!
//! - [`local`]: `LOCAL... REMOTE` to the files to send, read and checksummed once;
//! - [`decide`]: per host and file, write or leave alone; the host's line;
//! - [`push`], [`fetch`]: the two operations on a reached host;
//! - [`ssh`], [`agent`]: the primitives over each transport.
//!
//! A host's result: `succeeded` with one line (`unchanged: ...`, `changed: ...`, `fetched:
//! ...`), then `--then`'s output and outcome where it ran; or `step_failed` naming the step
//! (`probe`, `upload`, `fetch`) and why. The files a push changed on a host are in its report
//! and journal record (`changed`).

mod agent;
mod decide;
mod fetch;
mod host;

pub use host::DEFAULT_LIMIT;
mod local;
mod push;
mod ssh;

use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::{FetchArgs, PushArgs, RunArgs, TransferArgs};
use crate::shell::quote;
use crate::transport::Transport;
use crate::transport::agent::AgentTransport;
use crate::transport::ssh::SshTransport;

use self::decide::Flags;
use self::host::FileOperation;

/// What the operator asked for, beside the run settings.
#[derive(Debug)]
pub enum Request {
    Push(PushRequest),
    Fetch(FetchRequest),
}

impl Request {
    /// Whether the one command a host may run is a push's `--then`.
    pub fn runs_then(&self) -> bool {
        matches!(self, Request::Push(push) if push.then.is_some())
    }
}

#[derive(Debug)]
pub struct PushRequest {
    locals: Vec<PathBuf>,
    remote: String,
    mode: Option<String>,
    owner: Option<String>,
    backup: bool,
    then: Option<String>,
    /// On a retry: hosts where `--then` runs even if nothing changes, and the run that owes it.
    then_owed: ThenOwed,
}

/// Hosts whose `--then` a retried push never completed (see `runs::then_owed`).
#[derive(Clone, Debug, Default)]
pub struct ThenOwed {
    pub hosts: std::collections::HashSet<String>,
    pub by: String,
}

#[derive(Debug)]
pub struct FetchRequest {
    remotes: Vec<String>,
    dir: PathBuf,
}

impl Request {
    /// The subcommand, for the journal: `volley retry` runs it again.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Push(_) => "push",
            Request::Fetch(_) => "fetch",
        }
    }

    /// For a retry of a push: `--then` runs on `hosts` even where nothing changes, since run
    /// `by` wrote their files without completing it.
    pub fn owing_then(mut self, hosts: Vec<String>, by: &str) -> Request {
        if let Request::Push(push) = &mut self {
            push.then_owed = ThenOwed {
                hosts: hosts.into_iter().collect(),
                by: by.to_string(),
            };
        }
        self
    }
}

/// The `volley run` arguments that plan a push's or fetch's hosts, with `command` describing
/// it for the records.
fn run_args(common: TransferArgs, command: String) -> RunArgs {
    let TransferArgs {
        targets,
        ssh,
        transport,
        pki,
        limits,
        output,
        rollout,
    } = common;
    RunArgs {
        targets,
        ssh,
        transport,
        pki,
        limits,
        max_output: None,
        output,
        rollout,
        stdin: None,
        command: vec![command],
    }
}

/// Splits `volley push ...` into the `volley run` arguments that plan its hosts and the
/// request.
pub fn plan_push(args: PushArgs) -> (RunArgs, Request) {
    let (locals, remote) = (args.locals().to_vec(), args.remote());
    let PushArgs {
        common,
        mode,
        owner,
        backup,
        then,
        paths: _,
    } = args;
    let mut words: Vec<String> = locals
        .iter()
        .map(|local| local.display().to_string())
        .collect();
    words.push(remote.clone());
    let mut command = format!("volley push {}", quoted(&words));
    if let Some(then) = &then {
        command.push_str(&format!(" --then {}", quote(then)));
    }
    let request = PushRequest {
        locals,
        remote,
        mode,
        owner,
        backup,
        then,
        then_owed: ThenOwed::default(),
    };
    (run_args(common, command), Request::Push(request))
}

/// As [`plan_push`], for `volley fetch`.
pub fn plan_fetch(args: FetchArgs) -> (RunArgs, Request) {
    let (remotes, dir) = (args.remotes(), args.local_dir());
    let FetchArgs { common, paths: _ } = args;
    let mut words = remotes.clone();
    words.push(dir.display().to_string());
    let command = format!("volley fetch {}", quoted(&words));
    (
        run_args(common, command),
        Request::Fetch(FetchRequest { remotes, dir }),
    )
}

/// Words quoted only where a shell would need it, for a readable record.
fn quoted(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-~:@%+=,".contains(c));
            if plain { word.clone() } else { quote(word) }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An input error (exit 64), found before any host is contacted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(String);

/// The operation for the request: local files read and checked, flags parsed. `stamp`
/// (`20261127T065812Z`, the run's start) names `--backup` copies.
pub fn operation(
    request: Request,
    ssh: SshTransport,
    agent: Option<AgentTransport>,
    stamp: &str,
) -> Result<Arc<dyn Transport>, InputError> {
    match request {
        Request::Push(request) => {
            let mut empty = Vec::new();
            let files = local::manifest(&request.locals, &request.remote, &mut empty)
                .map_err(InputError)?;
            for directory in empty {
                say!(
                    "volley: warning: {}: an empty directory, not pushed (a push sends files and makes their directories)",
                    directory.display()
                );
            }
            let flags = Flags {
                mode: request
                    .mode
                    .as_deref()
                    .map(decide::parse_mode)
                    .transpose()
                    .map_err(InputError)?,
                owner: request
                    .owner
                    .as_deref()
                    .map(decide::parse_owner)
                    .transpose()
                    .map_err(InputError)?,
                backup_suffix: request.backup.then(|| format!(".{stamp}~")),
            };
            if request
                .then
                .as_deref()
                .is_some_and(|then| then.trim().is_empty())
            {
                return Err(InputError("--then: the command is empty".to_string()));
            }
            let work = push::PushOperation {
                files,
                flags,
                then: request.then,
                then_owed: request.then_owed,
            };
            Ok(Arc::new(FileOperation { work, ssh, agent }))
        }
        Request::Fetch(request) => {
            let remotes = request
                .remotes
                .iter()
                .map(|remote| local::remote_path("REMOTE", remote))
                .collect::<Result<Vec<_>, _>>()
                .map_err(InputError)?;
            if let Some(root) = remotes.iter().find(|remote| *remote == "/") {
                return Err(InputError(format!("REMOTE '{root}': names no file")));
            }
            // `/etc/hosts/` names a directory, as `cat` reads it: a fetch brings back files.
            if let Some(slash) = request.remotes.iter().find(|remote| remote.ends_with('/')) {
                return Err(InputError(format!(
                    "REMOTE '{slash}': ends in '/', which names a directory; fetch brings back files"
                )));
            }
            // Made, and written to once, before any host depends on it.
            crate::local_dir::prepare(&request.dir).map_err(|error| {
                InputError(format!(
                    "{}: {}",
                    request.dir.display(),
                    crate::local_dir::unusable(&error)
                ))
            })?;
            let work = fetch::FetchOperation {
                remotes,
                dir: request.dir,
            };
            Ok(Arc::new(FileOperation { work, ssh, agent }))
        }
    }
}
