//! Files through a real agent: `Stat`, `Push` and `Fetch` under `push_roots`, refusals before a
//! byte is written, and nothing left behind by a broken or corrupt upload.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use volley_common::transfer::{FetchEvent, FileState, Owner, PushSpec, StatQuery};
use volley_proto::pb;

use crate::fixture::{Agent, Options, PATIENCE, poll_until};

/// An agent whose only push root is `files/` in its directory, with a 1 MiB file limit.
fn agent() -> Agent {
    let agent = Agent::start(Options {
        extra: "push_roots = [\"files\"]",
        limits: "max_file_bytes = \"1MiB\"",
        ..Options::default()
    });
    std::fs::create_dir(agent.path("files")).expect("mkdir files");
    agent
}

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn spec(path: &Path, content: &[u8]) -> PushSpec {
    PushSpec {
        execution_id: "test-push".to_string(),
        path: path.display().to_string(),
        size: content.len() as u64,
        sha256: sha256(content),
        mode: 0o640,
        owner: Owner::default(),
        create_below: None,
        backup_suffix: None,
    }
}

fn header(spec: PushSpec) -> pb::PushRequest {
    pb::PushRequest {
        part: Some(pb::push_request::Part::Header(spec.into())),
    }
}

fn data(bytes: &[u8]) -> pb::PushRequest {
    pb::PushRequest {
        part: Some(pb::push_request::Part::Data(bytes.to_vec().into())),
    }
}

/// Pushes `content` (in 64 KiB chunks) under `spec`; the gRPC status on failure.
async fn push(
    agent: &Agent,
    spec: PushSpec,
    content: &[u8],
) -> Result<pb::PushResult, tonic::Status> {
    let mut messages = vec![header(spec)];
    messages.extend(content.chunks(64 << 10).map(data));
    let mut client = agent.controller().await;
    client
        .push(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the directory")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_file_is_in_place_with_its_mode_and_reads_back() {
    let agent = agent();
    let path = agent.path("files/app.conf");
    std::fs::write(&path, "old\n").expect("the old file");
    let mut backup = spec(&path, b"new\n");
    backup.backup_suffix = Some(".old".to_string());
    let result = push(&agent, backup, b"new\n").await.expect("pushed");
    assert_eq!(result.backup, format!("{}.old", path.display()));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(names(&agent.path("files")), ["app.conf", "app.conf.old"]);

    let mut client = agent.controller().await;
    let query = StatQuery {
        path: path.display().to_string(),
        size: Some(4),
        follow_links: false,
    };
    let states = client
        .stat(pb::StatRequest {
            queries: vec![query.into()],
        })
        .await
        .expect("Stat")
        .into_inner()
        .states;
    let state = FileState::try_from(states[0].clone()).expect("a state");
    let FileState::File(facts) = state else {
        panic!("{state:?}")
    };
    assert_eq!(facts.sha256, Some(sha256(b"new\n")));
    assert_eq!((facts.mode, facts.user.as_str()), (0o640, "root"));

    let mut stream = client
        .fetch(pb::FetchRequest {
            execution_id: "test-fetch".to_string(),
            path: path.display().to_string(),
        })
        .await
        .expect("Fetch")
        .into_inner();
    let mut events = Vec::new();
    while let Some(chunk) = stream.message().await.expect("a whole stream") {
        events.push(FetchEvent::try_from(chunk).expect("an event"));
    }
    assert_eq!(
        events,
        [
            FetchEvent::Started {
                size: 4,
                mode: 0o640
            },
            FetchEvent::Data(b"new\n".to_vec()),
            FetchEvent::Ended {
                sha256: sha256(b"new\n"),
                size: 4
            },
        ]
    );
    let log = agent.log();
    for record in [
        "push started",
        "push ended",
        "fetch started",
        "fetch ended",
        "stat",
    ] {
        assert!(log.contains(record), "no {record:?} record: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_roots_are_refused_before_a_byte_is_written() {
    let agent = agent();
    std::fs::create_dir(agent.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink(agent.path("elsewhere"), agent.path("files/out")).unwrap();
    let files = agent.path("files").display().to_string();
    for path in [
        agent.path("elsewhere/f").display().to_string(),
        format!("{files}/../elsewhere/f"),
        format!("{files}/out/f"),
        "relative/f".to_string(),
    ] {
        let mut refused = spec(Path::new(&path), b"x");
        refused.path = path.clone();
        let status = push(&agent, refused, b"x").await.expect_err(&path);
        assert_eq!(status.code(), Code::PermissionDenied, "{path}: {status:?}");
        let mut client = agent.controller().await;
        let stat = client
            .stat(pb::StatRequest {
                queries: vec![
                    StatQuery {
                        path: path.clone(),
                        size: None,
                        follow_links: false,
                    }
                    .into(),
                ],
            })
            .await
            .expect_err(&path);
        assert_eq!(stat.code(), Code::PermissionDenied, "{path}");
    }
    assert!(names(&agent.path("elsewhere")).is_empty());
    assert_eq!(names(&agent.path("files")), ["out"]);
    assert!(agent.log().contains("push refused"), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_corrupt_uploads_leave_nothing() {
    let agent = agent();
    let path = agent.path("files/f");
    std::fs::write(&path, "old").unwrap();
    let big = vec![7u8; (1 << 20) + 1];
    let status = push(&agent, spec(&path, &big), &big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_file_bytes"), "{status:?}");

    let mut lying = spec(&path, b"what was announced");
    lying.size = 3;
    let status = push(&agent, lying, b"new").await.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(status.message().contains("checksum mismatch"), "{status:?}");

    let short = spec(&path, b"longer than sent");
    let status = push(&agent, short, b"longer").await.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert_eq!(names(&agent.path("files")), ["f"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_breaks_off_leaves_the_old_file_and_no_temporary_one() {
    let agent = agent();
    let path = agent.path("files/f");
    std::fs::write(&path, "old").unwrap();
    let content = vec![1u8; 1 << 20];
    let (sender, receiver) = mpsc::channel(4);
    sender.send(header(spec(&path, &content))).await.unwrap();
    sender.send(data(&content[..64 << 10])).await.unwrap();
    let mut client = agent.controller().await;
    let upload = tokio::spawn(async move { client.push(ReceiverStream::new(receiver)).await });
    let files = agent.path("files");
    let started = poll_until(PATIENCE, || names(&files).len() == 2);
    assert!(started, "no temporary file appeared: {:?}", names(&files));
    // The controller dies: its request stream is reset mid-upload.
    upload.abort();
    drop(sender);
    let cleaned = poll_until(PATIENCE, || names(&files) == ["f"]);
    assert!(cleaned, "left behind: {:?}\n{}", names(&files), agent.log());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_key_is_neither_fetched_nor_overwritten() {
    // The whole agent directory is a root here, its key included.
    let agent = Agent::start(Options {
        extra: "push_roots = [\".\"]",
        ..Options::default()
    });
    let key = agent.path("agent.key");
    let before = std::fs::read(&key).unwrap();
    let mut client = agent.controller().await;
    let fetched = client
        .fetch(pb::FetchRequest {
            execution_id: "test-fetch".to_string(),
            path: key.display().to_string(),
        })
        .await
        .expect_err("the key is refused");
    assert_eq!(fetched.code(), Code::PermissionDenied, "{fetched:?}");
    assert!(fetched.message().contains("private key"), "{fetched:?}");
    let status = push(&agent, spec(&key, b"x"), b"x").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(std::fs::read(&key).unwrap(), before);
    // Under another name: a hard link to the key is the key.
    let hard = agent.path("hard");
    std::fs::hard_link(&key, &hard).unwrap();
    let fetched = client
        .fetch(pb::FetchRequest {
            execution_id: "test-fetch-2".to_string(),
            path: hard.display().to_string(),
        })
        .await
        .expect_err("a hard link to the key is refused");
    assert_eq!(fetched.code(), Code::PermissionDenied, "{fetched:?}");
    // Nor is its checksum told, under either name.
    for path in [&key, &hard] {
        let query = StatQuery {
            path: path.display().to_string(),
            size: None,
            follow_links: false,
        };
        let status = client
            .stat(pb::StatRequest {
                queries: vec![query.into()],
            })
            .await
            .expect_err("Stat of the key is refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_nothing_as_root_refuses_file_work() {
    let agent = Agent::start(Options {
        extra: "push_roots = [\"files\"]\n[session]\nallow_root = false",
        ..Options::default()
    });
    std::fs::create_dir(agent.path("files")).unwrap();
    let path = agent.path("files/f");
    let status = push(&agent, spec(&path, b"x"), b"x").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("allow_root"), "{status:?}");
    let mut client = agent.controller().await;
    let query = StatQuery {
        path: path.display().to_string(),
        size: None,
        follow_links: false,
    };
    let stat = client
        .stat(pb::StatRequest {
            queries: vec![query.into()],
        })
        .await
        .unwrap_err();
    assert_eq!(stat.code(), Code::PermissionDenied, "{stat:?}");
    assert!(names(&agent.path("files")).is_empty());
}
