//! JSON mode: one JSON object per host (JSON Lines) on stdout, written as each host finishes.
//!
//! The keys and their order are a documented interface for scripts; change them only on purpose.

use std::borrow::Cow;
use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;
use volley_common::outcome::{Fallback, HostReport, Outcome, TransportKind};

/// One host's line. Field order is the key order of the output.
#[derive(Serialize)]
struct Record<'a> {
    host: &'a str,
    /// None for a host that never started.
    transport: Option<TransportKind>,
    outcome: &'static str,
    exit_code: Option<u32>,
    signal: Option<&'a str>,
    reason: Option<String>,
    connect_ms: Option<f64>,
    run_ms: Option<f64>,
    total_ms: f64,
    stdout: Cow<'a, str>,
    stderr: Cow<'a, str>,
    stdout_bytes: u64,
    stderr_bytes: u64,
    stdout_truncated: bool,
    stderr_truncated: bool,
    /// The rollout batch, from 1; 1 for a run without `--batch`.
    batch: usize,
    /// Connection attempts: more than 1 when `--retries` retried a connect-phase failure, 0
    /// for a host that never started (skipped, or cancelled before its turn).
    attempts: u32,
    /// `null`, or why `auto` ran the host over SSH after trying its agent:
    /// `{"reason": "agent_certificate_rejected", "detail": "TLS rejected: ..."}`.
    fallback: Option<&'a Fallback>,
    /// `volley push` only: the remote files replaced or created on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<&'a [String]>,
}

impl<'a> Record<'a> {
    fn new(report: &'a HostReport) -> Record<'a> {
        let outcome = &report.outcome;
        let exit_code = match outcome {
            Outcome::Succeeded => Some(0),
            Outcome::NonZeroExit { code } => Some(*code),
            _ => None,
        };
        let signal = match outcome {
            Outcome::Signalled { signal } => Some(signal.as_str()),
            _ => None,
        };
        Record {
            host: &report.host,
            transport: (report.attempts > 0).then_some(report.transport),
            outcome: outcome.kind(),
            exit_code,
            signal,
            reason: (!outcome.is_success()).then(|| outcome.to_string()),
            connect_ms: report.timings.connect.map(millis),
            run_ms: report.timings.run.map(millis),
            total_ms: millis(report.timings.total),
            stdout: String::from_utf8_lossy(&report.stdout.kept),
            stderr: String::from_utf8_lossy(&report.stderr.kept),
            stdout_bytes: report.stdout.total_bytes,
            stderr_bytes: report.stderr.total_bytes,
            stdout_truncated: report.stdout.truncated(),
            stderr_truncated: report.stderr.truncated(),
            batch: report.batch,
            attempts: report.attempts,
            fallback: report.fallback.as_ref(),
            changed: report.changed.as_deref(),
        }
    }
}

/// Milliseconds rounded to the microsecond. Dividing a whole number of microseconds by 1000
/// yields the float nearest to it, which serde_json prints with at most three decimals.
fn millis(duration: Duration) -> f64 {
    let micros = duration.as_nanos().saturating_add(500) / 1000;
    micros as f64 / 1000.0
}

/// Writes one host's object and its newline.
pub(crate) fn write_record(out: &mut impl Write, report: &HostReport) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &Record::new(report))?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use volley_common::outcome::Timings;

    use super::super::fixture::{captured, host_report};
    use super::*;

    const TIMES: &str = r#""connect_ms":12.345,"run_ms":250.0,"total_ms":262.346"#;

    fn check(report: &HostReport, expected: &str) {
        let mut out = Vec::new();
        write_record(&mut out, report).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("{expected}\n"));
    }

    #[test]
    fn a_success_has_exit_code_zero_and_its_output() {
        let report = host_report("h01", Outcome::Succeeded, b"up 3 days\n", b"");
        check(
            &report,
            &format!(
                r#"{{"host":"h01","transport":"ssh","outcome":"succeeded","exit_code":0,"signal":null,"reason":null,{TIMES},"stdout":"up 3 days\n","stderr":"","stdout_bytes":10,"stderr_bytes":0,"stdout_truncated":false,"stderr_truncated":false,"batch":1,"attempts":1,"fallback":null}}"#
            ),
        );
    }

    #[test]
    fn each_failure_kind_has_its_fields() {
        let fingerprint = "SHA256:abc".to_owned();
        let cases: Vec<(Outcome, &str)> = vec![
            (
                Outcome::NonZeroExit { code: 3 },
                r#""outcome":"non_zero_exit","exit_code":3,"signal":null,"reason":"exited with status 3""#,
            ),
            (
                Outcome::Signalled {
                    signal: "KILL".into(),
                },
                r#""outcome":"signalled","exit_code":null,"signal":"KILL","reason":"killed by signal KILL""#,
            ),
            (
                Outcome::Unreachable {
                    reason: "no route to host".into(),
                },
                r#""outcome":"unreachable","exit_code":null,"signal":null,"reason":"unreachable: no route to host""#,
            ),
            (
                Outcome::ConnectTimeout {
                    reason: String::new(),
                },
                r#""outcome":"connect_timeout","exit_code":null,"signal":null,"reason":"connect timed out""#,
            ),
            (
                Outcome::AuthFailed {
                    reason: "publickey".into(),
                },
                r#""outcome":"auth_failed","exit_code":null,"signal":null,"reason":"authentication failed: publickey""#,
            ),
            (
                Outcome::HostKeyUnknown {
                    fingerprint: fingerprint.clone(),
                },
                r#""outcome":"host_key_unknown","exit_code":null,"signal":null,"reason":"host key unknown (SHA256:abc); see --accept-new-host-keys""#,
            ),
            (
                Outcome::HostKeyChanged { fingerprint },
                r#""outcome":"host_key_changed","exit_code":null,"signal":null,"reason":"HOST KEY CHANGED (SHA256:abc): refusing to connect, check known_hosts""#,
            ),
            (
                Outcome::TlsRejected {
                    reason: "unknown issuer".into(),
                },
                r#""outcome":"tls_rejected","exit_code":null,"signal":null,"reason":"TLS rejected: unknown issuer""#,
            ),
            (
                Outcome::command_timeout(),
                r#""outcome":"command_timeout","exit_code":null,"signal":null,"reason":"command timed out and was stopped""#,
            ),
            (
                Outcome::Cancelled,
                r#""outcome":"cancelled","exit_code":null,"signal":null,"reason":"cancelled""#,
            ),
            (
                Outcome::TransportError {
                    reason: "connection lost".into(),
                },
                r#""outcome":"transport_error","exit_code":null,"signal":null,"reason":"transport error: connection lost""#,
            ),
            (
                Outcome::Skipped,
                r#""outcome":"skipped","exit_code":null,"signal":null,"reason":"skipped: the failure budget stopped the rollout before this host""#,
            ),
        ];
        for (outcome, fields) in cases {
            let report = host_report("h02", outcome, b"", b"boom\n");
            check(
                &report,
                &format!(
                    r#"{{"host":"h02","transport":"ssh",{fields},{TIMES},"stdout":"","stderr":"boom\n","stdout_bytes":0,"stderr_bytes":5,"stdout_truncated":false,"stderr_truncated":false,"batch":1,"attempts":1,"fallback":null}}"#
                ),
            );
        }
    }

    #[test]
    fn phases_that_never_began_are_null_and_truncation_is_reported() {
        let mut report = host_report(
            "h03",
            Outcome::ConnectTimeout {
                reason: String::new(),
            },
            b"",
            b"",
        );
        report.timings = Timings {
            connect: None,
            run: None,
            total: Duration::from_secs(10),
        };
        report.stdout = captured(b"abc\xff");
        report.stdout.total_bytes = 1_000_000;
        check(
            &report,
            r#"{"host":"h03","transport":"ssh","outcome":"connect_timeout","exit_code":null,"signal":null,"reason":"connect timed out","connect_ms":null,"run_ms":null,"total_ms":10000.0,"stdout":"abc�","stderr":"","stdout_bytes":1000000,"stderr_bytes":0,"stdout_truncated":true,"stderr_truncated":false,"batch":1,"attempts":1,"fallback":null}"#,
        );
    }

    #[test]
    fn a_host_that_fell_back_says_why() {
        let mut report = host_report("h04", Outcome::Succeeded, b"ok\n", b"");
        report.fallback = Some(Fallback {
            reason: volley_common::outcome::FallbackReason::AgentCertificateRejected,
            detail: "TLS rejected: invalid peer certificate: UnknownIssuer".to_string(),
        });
        check(
            &report,
            &format!(
                r#"{{"host":"h04","transport":"ssh","outcome":"succeeded","exit_code":0,"signal":null,"reason":null,{TIMES},"stdout":"ok\n","stderr":"","stdout_bytes":3,"stderr_bytes":0,"stdout_truncated":false,"stderr_truncated":false,"batch":1,"attempts":1,"fallback":{{"reason":"agent_certificate_rejected","detail":"TLS rejected: invalid peer certificate: UnknownIssuer"}}}}"#
            ),
        );
    }

    #[test]
    fn milliseconds_keep_three_decimals() {
        let cases = [
            (Duration::from_nanos(1_234_567), 1.235),
            (Duration::from_nanos(999), 0.001),
            (Duration::from_nanos(499), 0.0),
            (Duration::from_millis(2_310), 2310.0),
        ];
        for (duration, expected) in cases {
            assert_eq!(millis(duration), expected, "{duration:?}");
        }
    }
}
