//! Executions that outlive their stream: a dropped stream stops nothing, `Attach` follows a
//! running execution or replays a finished one, `Cancel` stops one by id, an id runs once, only
//! the controller that started an execution may touch it, and finished ones are kept only as
//! long as `[retention]` says.

use tonic::Code;
use volley_common::exec::{ExecEvent, ExitStatus};
use volley_proto::pb;
use volley_proto::pb::agent_client::AgentClient;

use crate::fixture::{
    Agent, Options, PATIENCE, collect, poll_until, process_exists, run, shell, unique,
};

fn attach(id: &str, stdout_offset: u64, stderr_offset: u64) -> pb::AttachRequest {
    pb::AttachRequest {
        execution_id: id.to_string(),
        stdout_offset,
        stderr_offset,
    }
}

fn cancel(id: &str) -> pb::CancelRequest {
    pb::CancelRequest {
        execution_id: id.to_string(),
    }
}

/// The next event of a stream, which must have one.
async fn next(stream: &mut tonic::Streaming<pb::ExecEvent>) -> ExecEvent {
    let event = stream
        .message()
        .await
        .expect("a well-formed stream")
        .expect("one more event");
    ExecEvent::try_from(event).expect("a valid event")
}

async fn replay(
    client: &mut AgentClient<tonic::transport::Channel>,
    id: &str,
) -> crate::fixture::Run {
    let stream = client
        .attach(attach(id, 0, 0))
        .await
        .expect("Attach")
        .into_inner();
    collect(stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_stops_nothing_and_attach_follows_the_rest() {
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let gate = agent.path("gate");
    let request = shell(&format!(
        "echo first; while [ ! -e '{}' ]; do sleep 0.05; done; echo second",
        gate.display()
    ));
    let id = request.execution_id.clone();
    let mut stream = client.exec(request).await.expect("Exec").into_inner();
    assert!(matches!(next(&mut stream).await, ExecEvent::Started { .. }));
    assert_eq!(
        next(&mut stream).await,
        ExecEvent::Stdout(b"first\n".to_vec())
    );
    drop(stream);

    // The 6 bytes of stdout already seen are not sent again; the rest comes as it happens.
    let mut attached = client
        .attach(attach(&id, 6, 0))
        .await
        .expect("Attach to a running execution")
        .into_inner();
    assert!(matches!(
        next(&mut attached).await,
        ExecEvent::Started { .. }
    ));
    std::fs::write(&gate, "").expect("open the gate");
    let rest = collect(attached).await;
    assert_eq!(rest.stdout, b"second\n");
    assert_eq!(rest.exited.status, ExitStatus::Code(0));
    assert_eq!(rest.exited.stdout_bytes, 13);

    // Finished: the whole story again, from the kept output.
    let again = replay(&mut client, &id).await;
    assert_eq!(again.stdout, b"first\nsecond\n");
    assert_eq!(again.exited, rest.exited);
    let log = agent.log();
    assert!(
        log.contains("exec attached") && log.contains("running=true"),
        "{log}"
    );
    assert!(log.contains("running=false"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_whole_group_and_the_end_says_so() {
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let tag = unique() % 1_000_000;
    let (background, foreground) = (format!("sleep 300.{tag}"), format!("sleep 301.{tag}"));
    let request = shell(&format!("{background} & {foreground}"));
    let id = request.execution_id.clone();
    let mut stream = client.exec(request).await.expect("Exec").into_inner();
    assert!(matches!(next(&mut stream).await, ExecEvent::Started { .. }));
    assert!(
        poll_until(PATIENCE, || process_exists(&background)
            && process_exists(&foreground)),
        "the command's processes never showed up"
    );
    drop(stream);
    // Followed again: still running, its processes still there.
    let mut attached = client
        .attach(attach(&id, 0, 0))
        .await
        .expect("Attach")
        .into_inner();
    assert!(matches!(
        next(&mut attached).await,
        ExecEvent::Started { .. }
    ));
    assert!(process_exists(&background) && process_exists(&foreground));

    let reply = client
        .cancel(cancel(&id))
        .await
        .expect("Cancel")
        .into_inner();
    assert!(reply.was_running);
    let ended = collect(attached).await;
    assert!(ended.exited.cancelled && !ended.exited.timed_out);
    assert_eq!(ended.exited.status, ExitStatus::Signal("TERM".to_string()));
    assert!(
        poll_until(PATIENCE, || !process_exists(&background)
            && !process_exists(&foreground)),
        "processes left behind after the cancel"
    );
    let again = client
        .cancel(cancel(&id))
        .await
        .expect("Cancel")
        .into_inner();
    assert!(!again.was_running, "nothing left to stop");
    let log = agent.log();
    assert!(
        log.contains("exec cancel") && log.contains("cancelled=true"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_id_runs_once() {
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let marker = agent.path("ran");
    let request = shell(&format!("echo ran >> '{}'", marker.display()));
    let ran = run(&mut client, request.clone()).await;
    assert_eq!(ran.exited.status, ExitStatus::Code(0));
    let refused = client.exec(request).await.expect_err("a known id");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "ran\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_and_other_controllers_executions_are_refused() {
    let agent = Agent::start(Options {
        also_allowed: &["other-controller"],
        ..Options::default()
    });
    let mut client = agent.controller().await;
    for code in [
        client.attach(attach("no-such-id", 0, 0)).await.map(|_| ()),
        client.cancel(cancel("no-such-id")).await.map(|_| ()),
    ]
    .map(|result| result.expect_err("unknown id").code())
    {
        assert_eq!(code, Code::NotFound);
    }

    let request = shell("sleep 30");
    let id = request.execution_id.clone();
    let _stream = client.exec(request).await.expect("Exec");
    let credentials = agent.ca.controller("other-controller");
    let mut other = agent.client(Some(&credentials)).await.expect("connects");
    let attached = other.attach(attach(&id, 0, 0)).await.map(|_| ());
    let cancelled = other.cancel(cancel(&id)).await.map(|_| ());
    for refused in [attached, cancelled] {
        assert_eq!(
            refused.expect_err("not its execution").code(),
            Code::PermissionDenied
        );
    }
    let reply = client
        .cancel(cancel(&id))
        .await
        .expect("its own")
        .into_inner();
    assert!(reply.was_running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_executions_are_kept_only_as_retention_says() {
    let agent = Agent::start(Options {
        extra: "[retention]\nkeep_for = \"0\"",
        ..Options::default()
    });
    let mut client = agent.controller().await;
    let request = shell("echo once");
    let id = request.execution_id.clone();
    assert_eq!(run(&mut client, request).await.stdout, b"once\n");
    let forgotten = client.attach(attach(&id, 0, 0)).await.map(|_| ());
    assert_eq!(forgotten.expect_err("forgotten").code(), Code::NotFound);
}
