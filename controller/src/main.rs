//! `volley`: run one command on many servers at once and report one outcome per host.
//!
//! Layout, in the order a run flows through it:
//! - [`cli`]: raw flags (clap); [`plan`]: flags + inventory + ssh config -> a validated `RunPlan`;
//! - [`scheduler`]: every host through one [`transport::Transport`], `parallel` at a time;
//! - [`transport`]: the trait; SSH (with known_hosts and identities), the agent, and `auto`;
//! - [`pki`]: the private CA (`volley pki`); [`demo`]: a throwaway local fleet of agents;
//! - [`install`]: `volley agent install|status|upgrade|renew|uninstall`, one more transport;
//! - [`report`]: the stream, JSON and gather renderers, progress and the summary;
//! - [`exit`]: the exit status as a function of the outcomes; [`limits`]: the file budget.
//! - [`rollout`]: batches and the failure budget; [`connect_retry`]: `--retries`;
//! - [`journal`]: the run journal, written as hosts finish; [`runs`]: `volley runs` and
//!   `volley retry`, which read it back;
//! - [`run`]: one run (`volley run`, `volley agent ...`, `volley retry`) from flags to exit status.
//!
//! `main` is the only place that maps errors to exit statuses and prints them.
#![forbid(unsafe_code)]

mod cli;
mod connect_retry;
mod demo;
mod entropy;
mod event;
mod exit;
mod install;
mod journal;
mod limits;
mod pki;
mod plan;
mod report;
mod rollout;
mod run;
mod runs;
mod scheduler;
mod shell;
mod ssh_config;
mod transport;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, PkiCommand, PkiDir, RunsArgs, RunsCommand};
use crate::journal::store::runs_dir;
use crate::pki::Pki;
use crate::plan::Environment;
use crate::run::{Operation, Origin};

/// An error of the operator's input: printed as one line, exit status 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            // clap's own rendering spans several lines; the first says what is wrong.
            let rendered = error.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("bad arguments")
                .trim_start_matches("error: ");
            eprintln!("volley: {first} (see volley --help)");
            return ExitCode::from(exit::USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOLLEY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("volley: cannot start the async runtime: {error}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    // One crypto provider for the whole process: with two, rustls cannot pick one at start.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(*args, Origin::command_line(Operation::Command)).await,
            Command::Agent(command) => {
                let (args, request) = install::plan_arguments(command);
                run::run(args, Origin::command_line(Operation::Agent(request))).await
            }
            Command::Pki(command) => pki_command(command).map(|()| exit::SUCCESS),
            Command::Demo(args) => demo::run(args).await,
            Command::Runs(args) => runs(args),
            Command::Retry(args) => run::retry(args).await,
        }
    });
    match result {
        Ok(status) => ExitCode::from(status),
        Err(error) => {
            eprintln!("volley: {error}");
            let status = if error.is::<UsageError>() {
                exit::USAGE
            } else {
                exit::INTERNAL
            };
            ExitCode::from(status)
        }
    }
}

/// `volley runs` and `volley runs show`.
fn runs(args: RunsArgs) -> anyhow::Result<u8> {
    let env = Environment::from_process().map_err(|e| UsageError(e.to_string()))?;
    let dir = runs_dir(&env);
    let mut stdout = std::io::stdout().lock();
    let result = match &args.show {
        None => runs::list(&mut stdout, &dir, args.limit),
        Some(RunsCommand::Show(show)) => runs::show(&mut stdout, &dir, show),
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
            let issued = pki.init(&identity).map_err(|e| UsageError(e.to_string()))?;
            println!("CA: {}", pki.ca_certificate().display());
            println!(
                "controller certificate ({identity}): {}",
                issued.certificate.display()
            );
            println!("controller key: {}", issued.key.display());
        }
        PkiCommand::Issue {
            dir: pki_dir,
            names,
        } => {
            let pki = Pki::new(dir(pki_dir));
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
                let issued = pki
                    .issue_agent(&name, &addresses)
                    .map_err(|e| UsageError(e.to_string()))?;
                println!(
                    "{name}: {} {}",
                    issued.certificate.display(),
                    issued.key.display()
                );
            }
        }
    }
    Ok(())
}
