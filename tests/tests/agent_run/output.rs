//! Big output through an agent: 100 MiB are counted in full, kept only up to `--max-output`, and
//! never held in the agent's memory.

use volley_tests::AgentFleet;

use crate::{EXIT_SUCCESS, expect_outcome};

const HUNDRED_MIB: u64 = 100 << 20;
const KEPT: usize = 1 << 20;

/// A generous bound on the agent's peak RSS: an idle agent takes a few MiB, and one that held
/// the output would pass 100.
const AGENT_PEAK_KIB: u64 = 64 << 10;

#[test]
fn a_hundred_mebibytes_are_counted_truncated_and_not_buffered_by_the_agent() {
    let fleet = AgentFleet::start(1);
    let command = format!("yes | head -c {HUNDRED_MIB}");
    let output = fleet.run(fleet.run_args([
        "-g",
        "all",
        "--transport",
        "agent",
        "--json",
        "--max-output",
        "1MiB",
        "--",
        command.as_str(),
    ]));

    output.assert_code(EXIT_SUCCESS);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, "a01", "succeeded", "agent");
    assert_eq!(record.stdout_bytes, HUNDRED_MIB);
    assert!(record.stdout_truncated);
    assert_eq!(record.stdout.len(), KEPT);
    assert!(record.stdout.starts_with("y\ny\n"));
    assert_eq!((record.stderr_bytes, record.stderr_truncated), (0, false));

    let peak = fleet.agent("a01").memory_kib("VmHWM");
    assert!(
        peak < AGENT_PEAK_KIB,
        "the agent's peak RSS reached {peak} KiB for 100 MiB of output (bound {AGENT_PEAK_KIB} KiB)"
    );
}
