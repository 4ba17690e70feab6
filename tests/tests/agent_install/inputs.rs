//! Bad input to `volley agent` is one line on stderr and exit status 64, before any host is
//! contacted.

use volley_tests::volley::volley_command;
use volley_tests::{ProcessOutput, RunningProcess};

use volley_tests::report::EXIT_USAGE;

fn volley(home: &std::path::Path, args: &[&str]) -> ProcessOutput {
    RunningProcess::spawn(volley_command(home).args(args))
        .finish(volley_tests::volley::RUN_DEADLINE)
}

/// Fails unless `output` is exit 64 with exactly one stderr line, `volley: ` then `expected`.
fn check(output: &ProcessOutput, home: &std::path::Path, expected: &str) {
    output.assert_code(EXIT_USAGE);
    let stderr = output.stderr.replace(&home.display().to_string(), "HOME");
    assert_eq!(
        stderr,
        format!("volley: {expected}\n"),
        "{}",
        output.describe()
    );
}

#[test]
fn bad_input_is_one_line_and_exit_64() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let inventory = home.join("inventory.toml");
    std::fs::write(&inventory, "[hosts.h01]\naddress = \"127.0.0.1\"\n").unwrap();
    let inventory = inventory.to_str().unwrap();

    let output = volley(
        home,
        &["agent", "status", "--inventory", inventory, "-w", "h01"],
    );
    check(
        &output,
        home,
        "pki HOME/.config/volley/pki: not initialised: run `volley pki init` first",
    );

    volley(home, &["pki", "init"]).assert_code(0);
    let output = volley(
        home,
        &[
            "agent",
            "install",
            "--inventory",
            inventory,
            "-w",
            "h01",
            "--agent-binary",
            "/nonexistent/volley-agent",
        ],
    );
    check(
        &output,
        home,
        "agent binary /nonexistent/volley-agent: file not found",
    );

    // The agent binary is looked at before any upload: an executable, and where it runs here,
    // one that says it is volley-agent (the controller beside it is an easy mix-up).
    let text = home.join("agent.txt");
    std::fs::write(&text, "volley-agent 0.1.0\n").unwrap();
    let controller = volley_tests::volley::volley_binary();
    for (binary, expected) in [
        (
            text.clone(),
            "agent binary HOME/agent.txt: not an executable: neither an ELF binary nor a #! script"
                .to_string(),
        ),
        (
            controller.clone(),
            format!(
                "agent binary {}: its --version says 'volley {}', not 'volley-agent VERSION': \
                 give the agent's binary",
                controller.display(),
                env!("CARGO_PKG_VERSION")
            ),
        ),
    ] {
        let output = volley(
            home,
            &[
                "agent",
                "install",
                "--inventory",
                inventory,
                "-w",
                "h01",
                "--agent-binary",
                binary.to_str().unwrap(),
            ],
        );
        check(&output, home, &expected);
    }

    let relative = home.join("relative.toml");
    std::fs::write(&relative, "agent_prefix = \"srv/agents\"\n").unwrap();
    let output = volley(
        home,
        &[
            "agent",
            "uninstall",
            "--inventory",
            relative.to_str().unwrap(),
            "-w",
            "h01",
        ],
    );
    check(
        &output,
        home,
        "inventory HOME/relative.toml: agent_prefix: 'srv/agents' is not an absolute path",
    );

    // A usage error is clap's whole message: what is wrong first, then the usage and the tip.
    let output = volley(home, &["agent", "install", "-w", "h01", "--no-such-flag"]);
    output.assert_code(EXIT_USAGE);
    assert!(
        output
            .stderr
            .starts_with("error: unexpected argument '--no-such-flag' found")
            && output.stderr.contains("Usage: volley agent install"),
        "{}",
        output.describe()
    );
}
