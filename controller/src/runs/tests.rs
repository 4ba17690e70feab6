//! `volley runs`, `runs show` and `retry` against journals written here: exact text, and which
//! hosts a retry takes.

use std::path::{Path, PathBuf};

use volley_common::journal::{
    BatchEntry, Entry, FORMAT, Footer, Header, HostEntry, Options, StartedEntry, Targets,
    count_kinds,
};
use volley_common::outcome::{Fallback, FallbackReason, Outcome, TransportKind};

use super::*;
use crate::cli::{Cli, Command, RetryArgs, RetryOverrides, ShowArgs};

const ROLLOUT: &str = "20261127T065812Z-3f9a";
const KILLED: &str = "20261127T070000Z-0b1c";

fn header(id: &str, started: &str, hosts: &[&str], batches: Vec<usize>) -> Header {
    Header {
        format: FORMAT,
        id: id.to_string(),
        started: started.to_string(),
        user: "ops".to_string(),
        command: "systemctl restart app".to_string(),
        targets: Targets {
            groups: vec!["web".to_string()],
            inventory: Some("/etc/volley/inventory.toml".to_string()),
            ..Targets::default()
        },
        hosts: hosts.iter().map(|host| host.to_string()).collect(),
        batches,
        options: Options {
            batch: Some("2".to_string()),
            ..Options::default()
        },
        arguments: [
            "-g",
            "web",
            "--batch",
            "2",
            "--",
            "systemctl",
            "restart",
            "app",
        ]
        .map(str::to_string)
        .to_vec(),
        subcommand: Vec::new(),

        retry_of: None,
        retry_overrides: Vec::new(),
        cwd: None,
        variables: Default::default(),
        stdin: None,
    }
}

fn host(host: &str, batch: usize, outcome: Outcome) -> Entry {
    Entry::Host(HostEntry {
        host: host.to_string(),
        batch,
        attempts: u32::from(outcome != Outcome::Skipped),
        transport: Some(TransportKind::Ssh),
        outcome,
        connect_ms: None,
        run_ms: None,
        total_ms: 1234,
        stdout_bytes: 0,
        stderr_bytes: 0,
        changed: None,
        finished: "2026-11-27T06:58:14.000Z".to_string(),
        fallback: None,
    })
}

/// `host` through the agent, or over SSH after the agent's certificate was rejected.
fn host_via(host_entry: Entry, fell_back: bool) -> Entry {
    let Entry::Host(mut entry) = host_entry else {
        unreachable!("a host entry")
    };
    entry.transport = Some(TransportKind::Agent);
    if fell_back {
        entry.transport = Some(TransportKind::Ssh);
        entry.fallback = Some(Fallback {
            reason: FallbackReason::AgentCertificateRejected,
            detail: "TLS rejected: invalid peer certificate: UnknownIssuer".to_string(),
        });
    }
    Entry::Host(entry)
}

fn write(dir: &Path, id: &str, entries: &[Entry]) {
    let text: String = entries
        .iter()
        .map(|entry| serde_json::to_string(entry).unwrap() + "\n")
        .collect();
    std::fs::write(dir.join(format!("{id}.jsonl")), text).unwrap();
}

/// A stopped rollout (web1 ok over SSH after its agent's certificate was rejected, web2 failed
/// through its agent, web3 unreachable, web4-web6 skipped), then a killed run of which only web1
/// finished.
fn runs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let hosts = ["web1", "web2", "web3", "web4", "web5", "web6"];
    let outcomes = [
        host_via(host("web1", 1, Outcome::Succeeded), true),
        host_via(host("web2", 1, Outcome::NonZeroExit { code: 1 }), false),
        host("web3", 2, refused()),
        host("web4", 2, Outcome::Skipped),
        host("web5", 3, Outcome::Skipped),
        host("web6", 3, Outcome::Skipped),
    ];
    let mut entries = vec![
        Entry::Header(Box::new(header(
            ROLLOUT,
            "2026-11-27T06:58:12.345Z",
            &hosts,
            vec![2, 2, 2],
        ))),
        Entry::Batch(BatchEntry {
            batch: 1,
            hosts: 2,
            started: "2026-11-27T06:58:12.400Z".to_string(),
        }),
    ];
    entries.extend(outcomes);
    entries.push(Entry::Footer(Footer {
        ended: "2026-11-27T06:58:20.000Z".to_string(),
        counts: count_kinds([
            "succeeded",
            "non_zero_exit",
            "unreachable",
            "skipped",
            "skipped",
            "skipped",
        ]),
        interrupted: false,
        stopped: true,
        exit_status: 3,
        journal_failed: false,
    }));
    write(dir.path(), ROLLOUT, &entries);
    let mut killed = header(
        KILLED,
        "2026-11-27T07:00:00.000Z",
        &["web1", "web2", "web3"],
        vec![3],
    );
    killed.retry_of = Some(ROLLOUT.to_string());
    killed.options.batch = None;
    write(
        dir.path(),
        KILLED,
        &[
            Entry::Header(Box::new(killed)),
            host("web1", 1, Outcome::Succeeded),
        ],
    );
    dir
}

fn refused() -> Outcome {
    Outcome::Unreachable {
        reason: "connection refused".to_string(),
    }
}

fn show_text(dir: &Path, run: &str, failed: bool, list: bool) -> String {
    let mut out = Vec::new();
    let args = ShowArgs {
        run: run.to_string(),
        failed,
        list,
    };
    show(&mut out, dir, &args).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn runs_are_listed_newest_first_with_their_counts() {
    let dir = runs();
    let mut out = Vec::new();
    list(&mut out, dir.path(), 20).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\
RUN                    STARTED (UTC)        HOSTS  OUTCOMES                                                          COMMAND
20261127T070000Z-0b1c  2026-11-27 07:00:00  3      1 succeeded, 2 not_finished (unfinished, retry)                   systemctl restart app
20261127T065812Z-3f9a  2026-11-27 06:58:12  6      1 succeeded, 1 non_zero_exit, 3 skipped, 1 unreachable (stopped)  systemctl restart app
"
    );
    // A run without its end whose volley still holds the journal is running, not killed.
    let writer = std::fs::File::open(dir.path().join(format!("{KILLED}.jsonl"))).unwrap();
    writer.try_lock().unwrap();
    let mut out = Vec::new();
    list(&mut out, dir.path(), 1).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("not_finished (running, retry)"), "{text}");
    drop(writer);
    let mut out = Vec::new();
    list(&mut out, dir.path(), 1).unwrap();
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
    let empty = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    list(&mut out, empty.path(), 20).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("no runs recorded in {}\n", empty.path().display())
    );
}

/// A journal that cannot be read gets a row saying so; the other runs are still listed.
#[test]
fn an_unreadable_journal_is_a_row_of_its_own() {
    let dir = runs();
    std::fs::write(
        dir.path().join("20261127T060000Z-dead.jsonl"),
        "{\"type\":\"hea",
    )
    .unwrap();
    let mut out = Vec::new();
    list(&mut out, dir.path(), 20).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[1].starts_with("20261127T070000Z-0b1c "), "{text}");
    assert!(
        lines[3].starts_with("20261127T060000Z-dead  ?")
            && lines[3].contains("unreadable: the first line is not a journal header: EOF"),
        "{text}"
    );
}

/// A retry's record shows the flags each retry on the way was given, which replaced the
/// recorded ones; a rollout the journal stopped says so, not the failure budget.
#[test]
fn a_retry_shows_its_flags_and_a_journal_stop_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let id = "20261127T090000Z-abcd";
    let mut retried = header(id, "2026-11-27T09:00:00.000Z", &["web1"], vec![1]);
    retried.retry_of = Some(ROLLOUT.to_string());
    retried.retry_overrides = vec![words(&["last", "--timeout", "1s"])];
    let entries = vec![
        Entry::Header(Box::new(retried)),
        Entry::Footer(Footer {
            ended: "2026-11-27T09:00:05.000Z".to_string(),
            counts: count_kinds(["skipped"]),
            interrupted: false,
            stopped: true,
            exit_status: 3,
            journal_failed: true,
        }),
    ];
    write(dir.path(), id, &entries);
    let text = show_text(dir.path(), id, false, false);
    assert!(
        text.contains("\nretried   volley retry last --timeout 1s\n"),
        "{text}"
    );
    assert!(
        text.contains("rollout stopped: its journal could not be written for a while\n"),
        "{text}"
    );
}

#[test]
fn a_run_is_shown_host_by_host() {
    let dir = runs();
    assert_eq!(
        show_text(dir.path(), ROLLOUT, false, false),
        "\
run       20261127T065812Z-3f9a
command   systemctl restart app
targets   -g web --inventory /etc/volley/inventory.toml
flags     -g web --batch 2
started   2026-11-27T06:58:12.345Z by ops
ended     2026-11-27T06:58:20.000Z, exit status 3, rollout stopped by the failure budget
hosts     6: 1 succeeded, 1 non_zero_exit, 3 skipped, 1 unreachable
batches   1 started of 3 (2, 2, 2)

HOST  BATCH  OUTCOME        TRANSPORT  ATTEMPTS  TIME   DETAIL
web1  1      succeeded      ssh        1         1.23s  fell back to SSH: agent certificate rejected (TLS rejected: invalid peer certificate: UnknownIssuer)
web2  1      non_zero_exit  agent      1         1.23s  exited with status 1
web3  2      unreachable    ssh        1         1.23s  unreachable: connection refused
web4  2      skipped        -          0         -      skipped: the failure budget stopped the rollout before this host
web5  3      skipped        -          0         -      skipped: the failure budget stopped the rollout before this host
web6  3      skipped        -          0         -      skipped: the failure budget stopped the rollout before this host
"
    );
}

#[test]
fn a_killed_run_shows_the_hosts_that_had_not_finished() {
    let dir = runs();
    assert_eq!(
        show_text(dir.path(), "last", false, false),
        "\
run       20261127T070000Z-0b1c (retry of 20261127T065812Z-3f9a)
command   systemctl restart app
targets   -g web --inventory /etc/volley/inventory.toml
flags     -g web --batch 2
started   2026-11-27T07:00:00.000Z by ops
ended     no end recorded: volley was killed, or the run is still going
hosts     3: 1 succeeded, 2 not_finished

HOST  BATCH  OUTCOME       TRANSPORT  ATTEMPTS  TIME   DETAIL
web1  1      succeeded     ssh        1         1.23s
web2  1      not_finished  -          -         -      no outcome recorded: the run ended before this host finished
web3  1      not_finished  -          -         -      no outcome recorded: the run ended before this host finished
"
    );
}

#[test]
fn failed_hosts_are_folded_or_listed() {
    let dir = runs();
    assert_eq!(show_text(dir.path(), ROLLOUT, true, false), "web[2-6]\n");
    assert_eq!(
        show_text(dir.path(), ROLLOUT, true, true),
        "web2\nweb3\nweb4\nweb5\nweb6\n"
    );
    assert_eq!(
        show_text(dir.path(), KILLED, false, true),
        "web1\nweb2\nweb3\n"
    );
    let mut out = Vec::new();
    let args = ShowArgs {
        run: "20991231".to_string(),
        failed: false,
        list: false,
    };
    assert_eq!(
        show(&mut out, dir.path(), &args).unwrap_err().to_string(),
        "unknown run '20991231' (see volley runs)"
    );
}

fn retried(dir: &Path, run: &str, only: Option<&str>) -> Result<Vec<String>, String> {
    let args = RetryArgs {
        run: run.to_string(),
        only: only.map(str::to_string),
        overrides: RetryOverrides::default(),
    };
    retry(dir, &args, Vec::new())
        .map(|retry| retry.hosts)
        .map_err(|e| e.to_string())
}

#[test]
fn a_retry_takes_the_hosts_that_did_not_succeed() {
    let dir = runs();
    let check = |run: &str, only: Option<&str>, expected: &[&str]| {
        assert_eq!(
            retried(dir.path(), run, only),
            Ok(expected.iter().map(|h| h.to_string()).collect()),
            "{run} --only {only:?}"
        );
    };
    check(ROLLOUT, None, &["web2", "web3", "web4", "web5", "web6"]);
    check(ROLLOUT, Some("unreachable"), &["web3"]);
    check(ROLLOUT, Some("failed"), &["web2"]);
    check(ROLLOUT, Some("unreached"), &["web3"]);
    check(
        ROLLOUT,
        Some("skipped, non_zero_exit"),
        &["web2", "web4", "web5", "web6"],
    );
    check(ROLLOUT, Some("interrupted"), &[]);
    check(KILLED, None, &["web2", "web3"]);
    check(KILLED, Some("not_finished"), &["web2", "web3"]);
    check(KILLED, Some("interrupted"), &["web2", "web3"]);
    assert_eq!(
        retried(dir.path(), ROLLOUT, Some("unreachable,succeeded")),
        Err("--only 'unreachable,succeeded': 'succeeded' is not an outcome or a class (classes: failed, unreached, interrupted; outcomes: non_zero_exit, signalled, unreachable, connect_timeout, auth_failed, host_key_unknown, host_key_changed, tls_rejected, command_timeout, cancelled, transport_error, step_failed, skipped, in_doubt, not_finished)".to_string())
    );
}

#[test]
fn a_retry_runs_the_recorded_arguments() {
    let dir = runs();
    let retry = retry(
        dir.path(),
        &RetryArgs {
            run: ROLLOUT.to_string(),
            only: None,
            overrides: RetryOverrides::default(),
        },
        vec![ROLLOUT.to_string()],
    )
    .unwrap();
    assert_eq!(retry.retry_of, ROLLOUT);
    assert_eq!(retry.of, 6);
    assert_eq!(retry.args.targets.groups, ["web"]);
    assert_eq!(retry.args.rollout.batch.as_deref(), Some("2"));
    assert_eq!(retry.args.command, ["systemctl", "restart", "app"]);
    assert_eq!(
        retry.args.targets.inventory,
        Some(PathBuf::from("/etc/volley/inventory.toml"))
    );
    assert_eq!(retry.arguments[..2], ["-g", "web"]);
}

#[test]
fn a_recorded_agent_operation_is_retried_as_that_operation() {
    let dir = tempfile::tempdir().unwrap();
    let mut recorded = header(
        ROLLOUT,
        "2026-11-27T06:58:12.345Z",
        &["web1", "web2"],
        vec![2],
    );
    recorded.command = "volley agent install".to_string();
    recorded.subcommand = vec!["agent".to_string(), "install".to_string()];
    recorded.arguments = ["-g", "web", "--agent-binary", "/opt/volley-agent"]
        .map(str::to_string)
        .to_vec();
    let failed = Outcome::StepFailed {
        step: "binary".to_string(),
        reason: "mkdir: Not a directory".to_string(),
    };
    write(
        dir.path(),
        ROLLOUT,
        &[
            Entry::Header(Box::new(recorded)),
            host("web1", 1, Outcome::Succeeded),
            host("web2", 1, failed),
        ],
    );
    let args = RetryArgs {
        run: ROLLOUT.to_string(),
        only: Some("step_failed".to_string()),
        overrides: RetryOverrides::default(),
    };
    let refused = RetryArgs {
        overrides: RetryOverrides {
            transport: Some(crate::cli::TransportFlag::Agent),
            ..RetryOverrides::default()
        },
        ..RetryArgs {
            run: args.run.clone(),
            only: args.only.clone(),
            overrides: RetryOverrides::default(),
        }
    };
    assert_eq!(
        retry(dir.path(), &refused, Vec::new())
            .map(|_| ())
            .unwrap_err()
            .to_string(),
        format!(
            "run {ROLLOUT}: `volley agent install` runs over SSH: --transport does not apply to its retry"
        )
    );
    let retry = retry(dir.path(), &args, Vec::new()).unwrap();
    assert_eq!(retry.hosts, ["web2"]);
    let agent = retry.agent.expect("an agent operation");
    assert_eq!(agent.action, crate::install::Action::Install);
    assert_eq!(agent.agent_binary, Some(PathBuf::from("/opt/volley-agent")));
    assert_eq!(retry.args.command, ["volley agent install"]);
    assert_eq!(retry.args.targets.groups, ["web"]);
}

/// A push host's entry: `changed` lists what it wrote.
fn pushed(host: &str, outcome: Outcome, changed: &[&str]) -> Entry {
    let Entry::Host(mut entry) = self::host(host, 1, outcome) else {
        unreachable!("host() makes host entries")
    };
    entry.changed = Some(changed.iter().map(|path| path.to_string()).collect());
    Entry::Host(entry)
}

#[test]
fn a_recorded_push_is_retried_as_a_push_owing_then_where_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = ["web1", "web2", "web3", "web4", "web5", "web6"];
    let mut recorded = header(ROLLOUT, "2026-11-27T06:58:12.345Z", &hosts, vec![6]);
    recorded.command = "volley push app.conf /etc/app.conf".to_string();
    recorded.subcommand = vec!["push".to_string()];
    recorded.arguments = ["-g", "web", "--then", "reload", "app.conf", "/etc/app.conf"]
        .map(str::to_string)
        .to_vec();
    let upload_failed = || Outcome::StepFailed {
        step: "upload".to_string(),
        reason: "/etc/b: No space left on device".to_string(),
    };
    write(
        dir.path(),
        ROLLOUT,
        &[
            Entry::Header(Box::new(recorded)),
            // Written, then reloaded: done.
            pushed("web1", Outcome::Succeeded, &["/etc/a"]),
            // Written, reload failed: owed.
            pushed("web2", Outcome::NonZeroExit { code: 1 }, &["/etc/a"]),
            // Unchanged, but the owed reload failed again: still owed.
            pushed("web3", Outcome::NonZeroExit { code: 1 }, &[]),
            // One file written, the next failed: the reload never ran.
            pushed("web4", upload_failed(), &["/etc/a"]),
            // Nothing written: nothing owed.
            pushed("web5", upload_failed(), &[]),
            // web6 never finished: volley was killed, it may have been written.
        ],
    );
    let args = RetryArgs {
        run: ROLLOUT.to_string(),
        only: None,
        overrides: RetryOverrides::default(),
    };
    let retry = retry(dir.path(), &args, Vec::new()).unwrap();
    assert_eq!(retry.hosts, ["web2", "web3", "web4", "web5", "web6"]);
    assert_eq!(retry.then_owed, ["web2", "web3", "web4", "web6"]);
    assert!(matches!(
        retry.transfer,
        Some(crate::transfer::Request::Push(_))
    ));
    assert!(retry.agent.is_none());
    assert_eq!(retry.args.targets.groups, ["web"]);
}

#[test]
fn a_push_host_shows_what_it_changed() {
    let entry = |outcome, changed: Option<&[&str]>| {
        let Entry::Host(mut entry) = host("web1", 1, outcome) else {
            unreachable!("host() makes host entries")
        };
        entry.changed = changed.map(|paths| paths.iter().map(|p| p.to_string()).collect());
        host_row("web1", Some(&entry), Some(&1), None, false)[6].clone()
    };
    assert_eq!(entry(Outcome::Succeeded, None), "");
    assert_eq!(entry(Outcome::Succeeded, Some(&[])), "unchanged");
    assert_eq!(entry(Outcome::Succeeded, Some(&["/a"])), "changed /a");
    assert_eq!(
        entry(Outcome::Succeeded, Some(&["/a", "/b", "/c"])),
        "changed /a and 2 more"
    );
    assert_eq!(
        entry(Outcome::NonZeroExit { code: 3 }, Some(&["/a"])),
        "exited with status 3; changed /a"
    );
    assert_eq!(
        entry(Outcome::NonZeroExit { code: 3 }, Some(&[])),
        "exited with status 3"
    );
}

#[test]
fn a_retry_runs_on_exactly_its_hosts_or_not_at_all() {
    use crate::plan::HostSpec;
    let spec = |name: &str| HostSpec {
        name: name.to_string(),
        address: name.to_string(),
        port: 22,
        user: "ops".to_string(),
        identity_files: Vec::new(),
        identities_only: false,
        host: name.to_string(),
        agent_port: 7731,
        transport: volley_common::inventory::TransportChoice::Auto,
        agent_prefix: None,
        become_root: false,
        jump: Vec::new(),
    };
    let mut hosts: Vec<HostSpec> = ["web1", "web2", "web3"].map(spec).to_vec();
    let wanted = ["web3".to_string(), "web1".to_string()];
    keep_only(&mut hosts, ROLLOUT, &wanted).unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    // The plan's order stays.
    assert_eq!(names, ["web1", "web3"]);
    let gone = ["web1".to_string(), "web7".to_string(), "web8".to_string()];
    assert_eq!(
        keep_only(&mut hosts, ROLLOUT, &gone)
            .unwrap_err()
            .to_string(),
        "run 20261127T065812Z-3f9a: no longer among the targets of its arguments: web[7-8] (did the inventory change?)"
    );
}

/// A run killed while its commands ran on agents: web1 in doubt, web2 sent and not finished,
/// web3 never started, web4 unreachable.
fn agent_run(dir: &Path) {
    let started = |host: &str| {
        Entry::Started(StartedEntry {
            host: host.to_string(),
            execution_id: format!("{KILLED}/{host}"),
            started: "2026-11-27T07:00:01.000Z".to_string(),
        })
    };
    let in_doubt = Outcome::InDoubt {
        reason: "lost the agent".to_string(),
    };
    write(
        dir,
        KILLED,
        &[
            Entry::Header(Box::new(header(
                KILLED,
                "2026-11-27T07:00:00.000Z",
                &["web1", "web2", "web3", "web4"],
                vec![4],
            ))),
            started("web1"),
            started("web2"),
            host("web1", 1, in_doubt),
            host("web4", 1, refused()),
        ],
    );
}

/// The hosts a retry of [`KILLED`] with `--only ONLY` takes, and those it leaves out as in doubt.
fn picked(dir: &Path, only: Option<&str>) -> (Vec<String>, Vec<String>) {
    let args = RetryArgs {
        run: KILLED.to_string(),
        only: only.map(str::to_string),
        overrides: RetryOverrides::default(),
    };
    let retry = retry(dir, &args, Vec::new()).unwrap();
    (retry.hosts, retry.in_doubt)
}

fn names(hosts: &[&str]) -> Vec<String> {
    hosts.iter().map(|h| h.to_string()).collect()
}

#[test]
fn a_retry_leaves_hosts_whose_command_may_still_run_unless_asked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    agent_run(dir.path());
    let picked = |only: Option<&str>| picked(dir.path(), only);
    assert_eq!(
        picked(None),
        (names(&["web3", "web4"]), names(&["web1", "web2"]))
    );
    assert_eq!(
        picked(Some("in_doubt")),
        (names(&["web1", "web2"]), names(&[]))
    );
    assert_eq!(
        picked(Some("not_finished,interrupted,unreached")),
        (names(&["web3", "web4"]), names(&["web1", "web2"]))
    );
}

/// A host in doubt over SSH (its connection stopped answering, the stop unconfirmed) is left
/// out as one in doubt through an agent is: its command may still run there.
#[test]
fn a_retry_leaves_a_host_in_doubt_over_ssh_unless_asked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let in_doubt = Outcome::InDoubt {
        reason: "the host did not confirm the stop".to_string(),
    };
    write(
        dir.path(),
        KILLED,
        &[
            Entry::Header(Box::new(header(
                KILLED,
                "2026-11-27T07:00:00.000Z",
                &["web1", "web2"],
                vec![2],
            ))),
            host("web1", 1, in_doubt),
            host("web2", 1, refused()),
        ],
    );
    let picked = |only: Option<&str>| picked(dir.path(), only);
    assert_eq!(picked(None), (names(&["web2"]), names(&["web1"])));
    assert_eq!(picked(Some("in_doubt")), (names(&["web1"]), names(&[])));
}

#[test]
fn a_push_whose_then_was_left_in_doubt_owes_it_when_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut recorded = header(
        KILLED,
        "2026-11-27T07:00:00.000Z",
        &["web1", "web2"],
        vec![2],
    );
    recorded.command = "volley push app.conf /etc/app.conf".to_string();
    recorded.subcommand = vec!["push".to_string()];
    recorded.arguments = ["-g", "web", "--then", "reload", "app.conf", "/etc/app.conf"]
        .map(str::to_string)
        .to_vec();
    let started = |host: &str| {
        Entry::Started(StartedEntry {
            host: host.to_string(),
            execution_id: format!("{KILLED}/{host}"),
            started: "2026-11-27T07:00:01.000Z".to_string(),
        })
    };
    let in_doubt = Outcome::InDoubt {
        reason: "lost the agent".to_string(),
    };
    write(
        dir.path(),
        KILLED,
        &[
            Entry::Header(Box::new(recorded)),
            // Both `--then`s were sent; web1's files were unchanged, so no write is on record.
            started("web1"),
            started("web2"),
            pushed("web1", in_doubt, &[]),
        ],
    );
    let args = RetryArgs {
        run: KILLED.to_string(),
        only: Some("in_doubt".to_string()),
        overrides: RetryOverrides::default(),
    };
    let retry = retry(dir.path(), &args, Vec::new()).unwrap();
    assert_eq!(retry.hosts, ["web1", "web2"]);
    // Whether either reload ended is unknown: a retry runs both again.
    assert_eq!(retry.then_owed, ["web1", "web2"]);
}

#[test]
fn show_says_which_hosts_resume_can_collect() {
    let dir = tempfile::tempdir().unwrap();
    agent_run(dir.path());
    let text = show_text(dir.path(), KILLED, false, false);
    assert!(
        text.contains(&format!(
            "web2  1      not_finished  -          -         -      no outcome recorded; its command was sent to its agent as {KILLED}/web2: `volley runs resume` collects it"
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "web1  1      in_doubt      ssh        1         1.23s  in doubt: lost the agent"
        ),
        "{text}"
    );
}

/// `volley retry ARGS` as clap parses it.
fn retry_args(args: &[&str]) -> RetryArgs {
    let argv = ["volley", "retry"].iter().chain(args).copied();
    match Cli::parse_args(argv).unwrap().command {
        Command::Retry(args) => *args,
        _ => unreachable!("the arguments start with `retry`"),
    }
}

fn strs(given: &[String]) -> Vec<&str> {
    given.iter().map(String::as_str).collect()
}

fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

#[test]
fn a_retry_s_flags_replace_the_recorded_ones_and_are_kept_for_its_retries() {
    let dir = runs();
    let given = [
        ROLLOUT,
        "-p",
        "7",
        "--timeout",
        "10m",
        "--max-handshakes",
        "8",
        "--json",
        "--max-failures",
        "1",
        "--transport",
        "ssh",
        "--become",
    ];
    let first = retry(dir.path(), &retry_args(&given), words(&given)).unwrap();
    assert_eq!(first.args.limits.parallel, Some(7));
    assert_eq!(first.args.limits.max_handshakes.as_deref(), Some("8"));
    assert_eq!(first.args.transport, Some(crate::cli::TransportFlag::Ssh));
    assert!(first.args.ssh.become_root);
    assert_eq!(first.args.limits.timeout.as_deref(), Some("10m"));
    assert!(first.args.output.json);
    // Not given: recorded.
    assert_eq!(first.args.rollout.batch.as_deref(), Some("2"));
    assert_eq!(first.overrides, [words(&given)]);
    // A retry holds its run until it ends: another one is refused meanwhile.
    assert!(matches!(
        retry(dir.path(), &retry_args(&[ROLLOUT]), words(&[ROLLOUT])),
        Err(RunsError::Retrying(_))
    ));
    // Ended (its lock let go), what it ran with is still looked at below.
    let mut first = first;
    drop(std::mem::replace(
        &mut first.held,
        tempfile::tempfile().unwrap(),
    ));
    let plain = retry(dir.path(), &retry_args(&[ROLLOUT]), words(&[ROLLOUT])).unwrap();
    assert_eq!(plain.args.transport, None);
    assert!(!plain.args.ssh.become_root);
    // The recorded arguments are kept as they were: the overrides travel beside them.
    assert_eq!(first.arguments, runs_header_arguments());

    // The retry of that retry: its journal names the first retry, whose overrides still hold
    // where the second retry says nothing, and lose where it says otherwise.
    let retried_id = "20261127T080000Z-aaaa";
    let mut recorded = header(
        retried_id,
        "2026-11-27T08:00:00.000Z",
        &["web2", "web3"],
        vec![2],
    );
    recorded.retry_of = Some(ROLLOUT.to_string());
    recorded.retry_overrides = first.overrides.clone();
    write(
        dir.path(),
        retried_id,
        &[
            Entry::Header(Box::new(recorded)),
            host("web2", 1, refused()),
            host("web3", 1, Outcome::Succeeded),
        ],
    );
    let given = [retried_id, "--gather", "--abort-on-failure", "--batch", "1"];
    let second = retry(dir.path(), &retry_args(&given), words(&given)).unwrap();
    assert_eq!(second.hosts, ["web2"]);
    assert_eq!(second.args.limits.parallel, Some(7));
    assert_eq!(second.args.limits.timeout.as_deref(), Some("10m"));
    assert!(second.args.output.gather && !second.args.output.json);
    assert!(second.args.rollout.abort_on_failure);
    assert_eq!(second.args.rollout.max_failures, None);
    assert_eq!(second.args.rollout.batch.as_deref(), Some("1"));
    assert_eq!(second.args.transport, Some(crate::cli::TransportFlag::Ssh));
    assert!(second.args.ssh.become_root);
    assert_eq!(second.overrides.len(), 2);
    assert_eq!(second.overrides[1], words(&given));
}

fn runs_header_arguments() -> Vec<String> {
    header(ROLLOUT, "", &[], Vec::new()).arguments
}

#[test]
fn paths_given_to_a_retry_are_anchored_where_it_was_started() {
    let mut given = words(&[
        ROLLOUT,
        "-i",
        "keys/a",
        "-ikeys/b",
        "--identity=/abs/c",
        "--known-hosts",
        "kh",
        "--out-dir=out",
        "-Ni",
        "keys/d",
        "-bikeys/e",
        "-p7",
        "--only",
        "failed",
    ]);
    anchor_paths(&mut given, Path::new("/home/ops/site"));
    assert_eq!(
        given,
        words(&[
            ROLLOUT,
            "-i",
            "/home/ops/site/keys/a",
            "-i/home/ops/site/keys/b",
            "--identity=/abs/c",
            "--known-hosts",
            "/home/ops/site/kh",
            "--out-dir=/home/ops/site/out",
            "-Ni",
            "/home/ops/site/keys/d",
            "-bi/home/ops/site/keys/e",
            "-p7",
            "--only",
            "failed",
        ])
    );
    // What anchoring wrote parses as the retry's flags.
    let args = retry_args(&strs(&given));
    let overrides = &args.overrides;
    assert_eq!(
        overrides.identity,
        [
            PathBuf::from("/home/ops/site/keys/a"),
            PathBuf::from("/home/ops/site/keys/b"),
            PathBuf::from("/abs/c"),
            PathBuf::from("/home/ops/site/keys/d"),
            PathBuf::from("/home/ops/site/keys/e")
        ]
    );
    assert_eq!(
        overrides.known_hosts.as_deref(),
        Some(Path::new("/home/ops/site/kh"))
    );
    assert_eq!(
        overrides.output.out_dir.as_deref(),
        Some(Path::new("/home/ops/site/out"))
    );
}

#[test]
fn unreached_is_only_where_nothing_started() {
    let entry = |outcome: Outcome, run_ms: Option<u64>| {
        let Entry::Host(mut entry) = host("h", 1, outcome) else {
            unreachable!("a host entry")
        };
        entry.run_ms = run_ms;
        entry
    };
    let lost = || Outcome::TransportError {
        reason: "the connection closed before the command reported its exit".to_string(),
    };
    let picked = |entry: &HostEntry, only: &str| {
        let words = parse_only(only).unwrap();
        selected(Some(entry), false, Some(&words))
    };
    let refused = entry(
        Outcome::Unreachable {
            reason: "refused".to_string(),
        },
        None,
    );
    assert!(picked(&refused, "unreached"));
    assert!(
        picked(&entry(lost(), None), "unreached"),
        "lost before it started"
    );
    for ran in [
        entry(Outcome::command_timeout(), Some(5000)),
        entry(lost(), Some(800)),
    ] {
        assert!(!picked(&ran, "unreached"), "{:?}", ran.outcome);
        assert!(picked(&ran, ran.outcome.kind()), "{:?}", ran.outcome);
        assert!(selected(Some(&ran), false, None), "a plain retry takes it");
    }
}

#[test]
fn a_command_is_shown_on_one_line_without_its_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = header(
        "20261127T080000Z-1a2b",
        "2026-11-27T08:00:00.000Z",
        &["h1"],
        vec![1],
    );
    header.command = "echo a\necho \u{1b}[31mred".to_string();
    write(
        dir.path(),
        &header.id.clone(),
        &[Entry::Header(Box::new(header))],
    );
    let mut out = Vec::new();
    list(&mut out, dir.path(), 20).unwrap();
    let listed = String::from_utf8(out).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("echo a\\necho \\u{1b}[31mred"), "{listed}");
    let shown = show_text(dir.path(), "20261127T080000Z-1a2b", false, false);
    assert!(
        shown.contains("command   echo a\\necho \\u{1b}[31mred\n"),
        "{shown}"
    );
}
