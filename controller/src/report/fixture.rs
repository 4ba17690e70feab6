//! Host reports for the reporters' tests.

use std::time::Duration;

use volley_common::outcome::{Captured, HostReport, Outcome, Timings, TransportKind};

/// A report with fixed timings and the given output, none of it truncated.
pub(crate) fn host_report(
    host: &str,
    outcome: Outcome,
    stdout: &[u8],
    stderr: &[u8],
) -> HostReport {
    HostReport {
        host: host.to_owned(),
        transport: TransportKind::Ssh,
        outcome,
        timings: Timings {
            connect: Some(Duration::from_micros(12_345)),
            run: Some(Duration::from_millis(250)),
            total: Duration::from_nanos(262_345_678),
        },
        stdout: captured(stdout),
        stderr: captured(stderr),
        batch: 1,
        attempts: 1,
        fallback: None,
        changed: None,
    }
}

pub(crate) fn captured(kept: &[u8]) -> Captured {
    Captured {
        kept: kept.to_vec(),
        total_bytes: kept.len() as u64,
        past_cap: 0,
    }
}
