//! `volley`: run one command on many servers at once and report one outcome per host.
//!
//! Layout, in the order a run flows through it:
//! - [`cli`]: raw flags (clap); [`plan`]: flags + inventory + ssh config -> a validated `RunPlan`;
//! - [`scheduler`]: every host through one [`transport::Transport`], `parallel` at a time, and
//!   [`admission`]: how many of them may be in their connect phase at once;
//! - [`transport`]: the trait; SSH (with known_hosts and identities), the agent, and `auto`;
//! - [`pki`]: the private CA (`volley pki`); [`demo`]: a throwaway local fleet of agents;
//! - [`docs`]: shell completions and man pages, generated from the clap definitions;
//! - [`install`]: `volley agent install|status|upgrade|renew|uninstall`, one more transport;
//! - [`transfer`]: `volley push` and `volley fetch`, two more ([`upload`]: the atomic upload
//!   over SSH that install shares);
//! - [`report`]: the stream, JSON and gather renderers, progress and the summary;
//!   [`reader_watch`]: a run stops when the reader of its output goes away;
//! - [`exit`]: the exit status as a function of the outcomes; [`limits`]: the file budget.
//! - [`rollout`]: batches and the failure budget; [`connect_retry`]: `--retries`;
//! - [`journal`]: the run journal, written as hosts finish; [`runs`]: `volley runs` and
//!   `volley retry`, which read it back; [`resume`]: `volley runs resume`;
//! - [`run`]: one run (`volley run`, `volley agent ...`, `volley push`, `volley fetch`, `volley
//!   retry`, `volley runs resume`) from flags to exit status.
//!
//! `main` is the only place that maps errors to exit statuses and prints them.
#![forbid(unsafe_code)]

/// A line on stderr that never panics: `eprintln!` does when stderr is a closed pipe
/// (`volley ... 2>&1 | head`), and a reader going away must not crash volley.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        // One write per line: stderr is unbuffered, and a line written piece by piece can be
        // split by another writer (a progress bar, a second volley appending to the same log).
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

mod admission;
mod cli;
mod connect_retry;
mod demo;
mod docs;
mod entropy;
mod event;
mod exit;
mod install;
mod journal;
mod limits;
mod local_dir;
mod pki;
mod plan;
mod reader_watch;
mod report;
mod resume;
mod rollout;
mod run;
mod runs;
mod scheduler;
mod shell;
mod ssh_config;
#[cfg(test)]
mod tidy;
mod transfer;
mod transport;
mod upload;

use std::io::Write as _;
use std::process::ExitCode;

use crate::cli::{Cli, Command, ManArgs, PkiCommand, PkiDir, RunsCommand, ShowArgs};
use crate::journal::store::runs_dir;
use crate::pki::Pki;
use crate::plan::Environment;
use crate::run::{Operation, Origin};

/// An error of the operator's input: printed as one line, exit status 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// Every host costs the controller hundreds of small allocations (TLS, HTTP/2, the task, its
/// events); under glibc's malloc they were about a seventh of its CPU per host at 10,000 hosts,
/// and mimalloc takes about a tenth off the whole (`bench/scale.sh`, A/B).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(error) => return clap_exit(&error),
    };
    start_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            say!("volley: cannot start the async runtime: {error}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    // One crypto provider for the whole process: with two, rustls cannot pick one at start.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = runtime.block_on(async {
        // A write past the file size limit (`ulimit -f`) raises SIGXFSZ, whose default action
        // killed volley in the middle of a journal record. Caught (the handler stays for the
        // process's life), the write fails with EFBIG instead, which the journal takes as it
        // takes a full disk.
        let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
            rustix::process::Signal::XFSZ.as_raw(),
        ));
        match cli.command {
            Command::Run(args) => run::run(*args, Origin::command_line(Operation::Command)).await,
            Command::Agent(command) => {
                let (args, request) = install::plan_arguments(command);
                run::run(args, Origin::command_line(Operation::Agent(request))).await
            }
            Command::Push(args) => {
                let (args, request) = transfer::plan_push(*args);
                run::run(args, Origin::command_line(Operation::Transfer(request))).await
            }
            Command::Fetch(args) => {
                let (args, request) = transfer::plan_fetch(*args);
                run::run(args, Origin::command_line(Operation::Transfer(request))).await
            }
            Command::Pki(command) => pki_command(command).map(|()| exit::SUCCESS),
            Command::Demo(args) => demo::run(args).await,
            Command::Runs(args) => match args.show {
                Some(RunsCommand::Resume(resume)) => run::resume(resume).await,
                Some(RunsCommand::Show(show)) => runs(Some(&show), args.limit),
                None => runs(None, args.limit),
            },
            Command::Retry(args) => run::retry(*args).await,
            Command::Completions(args) => docs::completions(args.shell, &mut std::io::stdout())
                .map(|()| exit::SUCCESS)
                .map_err(Into::into),
            Command::Man(args) => man(args),
        }
    });
    match result {
        Ok(status) => ExitCode::from(status),
        // A reader that went away (`volley runs | head -1`) ends volley quietly, with the status
        // a shell gives a tool killed by SIGPIPE.
        Err(error) if is_broken_pipe(&error) => ExitCode::from(exit::BROKEN_PIPE),
        Err(error) => {
            say!("volley: {error}");
            let status = if error.is::<UsageError>() {
                exit::USAGE
            } else {
                exit::INTERNAL
            };
            ExitCode::from(status)
        }
    }
}

/// Help and version go to stdout (exit 0), as does the help that bare `volley` or a bare
/// `volley agent` prints, as cargo does. Any other error is clap's whole message on stderr: what
/// is wrong, the usage line, and the tips (the missing arguments, `-- COMMAND`); exit 64.
fn clap_exit(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    use std::io::Write as _;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = write!(std::io::stdout(), "{}", error.render());
            ExitCode::SUCCESS
        }
        _ => {
            let _ = error.print();
            ExitCode::from(exit::USAGE)
        }
    }
}

/// Diagnostics (tracing) are off unless `VOLLEY_LOG` asks for them (`VOLLEY_LOG=debug`,
/// `VOLLEY_LOG=volley=trace,russh=debug`): an operator's stderr carries volley's own lines only.
/// They are coloured only on a terminal.
fn start_logging() {
    use std::io::IsTerminal;
    let Some(filter) = std::env::var("VOLLEY_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return;
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(filter) => filter,
        Err(error) => {
            say!("volley: warning: VOLLEY_LOG '{filter}': {error}; logging at debug");
            tracing_subscriber::EnvFilter::new("debug")
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Whether `error` is a write to a pipe whose reader is gone.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `volley man`: volley(1) on stdout, or every page into `--dir`.
fn man(args: ManArgs) -> anyhow::Result<u8> {
    match &args.dir {
        None => docs::man_page(&mut std::io::stdout())?,
        Some(dir) => {
            let pages = docs::man_pages(dir).map_err(|error| {
                UsageError(format!(
                    "--dir {}: {}",
                    dir.display(),
                    plan::io_reason(&error)
                ))
            })?;
            writeln!(
                std::io::stdout(),
                "{} pages in {}",
                pages.len(),
                dir.display()
            )?;
        }
    }
    Ok(exit::SUCCESS)
}

/// `volley runs` and `volley runs show`.
fn runs(show: Option<&ShowArgs>, limit: usize) -> anyhow::Result<u8> {
    let env = Environment::from_process().map_err(|e| UsageError(e.to_string()))?;
    let dir = runs_dir(&env);
    let mut stdout = std::io::stdout().lock();
    let result = match show {
        None => runs::list(&mut stdout, &dir, limit),
        Some(show) => runs::show(&mut stdout, &dir, show),
    };
    result.map_err(runs_error)?;
    Ok(exit::SUCCESS)
}

/// Errors about the operator's input (a run id, `--only`) exit 64; reading failures exit 70.
pub(crate) fn runs_error(error: runs::RunsError) -> anyhow::Error {
    use crate::journal::store::StoreError;
    match error {
        runs::RunsError::Io(error) => anyhow::Error::new(error),
        runs::RunsError::Store(StoreError::Unreadable { .. }) => anyhow::Error::new(error),
        error => UsageError(error.to_string()).into(),
    }
}

fn pki_command(command: PkiCommand) -> anyhow::Result<()> {
    let env = Environment::from_process().map_err(|e| UsageError(e.to_string()))?;
    let dir = |dir: PkiDir| {
        dir.dir
            .unwrap_or_else(|| env.home.join(".config/volley/pki"))
    };
    match command {
        PkiCommand::Init {
            dir: pki_dir,
            identity,
        } => {
            let pki = Pki::new(dir(pki_dir));
            let made = pki.init(&identity).map_err(|e| UsageError(e.to_string()))?;
            let issued = made.issued;
            let mut out = std::io::stdout().lock();
            let ca = match (made.new_ca, made.renewed) {
                (true, _) => "",
                (false, true) => " (kept; the controller's certificate was ending: renewed)",
                (false, false) => " (kept; the controller's certificate was missing)",
            };
            writeln!(out, "CA: {}{ca}", pki.ca_certificate().display())?;
            writeln!(
                out,
                "controller certificate ({identity}): {}",
                issued.certificate.display()
            )?;
            writeln!(out, "controller key: {}", issued.key.display())?;
        }
        PkiCommand::Issue {
            dir: pki_dir,
            names,
        } => {
            let pki = Pki::new(dir(pki_dir));
            let mut agents = Vec::new();
            for entry in names {
                let (name, addresses) = match entry.split_once('=') {
                    Some((name, address)) => {
                        let address = address.parse().map_err(|_| {
                            UsageError(format!("'{entry}': '{address}' is not an IP address"))
                        })?;
                        (name.to_string(), vec![address])
                    }
                    None => (entry.clone(), Vec::new()),
                };
                agents.push((name, addresses));
            }
            let issued = pki
                .issue_agents(&agents)
                .map_err(|e| UsageError(e.to_string()))?;
            for ((name, _), (issued, replaced)) in agents.iter().zip(issued) {
                writeln!(
                    std::io::stdout(),
                    "{name}: {} {}{}",
                    issued.certificate.display(),
                    issued.key.display(),
                    if replaced { " (replaced)" } else { "" }
                )?;
            }
        }
    }
    Ok(())
}
