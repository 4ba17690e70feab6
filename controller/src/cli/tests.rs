use clap::CommandFactory;

use super::*;

/// Every subcommand, as its path of names: `["agent", "install"]`.
fn subcommands(
    command: &clap::Command,
    path: Vec<String>,
    all: &mut Vec<(Vec<String>, clap::Command)>,
) {
    for sub in command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help")
    {
        let mut path = path.clone();
        path.push(sub.get_name().to_string());
        all.push((path.clone(), sub.clone()));
        subcommands(sub, path, all);
    }
}

#[test]
fn the_definitions_are_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn every_subcommand_help_ends_with_examples_of_itself() {
    let mut all = Vec::new();
    subcommands(&Cli::command(), Vec::new(), &mut all);
    assert!(all.len() >= 16, "{}", all.len());
    for (path, command) in all.iter().chain([(Vec::new(), Cli::command())].iter()) {
        let help = command
            .get_after_help()
            .unwrap_or_else(|| panic!("volley {} has no examples", path.join(" ")))
            .to_string();
        let mut lines = help.lines();
        assert_eq!(lines.next(), Some("Examples:"), "volley {}", path.join(" "));
        let prefix = std::iter::once("volley")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let examples: Vec<&str> = lines.collect();
        assert!(!examples.is_empty(), "{prefix}: no example");
        assert!(
            examples
                .iter()
                .any(|line| line.contains(&format!("{prefix} ")) || line.ends_with(&prefix)),
            "{prefix}: no example uses it: {examples:?}"
        );
        for line in examples {
            assert!(
                line.starts_with("  ") && line.contains("volley"),
                "{prefix}: {line:?}"
            );
        }
    }
}
