//! Running commands through a real agent.

use std::time::{Duration, Instant};

use tonic::Code;
use volley_common::exec::{ExecEvent, ExitStatus, Program};

use crate::fixture::{
    Agent, Options, PATIENCE, collect, poll_until, process_exists, request, run, shell, unique,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_started_stdout_and_exit_code() {
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let ran = run(&mut client, shell("echo hi; exit 3")).await;
    assert!(
        matches!(ran.events.first(), Some(ExecEvent::Started { pid }) if *pid > 0),
        "{:?}",
        ran.events
    );
    assert_eq!(
        ran.events.get(1),
        Some(&ExecEvent::Stdout(b"hi\n".to_vec()))
    );
    assert_eq!(ran.events.len(), 3, "{:?}", ran.events);
    assert_eq!(ran.exited.status, ExitStatus::Code(3));
    assert_eq!(ran.exited.stdout_bytes, 3);
    assert!(!ran.exited.timed_out && !ran.exited.stdout_truncated);
    let log = agent.log();
    assert!(
        log.contains("exec started") && log.contains("peer=volley-controller"),
        "audit records: {log}"
    );
    assert!(log.contains("code=3"), "the exit is audited: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_is_a_separate_stream() {
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let ran = run(&mut client, shell("echo out; echo err >&2; echo more >&2")).await;
    assert_eq!(ran.stdout, b"out\n");
    assert_eq!(ran.stderr, b"err\nmore\n");
    assert_eq!(ran.exited.status, ExitStatus::Code(0));
    assert_eq!((ran.exited.stdout_bytes, ran.exited.stderr_bytes), (4, 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_env_and_working_dir() {
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let mut argv = request(Program::Argv(vec![
        "printenv".to_string(),
        "GREETING".to_string(),
    ]));
    argv.env
        .insert("GREETING".to_string(), "hello $HOME".to_string());
    assert_eq!(run(&mut client, argv).await.stdout, b"hello $HOME\n");

    let mut elsewhere = shell("pwd");
    elsewhere.working_dir = "/tmp".to_string();
    assert_eq!(run(&mut client, elsewhere).await.stdout, b"/tmp\n");
    // Without a working directory a command starts in its user's home (from the password
    // database), not in the agent's HOME.
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .expect("the password database")
        .expect("the test's own user");
    let home = format!("{}\n", user.dir.display());
    assert_ne!(user.dir, agent.dir.path());
    assert_eq!(run(&mut client, shell("pwd")).await.stdout, home.as_bytes());

    let missing = request(Program::Argv(vec!["/nonexistent/program".to_string()]));
    let refused = client.exec(missing).await.expect_err("no such program");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let mut nowhere = shell("true");
    nowhere.working_dir = "/nonexistent".to_string();
    let refused = client.exec(nowhere).await.expect_err("no such directory");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(
        refused.message(),
        "working directory /nonexistent: not a directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_is_reported_by_name() {
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let ran = run(&mut client, shell("kill -KILL $$")).await;
    assert_eq!(ran.exited.status, ExitStatus::Signal("KILL".to_string()));
    assert!(!ran.exited.timed_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_command() {
    let agent = Agent::start(Options {
        limits: "max_timeout = \"1s\"",
        ..Options::default()
    });
    let mut client = agent.controller().await;
    let mut timed = shell("sleep 30");
    timed.timeout_ms = 500;
    let began = Instant::now();
    let ran = run(&mut client, timed).await;
    assert!(ran.exited.timed_out, "{:?}", ran.exited);
    assert_eq!(ran.exited.status, ExitStatus::Signal("TERM".to_string()));
    assert!(
        began.elapsed() < Duration::from_secs(6),
        "{:?}",
        began.elapsed()
    );

    // No timeout in the request: the agent's max_timeout still applies.
    let began = Instant::now();
    let capped = run(&mut client, shell("sleep 30")).await;
    assert!(capped.exited.timed_out, "{:?}", capped.exited);
    assert!(
        began.elapsed() < Duration::from_secs(7),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_kills_the_whole_group() {
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let tag = unique() % 1_000_000;
    let (background, foreground) = (format!("sleep 300.{tag}"), format!("sleep 301.{tag}"));
    let mut stream = client
        .exec(shell(&format!("{background} & {foreground}")))
        .await
        .expect("Exec accepted")
        .into_inner();
    let started = stream.message().await.expect("a message");
    assert!(matches!(
        started.map(ExecEvent::try_from),
        Some(Ok(ExecEvent::Started { .. }))
    ));
    assert!(
        poll_until(PATIENCE, || process_exists(&background)
            && process_exists(&foreground)),
        "the command's processes never showed up"
    );
    drop(stream);
    assert!(
        poll_until(PATIENCE, || !process_exists(&background)
            && !process_exists(&foreground)),
        "processes left behind after the stream was dropped"
    );
    assert!(
        poll_until(PATIENCE, || agent.log().contains("cancelled=true")),
        "the cancel is audited: {}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_execution_limit_nothing_starts() {
    let agent = Agent::start(Options {
        limits: "max_concurrent_execs = 1",
        ..Options::default()
    });
    let mut client = agent.controller().await;
    let mut first = client
        .exec(shell("sleep 30"))
        .await
        .expect("the first runs")
        .into_inner();
    assert!(first.message().await.expect("a message").is_some());
    let marker = agent.path("second-ran");
    let refused = client
        .exec(shell(&format!("touch {}", marker.display())))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    drop(first);
    // The slot comes back once the first command is gone; then the marker command runs.
    assert!(
        poll_until(PATIENCE, || agent.log().contains("exec ended")),
        "the first execution never ended"
    );
    assert!(!marker.exists(), "the refused command ran");
    let ran = run(&mut client, shell("true")).await;
    assert_eq!(ran.exited.status, ExitStatus::Code(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mebibytes_of_output_are_all_sent_with_bounded_memory() {
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let before = agent.memory_kib("VmHWM");
    let mut stream = client
        .exec(shell("yes | head -c 100M"))
        .await
        .expect("Exec accepted")
        .into_inner();
    // Counted, not kept: the test must not hold 100 MiB either.
    let (mut received, mut stderr, mut exited) = (0, Vec::new(), None);
    while let Some(event) = stream.message().await.expect("a well-formed stream") {
        match ExecEvent::try_from(event).expect("a valid event") {
            ExecEvent::Stdout(data) => received += data.len() as u64,
            ExecEvent::Stderr(data) => stderr.extend_from_slice(&data),
            ExecEvent::Exited(end) => exited = Some(end),
            ExecEvent::Started { .. } => {}
        }
    }
    let exited = exited.expect("an Exited event");
    assert_eq!(exited.status, ExitStatus::Code(0));
    // `yes` died of SIGPIPE quietly, as in a terminal: neither the agent nor its `as-user` step
    // passes on Rust's ignored SIGPIPE.
    assert_eq!(stderr, b"");
    assert_eq!(exited.stdout_bytes, 104_857_600);
    assert_eq!(received, 104_857_600, "the live stream is never capped");
    assert!(!exited.stdout_truncated);
    let after = agent.memory_kib("VmHWM");
    eprintln!("agent peak RSS: {before} KiB before, {after} KiB after 100 MiB of output");
    assert!(
        after < before + 8 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );

    // A cap asked by the controller (an older one asks for its own) is applied and flagged.
    let mut small = shell("yes | head -c 1000000");
    small.max_output_bytes = 1000;
    let ran = run(&mut client, small).await;
    assert_eq!(ran.stdout.len(), 1000);
    assert_eq!(ran.exited.stdout_bytes, 1_000_000);
    assert!(ran.exited.stdout_truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_slows_the_command_unless_it_asked_for_a_cap() {
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let marker = agent.path("wrote-everything");
    let command = format!("head -c 32M /dev/zero; touch {}", marker.display());
    let mut stream = client
        .exec(shell(&command))
        .await
        .expect("Exec")
        .into_inner();
    assert!(stream.message().await.expect("a message").is_some());
    // Nobody reads: the buffers between the pipe and the client fill up (a few MiB) and the
    // command blocks on its writes, as on an SSH channel. A bounded watch for something that
    // must not happen.
    assert!(
        !poll_until(Duration::from_secs(1), || marker.exists()),
        "the command wrote 32 MiB although nobody read it"
    );
    let ran = collect(stream).await;
    assert_eq!(ran.stdout.len(), 32 << 20);
    assert!(marker.exists());

    // Past a cap the request asked for, the agent reads and discards, so the same command
    // completes unread.
    let marker = agent.path("wrote-everything-capped");
    let mut capped = shell(&format!(
        "head -c 32M /dev/zero; touch {}",
        marker.display()
    ));
    capped.max_output_bytes = 64 << 10;
    let mut stream = client.exec(capped).await.expect("Exec").into_inner();
    assert!(stream.message().await.expect("a message").is_some());
    assert!(
        poll_until(PATIENCE, || marker.exists()),
        "the command was blocked past the cap"
    );
    let ran = collect(stream).await;
    assert_eq!(ran.stdout.len(), 64 << 10);
    assert_eq!(ran.exited.stdout_bytes, 32 << 20);
    assert!(ran.exited.stdout_truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused() {
    let agent = Agent::start(Options {
        limits: "max_message_bytes = \"128KiB\"",
        ..Options::default()
    });
    let mut client = agent.controller().await;
    let marker = agent.path("oversized-ran");
    let mut oversized = shell(&format!("touch {}", marker.display()));
    oversized
        .env
        .insert("PADDING".to_string(), "x".repeat(200 << 10));
    let refused = client.exec(oversized).await.expect_err("too large");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    // A full 64 KiB chunk still fits under the smallest allowed limit.
    let ran = run(&mut client, shell("head -c 200000 /dev/zero")).await;
    assert_eq!(ran.stdout.len(), 200_000);
    assert!(!marker.exists(), "the oversized request ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_describes_the_agent() {
    let agent = Agent::start(Options {
        limits: "max_concurrent_execs = 7\nmax_timeout = \"0\"",
        ..Options::default()
    });
    let mut client = agent.controller().await;
    let info = client
        .info(volley_proto::pb::InfoRequest {})
        .await
        .expect("Info")
        .into_inner();
    let info = volley_common::exec::AgentInfo::try_from(info).expect("valid info");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(info.hostname, hostname.trim());
    assert!(info.os.starts_with("Linux "), "{}", info.os);
    assert!(info.uptime < PATIENCE);
    assert_eq!(info.limits.max_concurrent_execs, 7);
    assert_eq!(info.limits.max_timeout, None);
}
