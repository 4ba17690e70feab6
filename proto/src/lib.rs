//! The Volley agent protocol: the code generated from `proto/agent.proto`, and the conversions
//! between its prost types and `volley-common`'s plain types (`Exec` and `Info` here; `Stat`,
//! `Push` and `Fetch` in `transfer.rs`).
//!
//! Invariant: only this crate knows prost types. Everything that crosses the wire is converted
//! here, with `From` towards the wire and `TryFrom` (typed [`ProtoError`]) from it, since a peer
//! can send a message with a required field missing.
#![forbid(unsafe_code)]

mod transfer;

use std::time::Duration;

use volley_common::exec::{
    AgentInfo, AgentLimits, AttachSpec, ExecEvent, ExecSpec, ExitStatus, Exited, Program,
};

/// The generated messages, client and server.
#[allow(clippy::all, unused_qualifications)]
pub mod pb {
    tonic::include_proto!("volley.agent.v1");
}

/// A message from the wire that does not make sense.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("{message} has no {field}")]
    Missing {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message}.{field}: {reason}")]
    Invalid {
        message: &'static str,
        field: &'static str,
        reason: String,
    },
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// 0 on the wire means "none".
fn optional_millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

impl From<ExecSpec> for pb::ExecRequest {
    fn from(spec: ExecSpec) -> pb::ExecRequest {
        pb::ExecRequest {
            execution_id: spec.execution_id,
            program: Some(match spec.program {
                Program::Shell(line) => pb::exec_request::Program::Shell(line),
                Program::Argv(args) => pb::exec_request::Program::Argv(pb::Argv { args }),
            }),
            env: spec.env.into_iter().collect(),
            working_dir: spec.working_dir.unwrap_or_default(),
            timeout_ms: spec.timeout.map_or(0, millis),
            max_output_bytes: spec.max_output.unwrap_or(0),
            user: spec.user.unwrap_or_default(),
            become_root: spec.become_root,
            keep_output_bytes: spec.keep_output.unwrap_or(0),
            stdin: spec.stdin,
        }
    }
}

impl TryFrom<pb::ExecRequest> for ExecSpec {
    type Error = ProtoError;

    fn try_from(request: pb::ExecRequest) -> Result<ExecSpec, ProtoError> {
        let program = match request.program {
            Some(pb::exec_request::Program::Shell(line)) if !line.trim().is_empty() => {
                Program::Shell(line)
            }
            Some(pb::exec_request::Program::Argv(argv)) if !argv.args.is_empty() => {
                Program::Argv(argv.args)
            }
            Some(_) => {
                return Err(ProtoError::Invalid {
                    message: "ExecRequest",
                    field: "program",
                    reason: "empty command".to_string(),
                });
            }
            None => {
                return Err(ProtoError::Missing {
                    message: "ExecRequest",
                    field: "program",
                });
            }
        };
        Ok(ExecSpec {
            execution_id: request.execution_id,
            program,
            env: request.env.into_iter().collect(),
            working_dir: (!request.working_dir.is_empty()).then_some(request.working_dir),
            timeout: optional_millis(request.timeout_ms),
            max_output: (request.max_output_bytes > 0).then_some(request.max_output_bytes),
            user: (!request.user.is_empty()).then_some(request.user),
            become_root: request.become_root,
            keep_output: (request.keep_output_bytes > 0).then_some(request.keep_output_bytes),
            stdin: request.stdin,
        })
    }
}

impl From<AttachSpec> for pb::AttachRequest {
    fn from(spec: AttachSpec) -> pb::AttachRequest {
        pb::AttachRequest {
            execution_id: spec.execution_id,
            stdout_offset: spec.stdout_offset,
            stderr_offset: spec.stderr_offset,
        }
    }
}

impl TryFrom<pb::AttachRequest> for AttachSpec {
    type Error = ProtoError;

    fn try_from(request: pb::AttachRequest) -> Result<AttachSpec, ProtoError> {
        if request.execution_id.is_empty() {
            return Err(ProtoError::Missing {
                message: "AttachRequest",
                field: "execution_id",
            });
        }
        Ok(AttachSpec {
            execution_id: request.execution_id,
            stdout_offset: request.stdout_offset,
            stderr_offset: request.stderr_offset,
        })
    }
}

impl From<ExecEvent> for pb::ExecEvent {
    fn from(event: ExecEvent) -> pb::ExecEvent {
        use pb::exec_event::Event;
        let event = match event {
            ExecEvent::Started { pid } => Event::Started(pb::Started { pid }),
            ExecEvent::Stdout(data) => Event::Stdout(data),
            ExecEvent::Stderr(data) => Event::Stderr(data),
            ExecEvent::Exited(exited) => Event::Exited(pb::Exited {
                status: Some(match exited.status {
                    ExitStatus::Code(code) => pb::exited::Status::Code(code),
                    ExitStatus::Signal(name) => pb::exited::Status::Signal(name),
                }),
                duration_ms: millis(exited.duration),
                timed_out: exited.timed_out,
                stdout_bytes: exited.stdout_bytes,
                stderr_bytes: exited.stderr_bytes,
                stdout_truncated: exited.stdout_truncated,
                stderr_truncated: exited.stderr_truncated,
                cancelled: exited.cancelled,
            }),
        };
        pb::ExecEvent { event: Some(event) }
    }
}

impl TryFrom<pb::ExecEvent> for ExecEvent {
    type Error = ProtoError;

    fn try_from(event: pb::ExecEvent) -> Result<ExecEvent, ProtoError> {
        use pb::exec_event::Event;
        Ok(
            match event.event.ok_or(ProtoError::Missing {
                message: "ExecEvent",
                field: "event",
            })? {
                Event::Started(started) => ExecEvent::Started { pid: started.pid },
                Event::Stdout(data) => ExecEvent::Stdout(data),
                Event::Stderr(data) => ExecEvent::Stderr(data),
                Event::Exited(exited) => {
                    let status = match exited.status {
                        Some(pb::exited::Status::Code(code)) => ExitStatus::Code(code),
                        Some(pb::exited::Status::Signal(name)) if !name.is_empty() => {
                            ExitStatus::Signal(name)
                        }
                        Some(pb::exited::Status::Signal(_)) => {
                            return Err(ProtoError::Invalid {
                                message: "Exited",
                                field: "signal",
                                reason: "empty signal name".to_string(),
                            });
                        }
                        None => {
                            return Err(ProtoError::Missing {
                                message: "Exited",
                                field: "status",
                            });
                        }
                    };
                    ExecEvent::Exited(Exited {
                        status,
                        duration: Duration::from_millis(exited.duration_ms),
                        timed_out: exited.timed_out,
                        stdout_bytes: exited.stdout_bytes,
                        stderr_bytes: exited.stderr_bytes,
                        stdout_truncated: exited.stdout_truncated,
                        stderr_truncated: exited.stderr_truncated,
                        cancelled: exited.cancelled,
                    })
                }
            },
        )
    }
}

impl From<AgentInfo> for pb::AgentInfo {
    fn from(info: AgentInfo) -> pb::AgentInfo {
        pb::AgentInfo {
            version: info.version,
            hostname: info.hostname,
            os: info.os,
            uptime_seconds: info.uptime.as_secs(),
            limits: Some(pb::Limits {
                max_concurrent_execs: info.limits.max_concurrent_execs,
                // Output is never capped by the agent any more; the field stays for old peers.
                max_output_bytes: 0,
                max_message_bytes: info.limits.max_message_bytes,
                max_concurrent_streams: info.limits.max_concurrent_streams,
                max_timeout_ms: info.limits.max_timeout.map_or(0, millis),
                max_file_bytes: info.limits.max_file_bytes.unwrap_or(0),
            }),
            pid: info.pid.unwrap_or(0),
        }
    }
}

impl TryFrom<pb::AgentInfo> for AgentInfo {
    type Error = ProtoError;

    fn try_from(info: pb::AgentInfo) -> Result<AgentInfo, ProtoError> {
        let limits = info.limits.ok_or(ProtoError::Missing {
            message: "AgentInfo",
            field: "limits",
        })?;
        Ok(AgentInfo {
            version: info.version,
            hostname: info.hostname,
            os: info.os,
            uptime: Duration::from_secs(info.uptime_seconds),
            limits: AgentLimits {
                max_concurrent_execs: limits.max_concurrent_execs,
                max_message_bytes: limits.max_message_bytes,
                max_concurrent_streams: limits.max_concurrent_streams,
                max_timeout: optional_millis(limits.max_timeout_ms),
                max_file_bytes: (limits.max_file_bytes != 0).then_some(limits.max_file_bytes),
            },
            pid: (info.pid != 0).then_some(info.pid),
        })
    }
}

#[cfg(test)]
mod tests;
