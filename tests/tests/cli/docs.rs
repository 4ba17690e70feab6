//! The documents generated from the flags: bash really completes with the script `volley
//! completions bash` prints, and the man pages render with nroff and name every subcommand.

use std::process::Command;

use volley_tests::ProcessOutput;
use volley_tests::RunningProcess;
use volley_tests::volley::{RUN_DEADLINE, volley_binary, volley_command};

use crate::EXIT_SUCCESS;

fn volley(args: &[&str]) -> ProcessOutput {
    let home = tempfile::tempdir().unwrap();
    RunningProcess::spawn(volley_command(home.path()).args(args)).finish(RUN_DEADLINE)
}

/// What bash offers after `words`, the last of which is being completed, with the script
/// volley printed loaded as a user's shell would load it.
fn bash_completes(words: &[&str]) -> Vec<String> {
    let script = format!(
        r#"source <("$VOLLEY" completions bash) || exit 9
complete -p volley >/dev/null || exit 8
COMP_WORDS=({words}); COMP_CWORD={cword}
_volley volley "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = words
            .iter()
            .map(|word| volley_tests::pipe::shell_quote(word))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
    );
    let output = RunningProcess::spawn(
        Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &script])
            .env("VOLLEY", volley_binary()),
    )
    .finish(RUN_DEADLINE);
    output.assert_code(0);
    output.stdout.lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    let offered = bash_completes(&["volley", "r"]);
    for word in ["run", "runs", "retry"] {
        assert!(
            offered.iter().any(|o| o == word),
            "{word} not in {offered:?}"
        );
    }
    assert!(!offered.iter().any(|o| o == "agent"), "{offered:?}");

    let offered = bash_completes(&["volley", "run", "--ret"]);
    assert_eq!(offered, ["--retries"]);
    let offered = bash_completes(&["volley", "agent", "ins"]);
    assert_eq!(offered, ["install"]);
    let offered = bash_completes(&["volley", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(
            offered.iter().any(|o| o == shell),
            "{shell} not in {offered:?}"
        );
    }
}

#[test]
fn zsh_and_fish_scripts_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let output = volley(&["completions", shell]);
        output.assert_code(EXIT_SUCCESS);
        for name in ["run", "retry", "agent", "install", "max-failures"] {
            assert!(output.stdout.contains(name), "{shell}: no {name}");
        }
    }
    let output = volley(&["completions", "tcsh"]);
    output.assert_code(crate::EXIT_USAGE);
}

/// `nroff -man` on a page: what a reader sees, with nroff's overstrike bold taken out.
fn render(page: &str) -> String {
    let mut nroff = Command::new("nroff");
    nroff.args(["-man", "-Tascii", "-ww"]).arg(page);
    let output = RunningProcess::spawn(&mut nroff).finish(RUN_DEADLINE);
    output.assert_code(0);
    assert!(
        output.stderr.is_empty(),
        "nroff complains about {page}: {}",
        output.stderr
    );
    let mut text = String::new();
    let mut chars = output.stdout.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next();
            continue;
        }
        text.push(c);
    }
    text
}

#[test]
fn the_man_pages_render_and_name_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("volley.1");
    let output = volley(&["man"]);
    output.assert_code(EXIT_SUCCESS);
    std::fs::write(&page, &output.stdout).unwrap();
    let text = render(page.to_str().unwrap());
    assert!(
        text.contains("NAME") && text.contains("SUBCOMMANDS"),
        "{text}"
    );
    for name in [
        "run",
        "pki",
        "demo",
        "runs",
        "retry",
        "agent",
        "completions",
        "man",
    ] {
        assert!(
            text.contains(&format!("volley-{name}(1)")),
            "no volley-{name}(1) in\n{text}"
        );
    }
    assert!(text.contains("Examples:"), "{text}");

    let pages = dir.path().join("pages");
    let output = volley(&["man", "--dir", pages.to_str().unwrap()]);
    output.assert_code(EXIT_SUCCESS);
    let run = render(pages.join("volley-run.1").to_str().unwrap());
    for flag in ["--targets", "--parallel", "--batch", "--json", "--timeout"] {
        assert!(run.contains(flag), "volley-run(1) has no {flag}\n{run}");
    }
    let install = render(pages.join("volley-agent-install.1").to_str().unwrap());
    assert!(install.contains("--agent-binary"), "{install}");
}
