//! Files over the agent: `Stat`, `Push` (client streaming, paced by HTTP/2 flow control) and
//! `Fetch` (server streaming) on the host's one mTLS connection. The agent enforces
//! `push_roots` and its size limit; its refusal is the host's reason, word for word.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use volley_common::transfer::{FetchEvent, FetchSpec, FileState, PushSpec, StatQuery};
use volley_proto::pb;
use volley_proto::pb::agent_client::AgentClient;

use super::local::{Content, LocalFile};

/// Bytes per `Push` message: far below the agent's smallest message limit (128 KiB).
const CHUNK: usize = 64 << 10;

pub async fn stat(
    client: &mut AgentClient<Channel>,
    queries: &[StatQuery],
) -> Result<Vec<FileState>, String> {
    let request = pb::StatRequest {
        queries: queries.iter().cloned().map(pb::StatQuery::from).collect(),
    };
    let states = client
        .stat(request)
        .await
        .map_err(|status| status.message().to_string())?
        .into_inner()
        .states;
    if states.len() != queries.len() {
        return Err(format!(
            "the agent described {} paths for {}",
            states.len(),
            queries.len()
        ));
    }
    states
        .into_iter()
        .map(|state| {
            FileState::try_from(state)
                .map_err(|error| format!("bad answer from the agent: {error}"))
        })
        .collect()
}

/// Sends one file; returns the backup the agent kept, if any.
pub async fn put(
    client: &mut AgentClient<Channel>,
    file: &LocalFile,
    spec: &PushSpec,
) -> Result<Option<String>, String> {
    let mut content = Chunks::open(file)
        .await
        .map_err(|error| format!("{}: {error}", file.local.display()))?;
    let (messages, receiver) = mpsc::channel(4);
    let header = pb::PushRequest {
        part: Some(pb::push_request::Part::Header(spec.clone().into())),
    };
    // Feeds the request stream as HTTP/2 flow control takes it; ends early (and the agent
    // refuses the short file) when the local file cannot be read or the call ended.
    let feed = async move {
        messages.send(header).await.ok();
        while let Some(chunk) = content.next().await? {
            let data = pb::PushRequest {
                part: Some(pb::push_request::Part::Data(chunk)),
            };
            if messages.send(data).await.is_err() {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let call = client.push(ReceiverStream::new(receiver));
    tokio::pin!(feed, call);
    let mut fed: Option<std::io::Result<()>> = None;
    let result = loop {
        tokio::select! {
            result = &mut call => break result,
            outcome = &mut feed, if fed.is_none() => fed = Some(outcome),
        }
    };
    if let Some(Err(error)) = fed {
        return Err(format!("{}: {error}", file.local.display()));
    }
    let pushed = result.map_err(|status| status.message().to_string())?;
    Ok(volley_common::transfer::Pushed::from(pushed.into_inner()).backup)
}

/// A file's content in chunks of at most [`CHUNK`] bytes: slices of the copy in memory, or
/// reads of the file on disk.
enum Chunks {
    Memory(Bytes),
    Disk(tokio::fs::File),
}

impl Chunks {
    async fn open(file: &LocalFile) -> std::io::Result<Chunks> {
        Ok(match &file.content {
            Content::Memory(bytes) => Chunks::Memory(bytes.clone()),
            Content::Disk => Chunks::Disk(tokio::fs::File::open(&file.local).await?),
        })
    }

    async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        match self {
            Chunks::Memory(rest) if rest.is_empty() => Ok(None),
            Chunks::Memory(rest) => Ok(Some(rest.split_to(CHUNK.min(rest.len())))),
            Chunks::Disk(file) => {
                let mut chunk = BytesMut::with_capacity(CHUNK);
                match file.read_buf(&mut chunk).await? {
                    0 => Ok(None),
                    _ => Ok(Some(chunk.freeze())),
                }
            }
        }
    }
}

/// Streams a remote file into `out`; returns its SHA-256 as the agent computed it.
pub async fn fetch(
    client: &mut AgentClient<Channel>,
    spec: FetchSpec,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<String, String> {
    let mut stream = client
        .fetch(pb::FetchRequest::from(spec))
        .await
        .map_err(|status| status.message().to_string())?
        .into_inner();
    let mut received: u64 = 0;
    loop {
        let chunk = stream
            .message()
            .await
            .map_err(|status| status.message().to_string())?
            .ok_or("the agent's stream ended before the file did")?;
        match FetchEvent::try_from(chunk).map_err(|error| format!("bad message: {error}"))? {
            FetchEvent::Started { .. } => {}
            FetchEvent::Data(data) => {
                received += data.len() as u64;
                out.write_all(&data)
                    .await
                    .map_err(|error| format!("writing the local copy: {error}"))?;
            }
            FetchEvent::Ended { sha256, size } => {
                if size != received {
                    return Err(format!("{received} bytes arrived, the agent sent {size}"));
                }
                return Ok(sha256);
            }
        }
    }
}
