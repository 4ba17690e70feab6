//! The last step of every change: the host counts as done only when the controller has reached
//! the agent over mutual TLS, and it answers as expected: `Info` gives the installed version,
//! and the certificate it serves is the one on disk.
//!
//! The agent gets [`SERVE_WITHIN`] to come up. Between attempts the supervisor is asked whether
//! the agent still runs, so an agent that dies at start fails the step at once, with its last
//! log line as the reason, instead of after the whole wait.
//!
//! Under the fallback supervisor the step also knows the pid of the agent it started (or
//! signalled), and only that process's answer counts: an agent the supervisor does not know (its
//! pid file lost, or started by hand) keeps the port, so the one just started exits at once,
//! and the old one must not be taken for it. Such a host fails, naming the other process.

use std::time::Duration;

use tokio::time::Instant;

use crate::plan::HostSpec;
use crate::transport::agent::{AgentTransport, Served};

use super::remote::{Remote, StepError};
use super::supervisor::Supervisor;

/// How long a (re)started agent has to answer over mTLS.
pub const SERVE_WITHIN: Duration = Duration::from_secs(30);
/// One attempt's limit: a loopback or LAN handshake takes milliseconds.
const ATTEMPT: Duration = Duration::from_secs(3);
const PAUSE: Duration = Duration::from_millis(200);

/// What the agent must say for the step to pass.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// `Info`'s version; `None`: any.
    pub version: Option<String>,
    /// The DER of the certificate it must serve; `None`: any that verifies.
    pub certificate: Option<Vec<u8>>,
    /// The process that must answer (`Info`'s pid): the one the fallback supervisor started or
    /// signalled; `None`: any (systemd, which refuses to start a second agent by itself).
    pub pid: Option<u32>,
}

impl Expected {
    /// The same expectation, from the process `pid` (when the supervisor knows it).
    pub fn of(&self, pid: Option<u32>) -> Expected {
        Expected {
            pid,
            ..self.clone()
        }
    }
}

/// Waits until the agent serves as `expected`. The error is the step `verify`'s failure.
pub async fn until_serving(
    agent: &AgentTransport,
    host: &HostSpec,
    remote: &Remote<'_>,
    supervisor: Supervisor,
    expected: &Expected,
) -> Result<Served, StepError> {
    let give_up = Instant::now() + SERVE_WITHIN;
    // Another process that answered in place of the expected one, by its pid.
    let mut other = None;
    let last_problem = loop {
        let progress = crate::transport::stage::Progress::default();
        let problem = match agent.probe(host, ATTEMPT, &progress).await {
            Ok(served) => match mismatch(&served, expected) {
                None => return Ok(served),
                Some(problem) => {
                    if expected.pid.is_some() && served.info.pid != expected.pid {
                        other = Some(served.info.pid);
                    }
                    problem
                }
            },
            Err(outcome) => outcome.to_string(),
        };
        if Instant::now() >= give_up {
            break format!("not within {}s: {problem}", SERVE_WITHIN.as_secs());
        }
        if remote
            .script("verify", &supervisor.check_running())
            .await
            .is_err()
        {
            let log = remote
                .script("verify", &supervisor.last_log_line())
                .await
                .unwrap_or_default();
            let log = log.trim();
            if let Some(pid) = other {
                break format!(
                    "another process ({}) holds {}: stop it first; the agent started here \
                     exited{}",
                    pid.map_or_else(|| "its pid unknown".to_string(), |pid| format!("pid {pid}")),
                    super::files::listen_address(host),
                    if log.is_empty() {
                        String::new()
                    } else {
                        format!(", its log ends: {log}")
                    }
                );
            }
            break if log.is_empty() {
                format!("the agent is not running ({problem})")
            } else {
                format!("the agent is not running; its log ends: {log}")
            };
        }
        tokio::time::sleep(PAUSE).await;
    };
    Err(StepError::new(
        "verify",
        format!("the agent did not answer over mTLS as expected: {last_problem}"),
    ))
}

fn mismatch(served: &Served, expected: &Expected) -> Option<String> {
    if let Some(version) = &expected.version
        && served.info.version != *version
    {
        return Some(format!(
            "it runs version {}, expected {version}",
            served.info.version
        ));
    }
    if let Some(certificate) = &expected.certificate
        && served.certificate != *certificate
    {
        return Some("it serves another certificate than the one installed".to_string());
    }
    if let Some(pid) = expected.pid
        && served.info.pid != Some(pid)
    {
        return Some(match served.info.pid {
            Some(other) => format!("pid {other} answers, not the agent started (pid {pid})"),
            None => format!("an agent that does not say its pid answers, not pid {pid}"),
        });
    }
    None
}
