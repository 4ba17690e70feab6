//! The gRPC side of `Stat`, `Push` and `Fetch`: reading the request, running the file
//! operations ([`crate::files`]) on the blocking pool, streaming, and the audit records.
//!
//! Audit records (target `audit`), paths with Rust's debug quoting so that a newline in one
//! cannot forge a record: `stat` (peer, how many paths); `push started` / `push ended` (peer,
//! execution id, path, size, SHA-256, mode, owner; then the backup or the failure) and `push
//! refused`; `fetch started` / `fetch ended` and `fetch refused`. A push or a fetch holds one
//! of the agent's execution slots (`max_concurrent_execs`) while it runs. The agent reads and
//! writes files as its own user (root), whatever user the controller runs commands as; an agent
//! configured to do nothing as root (`session.allow_root = false`) refuses all three.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use volley_common::transfer::{FetchEvent, FetchSpec, PushSpec, StatQuery};
use volley_proto::pb;

use crate::exec::EVENT_QUEUE;
use crate::files::{self, CHUNK_BYTES, FileError};
use crate::service::{AUDIT, Peer, ServiceContext};

pub type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchChunk, Status>> + Send>>;

/// Runs a blocking file operation on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|error| error.status()),
        Err(error) => Err(Status::internal(format!(
            "a file operation failed: {error}"
        ))),
    }
}

/// Files are read and written by the agent's user (root): an agent that may run nothing as
/// root (`session.allow_root = false`) does no file work either.
fn allowed(context: &ServiceContext) -> Result<(), Status> {
    if context.session.borrow().allow_root {
        return Ok(());
    }
    Err(Status::permission_denied(
        "this agent does nothing as root (session.allow_root = false), and it reads and writes \
         files as root",
    ))
}

fn slot(slots: &Arc<Semaphore>, context: &ServiceContext) -> Result<OwnedSemaphorePermit, Status> {
    if context.stop.is_cancelled() {
        return Err(Status::unavailable("the agent is stopping"));
    }
    context.check_audit()?;
    slots.clone().try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!(
            "the agent is running its limit of {} executions",
            context.limits.max_concurrent_execs
        ))
    })
}

pub async fn stat(
    context: &ServiceContext,
    request: Request<pb::StatRequest>,
) -> Result<Response<pb::StatResponse>, Status> {
    let peer = Peer::of(&request)?;
    allowed(context)?;
    let queries: Vec<StatQuery> = request
        .into_inner()
        .queries
        .into_iter()
        .map(StatQuery::from)
        .collect();
    tracing::info!(target: AUDIT, peer = %peer.identity, address = %peer.address(), paths = queries.len(), "stat");
    let (roots, checksums) = (context.push_roots.clone(), context.checksums.clone());
    let states = blocking(move || files::stat(&roots, &checksums, &queries)).await?;
    Ok(Response::new(pb::StatResponse {
        states: states.into_iter().map(pb::PathState::from).collect(),
    }))
}

pub async fn push(
    context: &ServiceContext,
    slots: &Arc<Semaphore>,
    request: Request<Streaming<pb::PushRequest>>,
) -> Result<Response<pb::PushResult>, Status> {
    let peer = Peer::of(&request)?;
    let mut stream = request.into_inner();
    let refuse = |path: &str, status: Status| {
        tracing::warn!(target: AUDIT, peer = %peer.identity, address = %peer.address(), ?path, reason = ?status.message(), "push refused");
        status
    };
    let header = match stream.message().await? {
        Some(pb::PushRequest {
            part: Some(pb::push_request::Part::Header(header)),
        }) => header,
        _ => {
            return Err(refuse(
                "",
                Status::invalid_argument("a push starts with its header"),
            ));
        }
    };
    let spec = PushSpec::try_from(header)
        .map_err(|error| refuse("", Status::invalid_argument(error.to_string())))?;
    allowed(context).map_err(|status| refuse(&spec.path, status))?;
    let _slot = slot(slots, context).map_err(|status| refuse(&spec.path, status))?;
    let (roots, limit, checked) = (
        context.push_roots.clone(),
        context.limits.max_file_bytes,
        spec.clone(),
    );
    let (mut prepared, file) = blocking(move || files::prepare(&roots, limit, &checked))
        .await
        .map_err(|status| refuse(&spec.path, status))?;
    tracing::info!(
        target: AUDIT,
        peer = %peer.identity,
        address = %peer.address(),
        execution_id = ?spec.execution_id,
        path = ?spec.path,
        size = spec.size,
        sha256 = %spec.sha256,
        mode = format!("{:04o}", spec.mode),
        owner = ?spec.owner.chown_spec(),
        "push started"
    );
    let ended = |result: &Result<Option<String>, Status>| match result {
        Ok(backup) => {
            tracing::info!(target: AUDIT, peer = %peer.identity, execution_id = ?spec.execution_id, path = ?spec.path, ?backup, "push ended")
        }
        Err(status) => {
            tracing::warn!(target: AUDIT, peer = %peer.identity, execution_id = ?spec.execution_id, path = ?spec.path, reason = ?status.message(), "push ended")
        }
    };
    // `prepared` removes its temporary file when dropped: on every early return below, and
    // when the stream breaks and this future is dropped.
    let received = receive(context, &mut stream, file, &spec).await;
    let result = match received {
        Ok(file) => match give_owner(context, &mut prepared, &spec.path).await {
            Ok(()) => {
                let (spec, checksums) = (spec.clone(), context.checksums.clone());
                blocking(move || files::finish(&checksums, prepared, file, &spec))
                    .await
                    .map(|pushed| pushed.backup)
            }
            Err(status) => Err(status),
        },
        Err(status) => {
            drop(prepared);
            Err(status)
        }
    };
    ended(&result);
    result.map(|backup| {
        Response::new(pb::PushResult {
            backup: backup.unwrap_or_default(),
        })
    })
}

/// Gives the temporary file its owner where the agent may not: under systemd its unit refuses
/// chown(2), and a unit of systemd's does it (see [`crate::executor::Executor::chown`]).
/// Elsewhere [`files::finish`] does it.
async fn give_owner(
    context: &ServiceContext,
    prepared: &mut files::Prepared,
    path: &str,
) -> Result<(), Status> {
    let owner = prepared.owner();
    if owner == (None, None) {
        return Ok(());
    }
    match context.executor.chown(prepared.temp.path(), owner).await {
        Ok(true) => {
            prepared.owner_given();
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(reason) => Err(Status::aborted(format!("{path}: {reason}"))),
    }
}

/// Writes the content to the temporary file, checking its size and SHA-256 against the
/// header's; returns the file, synced to nothing yet.
///
/// Each chunk is hashed and written on the blocking pool, from the received buffer itself,
/// while the next one arrives.
async fn receive(
    context: &ServiceContext,
    stream: &mut Streaming<pb::PushRequest>,
    file: std::fs::File,
    spec: &PushSpec,
) -> Result<std::fs::File, Status> {
    let mut writer = Writing::Idle(Box::new(Writer {
        file,
        digest: ring::digest::Context::new(&ring::digest::SHA256),
    }));
    let mut written: u64 = 0;
    let write_error = |error: std::io::Error| {
        Status::aborted(format!("{}: {}", spec.path, files::io_reason(&error)))
    };
    let idle = |writing: Writing| async {
        match writing {
            Writing::Idle(writer) => Ok(writer),
            Writing::Busy(write) => match write.await {
                Ok((writer, Ok(()))) => Ok(writer),
                Ok((_, Err(error))) => Err(write_error(error)),
                Err(error) => Err(Status::internal(format!("a file write failed: {error}"))),
            },
        }
    };
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = context.kill.cancelled() => return Err(Status::aborted("the agent is stopping")),
        };
        match message {
            Ok(Some(pb::PushRequest {
                part: Some(pb::push_request::Part::Data(data)),
            })) => {
                written += data.len() as u64;
                if written > spec.size {
                    return Err(Status::data_loss(format!(
                        "{}: more than the {} bytes announced arrived",
                        spec.path, spec.size
                    )));
                }
                let next = idle(writer).await?;
                writer = Writing::Busy(tokio::task::spawn_blocking(move || next.write(&data)));
            }
            Ok(Some(_)) => {
                return Err(Status::invalid_argument(
                    "a push has one header, then only data",
                ));
            }
            Ok(None) => break,
            Err(status) => {
                return Err(Status::aborted(format!(
                    "{}: the upload broke off: {}",
                    spec.path,
                    status.message()
                )));
            }
        }
    }
    let writer = idle(writer).await?;
    if written != spec.size {
        return Err(Status::data_loss(format!(
            "{}: {written} bytes arrived, {} were announced",
            spec.path, spec.size
        )));
    }
    let sha256 = files::hex(writer.digest.finish().as_ref());
    if sha256 != spec.sha256 {
        return Err(Status::data_loss(format!(
            "{}: checksum mismatch: {sha256} arrived, {} was announced",
            spec.path, spec.sha256
        )));
    }
    Ok(writer.file)
}

/// The temporary file's writer: ready for the next chunk, or busy with one.
enum Writing {
    Idle(Box<Writer>),
    /// Writing a chunk on the blocking pool.
    Busy(tokio::task::JoinHandle<(Box<Writer>, std::io::Result<()>)>),
}

/// The temporary file being written, and the SHA-256 of what was written so far.
struct Writer {
    file: std::fs::File,
    digest: ring::digest::Context,
}

impl Writer {
    fn write(mut self: Box<Self>, data: &[u8]) -> (Box<Writer>, std::io::Result<()>) {
        self.digest.update(data);
        let result = self.file.write_all(data);
        (self, result)
    }
}

pub async fn fetch(
    context: &ServiceContext,
    slots: &Arc<Semaphore>,
    request: Request<pb::FetchRequest>,
) -> Result<Response<FetchStream>, Status> {
    let peer = Peer::of(&request)?;
    let spec = FetchSpec::from(request.into_inner());
    let refuse = |status: Status| {
        tracing::warn!(target: AUDIT, peer = %peer.identity, address = %peer.address(), path = ?spec.path, reason = ?status.message(), "fetch refused");
        status
    };
    allowed(context).map_err(refuse)?;
    let slot = slot(slots, context).map_err(refuse)?;
    let (roots, limit, path) = (
        context.push_roots.clone(),
        context.limits.max_file_bytes,
        spec.path.clone(),
    );
    let (file, size, mode) = blocking(move || files::open_for_fetch(&roots, limit, &path))
        .await
        .map_err(refuse)?;
    tracing::info!(target: AUDIT, peer = %peer.identity, address = %peer.address(), execution_id = ?spec.execution_id, path = ?spec.path, size, "fetch started");
    let (events, receiver) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(async move {
        let result = send(file, size, mode, &events).await;
        match &result {
            Ok(sent) => {
                tracing::info!(target: AUDIT, peer = %peer.identity, execution_id = ?spec.execution_id, path = ?spec.path, sent, "fetch ended")
            }
            Err(reason) => {
                tracing::warn!(target: AUDIT, peer = %peer.identity, execution_id = ?spec.execution_id, path = ?spec.path, ?reason, "fetch ended")
            }
        }
        if let Err(reason) = result {
            let _ = events
                .send(Err(Status::aborted(format!("{}: {reason}", spec.path))))
                .await;
        }
        drop(slot);
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
}

/// Streams the file with backpressure; returns the bytes sent, or why it stopped.
async fn send(
    file: std::fs::File,
    size: u64,
    mode: u32,
    events: &mpsc::Sender<Result<pb::FetchChunk, Status>>,
) -> Result<u64, String> {
    let gone = || "the controller went away".to_string();
    let chunk = |event: FetchEvent| Ok(pb::FetchChunk::from(event));
    events
        .send(chunk(FetchEvent::Started { size, mode }))
        .await
        .map_err(|_| gone())?;
    let mut reader = tokio::fs::File::from_std(file);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut sent: u64 = 0;
    loop {
        let mut buffer = vec![0; CHUNK_BYTES];
        let read = reader
            .read(&mut buffer)
            .await
            .map_err(|error| files::io_reason(&error))?;
        if read == 0 {
            break;
        }
        buffer.truncate(read);
        digest.update(&buffer);
        sent += read as u64;
        events
            .send(chunk(FetchEvent::Data(buffer)))
            .await
            .map_err(|_| gone())?;
    }
    let sha256 = files::hex(digest.finish().as_ref());
    events
        .send(chunk(FetchEvent::Ended { sha256, size: sent }))
        .await
        .map_err(|_| gone())?;
    Ok(sent)
}
