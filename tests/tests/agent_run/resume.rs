//! Executions that outlive the controller: `volley runs resume` after `kill -9` of volley, after
//! the controller's network to the agents was cut (for real, in a network namespace) and
//! restored, and with an agent that restarted and no longer knows the execution. Every command
//! runs exactly once, which each agent's audit log shows.

use std::time::Duration;

use volley_tests::process::ProcessOutput;
use volley_tests::remote::{SweepOnDrop, unique_sleep, wait_until_running};
use volley_tests::volley::RUN_DEADLINE;
use volley_tests::{AgentFleet, AgentFleetSpec, Partition, RunningProcess};

use crate::{EXIT_IN_DOUBT, EXIT_SUCCESS, expect_outcome, reported_hosts};

/// The failure budget, or the journal, stopped the rollout: some hosts were skipped.
const EXIT_ROLLOUT_STOPPED: i32 = 3;

/// How long a started command gets to show up on the hosts.
const RUNNING_WITHIN: Duration = Duration::from_secs(60);

/// A command that says it started, sleeps, then says it is done.
fn counted(sleep: &str) -> String {
    format!("echo started; {sleep}; echo done")
}

/// How many commands each host's agent started, by its audit log (which a restarted agent
/// appends to).
fn runs_per_host(fleet: &AgentFleet) -> Vec<(String, usize)> {
    fleet
        .hosts()
        .iter()
        .map(|host| {
            let log = fleet.agent(&host.name).log();
            (host.name.clone(), log.matches("exec started").count())
        })
        .collect()
}

fn assert_each_ran_once(fleet: &AgentFleet) {
    let runs = runs_per_host(fleet);
    assert!(
        runs.iter().all(|(_, count)| *count == 1),
        "every command must run exactly once: {runs:?}"
    );
}

/// `volley run` of [`counted`] through every agent of `fleet`, with `extra` flags, once the
/// command runs on all of them.
fn run_until_running(fleet: &AgentFleet, sleep: &str, extra: &[&str]) -> RunningProcess {
    let mut args = vec!["-g", "all", "--transport", "agent", "--json"];
    args.extend(extra);
    let command = counted(sleep);
    args.extend(["--", command.as_str()]);
    let mut run = fleet.spawn(fleet.run_args(args));
    let hosts = fleet.hosts().len();
    let running = wait_until_running(sleep, hosts, RUNNING_WITHIN, || run.has_exited());
    assert_eq!(
        running.len(),
        hosts,
        "the command did not start on all {hosts} agents"
    );
    run
}

fn volley(fleet: &AgentFleet, args: &[&str]) -> ProcessOutput {
    RunningProcess::spawn(fleet.volley().args(args)).finish(RUN_DEADLINE)
}

/// Every host succeeded and printed all its output, replayed from what its agent kept.
fn assert_all_collected(fleet: &AgentFleet, output: &ProcessOutput) {
    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    assert_eq!(records.len(), fleet.hosts().len(), "{}", output.describe());
    for host in fleet.hosts() {
        let record = expect_outcome(output, &records, &host.name, "succeeded", "agent");
        assert_eq!(record.stdout, "started\ndone\n", "{record:?}");
        // The command's own run time, as its agent measured it, not the time since the resume:
        // every command here sleeps 5 seconds and more.
        assert!(
            record.run_ms.is_some_and(|ms| ms >= 5000.0),
            "run_ms: {record:?}"
        );
        assert!(
            record.run_ms.is_some_and(|ms| record.total_ms >= ms),
            "total_ms under run_ms: {record:?}"
        );
    }
}

#[test]
fn resume_after_kill_9_collects_every_host_and_runs_nothing_twice() {
    let fleet = AgentFleet::start(20);
    let sleep = unique_sleep("5.");
    let _sweep = SweepOnDrop(sleep.clone());
    let mut run = run_until_running(&fleet, &sleep, &[]);
    let killed = run.kill_hard();
    assert_eq!(killed.stdout, "", "nothing finished before the kill");

    let shown = volley(&fleet, &["runs", "show", "last"]);
    shown.assert_code(EXIT_SUCCESS);
    assert_eq!(
        shown.stdout.matches("was sent to its agent as").count(),
        20,
        "{}",
        shown.describe()
    );

    // Still running on the agents: followed to their end.
    let resumed = volley(&fleet, &["runs", "resume", "last", "--json"]);
    assert_all_collected(&fleet, &resumed);
    assert_each_ran_once(&fleet);

    // The run's own journal now tells how it ended; there is nothing left to resume or retry.
    let shown = volley(&fleet, &["runs", "show", "last", "--failed"]);
    assert_eq!(shown.stdout, "", "{}", shown.describe());
    let again = volley(&fleet, &["runs", "resume", "last"]);
    again.assert_code(EXIT_SUCCESS);
    assert!(
        again.stderr.contains("nothing to resume"),
        "{}",
        again.describe()
    );
    let retried = volley(&fleet, &["retry", "last"]);
    retried.assert_code(EXIT_SUCCESS);
    assert!(
        retried.stderr.contains("nothing to retry"),
        "{}",
        retried.describe()
    );
    assert_each_ran_once(&fleet);
}

/// A host that never started has nothing to collect: the resume says so, and the run, whose
/// other hosts all succeeded, stands interrupted in its journal. What the resume leaves in
/// `--out-dir`, and the retry it offers, are of the whole run.
#[test]
fn a_resumed_run_with_a_host_that_never_started_stands_interrupted() {
    let fleet = AgentFleet::start(3);
    let sleep = unique_sleep("3.");
    let _sweep = SweepOnDrop(sleep.clone());
    let command = counted(&sleep);
    let out = fleet.dir().join("out");
    let args = [
        "-g",
        "all",
        "--transport",
        "agent",
        "-p",
        "2",
        "--json",
        "--out-dir",
        out.to_str().unwrap(),
        "--",
    ];
    let mut run = fleet.spawn(fleet.run_args(args.into_iter().chain([command.as_str()])));
    let running = wait_until_running(&sleep, 2, RUNNING_WITHIN, || run.has_exited());
    assert_eq!(running.len(), 2, "the command did not start on 2 agents");
    run.kill_hard();

    let resumed = volley(&fleet, &["runs", "resume", "last", "--json"]);
    resumed.assert_code(EXIT_SUCCESS);
    assert_eq!(resumed.records_by_host().len(), 2, "{}", resumed.describe());
    assert!(
        resumed.stderr.contains("1 host(s) of run")
            && resumed.stderr.contains("--only not_finished"),
        "{}",
        resumed.describe()
    );
    let shown = volley(&fleet, &["runs", "show", "last"]);
    assert!(
        shown.stdout.contains(", exit status 130, interrupted"),
        "{}",
        shown.describe()
    );
    // Every host of the run is in one list, in the run's order: the one that never started in
    // `failed`, though the resume did not collect it.
    let list = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let (succeeded, failed) = (list("succeeded"), list("failed"));
    let names: Vec<&str> = fleet.hosts().iter().map(|h| h.name.as_str()).collect();
    let expected: Vec<&str> = names
        .iter()
        .copied()
        .filter(|h| *h != failed.trim())
        .collect();
    assert_eq!(succeeded, format!("{}\n", expected.join("\n")), "{failed}");
    assert!(
        resumed
            .stderr
            .contains(&format!("nothing to collect (they never started, or ran over SSH, whose commands stop with volley): {}; ", failed.trim())),
        "{failed}: {}",
        resumed.describe()
    );
    assert!(
        resumed
            .stderr
            .contains("runs it again on the 1 host that did not succeed"),
        "{}",
        resumed.describe()
    );
}

#[test]
fn resume_after_the_network_was_cut_collects_what_ran_while_cut() {
    // Declared first, dropped last: the agents inside go before their namespace.
    let partition = Partition::create(20);
    let fleet = AgentFleet::with_spec(AgentFleetSpec::new(20).in_namespace(&partition));
    let sleep = unique_sleep("5.");
    let _sweep = SweepOnDrop(sleep.clone());
    let mut run = run_until_running(&fleet, &sleep, &["--connect-timeout", "2s"]);
    partition.cut();
    // volley notices the silence (HTTP/2 keepalive), cannot attach again, and gives the hosts
    // up as in doubt; meanwhile the commands end on the agents, which keep their outcomes.
    let cut_off = run.finish(RUN_DEADLINE);
    cut_off.assert_code(EXIT_IN_DOUBT);
    let records = cut_off.records_by_host();
    for host in fleet.hosts() {
        let record = expect_outcome(&cut_off, &records, &host.name, "in_doubt", "agent");
        assert_eq!(record.stdout, "started\n", "{record:?}");
    }
    assert!(
        cut_off.stderr.contains("20 hosts in doubt")
            && cut_off.stderr.contains("volley runs resume"),
        "the summary says how to collect them: {}",
        cut_off.describe()
    );

    partition.restore();
    let resumed = volley(&fleet, &["runs", "resume", "last", "--json"]);
    assert_all_collected(&fleet, &resumed);
    assert_each_ran_once(&fleet);
}

#[test]
fn a_host_whose_agent_forgot_the_execution_is_in_doubt_and_retried_only_by_name() {
    let mut fleet = AgentFleet::start(2);
    let sleep = unique_sleep("3.");
    // The restarted agent orphans its command; nobody else stops it.
    let _sweep = SweepOnDrop(sleep.clone());
    let mut run = run_until_running(&fleet, &sleep, &[]);
    run.kill_hard();
    let forgetful = fleet.hosts()[0].name.clone();
    let other = fleet.hosts()[1].name.clone();
    fleet.restart(&forgetful);

    let resumed = volley(&fleet, &["runs", "resume", "last", "--json"]);
    resumed.assert_code(EXIT_IN_DOUBT);
    let records = resumed.records_by_host();
    let record = expect_outcome(&resumed, &records, &forgetful, "in_doubt", "agent");
    let reason = record.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("does not know execution"), "{record:?}");
    expect_outcome(&resumed, &records, &other, "succeeded", "agent");

    // A retry leaves the host in doubt alone, unless asked for it by name.
    let retried = volley(&fleet, &["retry", "last"]);
    retried.assert_code(EXIT_SUCCESS);
    assert!(
        retried.stderr.contains("leaving out 1 host(s)")
            && retried
                .stderr
                .contains("nothing to retry: every host of run")
            && retried
                .stderr
                .contains("but those left out succeeded (1 of 2)"),
        "{}",
        retried.describe()
    );
    assert_each_ran_once(&fleet);
    let by_name = volley(&fleet, &["retry", "last", "--only", "in_doubt"]);
    by_name.assert_code(EXIT_SUCCESS);
    assert_eq!(
        reported_hosts(&by_name.records_by_host()),
        [forgetful.as_str()]
    );
    let runs = runs_per_host(&fleet);
    assert_eq!((runs[0].1, runs[1].1), (2, 1), "{runs:?}");
}

/// A run whose journal can no longer be written (the disk is full; here a file size limit of 4
/// KiB, which the records of the first ten hosts or so pass) stops its rollout: a command whose
/// `started` record is not on disk is never sent, since a retry could not know it ran. The hosts
/// that ran are reported; the others are skipped, and the run says why.
#[test]
fn a_run_its_journal_cannot_record_stops_and_sends_nothing_unrecorded() {
    let fleet = AgentFleet::start(16);
    let args = fleet.run_args([
        "-g",
        "all",
        "--transport",
        "agent",
        "-p",
        "1",
        "--json",
        "--",
        "true",
    ]);
    // sh's ulimit -f counts 512-byte blocks. A write past the limit raises SIGXFSZ, which
    // volley catches: the write fails with EFBIG, as a full disk's fails with ENOSPC.
    let volley = fleet.volley();
    let mut limited = std::process::Command::new("/bin/sh");
    limited
        .arg("-c")
        .arg("ulimit -f 8 && exec \"$0\" \"$@\"")
        .arg(volley.get_program())
        .args(&args);
    for (name, value) in volley.get_envs() {
        match value {
            Some(value) => limited.env(name, value),
            None => limited.env_remove(name),
        };
    }
    let output = RunningProcess::spawn(&mut limited).finish(RUN_DEADLINE);
    output.assert_code(EXIT_ROLLOUT_STOPPED);
    let records = output.records_by_host();
    let ran: Vec<String> = runs_per_host(&fleet)
        .into_iter()
        .filter(|(_, count)| {
            assert!(*count <= 1, "a command ran twice");
            *count == 1
        })
        .map(|(host, _)| host)
        .collect();
    let succeeded: Vec<String> = records
        .values()
        .filter(|record| record.outcome == "succeeded")
        .map(|record| record.host.clone())
        .collect();
    assert_eq!(ran, succeeded, "{}", output.describe());
    let skipped = records
        .values()
        .filter(|record| record.outcome == "skipped")
        .count();
    assert!(
        !ran.is_empty() && skipped > 0 && ran.len() + skipped == fleet.hosts().len(),
        "{}",
        output.describe()
    );
    // Every command that ran is in the journal: a retry or a resume knows of it.
    let runs = fleet.client_home().join(".local/state/volley/runs");
    let journal = std::fs::read_dir(&runs)
        .expect("the runs directory")
        .map(|entry| entry.expect("an entry").path())
        .find(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .expect("the run's journal");
    let text = std::fs::read_to_string(&journal).expect("the journal");
    for host in &ran {
        assert!(
            text.contains(&format!("{{\"type\":\"started\",\"host\":\"{host}\"")),
            "{host} ran unrecorded:\n{text}"
        );
    }
    assert!(
        output.stderr.contains(&format!(
            "volley: rollout stopped: the run's journal could not be written (File too large \
             (os error 27)); {skipped} hosts skipped\n"
        )),
        "{}",
        output.describe()
    );
}
