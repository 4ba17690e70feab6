//! Reading what volley printed: `--json` records, read strictly, and the `HOST: line` stream.
//!
//! The reader insists on every documented key with its documented type, so a drift in the
//! JSON format fails a test instead of passing unnoticed.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::process::{ProcessOutput, shorten};

/// Exit statuses of `volley run`, as README documents them.
pub const EXIT_SUCCESS: i32 = 0;
pub const EXIT_COMMAND_FAILED: i32 = 1;
pub const EXIT_NOT_REACHED: i32 = 2;
pub const EXIT_IN_DOUBT: i32 = 4;
pub const EXIT_USAGE: i32 = 64;
pub const EXIT_INTERRUPTED: i32 = 130;

/// The record of `host`, which must have `outcome`; fails with the whole run otherwise.
pub fn expect_outcome<'a>(
    output: &ProcessOutput,
    records: &'a BTreeMap<String, HostRecord>,
    host: &str,
    outcome: &str,
) -> &'a HostRecord {
    let record = records
        .get(host)
        .unwrap_or_else(|| panic!("no record for {host}\n{}", output.describe()));
    assert_eq!(
        record.outcome,
        outcome,
        "{host}: {record:?}\n{}",
        output.describe()
    );
    record
}

/// [`expect_outcome`], and the host must have gone through `transport`.
pub fn expect_outcome_via<'a>(
    output: &ProcessOutput,
    records: &'a BTreeMap<String, HostRecord>,
    host: &str,
    outcome: &str,
    transport: &str,
) -> &'a HostRecord {
    let record = expect_outcome(output, records, host, outcome);
    assert_eq!(
        record.transport,
        transport,
        "{host}: {record:?}\n{}",
        output.describe()
    );
    record
}

/// The hosts that have a record, in name order.
pub fn reported_hosts(records: &BTreeMap<String, HostRecord>) -> Vec<&str> {
    records.keys().map(String::as_str).collect()
}

/// One host's `--json` record.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRecord {
    pub host: String,
    /// `ssh` or `agent`; `-` for JSON's null, which a host that never started has.
    pub transport: String,
    pub outcome: String,
    pub exit_code: Option<i64>,
    pub signal: Option<String>,
    pub reason: Option<String>,
    /// Milliseconds; volley may give fractions.
    pub connect_ms: Option<f64>,
    pub run_ms: Option<f64>,
    pub total_ms: f64,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The rollout batch, from 1.
    pub batch: u64,
    /// Connection attempts; 0 for a host that never started.
    pub attempts: u64,
    /// Why `auto` ran the host over SSH after trying its agent, when it did.
    pub fallback: Option<FallbackRecord>,
    /// `volley push` only (the key is absent otherwise): the remote files changed.
    pub changed: Option<Vec<String>>,
}

/// The `fallback` object of a `--json` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackRecord {
    /// `no_agent`, `agent_timeout`, `agent_certificate_rejected`,
    /// `controller_certificate_refused` or `tls_failed`.
    pub reason: String,
    /// How the agent attempt ended.
    pub detail: String,
}

/// The fallback reasons volley reports.
pub const FALLBACK_REASONS: &[&str] = &[
    "no_agent",
    "agent_timeout",
    "agent_certificate_rejected",
    "controller_certificate_refused",
    "tls_failed",
];

/// The outcome kinds volley reports.
pub const OUTCOME_KINDS: &[&str] = &[
    "succeeded",
    "non_zero_exit",
    "signalled",
    "unreachable",
    "connect_timeout",
    "auth_failed",
    "host_key_unknown",
    "host_key_changed",
    "tls_rejected",
    "command_timeout",
    "cancelled",
    "transport_error",
    "step_failed",
    "skipped",
    "in_doubt",
];

impl ProcessOutput {
    /// Every stdout line as a host record; any line that is not one fails the test.
    pub fn records(&self) -> Vec<HostRecord> {
        self.stdout
            .lines()
            .enumerate()
            .map(|(number, line)| {
                parse_record(line).unwrap_or_else(|problem| {
                    panic!(
                        "stdout line {} is not a host record: {problem}\nline: {}\n{}",
                        number + 1,
                        shorten(line),
                        self.describe()
                    )
                })
            })
            .collect()
    }

    /// The records by host name; a host reported twice fails the test.
    pub fn records_by_host(&self) -> BTreeMap<String, HostRecord> {
        let mut by_host = BTreeMap::new();
        for record in self.records() {
            let host = record.host.clone();
            if by_host.insert(host.clone(), record).is_some() {
                panic!("host {host} is reported twice\n{}", self.describe());
            }
        }
        by_host
    }

    /// The stdout lines that `host` printed in the default stream form (`HOST: line`).
    pub fn stdout_of(&self, host: &str) -> Vec<&str> {
        lines_of(&self.stdout, host)
    }

    /// The stderr lines that `host` printed in the default stream form (`HOST: line`).
    pub fn stderr_of(&self, host: &str) -> Vec<&str> {
        lines_of(&self.stderr, host)
    }
}

fn lines_of<'a>(text: &'a str, host: &str) -> Vec<&'a str> {
    let prefix = format!("{host}: ");
    text.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .collect()
}

/// Parses one JSON Lines record, checking every key and its type.
pub fn parse_record(line: &str) -> Result<HostRecord, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let fields = Fields(object);
    let record = HostRecord {
        host: fields.string("host")?,
        transport: fields
            .optional("transport", |v| v.as_str().map(str::to_string))?
            .unwrap_or_else(|| "-".to_string()),
        outcome: fields.string("outcome")?,
        exit_code: fields.optional("exit_code", Value::as_i64)?,
        signal: fields.optional("signal", |v| v.as_str().map(str::to_string))?,
        reason: fields.optional("reason", |v| v.as_str().map(str::to_string))?,
        connect_ms: fields.optional("connect_ms", milliseconds)?,
        run_ms: fields.optional("run_ms", milliseconds)?,
        total_ms: fields.required("total_ms", milliseconds)?,
        stdout: fields.string("stdout")?,
        stderr: fields.string("stderr")?,
        stdout_bytes: fields.required("stdout_bytes", Value::as_u64)?,
        stderr_bytes: fields.required("stderr_bytes", Value::as_u64)?,
        stdout_truncated: fields.required("stdout_truncated", Value::as_bool)?,
        stderr_truncated: fields.required("stderr_truncated", Value::as_bool)?,
        batch: fields.required("batch", Value::as_u64)?,
        attempts: fields.required("attempts", Value::as_u64)?,
        fallback: fields.optional("fallback", fallback)?,
        changed: match object.get("changed") {
            None => None,
            Some(_) => Some(fields.required("changed", strings)?),
        },
    };
    if !OUTCOME_KINDS.contains(&record.outcome.as_str()) {
        return Err(format!("unknown outcome {:?}", record.outcome));
    }
    // A transport for the hosts that one ran or tried, and only for those.
    let expected: &[&str] = if record.attempts == 0 {
        &["-"]
    } else {
        &["ssh", "agent"]
    };
    if !expected.contains(&record.transport.as_str()) {
        return Err(format!(
            "transport {:?} after {} attempts",
            record.transport, record.attempts
        ));
    }
    if let Some(fallback) = &record.fallback
        && !FALLBACK_REASONS.contains(&fallback.reason.as_str())
    {
        return Err(format!("unknown fallback reason {:?}", fallback.reason));
    }
    Ok(record)
}

/// A `fallback` object: exactly a string `reason` and a string `detail`.
fn fallback(value: &Value) -> Option<FallbackRecord> {
    let object = value.as_object().filter(|object| object.len() == 2)?;
    Some(FallbackRecord {
        reason: object.get("reason")?.as_str()?.to_string(),
        detail: object.get("detail")?.as_str()?.to_string(),
    })
}

/// An array of strings.
fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|item| item.as_str().map(str::to_string))
        .collect()
}

/// A duration in milliseconds: any non-negative JSON number.
fn milliseconds(value: &Value) -> Option<f64> {
    value.as_f64().filter(|ms| *ms >= 0.0)
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn value(&self, key: &str) -> Result<&Value, String> {
        self.0
            .get(key)
            .ok_or_else(|| format!("key {key:?} is missing"))
    }

    fn required<T>(&self, key: &str, read: impl Fn(&Value) -> Option<T>) -> Result<T, String> {
        let value = self.value(key)?;
        read(value).ok_or_else(|| format!("key {key:?} has the wrong type: {value}"))
    }

    fn optional<T>(
        &self,
        key: &str,
        read: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, String> {
        match self.value(key)? {
            Value::Null => Ok(None),
            _ => self.required(key, read).map(Some),
        }
    }

    fn string(&self, key: &str) -> Result<String, String> {
        self.required(key, |v| v.as_str().map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCEEDED: &str = r#"{"host":"h01","transport":"ssh","outcome":"succeeded","exit_code":0,"signal":null,"reason":null,"connect_ms":12,"run_ms":3,"total_ms":15,"stdout":"hi\n","stderr":"","stdout_bytes":3,"stderr_bytes":0,"stdout_truncated":false,"stderr_truncated":false,"batch":1,"attempts":1,"fallback":null}"#;

    fn check(line: &str, expected: Result<(&str, Option<i64>), &str>) {
        let actual = parse_record(line).map(|r| (r.outcome, r.exit_code));
        let expected = expected
            .map(|(o, c)| (o.to_string(), c))
            .map_err(str::to_string);
        assert_eq!(actual, expected, "line {line}");
    }

    #[test]
    fn records_are_read_strictly() {
        check(SUCCEEDED, Ok(("succeeded", Some(0))));
        check(
            &SUCCEEDED.replace(r#""exit_code":0"#, r#""exit_code":null"#),
            Ok(("succeeded", None)),
        );
        check(
            &SUCCEEDED.replace(r#""signal":null,"#, ""),
            Err(r#"key "signal" is missing"#),
        );
        check(
            &SUCCEEDED.replace(r#""total_ms":15"#, r#""total_ms":"15""#),
            Err(r#"key "total_ms" has the wrong type: "15""#),
        );
        check(
            &SUCCEEDED.replace(r#""total_ms":15"#, r#""total_ms":15.25"#),
            Ok(("succeeded", Some(0))),
        );
        check(
            &SUCCEEDED.replace(r#""total_ms":15"#, r#""total_ms":-1"#),
            Err(r#"key "total_ms" has the wrong type: -1"#),
        );
        check(
            &SUCCEEDED.replace("succeeded", "fine"),
            Err(r#"unknown outcome "fine""#),
        );
        check(
            &SUCCEEDED.replace(r#","attempts":1"#, ""),
            Err(r#"key "attempts" is missing"#),
        );
        check(
            &SUCCEEDED.replace(r#","fallback":null"#, ""),
            Err(r#"key "fallback" is missing"#),
        );
        check(
            &SUCCEEDED.replace(
                r#""fallback":null"#,
                r#""fallback":{"reason":"no_agent","detail":"unreachable: connection refused"}"#,
            ),
            Ok(("succeeded", Some(0))),
        );
        check(
            &SUCCEEDED.replace(r#""fallback":null"#, r#""fallback":{"reason":"no_agent"}"#),
            Err(r#"key "fallback" has the wrong type: {"reason":"no_agent"}"#),
        );
        check(
            &SUCCEEDED.replace(
                r#""fallback":null"#,
                r#""fallback":{"reason":"bored","detail":"x"}"#,
            ),
            Err(r#"unknown fallback reason "bored""#),
        );
        check("[1]", Err("not a JSON object"));
        let pushed = SUCCEEDED.replace(r#""attempts":1"#, r#""attempts":1,"changed":["/etc/a"]"#);
        assert_eq!(
            parse_record(&pushed).map(|r| r.changed),
            Ok(Some(vec!["/etc/a".to_string()]))
        );
        check(
            &SUCCEEDED.replace(r#""attempts":1"#, r#""attempts":1,"changed":[1]"#),
            Err(r#"key "changed" has the wrong type: [1]"#),
        );
    }

    #[test]
    fn stream_lines_are_found_by_host() {
        let output = ProcessOutput {
            status: std::process::ExitStatus::default(),
            stdout: "h01: a\nh02: b\nh01: c\nh011: d\n".to_string(),
            stderr: String::new(),
        };
        assert_eq!(output.stdout_of("h01"), ["a", "c"]);
    }
}
