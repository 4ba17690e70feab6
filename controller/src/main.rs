//! `volley`: run one command on many servers at once and report one outcome per host.
//!
//! Layout, in the order a run flows through it:
//! - [`cli`]: raw flags (clap); [`plan`]: flags + inventory + ssh config -> a validated `RunPlan`;
//! - [`scheduler`]: every host through one [`transport::Transport`], `parallel` at a time;
//! - [`transport`]: the trait; SSH (with known_hosts and identities), the agent, and `auto`;
//! - [`pki`]: the private CA (`volley pki`); [`demo`]: a throwaway local fleet of agents;
//! - [`install`]: `volley agent install|status|upgrade|renew|uninstall`, one more transport;
//! - [`transfer`]: `volley push` and `volley fetch`, two more ([`upload`]: the atomic upload
//!   over SSH that install shares);
//! - [`report`]: the stream, JSON and gather renderers, progress and the summary;
//! - [`exit`]: the exit status as a function of the outcomes; [`limits`]: the file budget.
//! - [`rollout`]: batches and the failure budget; [`connect_retry`]: `--retries`;
//! - [`journal`]: the run journal, written as hosts finish; [`runs`]: `volley runs` and
//!   `volley retry`, which read it back.
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
mod runs;
mod scheduler;
mod shell;
mod ssh_config;
mod transfer;
mod transport;
mod upload;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use volley_common::outcome::Outcome;

use volley_common::inventory::TransportChoice;

use crate::cli::{
    Cli, ColorChoice, Command, PkiCommand, PkiDir, RetryArgs, RunArgs, RunsArgs, RunsCommand,
};
use crate::journal::Journal;
use crate::journal::store::runs_dir;
use crate::pki::Pki;
use crate::plan::{Environment, RunPlan};
use crate::report::ReportOptions;
use crate::transport::Transport;
use crate::transport::agent::AgentTransport;
use crate::transport::auto::AutoTransport;
use crate::transport::ssh::SshTransport;
use crate::transport::ssh::identity::Identities;
use crate::transport::ssh::known_hosts::KnownHosts;

/// An error of the operator's input: printed as one line, exit status 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

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
            Command::Run(args) => run(*args, Origin::command_line(Operation::Command)).await,
            Command::Agent(command) => {
                let (args, request) = install::plan_arguments(command);
                run(args, Origin::command_line(Operation::Agent(request))).await
            }
            Command::Push(args) => {
                let (args, request) = transfer::plan_push(*args);
                run(args, Origin::command_line(Operation::Transfer(request))).await
            }
            Command::Fetch(args) => {
                let (args, request) = transfer::plan_fetch(*args);
                run(args, Origin::command_line(Operation::Transfer(request))).await
            }
            Command::Pki(command) => pki_command(command).map(|()| exit::SUCCESS),
            Command::Demo(args) => demo::run(args).await,
            Command::Runs(args) => runs(args),
            Command::Retry(args) => retry(args).await,
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

/// What a run does on each host.
enum Operation {
    /// `volley run`: the command, through the agent or SSH.
    Command,
    /// `volley agent ...`: install, check, upgrade, renew or remove the agent over SSH.
    Agent(install::Request),
    /// `volley push` or `volley fetch`: files to or from the hosts, through the agent or SSH.
    Transfer(transfer::Request),
}

/// Where a run's arguments came from: the command line, or a recorded run being retried.
struct Origin {
    operation: Operation,
    /// The subcommand's arguments as given, for the journal.
    arguments: Vec<String>,
    /// For a retry: the run retried, and the hosts to run on.
    retry: Option<(String, Vec<String>)>,
}

impl Origin {
    fn command_line(operation: Operation) -> Origin {
        // `volley run ARGS` or `volley agent ACTION ARGS`: everything after the subcommand.
        let skip = 1 + subcommand(&operation).len().max(1);
        Origin {
            operation,
            arguments: std::env::args_os()
                .skip(skip)
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect(),
            retry: None,
        }
    }
}

/// The subcommand a journal records when it is not `volley run`, so that `volley retry` runs
/// the same operation again.
fn subcommand(operation: &Operation) -> Vec<String> {
    match operation {
        Operation::Command => Vec::new(),
        Operation::Agent(request) => vec!["agent".to_string(), request.action.name().to_string()],
        Operation::Transfer(request) => vec![request.name().to_string()],
    }
}

async fn run(args: RunArgs, origin: Origin) -> anyhow::Result<u8> {
    let Origin {
        operation,
        arguments,
        retry,
    } = origin;
    let recorded_subcommand = subcommand(&operation);
    let usage = |error: &dyn std::fmt::Display| UsageError(error.to_string());
    let env = Environment::from_process().map_err(|e| usage(&e))?;
    let mut plan = RunPlan::new(&args, &env).map_err(|e| usage(&e))?;
    if let Some((retry_of, hosts)) = &retry {
        runs::keep_only(&mut plan.hosts, retry_of, hosts).map_err(|e| usage(&e))?;
    }
    let budget = limits::host_budget();
    if plan.parallel > budget && plan.hosts.len() > budget {
        eprintln!(
            "volley: running at most {budget} hosts at once instead of {}: the open-file limit allows no more (raise `ulimit -n`)",
            plan.parallel
        );
        plan.parallel = budget;
    }
    let known_hosts = Arc::new(KnownHosts::load(&plan.known_hosts).map_err(|e| usage(&e))?);
    let identities = Identities::load(&plan).await.map_err(|e| usage(&e))?;
    let ssh = SshTransport::new(
        known_hosts.clone(),
        plan.accept_new_host_keys,
        Arc::new(identities),
    );
    let transport: Arc<dyn Transport> = match operation {
        Operation::Command => Arc::new(AutoTransport {
            agent: agent_transport(&plan)?,
            ssh,
        }),
        Operation::Agent(request) => {
            Arc::new(install::AgentOperation::new(request, &plan, ssh).map_err(|e| usage(&e))?)
        }
        Operation::Transfer(request) => {
            let stamp = journal::clock::now().compact;
            transfer::operation(request, ssh, agent_transport(&plan)?, &stamp)
                .map_err(|e| usage(&e))?
        }
    };

    let color = match plan.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let options = ReportOptions {
        mode: plan.output,
        color,
        progress: std::io::stderr().is_terminal(),
    };
    let hosts: Vec<String> = plan.hosts.iter().map(|host| host.name.clone()).collect();
    let batched = plan.rollout.is_batched();

    // A run that cannot be recorded could not be retried or audited: it does not start.
    let journal_dir = runs_dir(&env);
    let mut header = journal::header(
        &args,
        &plan,
        arguments,
        retry.map(|(retry_of, _)| retry_of),
        &env.local_user,
    );
    header.subcommand = recorded_subcommand;
    let journal = Journal::create(&journal_dir, header).map_err(|error| {
        anyhow::anyhow!(
            "cannot record the run in {}: {}",
            journal_dir.display(),
            plan::io_reason(&error)
        )
    })?;
    if let Err(error) = journal::store::prune(&journal_dir, &plan.journal, &journal.id) {
        eprintln!(
            "volley: warning: cannot prune old runs in {}: {}",
            journal_dir.display(),
            plan::io_reason(&error)
        );
    }
    let (run_id, journal_path) = (journal.id.clone(), journal.path.clone());
    let plan = Arc::new(plan);

    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signals(cancel.clone()));
    let started = Instant::now();
    // Bounded: a slow terminal slows the reading of the connections instead of filling memory.
    // Events pass through the journal on their way to the reporters, so that a host is
    // journalled before it is reported.
    let (events, received) = mpsc::channel(1024);
    let (journalled, to_report) = mpsc::channel(1024);
    let journal = journal::tap(journal, received, journalled);
    let reporter = tokio::spawn({
        let (hosts, cancel) = (hosts.clone(), cancel.clone());
        async move {
            let reports = report::report(hosts, options, to_report).await;
            // Output that cannot be written (a closed pipe, a full disk) stops the run: the
            // remote commands are stopped rather than left to run unreported.
            if reports.is_err() {
                cancel.cancel();
            }
            reports
        }
    });
    let end = scheduler::run(plan, transport, events, cancel.clone()).await;
    let journal = journal.await?;
    let reports = reporter.await?;

    let interrupted = cancel.is_cancelled();
    let status = match &reports {
        Ok(reports) => exit::status(reports.iter().flatten(), interrupted),
        Err(_) => exit::INTERNAL,
    };
    let ending = journal::Ending {
        interrupted,
        stopped: end.stopped,
        exit_status: status,
    };
    if let Err(error) = journal.finish(ending) {
        eprintln!(
            "volley: warning: the record of this run in {} is incomplete: {}",
            journal_path.display(),
            plan::io_reason(&error)
        );
    }
    let reports = reports.map_err(|error| anyhow::anyhow!("cannot write the output: {error}"))?;
    let mut stderr = std::io::stderr().lock();
    report::write_learned_host_keys(&mut stderr, &known_hosts.learned())?;
    report::write_summary(
        &mut stderr,
        &hosts,
        &reports,
        started.elapsed(),
        interrupted,
        color,
    )?;
    let outcomes = || reports.iter().flatten().map(|report| &report.outcome);
    let skipped = outcomes()
        .filter(|outcome| **outcome == Outcome::Skipped)
        .count();
    report::write_rollout(&mut stderr, &end, batched, skipped)?;
    let not_succeeded = hosts.len() - outcomes().filter(|o| o.is_success()).count();
    report::write_recorded(&mut stderr, &run_id, not_succeeded)?;
    Ok(status)
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

/// `volley retry RUN`: the recorded run's arguments, on its hosts that did not succeed.
async fn retry(args: RetryArgs) -> anyhow::Result<u8> {
    let env = Environment::from_process().map_err(|e| UsageError(e.to_string()))?;
    let retry = runs::retry(&runs_dir(&env), &args).map_err(runs_error)?;
    if retry.hosts.is_empty() {
        let which = match &args.only {
            Some(only) => format!("no host of run {} matches --only {only}", retry.retry_of),
            None => format!(
                "every host of run {} succeeded ({} of {})",
                retry.retry_of, retry.of, retry.of
            ),
        };
        eprintln!("volley: nothing to retry: {which}");
        return Ok(exit::SUCCESS);
    }
    let origin = Origin {
        operation: match (retry.agent, retry.transfer) {
            (Some(request), _) => Operation::Agent(request),
            (None, Some(request)) => {
                Operation::Transfer(request.owing_then(retry.then_owed, &retry.retry_of))
            }
            (None, None) => Operation::Command,
        },
        arguments: retry.arguments,
        retry: Some((retry.retry_of, retry.hosts)),
    };
    run(retry.args, origin).await
}

/// Errors about the operator's input (a run id, `--only`) exit 64; reading failures exit 70.
fn runs_error(error: runs::RunsError) -> anyhow::Error {
    use crate::journal::store::StoreError;
    match error {
        runs::RunsError::Io(error) => anyhow::Error::new(error),
        runs::RunsError::Store(StoreError::Unreadable { .. }) => anyhow::Error::new(error),
        error => UsageError(error.to_string()).into(),
    }
}

/// The agent transport, when some host may use it and the PKI exists. A host that must use its
/// agent without a PKI is an input error; `auto` hosts then simply go over SSH.
fn agent_transport(plan: &RunPlan) -> anyhow::Result<Option<AgentTransport>> {
    let needed = plan
        .hosts
        .iter()
        .any(|host| host.transport == TransportChoice::Agent);
    let wanted = needed
        || plan
            .hosts
            .iter()
            .any(|host| host.transport == TransportChoice::Auto);
    let pki = Pki::new(plan.pki.clone());
    if !wanted || (!needed && !pki.has_controller_credentials()) {
        return Ok(None);
    }
    let credentials = pki
        .controller_credentials()
        .map_err(|e| UsageError(e.to_string()))?;
    let run_id = format!("{}-{}", std::process::id(), started_at());
    let agent = AgentTransport::new(&credentials, run_id)
        .map_err(|e| UsageError(format!("pki {}: {e}", plan.pki.display())))?;
    Ok(Some(agent))
}

fn started_at() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
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

/// The first SIGINT or SIGTERM stops the run: no new host starts and running commands are
/// stopped on their hosts. A second one exits at once.
async fn stop_on_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!(
            "cannot listen for SIGINT/SIGTERM; an interrupt will kill volley without a summary"
        );
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!(
        "volley: interrupted: stopping the running commands (interrupt again to quit at once)"
    );
    cancel.cancel();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    std::process::exit(exit::INTERRUPTED.into());
}
