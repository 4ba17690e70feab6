use std::collections::BTreeMap;

use super::*;

fn spec(program: Program) -> ExecSpec {
    ExecSpec {
        execution_id: "test".to_string(),
        program,
        env: BTreeMap::new(),
        working_dir: None,
        timeout: None,
        max_output: None,
        stdin: Vec::new(),
    }
}

/// Runs `spec` to its end with a reader that drains events; returns them and the report.
async fn run(spec: &ExecSpec, cap: u64, timeout: Option<Duration>) -> (Vec<ExecEvent>, Report) {
    let running = start(spec, Path::new("/")).expect("start");
    let (events, mut receiver) = mpsc::channel(EVENT_QUEUE);
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(event) = receiver.recv().await {
            all.push(event);
        }
        all
    });
    let report = running
        .supervise(cap, timeout, events, CancellationToken::new())
        .await;
    (collector.await.expect("collector"), report)
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
    let (events, report) = run(
        &spec(Program::Shell("echo out; echo err >&2; exit 4".to_string())),
        1 << 20,
        None,
    )
    .await;
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
async fn caps_output_and_counts_the_rest() {
    let (events, report) = run(
        &spec(Program::Argv(vec![
            "head".to_string(),
            "-c".to_string(),
            "300000".to_string(),
            "/dev/zero".to_string(),
        ])),
        100_000,
        None,
    )
    .await;
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
        &spec(Program::Shell("sleep 30 & sleep 31".to_string())),
        1 << 20,
        Some(Duration::from_millis(200)),
    )
    .await;
    assert_eq!(report.ending, Ending::TimedOut);
    assert!(report.exited.timed_out);
    assert_eq!(report.exited.status, ExitStatus::Signal("TERM".to_string()));
    assert!(report.exited.duration < Duration::from_secs(5));
}

#[test]
fn a_missing_program_is_a_start_error() {
    let error = start(
        &spec(Program::Argv(vec!["/nonexistent/program".to_string()])),
        Path::new("/"),
    )
    .expect_err("no such program");
    assert!(
        error
            .to_string()
            .starts_with("cannot start \"/nonexistent/program\": "),
        "{error}"
    );
}

#[test]
fn a_bad_environment_name_is_a_start_error() {
    for name in ["", "A=B", "A\0"] {
        let mut bad = spec(Program::Shell("true".to_string()));
        bad.env.insert(name.to_string(), "value".to_string());
        let error = start(&bad, Path::new("/")).expect_err("bad name");
        assert!(matches!(error, ExecError::EnvName(_)), "{name:?}: {error}");
    }
}

#[tokio::test]
async fn a_timeout_too_far_away_is_no_timeout() {
    let (_, report) = run(
        &spec(Program::Shell("exit 0".to_string())),
        1 << 20,
        Some(Duration::from_millis(u64::MAX)),
    )
    .await;
    assert_eq!(report.ending, Ending::Finished);
    assert_eq!(report.exited.status, ExitStatus::Code(0));
}

#[tokio::test]
async fn the_request_s_bytes_are_the_command_s_stdin_then_end_of_file() {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let mut request = spec(Program::Shell("cat; echo end".to_string()));
    request.stdin = bytes.clone();
    let (events, report) = run(&request, 1 << 20, None).await;
    assert_eq!(report.exited.status, ExitStatus::Code(0));
    let mut expected = bytes;
    expected.extend_from_slice(b"end\n");
    assert_eq!(output(&events, true), expected);

    // A command that reads none of a large input is not held up by it.
    let mut request = spec(Program::Shell("echo ignored".to_string()));
    request.stdin = vec![b'x'; 1 << 20];
    let (events, report) = run(&request, 1 << 20, Some(Duration::from_secs(30))).await;
    assert_eq!(report.ending, Ending::Finished);
    assert_eq!(output(&events, true), b"ignored\n");

    // No input reads as /dev/null.
    let (events, _) = run(
        &spec(Program::Shell("cat; echo none".to_string())),
        1 << 20,
        None,
    )
    .await;
    assert_eq!(output(&events, true), b"none\n");
}
