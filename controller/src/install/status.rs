//! `volley agent status`: per host, the agent's version, whether it answers over mTLS, and when
//! its certificate expires.
//!
//! The agent is asked first (`Info`, and the certificate it serves in the handshake): a host
//! whose agent answers is reported through the agent transport, without SSH. Otherwise the host
//! is probed over SSH, which tells whether an agent is installed and runs and when the
//! certificate on disk expires; such a host fails the status step, since its agent does not
//! serve. The line is `key=value` pairs, so that scripts can read it and `--gather` groups
//! hosts that read the same (the expiry is a date, not a time).

use volley_common::outcome::Outcome;

use super::HostFailure;
use super::certificate;
use super::probe::Found;
use super::remote::StepError;
use crate::transport::agent::Served;

/// `status` of an agent that answered: its version and the certificate it serves.
pub fn answered(served: &Served) -> String {
    let expiry = match certificate::expiry(&served.certificate) {
        Some(when) => format!(
            "certificate_expires={} days_left={}",
            certificate::date(when),
            certificate::days_left(when)
        ),
        None => "certificate_expires=unknown".to_string(),
    };
    format!("version={} reachable=yes {expiry}", served.info.version)
}

/// `status` of an agent that did not answer: what SSH finds on the host, and a failure that
/// says why the agent is not serving. `user` is the SSH user, for saying that a non-root user
/// may not see root's files.
pub fn over_ssh(found: &Found, not_answering: Option<&Outcome>, user: &str) -> HostFailure {
    let parts = [
        ("binary", found.binary.is_some()),
        ("config", found.config.is_some()),
        ("ca", found.ca.is_some()),
        ("certificate", found.certificate.is_some()),
    ];
    let present: Vec<&str> = parts
        .iter()
        .filter(|(_, is)| *is)
        .map(|(name, _)| *name)
        .collect();
    // Root sees every file (another user cannot read /etc/volley): an install that stopped
    // halfway, or files left by hand, is not "no agent".
    if !found.installed() && found.root && !present.is_empty() {
        let missing: Vec<&str> = parts
            .iter()
            .filter(|(_, is)| !is)
            .map(|(name, _)| *name)
            .collect();
        return HostFailure {
            error: StepError::new(
                "status",
                format!(
                    "the agent is partly installed: {} there, no {}; `volley agent install` \
                     completes it",
                    present.join(", "),
                    missing.join(", ")
                ),
            ),
            line: Some(format!(
                "version={} reachable=no installed=partial",
                found.version.as_deref().unwrap_or("none")
            )),
        };
    }
    if !found.installed() {
        let mut reason = if found.root {
            "no agent is installed".to_string()
        } else {
            format!("no agent is installed that {user} can see (not root: give --become)")
        };
        // Something on the agent's port all the same (an agent started by hand, another
        // service): what it did there is why `volley run` falls back, and the lead to follow.
        if let Some(outcome) =
            not_answering.filter(|outcome| !matches!(outcome, Outcome::Unreachable { .. }))
        {
            reason.push_str(&format!(", but its port was not refused: {outcome}"));
        }
        return HostFailure {
            error: StepError::new("status", reason),
            line: Some("version=none reachable=no installed=no".to_string()),
        };
    }
    let expiry = found
        .certificate
        .as_deref()
        .and_then(certificate::der)
        .and_then(|der| certificate::expiry(&der))
        .map_or_else(
            || "certificate_expires=none".to_string(),
            |when| {
                format!(
                    "certificate_expires={} days_left={}",
                    certificate::date(when),
                    certificate::days_left(when)
                )
            },
        );
    HostFailure {
        error: StepError::new(
            "status",
            match not_answering {
                Some(outcome) => format!("the agent does not answer over mTLS ({outcome})"),
                None => "the agent does not answer over mTLS".to_string(),
            },
        ),
        line: Some(format!(
            "version={} reachable=no running={} {expiry}",
            found.version.as_deref().unwrap_or("unknown"),
            if found.running { "yes" } else { "no" },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_installed_agent_is_not_said_to_be_absent() {
        let none = Found {
            root: true,
            ..Found::default()
        };
        let absent = over_ssh(&none, None, "root");
        assert_eq!(
            absent.line.as_deref(),
            Some("version=none reachable=no installed=no")
        );
        let half = Found {
            binary: Some("ab12".to_string()),
            version: Some("0.1.0".to_string()),
            ca: Some("cd34".to_string()),
            ..none
        };
        let partial = over_ssh(&half, None, "root");
        assert_eq!(
            partial.line.as_deref(),
            Some("version=0.1.0 reachable=no installed=partial")
        );
        assert_eq!(
            partial.error.to_string(),
            "status: the agent is partly installed: binary, ca there, no config, \
             certificate; `volley agent install` completes it"
        );
    }

    /// Not installed where install puts it, yet something answered on the agent's port: what
    /// it did is said, not dropped; a refused port adds nothing to "no agent is installed".
    #[test]
    fn what_answers_on_the_port_of_an_agent_not_installed_is_said() {
        let none = Found {
            root: true,
            ..Found::default()
        };
        let rejected = Outcome::TlsRejected {
            reason: "agent 10.0.0.6:7731: invalid peer certificate: NotValidForName".to_string(),
        };
        let failure = over_ssh(&none, Some(&rejected), "root");
        assert_eq!(
            failure.error.to_string(),
            "status: no agent is installed, but its port was not refused: TLS rejected: agent \
             10.0.0.6:7731: invalid peer certificate: NotValidForName"
        );
        assert_eq!(
            failure.line.as_deref(),
            Some("version=none reachable=no installed=no")
        );
        let refused = Outcome::Unreachable {
            reason: "agent 10.0.0.6:7731: connection refused".to_string(),
        };
        let failure = over_ssh(&none, Some(&refused), "root");
        assert_eq!(failure.error.to_string(), "status: no agent is installed");
    }
}
