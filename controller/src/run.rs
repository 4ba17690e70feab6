//! `volley run`, `volley agent ...`, `volley push`, `volley fetch`, `volley retry` and `volley
//! runs resume`: one run from its flags to its exit status.
//!
//! The pipeline: flags -> [`RunPlan`] -> the scheduler through one [`Transport`] -> events through
//! the journal tap -> the reporters -> the summary. `main` dispatches here; this module owns the
//! order of those steps and what is printed around them.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use volley_common::inventory::TransportChoice;
use volley_common::outcome::{Outcome, OutcomeClass};

use crate::cli::{ColorChoice, ResumeArgs, RetryArgs, RunArgs};
use crate::journal::Journal;
use crate::journal::store::runs_dir;
use crate::pki::Pki;
use crate::plan::{self, Environment, RunPlan};
use crate::reader_watch::ReaderWatch;
use crate::report::{self, ReportOptions};
use crate::transport::Transport;
use crate::transport::agent::AgentTransport;
use crate::transport::auto::AutoTransport;
use crate::transport::resume::ResumeTransport;
use crate::transport::ssh::SshTransport;
use crate::transport::ssh::identity::Identities;
use crate::transport::ssh::known_hosts::KnownHosts;
use crate::{
    UsageError, exit, install, journal, limits, resume, runs, runs_error, scheduler, transfer,
};

/// What a run does on each host.
pub(crate) enum Operation {
    /// `volley run`: the command, through the agent or SSH.
    Command,
    /// `volley agent ...`: install, check, upgrade, renew or remove the agent over SSH.
    Agent(install::Request),
    /// `volley runs resume`: collect a recorded run's agent executions.
    Resume(Box<resume::Resume>),
    /// `volley push` or `volley fetch`: files to or from the hosts, through the agent or SSH.
    Transfer(transfer::Request),
}

/// Where a run's arguments came from: the command line, or a recorded run being retried.
pub(crate) struct Origin {
    operation: Operation,
    /// The subcommand's arguments as given, for the journal.
    arguments: Vec<String>,
    /// For a retry: the run retried, and the hosts to run on.
    retry: Option<RetryOf>,
}

/// What a retry adds to a run: the run it retries, its hosts, and the overrides on the way.
struct RetryOf {
    run: String,
    hosts: Vec<String>,
    overrides: Vec<Vec<String>>,
    /// The variables that gave the run settings, as its journal recorded them.
    variables: BTreeMap<String, String>,
    /// What the run's command read on its stdin, as its journal recorded it.
    stdin: Option<volley_common::journal::InputRecord>,
    /// The whole run's hosts, each with whether it succeeded, `None` for those this retry runs.
    standing: Vec<(String, Option<bool>)>,
}

impl Origin {
    pub(crate) fn command_line(operation: Operation) -> Origin {
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
pub(crate) fn subcommand(operation: &Operation) -> Vec<String> {
    match operation {
        Operation::Command | Operation::Resume(_) => Vec::new(),
        Operation::Agent(request) => vec!["agent".to_string(), request.action.name().to_string()],
        Operation::Transfer(request) => vec![request.name().to_string()],
    }
}

pub(crate) async fn run(args: RunArgs, origin: Origin) -> anyhow::Result<u8> {
    let Origin {
        operation,
        arguments,
        mut retry,
    } = origin;
    // A retry's `--out-dir` lists are of the whole run, as a resume's are.
    let retry_standing = retry
        .as_mut()
        .map(|retry| std::mem::take(&mut retry.standing))
        .filter(|standing| !standing.is_empty());
    let recorded_subcommand = subcommand(&operation);
    let usage = |error: &dyn std::fmt::Display| UsageError(error.to_string());
    let mut env = Environment::from_process().map_err(|e| usage(&e))?;
    let recorded = match (&retry, &operation) {
        (Some(retry), _) => Some((&retry.run, &retry.variables)),
        (None, Operation::Resume(resume)) => {
            Some((&resume.run.header.id, &resume.run.header.variables))
        }
        _ => None,
    };
    if let Some((run, variables)) = recorded {
        take_recorded_variables(&mut env, run, variables);
    }
    let mut plan = RunPlan::new(&args, &env).map_err(|e| usage(&e))?;
    // A push, a fetch or an agent operation always has a limit (`--timeout 0` included): the
    // plan, and so the journal, says which.
    plan.command_timeout = match &operation {
        Operation::Transfer(_) => plan.command_timeout.or(Some(transfer::DEFAULT_LIMIT)),
        Operation::Agent(_) => plan.command_timeout.or(Some(install::DEFAULT_LIMIT)),
        Operation::Command | Operation::Resume(_) => plan.command_timeout,
    };
    // Said once, when the operator gives the flags; not again by each retry or resume.
    if retry.is_none() && !matches!(operation, Operation::Resume(_)) {
        for warning in &plan.warnings {
            say!("volley: warning: {warning}");
        }
        // Said only where agents are in use: over SSH alone (no PKI), or for an agent
        // operation, the targets of a NAT's port forwards are nothing to warn of.
        let agents_in_use = !matches!(operation, Operation::Agent(_))
            && (plan.pki_given || Pki::new(plan.pki.clone()).has_any_credentials());
        for shared in plan.shared_agents.iter().filter(|_| agents_in_use) {
            say!(
                "volley: warning: {shared}: run over SSH, since targets dialled at different SSH ports or addresses share that agent and nothing tells which machine it is on"
            );
        }
        // Agent operations go over SSH, through the jump hosts; runs and transfers through
        // agents dial each agent directly.
        let direct: Vec<&str> = plan
            .hosts
            .iter()
            .filter(|host| host.transport == TransportChoice::Agent && !host.jump.is_empty())
            .map(|host| host.name.as_str())
            .collect();
        if !direct.is_empty() && !matches!(operation, Operation::Agent(_)) {
            say!(
                "volley: warning: {} {} jump hosts, which the agent transport does not use: \
                 their agents are dialled directly",
                volley_common::fold::fold(direct.iter().copied()),
                if direct.len() == 1 { "has" } else { "have" }
            );
        }
    }
    if let Some(retry) = &retry {
        runs::keep_only(&mut plan.hosts, &retry.run, &retry.hosts).map_err(|e| usage(&e))?;
        // `--list-hosts` sends nothing, whatever its stdin.
        if !plan.list_hosts {
            let from_stdin = args.stdin.as_deref() == Some(std::path::Path::new("-"));
            check_retried_input(
                &retry.run,
                retry.stdin.as_ref(),
                plan.stdin.as_deref(),
                from_stdin,
            )
            .map_err(|e| usage(&e))?;
        }
    }
    if let Operation::Resume(resume) = &operation {
        resume.narrow(&mut plan).map_err(|e| usage(&e))?;
    }
    if plan.list_hosts {
        let over_ssh = matches!(operation, Operation::Agent(_));
        let json = plan.output == plan::OutputMode::Json;
        let out = &mut std::io::stdout().lock();
        let (identities, explicit) = (&plan.identity_files, plan.identity_files_explicit);
        report::write_host_list(out, &plan.hosts, identities, explicit, json, over_ssh)?;
        return Ok(exit::SUCCESS);
    }
    if let Some(dir) = &plan.out_dir {
        crate::local_dir::prepare(dir).map_err(|error| {
            let reason = crate::local_dir::unusable(&error);
            UsageError(format!("--out-dir {}: {reason}", dir.display()))
        })?;
    }
    // A push also holds the file it reads for each host (`--out-dir`'s two files are more).
    let files = plan.out_dir.is_some() || matches!(operation, Operation::Transfer(_));
    let budget = limits::host_budget(files);
    if plan.parallel > budget && plan.hosts.len() > budget {
        let hosts = if budget == 1 { "host" } else { "hosts" };
        say!(
            "volley: running at most {budget} {hosts} at once instead of {}: the open-file limit allows no more (raise `ulimit -n`)",
            plan.parallel
        );
        plan.parallel = budget;
    }
    let known_hosts = Arc::new(KnownHosts::load(&plan.known_hosts).map_err(|e| usage(&e))?);
    let identities = Identities::load(&plan).await.map_err(|e| usage(&e))?;
    if let Some(problem) = &identities.agent_problem {
        say!("volley: warning: {problem}");
    }
    let ssh = SshTransport::new(
        known_hosts.clone(),
        plan.accept_new_host_keys,
        Arc::new(identities),
    );
    let mut resuming = None;
    let then = matches!(&operation, Operation::Transfer(request) if request.runs_then());
    let transport: Arc<dyn Transport> = match operation {
        Operation::Command => Arc::new(AutoTransport {
            agent: agent_transport(&plan)?,
            ssh,
        }),
        Operation::Agent(request) => {
            Arc::new(install::AgentOperation::new(request, &plan, ssh).map_err(|e| usage(&e))?)
        }
        Operation::Resume(resume) => {
            let agent = agent_transport(&plan)?.ok_or_else(|| {
                usage(&format!(
                    "run {}: its commands ran on agents, and there is no PKI at {} to reach them",
                    resume.run.header.id,
                    plan.pki.display()
                ))
            })?;
            let executions = resume.executions.clone();
            resuming = Some(resume);
            Arc::new(ResumeTransport { agent, executions })
        }
        Operation::Transfer(request) => {
            let stamp = journal::clock::now().compact;
            transfer::operation(request, ssh, agent_transport(&plan)?, &stamp)
                .map_err(|e| usage(&e))?
        }
    };

    let colors = colors(plan.color);
    let options = ReportOptions {
        mode: plan.output,
        colors,
        progress: std::io::stderr().is_terminal(),
        prefix: plan.prefix,
        out_dir: plan.out_dir.clone(),
        then,
        whole_run: retry_standing.or_else(|| {
            resuming.as_ref().map(|resume| {
                let standing = resume.standing().into_iter();
                let success = |outcome: Option<Outcome>| outcome.map(|o| o.is_success());
                standing
                    .map(|(host, outcome)| (host, success(outcome)))
                    .collect()
            })
        }),
        dialled: plan.hosts.iter().map(report::Dialled::of).collect(),
    };
    let hosts: Vec<String> = plan.hosts.iter().map(|host| host.name.clone()).collect();
    let batched = plan.rollout.is_batched();

    // A run that cannot be recorded could not be retried or audited: it does not start.
    let journal_dir = runs_dir(&env);
    let (retry_of, retry_overrides) = match retry {
        Some(retry) => (Some(retry.run), retry.overrides),
        None => (None, Vec::new()),
    };
    let mut header = journal::header(&args, &plan, arguments, retry_of, &env);
    header.subcommand = recorded_subcommand;
    header.retry_overrides = retry_overrides;
    let journal = match &resuming {
        // A resume appends to the run's own journal.
        Some(resume) => Journal::reopen(&resume.path, &resume.run, &resume.numbers())
            .map_err(|error| usage(&error))?,
        None => {
            let journal = Journal::create(&journal_dir, header).map_err(|error| {
                anyhow::anyhow!(
                    "cannot record the run in {}: {}",
                    journal_dir.display(),
                    plan::io_reason(&error)
                )
            })?;
            if let Err(error) = journal::store::prune(&journal_dir, &plan.journal, &journal.id) {
                say!(
                    "volley: warning: cannot prune old runs in {}: {}",
                    journal_dir.display(),
                    plan::io_reason(&error)
                );
            }
            journal
        }
    };
    let (run_id, journal_path) = (journal.id.clone(), journal.path.clone());
    plan.run_id = run_id.clone();
    let plan = Arc::new(plan);

    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signals(cancel.clone()));
    let readers = ReaderWatch::start(cancel.clone());
    let started = Instant::now();
    // Bounded: a slow terminal slows the reading of the connections instead of filling memory.
    // Events pass through the journal on their way to the reporters, so that a host is
    // journalled before it is reported.
    let (events, received) = mpsc::channel(1024);
    let (journalled, to_report) = mpsc::channel(1024);
    // The journal stops the rollout when it cannot record it.
    let journal_stop = CancellationToken::new();
    let journal = journal::tap(
        journal,
        received,
        journalled,
        journal_stop.clone(),
        cancel.clone(),
    );
    let reporter = tokio::spawn({
        let (hosts, cancel, gone) = (hosts.clone(), cancel.clone(), readers.gone());
        async move {
            let reports = report::report(hosts, options, to_report, gone).await;
            // Output that cannot be written (a closed pipe, a full disk) stops the run: the
            // remote commands are stopped rather than left to run unreported.
            if reports.is_err() {
                cancel.cancel();
            }
            reports
        }
    });
    let end = scheduler::run(
        plan,
        transport,
        events,
        cancel.clone(),
        journal_stop.clone(),
    )
    .await;
    let journal = journal.await?;
    let reports = reporter.await?;

    let reader_gone = readers.finish();
    let interrupted = cancel.is_cancelled();
    let status = match &reports {
        _ if reader_gone => exit::BROKEN_PIPE,
        Ok(reports) => exit::status(reports.iter().flatten(), interrupted),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => exit::BROKEN_PIPE,
        Err(_) => exit::INTERNAL,
    };
    // A resumed run's footer tells how the whole run now stands: interrupted while a host
    // remains that never finished.
    let (run_status, run_interrupted) = match (&resuming, &reports) {
        (Some(resume), Ok(reports)) if !reader_gone => {
            let settled = resume.settled();
            let collected = reports.iter().flatten().map(|report| &report.outcome);
            let outcomes: Vec<&Outcome> = settled.iter().chain(collected).collect();
            let unfinished = outcomes
                .iter()
                .any(|outcome| outcome.class() == OutcomeClass::Interrupted);
            (
                exit::status_of(outcomes, interrupted),
                interrupted || unfinished,
            )
        }
        _ => (status, interrupted),
    };
    let ending = journal::Ending {
        interrupted: run_interrupted,
        stopped: end.stopped,
        exit_status: run_status,
    };
    let write_error = journal.write_error().map(plan::io_reason);
    if let Err(error) = journal.finish(ending) {
        say!(
            "volley: warning: the record of this run in {} is incomplete: {}",
            journal_path.display(),
            plan::io_reason(&error)
        );
    }
    let reports = match reports {
        Ok(_) if reader_gone => return Ok(status),
        Ok(reports) => reports,
        // The reader went away (`| head -1`): the run was stopped and journalled, and there is
        // no one left to tell; volley ends quietly, as a tool killed by SIGPIPE would.
        Err(_) if status == exit::BROKEN_PIPE => return Ok(status),
        Err(error) => anyhow::bail!("cannot write the output: {error}"),
    };
    // A line at a time (stderr itself writes every piece of a line on its own).
    let mut stderr = std::io::LineWriter::new(std::io::stderr().lock());
    report::write_learned_host_keys(&mut stderr, &known_hosts.learned())?;
    report::write_summary(
        &mut stderr,
        &hosts,
        &reports,
        started.elapsed(),
        interrupted,
        colors.stderr,
    )?;
    let outcomes = || reports.iter().flatten().map(|report| &report.outcome);
    let skipped = outcomes()
        .filter(|outcome| **outcome == Outcome::Skipped)
        .count();
    report::write_rollout(&mut stderr, &end, batched, skipped)?;
    if let Some(reason) = write_error.filter(|_| end.stopped_by_journal) {
        report::write_journal_stop(&mut stderr, &reason, skipped)?;
    }
    // Hosts in doubt are for `volley runs resume`, not for a retry, which takes the hosts of the
    // whole run that did not succeed: those a resume settled before it too.
    let in_doubt = |outcome: &Outcome| matches!(outcome, Outcome::InDoubt { .. });
    let settled = resuming.map(|resume| resume.settled()).unwrap_or_default();
    let failed = (settled.iter().map(Some))
        .chain(
            reports
                .iter()
                .map(|report| report.as_ref().map(|r| &r.outcome)),
        )
        .filter(|outcome| !outcome.is_some_and(|o| o.is_success() || in_doubt(o)));
    report::write_recorded(&mut stderr, &run_id, failed)?;
    report::write_in_doubt(
        &mut stderr,
        &run_id,
        outcomes().filter(|o| in_doubt(o)).count(),
    )?;
    Ok(status)
}

/// `volley retry RUN`: the recorded run's arguments, on its hosts that did not succeed.
/// How long a retry of a killed run waits before it starts: the SSH wrapper's two seconds
/// between TERM and KILL, and one for the hosts to notice the connection gone.
const KILLED_RUN_STOP_WAIT: Duration = Duration::from_secs(3);

pub(crate) async fn retry(mut args: RetryArgs) -> anyhow::Result<u8> {
    let env = Environment::from_process().map_err(|e| UsageError(e.to_string()))?;
    // Recorded in the journal as text, and read back by a retry of this retry.
    let mut given: Vec<String> = std::env::args_os()
        .skip(2)
        .map(|arg| {
            arg.into_string().map_err(|arg| {
                UsageError(format!(
                    "volley retry: '{}' is not UTF-8 text, which the run's record needs",
                    arg.to_string_lossy()
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    // Paths given to the retry are meant from here, not from the run's directory.
    if let Ok(here) = std::env::current_dir() {
        runs::anchor_paths(&mut given, &here);
        let argv = ["volley", "retry"]
            .into_iter()
            .map(String::from)
            .chain(given.iter().cloned());
        match crate::cli::Cli::parse_args(argv).map(|cli| cli.command) {
            Ok(crate::cli::Command::Retry(anchored)) => args = *anchored,
            Ok(_) => anyhow::bail!("volley retry: its arguments parse as another subcommand"),
            Err(error) => return Err(UsageError(error.to_string()).into()),
        }
    }
    let mut retry = runs::retry(&runs_dir(&env), &args, given).map_err(runs_error)?;
    enter_run_dir(&retry.retry_of, retry.cwd.as_deref())?;
    if !retry.in_doubt.is_empty() {
        say!(
            "volley: leaving out {} host(s) whose command may still be running: {}; `volley runs resume {}` collects those that ran through an agent, `--only in_doubt` runs them again",
            retry.in_doubt.len(),
            volley_common::fold::fold(retry.in_doubt.iter().map(String::as_str)),
            retry.retry_of
        );
    }
    if retry.hosts.is_empty() {
        let which = match &args.only {
            Some(only) => format!("no host of run {} matches --only {only}", retry.retry_of),
            None if retry.in_doubt.is_empty() => format!(
                "every host of run {} succeeded ({} of {})",
                retry.retry_of, retry.of, retry.of
            ),
            None if retry.of == retry.in_doubt.len() => format!(
                "every host of run {} is left out ({})",
                retry.retry_of, retry.of
            ),
            None => format!(
                "every host of run {} but those left out succeeded ({} of {})",
                retry.retry_of,
                retry.of - retry.in_doubt.len(),
                retry.of
            ),
        };
        say!("volley: nothing to retry: {which}");
        return Ok(exit::SUCCESS);
    }
    // The original read its targets from its stdin (`--hosts-file -`), gone now: the retry
    // names the hosts it retries, which the journal has, instead.
    let dash = std::path::Path::new("-");
    let targets = &mut retry.args.targets;
    if targets.hosts_file.iter().any(|file| file == dash) {
        targets.hosts_file.retain(|file| file != dash);
        targets.targets.extend(retry.hosts.iter().cloned());
    }
    // The original's command read its stdin (`--stdin -`); the retry's reads volley's again.
    // From a terminal that would wait for typing: ask for the input instead.
    let reads_stdin = retry.args.stdin.as_deref() == Some(dash);
    if reads_stdin && std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "run {0} read its stdin (`-`); give the retry the same input: volley retry {0} < FILE",
            retry.retry_of
        ))
        .into());
    }
    if retry.killed_mid_command && !retry.args.output.list_hosts {
        // Over SSH, a host stops the command of a connection that went with TERM, then KILL
        // two seconds later: one that ignores TERM may run that long after its volley died.
        say!(
            "volley: run {} ended without its record's end (killed?): waiting {}s for the hosts to stop what it left running",
            retry.retry_of,
            KILLED_RUN_STOP_WAIT.as_secs()
        );
        tokio::time::sleep(KILLED_RUN_STOP_WAIT).await;
    }
    // The run stays held (the retry's lock on it) until the retry has ended.
    let held = retry.held;
    let origin = Origin {
        operation: match (retry.agent, retry.transfer) {
            (Some(request), _) => Operation::Agent(request),
            (None, Some(request)) => {
                Operation::Transfer(request.owing_then(retry.then_owed, &retry.retry_of))
            }
            (None, None) => Operation::Command,
        },
        arguments: retry.arguments,
        retry: Some(RetryOf {
            run: retry.retry_of,
            hosts: retry.hosts,
            overrides: retry.overrides,
            variables: retry.variables,
            stdin: retry.stdin,
            standing: retry.standing,
        }),
    };
    let status = run(retry.args, origin).await;
    drop(held);
    status
}

/// A retry's `--stdin` against what its run's command read. Empty input where the run had some,
/// read from volley's stdin (`volley retry R < /dev/null`, from cron), would have emptied the
/// file a `cat > FILE` writes on every host: refused. Other input than the run's is said, and
/// sent.
fn check_retried_input(
    run: &str,
    recorded: Option<&volley_common::journal::InputRecord>,
    given: Option<&[u8]>,
    from_stdin: bool,
) -> Result<(), String> {
    let (Some(recorded), Some(given)) = (recorded, given) else {
        return Ok(());
    };
    let sha256 = crate::upload::sha256_hex(given);
    if given.len() as u64 == recorded.bytes && sha256 == recorded.sha256 {
        return Ok(());
    }
    if given.is_empty() && from_stdin {
        return Err(format!(
            "run {run}'s command read {} bytes on its stdin, and the retry's stdin is empty: give it the same input (volley retry {run} < FILE)",
            recorded.bytes
        ));
    }
    let short = |sha256: &str| sha256.chars().take(12).collect::<String>();
    say!(
        "volley: the retry's --stdin ({} bytes, SHA-256 {}...) is not what run {run}'s command read ({} bytes, SHA-256 {}...): the hosts get the retry's",
        given.len(),
        short(&sha256),
        recorded.bytes,
        short(&recorded.sha256)
    );
    Ok(())
}

/// A retry or resume runs with the settings its run took from `VOLLEY_*` variables, as it runs
/// with its flags: a recorded variable not set here is taken; one set here to another value
/// applies instead, and is said.
fn take_recorded_variables(env: &mut Environment, run: &str, recorded: &BTreeMap<String, String>) {
    for (name, value) in recorded {
        match env.variables.iter().find(|(here, _)| here == name) {
            None => env.variables.push((name.clone(), value.clone())),
            Some((_, here)) if here != value => say!(
                "volley: {name} is '{here}' here and was '{value}' for run {run}: '{here}' applies"
            ),
            Some(_) => {}
        }
    }
}

/// Goes to the directory a recorded run ran in, so that the relative paths of its arguments (an
/// inventory, a hosts file, files to push) name the same files as they did for it, wherever
/// the retry or resume is started.
///
/// A run whose directory is gone is not taken up from another: its relative paths would name
/// other files there, silently.
fn enter_run_dir(run: &str, cwd: Option<&str>) -> Result<(), UsageError> {
    let Some(dir) = cwd else {
        return Ok(());
    };
    std::env::set_current_dir(dir).map_err(|error| {
        UsageError(format!(
            "run {run} ran in {dir}, which cannot be entered ({}): relative paths in its arguments are read from there; make it again to go on",
            plan::io_reason(&error)
        ))
    })
}

/// `volley runs resume RUN`: the run's agent executions that were not seen to end, collected.
pub(crate) async fn resume(args: ResumeArgs) -> anyhow::Result<u8> {
    let env = Environment::from_process().map_err(|e| UsageError(e.to_string()))?;
    let (args, resume) = resume::prepare(&runs_dir(&env), &args).map_err(runs_error)?;
    let id = resume.run.header.id.clone();
    enter_run_dir(&id, resume.run.header.cwd.as_deref())?;
    if !resume.not_collectable.is_empty() {
        say!(
            "volley: {} host(s) of run {id} have no outcome and nothing to collect (they never started, or ran over SSH, whose commands stop with volley): {}; `volley retry {id} --only not_finished` runs them",
            resume.not_collectable.len(),
            volley_common::fold::fold(resume.not_collectable.iter().map(String::as_str)),
        );
    }
    if resume.hosts.is_empty() {
        say!("volley: nothing to resume: run {id} has no command left to collect");
        return Ok(exit::SUCCESS);
    }
    let origin = Origin {
        operation: Operation::Resume(Box::new(resume)),
        arguments: Vec::new(),
        retry: None,
    };
    run(args, origin).await
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
    if !wanted {
        return Ok(None);
    }
    // The default PKI missing means no agents yet: SSH. One the operator named must be there (a
    // typo would quietly run the whole fleet over SSH).
    if !needed && !plan.pki_given && !pki.has_any_credentials() {
        return Ok(None);
    }
    if plan.pki_given && !plan.pki.exists() {
        return Err(UsageError(format!(
            "pki {}: no such directory (`volley pki init --pki DIR` makes one)",
            plan.pki.display()
        ))
        .into());
    }
    let credentials = pki
        .controller_credentials()
        .map_err(|e| UsageError(e.to_string()))?;
    if credentials.not_after < time::OffsetDateTime::now_utc() + crate::pki::RENEW_WITHIN {
        say!(
            "volley: warning: pki {}: controller.pem expires on {}, after which agents refuse it: `volley pki init` renews it",
            plan.pki.display(),
            crate::pki::date(credentials.not_after)
        );
    }
    let agent = AgentTransport::new(&credentials, plan.max_output as u64)
        .map_err(|e| UsageError(format!("pki {}: {e}", plan.pki.display())))?;
    Ok(Some(agent))
}

/// Whether to colour stdout and stderr: `auto` colours a stream only when it is a terminal and
/// NO_COLOR is not set to something (no-color.org: an empty NO_COLOR does not count).
fn colors(choice: ColorChoice) -> report::Colors {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let auto = |terminal: bool| terminal && !no_color;
    match choice {
        ColorChoice::Always => report::Colors {
            stdout: true,
            stderr: true,
        },
        ColorChoice::Never => report::Colors::default(),
        ColorChoice::Auto => report::Colors {
            stdout: auto(std::io::stdout().is_terminal()),
            stderr: auto(std::io::stderr().is_terminal()),
        },
    }
}

/// The first SIGINT, SIGTERM or SIGHUP stops the run: no new host starts and running commands are
/// stopped on their hosts. A second one exits at once.
async fn stop_on_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    // A hangup (the operator's terminal or SSH session went away) stops the run as Ctrl-C does,
    // so that every host's outcome is still recorded; unless volley was started to outlive its
    // terminal (`nohup` ignores SIGHUP), which listening for it would undo.
    let hangup = if ignored_at_start(rustix::process::Signal::HUP) {
        Ok(None)
    } else {
        signal(SignalKind::hangup()).map(Some)
    };
    let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        hangup,
    ) else {
        say!(
            "volley: warning: cannot listen for SIGINT/SIGTERM/SIGHUP; an interrupt will kill volley without a summary"
        );
        return;
    };
    let hung_up = async |hangup: &mut Option<tokio::signal::unix::Signal>| match hangup {
        Some(hangup) => hangup.recv().await,
        None => std::future::pending().await,
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        _ = hung_up(&mut hangup) => {}
    }
    say!("volley: interrupted: stopping the running commands (interrupt again to quit at once)");
    cancel.cancel();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        _ = hung_up(&mut hangup) => {}
    }
    std::process::exit(exit::INTERRUPTED.into());
}

/// Whether `signal` was ignored when volley started, as `nohup` ignores SIGHUP: read from
/// /proc/self/status (`SigIgn`) before volley listens for it, which would replace that.
fn ignored_at_start(signal: rustix::process::Signal) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let ignored = status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok());
    let bit = u32::try_from(signal.as_raw() - 1).ok();
    ignored
        .zip(bit)
        .is_some_and(|(mask, bit)| mask.checked_shr(bit).is_some_and(|m| m & 1 == 1))
}
