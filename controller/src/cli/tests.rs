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

#[test]
fn push_and_fetch_paths_may_have_options_between_them() {
    let push = |argv: &[&str]| match Cli::parse_args(argv).map(|cli| cli.command) {
        Ok(Command::Push(args)) => Ok((args.locals().to_vec(), args.remote(), args.mode)),
        Ok(other) => panic!("{other:?}"),
        Err(error) => Err((error.kind(), error.to_string())),
    };
    let (locals, remote, mode) = push(&[
        "volley", "push", "-w", "h1", "a", "--mode", "0644", "b", "/dst/",
    ])
    .unwrap();
    assert_eq!(locals, [PathBuf::from("a"), PathBuf::from("b")]);
    assert_eq!((remote.as_str(), mode.as_deref()), ("/dst/", Some("0644")));
    let (locals, remote, _) = push(&["volley", "push", "a", "-w", "h1", "/dst"]).unwrap();
    assert_eq!(
        (locals, remote.as_str()),
        (vec![PathBuf::from("a")], "/dst")
    );

    // One path is not enough: clap's error, naming what is missing, with the usage.
    let (kind, message) = push(&["volley", "push", "-w", "h1", "a"]).unwrap_err();
    assert_eq!(kind, clap::error::ErrorKind::MissingRequiredArgument);
    assert!(
        message
            .starts_with("error: the following required arguments were not provided:\n  <REMOTE>")
            && message.contains("Usage: volley push [OPTIONS] <LOCAL>... <REMOTE>"),
        "{message}"
    );

    let Command::Fetch(args) = Cli::parse_args([
        "volley", "fetch", "/etc/a", "-w", "h1", "/etc/b", "-t", "5s", "out",
    ])
    .unwrap()
    .command
    else {
        panic!("not a fetch")
    };
    assert_eq!(args.remotes(), ["/etc/a", "/etc/b"]);
    assert_eq!(args.local_dir(), PathBuf::from("out"));
    let error = Cli::parse_args(["volley", "fetch", "-w", "h1", "/etc/a"]).unwrap_err();
    assert!(error.to_string().contains("<DIR>"), "{error}");

    // Remote paths are text; local ones need not be.
    use std::os::unix::ffi::OsStrExt as _;
    let odd = std::ffi::OsStr::from_bytes(b"/etc/\xff").to_os_string();
    let argv = |paths: [std::ffi::OsString; 2], sub: &str| {
        let mut argv: Vec<std::ffi::OsString> =
            vec!["volley".into(), sub.into(), "-w".into(), "h1".into()];
        argv.extend(paths);
        argv
    };
    let error = Cli::parse_args(argv(["a".into(), odd.clone()], "push")).unwrap_err();
    assert_eq!(error.kind(), clap::error::ErrorKind::InvalidUtf8, "{error}");
    assert!(Cli::parse_args(argv([odd.clone(), "/dst".into()], "push")).is_ok());
    let error = Cli::parse_args(argv([odd.clone(), "out".into()], "fetch")).unwrap_err();
    assert_eq!(error.kind(), clap::error::ErrorKind::InvalidUtf8, "{error}");
    assert!(Cli::parse_args(argv(["/etc/a".into(), odd], "fetch")).is_ok());
}

/// A negative number given to a numeric flag is that flag's bad value, named, not an unknown
/// argument `-1`.
#[test]
fn a_negative_number_is_the_bad_value_of_its_flag() {
    for (flags, named) in [
        (&["-p", "-1"][..], "'--parallel <N>'"),
        (&["--retries", "-1"], "'--retries <N>'"),
    ] {
        let argv = ["volley", "run", "-w", "h1"]
            .iter()
            .chain(flags)
            .chain(&["--", "true"]);
        let error = Cli::parse_args(argv).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("error: invalid value '-1' for {named}")),
            "{flags:?}: {error}"
        );
    }
    // Values volley itself reads get there, to be refused with the flag's name; a duration
    // with its unit too.
    for flags in [
        &["--timeout", "-1"][..],
        &["--timeout", "-5s"],
        &["--batch", "2", "--batch-delay", "-1m"],
        &["--connect-timeout", "-1"],
        &["--batch", "-1"],
        &["--max-failures", "-1"],
        &["--max-output", "-1"],
        &["--max-handshakes", "-1"],
    ] {
        let argv = ["volley", "run", "-w", "h1"]
            .iter()
            .chain(flags)
            .chain(&["--", "true"]);
        assert!(Cli::parse_args(argv).is_ok(), "{flags:?}");
    }
}

/// A retry keeps the run's settings where a flag is not given: its help says so, where `run`'s
/// names run's defaults.
#[test]
fn retry_flags_default_to_what_the_run_had() {
    let mut command = Cli::command();
    let help = |command: &mut clap::Command, name: &str| {
        command
            .find_subcommand_mut(name)
            .unwrap()
            .render_help()
            .to_string()
    };
    let retry = help(&mut command, "retry");
    let run = help(&mut command, "run");
    assert!(
        retry.contains("How many hosts run at once [default: as the run had it]"),
        "{retry}"
    );
    assert!(!retry.contains("[default: 512"), "{retry}");
    assert!(
        run.contains("[default: 512, or the inventory's `parallel`]"),
        "{run}"
    );
}
