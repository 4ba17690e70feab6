//! `volley push` on one reached host ([`host`]): look at every destination, decide what
//! differs, write those files one by one, report, and run `--then` if anything changed.
//!
//! The same flow runs over both transports; only the primitives differ ([`Files`]). A file is
//! either fully in place or not at all: the uploads are atomic on the host, and whatever was
//! replaced before a failure is still recorded as changed.

use bytes::Bytes;
use volley_common::outcome::Outcome;
use volley_common::transfer::{PushSpec, StatQuery};

use super::decide::{self, Decision, Flags, Written};
use super::host::{self, Files, HostWork};
use super::local::LocalFile;
use crate::event::Stream;
use crate::transport::ssh::sleep_until;
use crate::transport::{Job, RunLimits};

/// One push, shared by every host of the run.
pub struct PushOperation {
    pub files: Vec<LocalFile>,
    pub flags: Flags,
    pub then: Option<String>,
    pub then_owed: super::ThenOwed,
}

/// Why a host's push stopped before its end.
enum Stop {
    Failed { step: &'static str, reason: String },
    Outcome(Outcome),
}

impl HostWork for PushOperation {
    /// Compare, write, report, then `--then`: the host's outcome.
    async fn on_host(
        &self,
        files: &mut Files<'_>,
        job: &mut Job<'_>,
        deadline: tokio::time::Instant,
    ) -> Outcome {
        let mut written: Vec<Written> = Vec::new();
        let mut unchanged: Vec<&str> = Vec::new();
        let mut compared = false;
        let result = {
            let work = self.write_files(files, job, &mut written, &mut unchanged, &mut compared);
            tokio::select! {
                result = work => result,
                () = sleep_until(Some(deadline)) => Err(Stop::Outcome(Outcome::operation_timeout("push", job.limits.command_timeout, host::DEFAULT_LIMIT))),
                () = job.cancel.cancelled() => Err(Stop::Outcome(Outcome::Cancelled)),
            }
        };
        if compared {
            job.output
                .record_changed(written.iter().map(|file| file.remote.clone()).collect());
        }
        if let Err(stop) = result {
            return match stop {
                Stop::Failed { step, reason } => Outcome::StepFailed {
                    step: step.to_string(),
                    reason,
                },
                Stop::Outcome(outcome) => outcome,
            };
        }
        let owed = self.then.is_some()
            && written.is_empty()
            && self.then_owed.hosts.contains(&job.host.name);
        let mut line = decide::line(&written, &unchanged);
        if owed {
            line.push_str(&format!(
                "; --then runs again: it did not complete in run {}",
                self.then_owed.by
            ));
        }
        job.output
            .write(Stream::Stdout, Bytes::from(format!("{line}\n")))
            .await;
        match &self.then {
            Some(then) if !written.is_empty() || owed => {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                let then_job = Job {
                    host: job.host,
                    command: then,
                    limits: RunLimits {
                        connect_timeout: job.limits.connect_timeout,
                        command_timeout: Some(remaining),
                    },
                    output: &mut *job.output,
                    stdin: None,
                    cancel: job.cancel.clone(),
                    admission: job.admission,
                    execution_id: job.execution_id,
                };
                files.run(then_job).await
            }
            _ => Outcome::Succeeded,
        }
    }
}

impl PushOperation {
    async fn write_files<'f>(
        &'f self,
        files: &mut Files<'_>,
        job: &Job<'_>,
        written: &mut Vec<Written>,
        unchanged: &mut Vec<&'f str>,
        compared: &mut bool,
    ) -> Result<(), Stop> {
        let queries: Vec<StatQuery> = self
            .files
            .iter()
            .map(|file| StatQuery {
                path: file.remote.clone(),
                size: Some(file.size),
                follow_links: false,
            })
            .collect();
        let probe = |reason| Stop::Failed {
            step: "probe",
            reason,
        };
        let states = files.stat(&queries).await.map_err(probe)?;
        let mut writes = Vec::new();
        for (file, state) in self.files.iter().zip(&states) {
            match decide::decide(file, &self.flags, state).map_err(probe)? {
                Decision::Unchanged => unchanged.push(&file.remote),
                Decision::Write(write) => writes.push((file, write)),
            }
        }
        *compared = true;
        for (file, _) in &writes {
            files
                .check_size(&file.remote, file.size)
                .map_err(|reason| Stop::Failed {
                    step: "upload",
                    reason,
                })?;
        }
        let execution_id = files.execution_id(job);
        for (file, write) in writes {
            let spec = PushSpec {
                execution_id: execution_id.clone(),
                path: file.remote.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
                mode: write.mode,
                owner: write.owner,
                create_below: file.create_below.clone(),
                backup_suffix: self.flags.backup_suffix.clone(),
            };
            let backup = files
                .put(file, &spec)
                .await
                .map_err(|reason| Stop::Failed {
                    step: "upload",
                    reason: host::prefixed(&file.remote, reason),
                })?;
            written.push(Written {
                remote: file.remote.clone(),
                reasons: write.reasons,
                backup,
            });
        }
        Ok(())
    }
}
