//! `volley fetch` on one reached host ([`host`]): every remote file comes back into
//! `DIR/HOST/PATH` (`out/web01/etc/nginx/nginx.conf`), written to a hidden temporary file beside
//! it, checked against the host's SHA-256, and renamed into place, so that a local copy is
//! whole or absent. Local copies are made 0600: what they hold is the hosts' business.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use volley_common::outcome::Outcome;
use volley_common::transfer::{FetchSpec, FileState, StatQuery};

use super::host::{self, Files, HostWork};
use crate::event::Stream;
use crate::transport::Job;
use crate::transport::ssh::sleep_until;

/// One fetch, shared by every host of the run.
pub struct FetchOperation {
    /// Absolute, normalised.
    pub remotes: Vec<String>,
    pub dir: PathBuf,
}

impl HostWork for FetchOperation {
    async fn on_host(
        &self,
        files: &mut Files<'_>,
        job: &mut Job<'_>,
        deadline: tokio::time::Instant,
    ) -> Outcome {
        let work = self.fetch_all(files, job);
        let result = tokio::select! {
            result = work => result,
            () = sleep_until(Some(deadline)) => return Outcome::operation_timeout("fetch", job.limits.command_timeout, host::DEFAULT_LIMIT),
            () = job.cancel.cancelled() => return Outcome::Cancelled,
        };
        match result {
            Ok(line) => {
                job.output
                    .write(Stream::Stdout, Bytes::from(format!("{line}\n")))
                    .await;
                Outcome::Succeeded
            }
            Err((step, reason)) => Outcome::StepFailed {
                step: step.to_string(),
                reason,
            },
        }
    }
}

impl FetchOperation {
    async fn fetch_all(
        &self,
        files: &mut Files<'_>,
        job: &Job<'_>,
    ) -> Result<String, (&'static str, String)> {
        let name = &job.host.name;
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(("fetch", format!("'{name}' cannot name a local directory")));
        }
        let host_dir = self.dir.join(name);
        let queries: Vec<StatQuery> = self
            .remotes
            .iter()
            .map(|path| StatQuery {
                path: path.clone(),
                size: None,
                follow_links: true,
            })
            .collect();
        let states = files
            .stat(&queries)
            .await
            .map_err(|reason| ("probe", reason))?;
        // Every file must be there before any local copy is replaced.
        let mut found = Vec::with_capacity(states.len());
        for (remote, state) in self.remotes.iter().zip(states) {
            match state {
                FileState::File(facts) => found.push((remote, facts)),
                FileState::Missing => return Err(("fetch", format!("{remote}: no such file"))),
                FileState::Other { kind } => {
                    return Err(("fetch", format!("{remote} is a {kind}, not a file")));
                }
            }
        }
        let mut fetched = Vec::new();
        for (remote, facts) in found {
            let local = host_dir.join(remote.trim_start_matches('/'));
            let spec = FetchSpec {
                execution_id: files.execution_id(job),
                path: remote.clone(),
            };
            let size = fetch_one(files, spec, &local, facts.size, facts.sha256)
                .await
                .map_err(|reason| ("fetch", host::prefixed(remote, reason)))?;
            fetched.push(format!("{remote} ({size} bytes)"));
        }
        Ok(format!(
            "fetched: {} into {}",
            fetched.join(", "),
            host_dir.display()
        ))
    }
}

/// One file into `local`, whole or not at all; its size.
async fn fetch_one(
    files: &mut Files<'_>,
    spec: FetchSpec,
    local: &Path,
    probed_size: u64,
    probed: Option<String>,
) -> Result<u64, String> {
    let directory = local.parent().unwrap_or(Path::new("."));
    let local_error = |error: std::io::Error| format!("{}: {error}", local.display());
    tokio::fs::create_dir_all(directory)
        .await
        .map_err(local_error)?;
    let name = local
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.volley-"))
        .tempfile_in(directory)
        .map_err(local_error)?;
    let (file, temp_path) = temp.into_parts();
    let mut out = Hashing::new(tokio::fs::File::from_std(file));
    let sent = files.fetch(spec, probed_size, &mut out).await?;
    out.flush().await.map_err(local_error)?;
    let (received, size) = out.finish();
    let expected = sent.or(probed).unwrap_or_default();
    if received != expected {
        return Err(format!(
            "the copy's SHA-256 is {received}, the host's {expected}: it changed while it was read"
        ));
    }
    temp_path
        .persist(local)
        .map_err(|error| local_error(error.error))?;
    Ok(size)
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    digest: ring::digest::Context,
    written: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            written: 0,
        }
    }

    /// The SHA-256 (lower-case hex) and size of everything written.
    fn finish(self) -> (String, u64) {
        let digest = self.digest.finish();
        (
            data_encoding::HEXLOWER.encode(digest.as_ref()),
            self.written,
        )
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Hashing<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(context, buffer);
        if let Poll::Ready(Ok(count)) = polled {
            self.digest.update(&buffer[..count]);
            self.written += count as u64;
        }
        polled
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}
