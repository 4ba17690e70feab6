//! `volley runs resume RUN`: collect the outcomes of a run's commands that were sent to agents
//! and not seen to end (volley was killed, or lost its connections and gave them up as
//! `in_doubt`), without running anything again.
//!
//! The journal names every execution before its command was sent ([`StartedEntry`]), so the
//! hosts to collect are those with an execution and no outcome, or an `in_doubt` one. The run's
//! recorded arguments are parsed again (for the hosts' addresses, the PKI and the output mode),
//! the hosts are narrowed to those, and the run goes through the usual pipeline with the
//! [`ResumeTransport`], which only attaches: a running command is followed to its end, a
//! finished one replayed from what its agent kept. The outcomes are appended to the run's own
//! journal (the last record of a host is its outcome), so that `volley runs show` and `volley
//! retry` see the run as it really ended.
//!
//! [`StartedEntry`]: volley_common::journal::StartedEntry
//! [`ResumeTransport`]: crate::transport::resume::ResumeTransport

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use volley_common::journal::Run;
use volley_common::outcome::Outcome;

use crate::cli::{ResumeArgs, RunArgs};
use crate::journal::store;
use crate::plan::{OutputMode, RunPlan};
use crate::rollout::RolloutPlan;
use crate::runs::{RunsError, recorded_arguments};

/// A recorded run, ready to be resumed.
#[derive(Debug)]
pub struct Resume {
    pub run: Run,
    pub path: PathBuf,
    /// The hosts to collect, in the run's order, with their numbers in the run.
    pub hosts: Vec<(usize, String)>,
    /// Host name to the execution its command was sent as, for the hosts to collect.
    pub executions: HashMap<String, String>,
    /// Hosts without an outcome that have nothing to collect: they never started, or they ran
    /// over SSH (whose commands stop when volley does).
    pub not_collectable: Vec<String>,
    /// `--json` or `--gather` given to the resume, instead of the run's own output mode.
    output: Option<OutputMode>,
}

/// Reads the run and picks the hosts to collect; returns them with the run's `volley run`
/// arguments, parsed again.
pub fn prepare(dir: &Path, args: &ResumeArgs) -> Result<(RunArgs, Resume), RunsError> {
    let file = store::find(dir, &args.run)?;
    // Before the record is read (a run that ends in between would be read unfinished), and
    // before anything is said of its hosts.
    if store::in_use(&file.path) {
        return Err(RunsError::Running(file.id.clone()));
    }
    let run = store::load(&file)?;
    let mut hosts = Vec::new();
    let mut executions = HashMap::new();
    let mut not_collectable = Vec::new();
    for (number, host) in run.header.hosts.iter().enumerate() {
        if run.may_be_running(number) {
            let id = run.executions[number].clone().unwrap_or_default();
            executions.insert(host.clone(), id);
            hosts.push((number, host.clone()));
        } else if run.hosts[number].is_none() {
            not_collectable.push(host.clone());
        }
    }
    let args_of_run = recorded_arguments(&run)?.args;
    let output = if args.json {
        Some(OutputMode::Json)
    } else if args.gather {
        Some(OutputMode::Gather)
    } else {
        None
    };
    let resume = Resume {
        run,
        path: file.path,
        hosts,
        executions,
        not_collectable,
        output,
    };
    Ok((args_of_run, resume))
}

impl Resume {
    /// The plan of the run, narrowed to the hosts to collect: no batches, no failure budget and
    /// no connect retries (every command already runs), and the run's own id.
    pub fn narrow(&self, plan: &mut RunPlan) -> Result<(), RunsError> {
        let names: Vec<String> = self.hosts.iter().map(|(_, host)| host.clone()).collect();
        crate::runs::keep_only(&mut plan.hosts, &self.run.header.id, &names)?;
        plan.rollout = RolloutPlan::default();
        plan.run_id = self.run.header.id.clone();
        if let Some(output) = self.output {
            plan.output = output;
        }
        Ok(())
    }

    /// The numbers in the run of the hosts being collected.
    pub fn numbers(&self) -> Vec<usize> {
        self.hosts.iter().map(|(number, _)| *number).collect()
    }

    /// The run's hosts in its order, each with its outcome as it stands, or `None` for a host
    /// being collected. A host with no outcome and nothing to collect never finished: it
    /// counts as interrupted, as it would have in a volley stopped by SIGINT.
    pub fn standing(&self) -> Vec<(String, Option<Outcome>)> {
        let collecting: HashSet<usize> = self.numbers().into_iter().collect();
        let hosts = self.run.header.hosts.iter().zip(&self.run.hosts);
        hosts
            .enumerate()
            .map(|(number, (host, entry))| {
                let outcome = (!collecting.contains(&number)).then(|| {
                    entry
                        .as_ref()
                        .map_or(Outcome::Cancelled, |entry| entry.outcome.clone())
                });
                (host.clone(), outcome)
            })
            .collect()
    }

    /// The outcomes of the run's other hosts, as they stand: with the collected ones, they make
    /// the run's exit status.
    pub fn settled(&self) -> Vec<Outcome> {
        let standing = self.standing().into_iter();
        standing.filter_map(|(_, outcome)| outcome).collect()
    }
}
