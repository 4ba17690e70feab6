//! Supervision of plain processes; starting one in its user's session goes through the agent's
//! own binary (`as-user`), which the end-to-end tests in `agent/tests` run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::process::Command;
use volley_common::exec::{ExecEvent, Program};

use super::*;
use crate::session::Account;

fn spec(program: Program) -> ExecSpec {
    ExecSpec {
        execution_id: "test".to_string(),
        program,
        env: BTreeMap::new(),
        working_dir: None,
        timeout: None,
        max_output: None,
        user: None,
        become_root: false,
        keep_output: None,
        stdin: Default::default(),
    }
}

fn session() -> Session {
    Session {
        account: Account {
            name: "nobody".to_string(),
            uid: 65534,
            gid: 65534,
            home: PathBuf::from("/"),
            shell: "/bin/sh".to_string(),
        },
        switch_user: false,
        env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
    }
}

/// Runs `line` under `sh -c` to its end with a follower that drains events; returns them
/// (`Exited`, which the service sends, included) and the report.
async fn run(line: &str, cap: Option<u64>, timeout: Option<Duration>) -> (Vec<ExecEvent>, Report) {
    run_with_input(line, Vec::new(), cap, timeout).await
}

/// [`run`] with `input` on the command's stdin.
async fn run_with_input(
    line: &str,
    input: Vec<u8>,
    cap: Option<u64>,
    timeout: Option<Duration>,
) -> (Vec<ExecEvent>, Report) {
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(line);
    let running = spawn(command, "/bin/sh".to_string(), input).expect("start");
    let execution = Execution::new("test".to_string(), "c".to_string(), 1 << 20, cap);
    execution.started(running.pid());
    let (replay, live) = execution.follow(0, 0);
    let mut receiver = live.expect("a running execution has a live stream");
    let collector = tokio::spawn(async move {
        let mut all = replay;
        while let Some(event) = receiver.recv().await {
            all.push(event);
        }
        all
    });
    let report = running
        .supervise(execution.clone(), timeout, CancellationToken::new())
        .await;
    if let Some(follower) = execution.finish(report.exited.clone()) {
        let _ = follower
            .send(ExecEvent::Exited(report.exited.clone()))
            .await;
    }
    (collector.await.expect("collector"), report)
}

/// Starts `line` under `sh -c`, not yet supervised.
fn shell(line: &str) -> Running {
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(line);
    spawn(command, "/bin/sh".to_string(), Vec::new()).expect("start")
}

fn output(events: &[ExecEvent], stdout: bool) -> Vec<u8> {
    events
        .iter()
        .filter_map(|event| match (event, stdout) {
            (ExecEvent::Stdout(data), true) | (ExecEvent::Stderr(data), false) => Some(data),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

#[tokio::test]
async fn streams_and_reports() {
    let (events, report) = run("echo out; echo err >&2; exit 4", None, None).await;
    assert!(matches!(events.first(), Some(ExecEvent::Started { .. })));
    assert_eq!(output(&events, true), b"out\n");
    assert_eq!(output(&events, false), b"err\n");
    assert_eq!(report.ending, Ending::Finished);
    assert_eq!(report.exited.status, ExitStatus::Code(4));
    assert_eq!(
        events.last(),
        Some(&ExecEvent::Exited(report.exited.clone()))
    );
}

#[tokio::test]
async fn streams_everything_without_a_cap() {
    let (events, report) = run("head -c 3000000 /dev/zero", None, None).await;
    assert_eq!(output(&events, true).len(), 3_000_000);
    assert_eq!(report.exited.stdout_bytes, 3_000_000);
    assert!(!report.exited.stdout_truncated);
}

#[tokio::test]
async fn a_cap_asked_for_sends_that_much_and_counts_the_rest() {
    let (events, report) = run("head -c 300000 /dev/zero", Some(100_000), None).await;
    assert_eq!(output(&events, true).len(), 100_000);
    assert_eq!(report.exited.stdout_bytes, 300_000);
    assert!(report.exited.stdout_truncated);
    assert!(!report.exited.stderr_truncated);
    assert!(
        events.iter().all(|event| match event {
            ExecEvent::Stdout(data) => data.len() <= CHUNK_BYTES,
            _ => true,
        }),
        "chunks of at most 64 KiB"
    );
}

#[tokio::test]
async fn timeout_kills_the_group() {
    let (_, report) = run(
        "sleep 30 & sleep 31",
        None,
        Some(Duration::from_millis(200)),
    )
    .await;
    assert_eq!(report.ending, Ending::TimedOut);
    assert!(report.exited.timed_out);
    assert_eq!(report.exited.status, ExitStatus::Signal("TERM".to_string()));
    assert!(report.exited.duration < Duration::from_secs(5));
}

/// An agent stalled past a command's deadline (stopped, starved of CPU) finds the command
/// ended meanwhile: it ended by itself, not by the timeout, and is reported as it ended.
#[tokio::test]
async fn a_command_that_ended_while_the_agent_was_stalled_did_not_time_out() {
    // Both the exit and the deadline are ready when supervision starts; the order in which
    // they are seen would otherwise be a coin toss, so a few tosses.
    for _ in 0..8 {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg("exit 3");
        let running = spawn(command, "/bin/sh".to_string(), Vec::new()).expect("start");
        let execution = Execution::new("test".to_string(), "c".to_string(), 1 << 20, None);
        execution.started(running.pid());
        // The stall: this thread holds the runtime, as a stopped agent holds its own.
        std::thread::sleep(Duration::from_millis(300));
        let report = running
            .supervise(
                execution,
                Some(Duration::from_millis(100)),
                CancellationToken::new(),
            )
            .await;
        assert_eq!(report.ending, Ending::Finished);
        assert!(!report.exited.timed_out);
        assert_eq!(report.exited.status, ExitStatus::Code(3));
    }
}

#[tokio::test]
async fn a_missing_program_is_a_start_error() {
    let error = start(
        &spec(Program::Argv(vec!["/nonexistent/program".to_string()])),
        &session(),
        &Executor::Direct,
        None,
    )
    .await
    .expect_err("no such program");
    assert!(
        error
            .to_string()
            .starts_with("cannot start \"/nonexistent/program\": "),
        "{error}"
    );
}

#[tokio::test]
async fn a_bad_environment_name_is_a_start_error() {
    for name in ["", "A=B", "A\0"] {
        let mut bad = spec(Program::Shell("true".to_string()));
        bad.env.insert(name.to_string(), "value".to_string());
        let error = start(&bad, &session(), &Executor::Direct, None)
            .await
            .expect_err("bad name");
        assert!(matches!(error, ExecError::EnvName(_)), "{name:?}: {error}");
    }
}

#[tokio::test]
async fn a_value_holding_nul_is_a_start_error() {
    let mut with_nul = session();
    with_nul
        .env
        .insert("SECRET".to_string(), "a\0b".to_string());
    let error = start(
        &spec(Program::Shell("true".to_string())),
        &with_nul,
        &Executor::Direct,
        None,
    )
    .await
    .expect_err("NUL in a value");
    assert_eq!(
        error.to_string(),
        "environment variable SECRET: its value holds NUL"
    );
}

#[tokio::test]
async fn a_timeout_too_far_away_is_no_timeout() {
    let (_, report) = run("exit 0", None, Some(Duration::from_millis(u64::MAX))).await;
    assert_eq!(report.ending, Ending::Finished);
    assert_eq!(report.exited.status, ExitStatus::Code(0));
}

#[tokio::test]
async fn a_working_directory_that_is_not_one_is_a_start_error() {
    let mut elsewhere = spec(Program::Shell("true".to_string()));
    elsewhere.working_dir = Some("/nonexistent".to_string());
    let error = start(&elsewhere, &session(), &Executor::Direct, None)
        .await
        .expect_err("no such directory");
    assert_eq!(
        error.to_string(),
        "working directory /nonexistent: not a directory"
    );
}

#[tokio::test]
async fn the_request_s_bytes_are_the_command_s_stdin_then_end_of_file() {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let (events, report) = run_with_input("cat; echo end", bytes.clone(), None, None).await;
    assert_eq!(report.exited.status, ExitStatus::Code(0));
    let mut expected = bytes;
    expected.extend_from_slice(b"end\n");
    assert_eq!(output(&events, true), expected);

    // A command that reads none of a large input is not held up by it.
    let timeout = Some(Duration::from_secs(30));
    let (events, report) = run_with_input("echo ignored", vec![b'x'; 1 << 20], None, timeout).await;
    assert_eq!(report.ending, Ending::Finished);
    assert_eq!(output(&events, true), b"ignored\n");

    // No input reads as /dev/null.
    let (events, _) = run("cat; echo none", None, None).await;
    assert_eq!(output(&events, true), b"none\n");
}

#[tokio::test]
async fn a_cancel_kills_the_group_and_says_so() {
    let running = shell("sleep 30 & sleep 31");
    let execution = Execution::new("test".to_string(), "c".to_string(), 1024, None);
    execution.cancel.cancel();
    let report = running
        .supervise(execution, None, CancellationToken::new())
        .await;
    assert_eq!(report.ending, Ending::Cancelled);
    assert!(report.exited.cancelled && !report.exited.timed_out);
    assert_eq!(report.exited.status, ExitStatus::Signal("TERM".to_string()));
}

#[tokio::test]
async fn without_a_follower_the_command_runs_on_and_its_output_is_kept() {
    let running = shell("head -c 300000 /dev/zero; echo done >&2");
    let execution = Execution::new("test".to_string(), "c".to_string(), 1000, None);
    // Followed, then the follower goes away: nothing is stopped.
    let (_, live) = execution.follow(0, 0);
    drop(live);
    let report = running
        .supervise(execution.clone(), None, CancellationToken::new())
        .await;
    assert_eq!(report.ending, Ending::Finished);
    assert_eq!(report.exited.status, ExitStatus::Code(0));
    assert_eq!(report.exited.stdout_bytes, 300_000);
    execution.finish(report.exited.clone());
    let (replay, _) = execution.follow(0, 0);
    assert_eq!(output(&replay, true).len(), 1000);
    assert_eq!(output(&replay, false), b"done\n");
    assert_eq!(replay.last(), Some(&ExecEvent::Exited(report.exited)));
}
