//! Start-up checks, readiness, stopping, memory and the audit log of a real agent process.

use std::time::{Duration, Instant};

use rustix::process::Signal;
use volley_common::exec::{ExecEvent, ExitStatus};

use crate::fixture::{
    Agent, Options, PATIENCE, collect, poll_until, process_exists, run, shell, spawn, unique,
    wait_exit,
};

#[test]
fn a_key_readable_by_others_is_refused() {
    let (_ca, dir, mut child, _notify) = spawn(&Options {
        key_mode: 0o644,
        ..Options::default()
    });
    let status = wait_exit(&mut child, PATIENCE);
    assert_eq!(status.code(), Some(78));
    let log = std::fs::read_to_string(dir.path().join("agent.log")).expect("log");
    let key = dir.path().join("agent.key");
    assert_eq!(
        log.trim(),
        format!(
            "volley-agent: key {0} has mode 0644: it must not be readable by group or others (chmod 600 {0})",
            key.display()
        )
    );
}

#[test]
fn a_key_owned_by_another_user_is_refused() {
    let nobody = 65534;
    let (_ca, dir, mut child, _notify) = spawn(&Options {
        key_owner: Some(nobody),
        ..Options::default()
    });
    let status = wait_exit(&mut child, PATIENCE);
    assert_eq!(status.code(), Some(78));
    let log = std::fs::read_to_string(dir.path().join("agent.log")).expect("log");
    let key = dir.path().join("agent.key");
    let own = rustix::process::geteuid().as_raw();
    assert_eq!(
        log.trim(),
        format!(
            "volley-agent: key {0} is owned by uid {nobody}: only root or the agent's own user (uid {own}) may own it, since its owner can read it (chown {own} {0})",
            key.display()
        )
    );
}

#[test]
fn a_bad_config_names_the_file_and_the_key() {
    let (_ca, dir, mut child, _notify) = spawn(&Options {
        limits: "max_timeout = \"soon\"",
        ..Options::default()
    });
    let status = wait_exit(&mut child, PATIENCE);
    assert_eq!(status.code(), Some(78));
    let log = std::fs::read_to_string(dir.path().join("agent.log")).expect("log");
    let config = dir.path().join("agent.toml");
    assert_eq!(
        log.trim(),
        format!(
            "volley-agent: config {}: limits.max_timeout: bad duration 'soon': expected a number (examples: 30s, 250ms, 1m30s)",
            config.display()
        )
    );
}

#[test]
fn an_unreadable_ca_is_named() {
    let (_ca, dir, mut child, _notify) = spawn(&Options {
        ca_file: "missing-ca.pem",
        ..Options::default()
    });
    let status = wait_exit(&mut child, PATIENCE);
    assert_eq!(status.code(), Some(78));
    let log = std::fs::read_to_string(dir.path().join("agent.log")).expect("log");
    assert_eq!(
        log.trim(),
        format!(
            "volley-agent: CA {}: cannot read: No such file or directory (os error 2)",
            dir.path().join("missing-ca.pem").display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_and_stopping_on_an_abstract_socket() {
    let mut agent = Agent::start(Options {
        abstract_notify: true,
        ..Options::default()
    });
    // Start already proved READY=1 with the address; the agent serves at that address.
    let mut client = agent.controller().await;
    assert_eq!(
        run(&mut client, shell("true")).await.exited.status,
        ExitStatus::Code(0)
    );
    agent.signal(Signal::TERM);
    assert_eq!(agent.notification(), "STOPPING=1");
    assert_eq!(agent.wait_exit(PATIENCE).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_command_finish() {
    let mut agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let mut stream = client
        .exec(shell("sleep 2; echo done"))
        .await
        .expect("Exec accepted")
        .into_inner();
    let started = stream.message().await.expect("a message").expect("Started");
    assert!(matches!(
        ExecEvent::try_from(started),
        Ok(ExecEvent::Started { .. })
    ));
    agent.signal(Signal::TERM);
    assert_eq!(agent.notification(), "STOPPING=1");
    let ran = collect(stream).await;
    assert_eq!(ran.exited.status, ExitStatus::Code(0));
    assert_eq!(ran.stdout, b"done\n");
    assert_eq!(agent.wait_exit(PATIENCE).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_kills_what_outlives_the_grace_period() {
    let mut agent = Agent::start(Options {
        limits: "shutdown_grace = \"1s\"",
        ..Options::default()
    });
    let mut client = agent.controller().await;
    let pattern = format!("sleep 300.{}", unique() % 1_000_000);
    let mut stream = client
        .exec(shell(&pattern))
        .await
        .expect("Exec accepted")
        .into_inner();
    assert!(stream.message().await.expect("a message").is_some());
    let began = Instant::now();
    agent.signal(Signal::TERM);
    let ran = collect(stream).await;
    assert_eq!(ran.exited.status, ExitStatus::Signal("TERM".to_string()));
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(agent.wait_exit(PATIENCE).code(), Some(0));
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    assert!(
        poll_until(PATIENCE, || !process_exists(&pattern)),
        "the command outlived the agent"
    );
    assert!(
        agent.log().contains("killed_at_shutdown=true"),
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_grace_period() {
    let mut agent = Agent::start(Options {
        limits: "shutdown_grace = \"1h\"",
        ..Options::default()
    });
    let mut client = agent.controller().await;
    let mut stream = client
        .exec(shell("sleep 300"))
        .await
        .expect("Exec accepted")
        .into_inner();
    assert!(stream.message().await.expect("a message").is_some());
    agent.signal(Signal::TERM);
    assert_eq!(agent.notification(), "STOPPING=1");
    agent.signal(Signal::INT);
    let ran = collect(stream).await;
    assert_eq!(ran.exited.status, ExitStatus::Signal("TERM".to_string()));
    assert_eq!(agent.wait_exit(PATIENCE).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_memory_is_small() {
    let agent = Agent::start(Options::default());
    // One connection and one call: the TLS and HTTP/2 machinery is warmed up.
    let mut client = agent.controller().await;
    client
        .info(volley_proto::pb::InfoRequest {})
        .await
        .expect("Info");
    let rss = agent.memory_kib("VmRSS");
    let anonymous = agent.memory_kib("RssAnon");
    eprintln!("idle agent: VmRSS {rss} KiB, of which RssAnon {anonymous} KiB");
    // What the agent allocates (heap, stacks) is the same in any build; the rest is the binary's
    // pages, which an unoptimised build has twice as many of.
    assert!(anonymous < 4 * 1024, "idle anonymous RSS {anonymous} KiB");
    if !cfg!(debug_assertions) {
        assert!(rss < 10 * 1024, "idle RSS {rss} KiB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_file_gets_the_records() {
    let agent = Agent::start(Options {
        extra: "audit_log = \"audit.log\"",
        ..Options::default()
    });
    let mut client = agent.controller().await;
    let ran = run(&mut client, shell("echo audited")).await;
    assert_eq!(ran.exited.status, ExitStatus::Code(0));
    let audit = agent.path("audit.log");
    assert!(
        poll_until(PATIENCE, || std::fs::read_to_string(&audit)
            .is_ok_and(|text| text.contains("exec ended"))),
        "no audit record in the file"
    );
    let text = std::fs::read_to_string(&audit).expect("audit log");
    assert!(
        text.contains("peer=volley-controller") && text.contains("\"echo audited\""),
        "{text}"
    );
    assert!(text.contains("stdout_bytes=8"), "{text}");
    assert!(
        !agent.log().contains("exec started"),
        "audit went to stderr too"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&audit).expect("metadata").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// Waits until the audit log at `path` has the record of the command `marker` started.
fn audited(path: &std::path::Path, marker: &str) -> bool {
    poll_until(PATIENCE, || {
        std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines()
                .any(|line| line.contains("exec started") && line.contains(marker))
        })
    })
}

/// As `logrotate` does it: the file is moved away, then SIGHUP; the next records go to a new
/// file at the configured path, made 0600, and none to the moved one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_audit_log_after_it_was_moved() {
    let agent = Agent::start(Options {
        extra: "audit_log = \"audit.log\"",
        ..Options::default()
    });
    let audit = agent.path("audit.log");
    let rotated = agent.path("audit.log.1");
    let mut client = agent.controller().await;
    run(&mut client, shell("echo before-rotation")).await;
    assert!(audited(&audit, "before-rotation"), "no first record");
    std::fs::rename(&audit, &rotated).expect("rotate the audit log");

    agent.signal(Signal::HUP);
    assert!(
        poll_until(PATIENCE, || agent
            .log()
            .contains("SIGHUP: reopened the audit log")),
        "{}",
        agent.log()
    );
    run(&mut client, shell("echo after-rotation")).await;
    assert!(
        audited(&audit, "after-rotation"),
        "the record is not in the new file; the moved one has:\n{}",
        std::fs::read_to_string(&rotated).unwrap_or_default()
    );
    let moved = std::fs::read_to_string(&rotated).expect("the rotated file");
    assert!(!moved.contains("after-rotation"), "{moved}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&audit).expect("metadata").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// A path that cannot be opened any more (its directory is gone) leaves the records going to
/// the file the agent had, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_that_cannot_be_reopened_keeps_the_old_file() {
    let agent = Agent::start(Options {
        extra: "audit_log = \"logs/audit.log\"",
        before_start: "mkdir \"$HOME/logs\"",
        ..Options::default()
    });
    let logs = agent.path("logs");
    let moved = agent.path("logs.old");
    std::fs::rename(&logs, &moved).expect("move the directory away");
    agent.signal(Signal::HUP);
    assert!(
        poll_until(PATIENCE, || agent.log().contains(
            "SIGHUP: audit records keep going to the file the agent had open"
        )),
        "{}",
        agent.log()
    );
    assert!(agent.log().contains("cannot open"), "{}", agent.log());
    let mut client = agent.controller().await;
    run(&mut client, shell("echo still-audited")).await;
    assert!(audited(&moved.join("audit.log"), "still-audited"));
}
