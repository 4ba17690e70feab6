//! Colour only where a terminal is, and no log lines unless `VOLLEY_LOG` asks: stdout on a real
//! pseudo-terminal (`script`), stderr kept in a file.

use std::time::Duration;

use volley_tests::pipe::on_terminal_with_stderr_to_file;
use volley_tests::volley::volley_binary;
use volley_tests::{FleetSpec, HostKind, SshFleet};

const ESCAPE: char = '\u{1b}';

#[test]
fn a_terminal_gets_colour_and_a_file_gets_plain_text_and_no_log_lines() {
    let fleet = SshFleet::with_spec(FleetSpec::new(2).with(HostKind::Dead));
    let args = fleet
        .flags()
        .args(["-g", "all", "--", "echo out; echo err >&2"]);
    let home = fleet.client_home().to_string_lossy().into_owned();
    let state = format!("{home}/.local/state");
    // The fixture's clean environment, but with colour allowed, and VOLLEY_LOG as given.
    let run_with_log = |log: &str| {
        let env = [
            ("HOME", home.as_str()),
            ("XDG_STATE_HOME", state.as_str()),
            ("NO_COLOR", ""),
            ("VOLLEY_LOG", log),
        ];
        on_terminal_with_stderr_to_file(
            &volley_binary(),
            &args,
            &env,
            fleet.dir(),
            Duration::from_secs(120),
        )
    };
    let run = run_with_log("");
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    // The host names on the terminal are coloured...
    assert!(
        run.terminal.contains(&format!("{ESCAPE}[1;")) && run.terminal.contains("out"),
        "no colour on the terminal: {run:?}"
    );
    // ...and the file holds the same kind of lines without a single escape code: the stream's
    // stderr lines, the failed host's line and the summary.
    assert!(
        !run.stderr.contains(ESCAPE),
        "escape codes in the file: {run:?}"
    );
    assert!(run.stderr.contains("h01: err"), "{run:?}");
    assert!(run.stderr.contains("h03: volley: unreachable"), "{run:?}");
    assert!(run.stderr.contains("volley: 3 hosts in"), "{run:?}");
    for line in run.stderr.lines() {
        let known =
            line.starts_with("h0") || line.starts_with("volley: ") || line.starts_with("  ");
        assert!(known, "a line that is not volley's own: {line:?}\n{run:?}");
    }

    // VOLLEY_LOG asks for diagnostics: they come, on stderr, still without escape codes.
    let run = run_with_log("debug");
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(
        run.stderr.contains("DEBUG"),
        "VOLLEY_LOG=debug logged nothing: {run:?}"
    );
    assert!(
        !run.stderr.contains(ESCAPE),
        "escape codes in the file: {run:?}"
    );
}
