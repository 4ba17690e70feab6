//! `volley`: run one command on many servers at once and report one outcome per host.
//!
//! Layout, in the order a run flows through it:
//! - [`cli`]: raw flags (clap); [`plan`]: flags + inventory + ssh config -> a validated `RunPlan`;
//! - [`scheduler`]: every host through one [`transport::Transport`], `parallel` at a time;
//! - [`transport`]: the trait and the SSH implementation, with known_hosts and identities;
//! - [`report`]: the stream, JSON and gather renderers, progress and the summary;
//! - [`exit`]: the exit status as a function of the outcomes; [`limits`]: the file budget.
//! - [`rollout`]: batches and the failure budget; [`connect_retry`]: `--retries`.
//!
//! `main` is the only place that maps errors to exit statuses and prints them.
#![forbid(unsafe_code)]

mod cli;
mod connect_retry;
mod entropy;
mod exit;
mod limits;
mod plan;
mod report;
mod rollout;
mod scheduler;
mod ssh_config;
mod transport;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use volley_common::outcome::Outcome;

use crate::cli::{Cli, ColorChoice, Command, RunArgs};
use crate::plan::{Environment, RunPlan};
use crate::report::ReportOptions;
use crate::transport::identity::Identities;
use crate::transport::known_hosts::KnownHosts;
use crate::transport::ssh::SshTransport;

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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
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

async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let usage = |error: &dyn std::fmt::Display| UsageError(error.to_string());
    let env = Environment::from_process().map_err(|e| usage(&e))?;
    let mut plan = RunPlan::new(&args, &env).map_err(|e| usage(&e))?;
    let budget = limits::host_budget();
    if plan.parallel > budget && plan.hosts.len() > budget {
        eprintln!(
            "volley: running at most {budget} hosts at once instead of {}: the open-file limit allows no more (raise `ulimit -n`)",
            plan.parallel
        );
        plan.parallel = budget;
    }
    let known_hosts = KnownHosts::load(&plan.known_hosts).map_err(|e| usage(&e))?;
    let identities = Identities::load(&plan).await.map_err(|e| usage(&e))?;
    let transport = Arc::new(SshTransport::new(
        Arc::new(known_hosts),
        plan.accept_new_host_keys,
        Arc::new(identities),
    ));

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
    let plan = Arc::new(plan);

    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signals(cancel.clone()));
    let started = Instant::now();
    // Bounded: a slow terminal slows the reading of the connections instead of filling memory.
    let (events, received) = mpsc::channel(1024);
    let reporter = tokio::spawn(report::report(hosts.clone(), options, received));
    let end = scheduler::run(plan, transport, events, cancel.clone()).await;
    let reports = reporter.await??;

    let interrupted = cancel.is_cancelled();
    let mut stderr = std::io::stderr().lock();
    report::write_summary(
        &mut stderr,
        &hosts,
        &reports,
        started.elapsed(),
        interrupted,
        color,
    )?;
    let skipped = reports
        .iter()
        .flatten()
        .filter(|report| report.outcome == Outcome::Skipped)
        .count();
    report::write_rollout(&mut stderr, &end, batched, skipped)?;
    Ok(exit::status(reports.iter().flatten(), interrupted))
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
