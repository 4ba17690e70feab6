use super::*;

/// Loads `text` as a config file in a fresh directory; errors read with the path as FILE.
fn load(text: &str) -> Result<AgentConfig, String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("write the config");
    AgentConfig::load(&path)
        .map(|config| AgentConfig {
            path: PathBuf::from("FILE"),
            certificate: strip(&config.certificate, dir.path()),
            key: strip(&config.key, dir.path()),
            ca: strip(&config.ca, dir.path()),
            audit_log: config
                .audit_log
                .as_deref()
                .map(|log| strip(log, dir.path())),
            ..config
        })
        .map_err(|error| {
            error
                .to_string()
                .replace(&path.display().to_string(), "FILE")
        })
}

fn strip(path: &Path, dir: &Path) -> PathBuf {
    path.strip_prefix(dir)
        .map_or(path.to_path_buf(), |p| Path::new("DIR").join(p))
}

fn check_error(text: &str, expected: &str) {
    assert_eq!(
        load(text).err().as_deref(),
        Some(expected),
        "config {text:?}"
    );
}

#[test]
fn defaults() {
    let config = load("").expect("an empty file is valid");
    assert_eq!(
        config,
        AgentConfig {
            path: PathBuf::from("FILE"),
            listen: "0.0.0.0:7731".parse().expect("address"),
            certificate: PathBuf::from("/etc/volley/agent.pem"),
            key: PathBuf::from("/etc/volley/agent.key"),
            ca: PathBuf::from("/etc/volley/ca.pem"),
            allowed_controllers: vec!["volley-controller".to_string()],
            audit_log: None,
            executor: ExecutorChoice::Auto,
            push_roots: PushRoots::defaults()
                .protecting(vec![PathBuf::from("/etc/volley/agent.key")]),
            limits: Limits::default(),
            session: SessionConfig::default(),
            retention: Retention::default(),
            warnings: Vec::new(),
        }
    );
}

#[test]
fn every_key() {
    let config = load(
        r#"
        listen = "127.0.0.1"
        certificate = "agent.pem"
        key = "/secret/agent.key"
        ca = "ca.pem"
        allowed_controllers = ["ops", "ci"]
        audit_log = "audit.log"
        executor = "direct"
        push_roots = ["/srv/www", "files"]
        [limits]
        max_concurrent_execs = 2
        max_message_bytes = 262144
        max_concurrent_streams = 16
        max_concurrent_handshakes = 8
        max_timeout = "0"
        shutdown_grace = "1.5s"
        max_file_bytes = "10MiB"
        [session]
        path = "/bin"
        root_path = "/sbin:/bin"
        allow_root = false
        env = { LANG = "C.UTF-8" }
        [retention]
        keep_for = "2m"
        max_executions = 10
        max_bytes = "1MiB"
        keep_output = "64KiB"
        "#,
    )
    .expect("valid");
    assert_eq!(config.listen, "127.0.0.1:7731".parse().expect("address"));
    assert_eq!(config.certificate, PathBuf::from("DIR/agent.pem"));
    assert_eq!(config.key, PathBuf::from("/secret/agent.key"));
    assert_eq!(config.ca, PathBuf::from("DIR/ca.pem"));
    assert_eq!(config.allowed_controllers, ["ops", "ci"]);
    assert_eq!(config.audit_log, Some(PathBuf::from("DIR/audit.log")));
    assert_eq!(config.executor, ExecutorChoice::Direct);
    assert_eq!(
        load("executor = \"systemd\"").map(|config| config.executor),
        Ok(ExecutorChoice::Systemd)
    );
    // A relative root is relative to the file's directory, like every other path.
    let roots = config.push_roots.list();
    assert!(
        roots.starts_with("/srv/www, /") && roots.ends_with("/files"),
        "{roots}"
    );
    assert_eq!(
        config.limits,
        Limits {
            max_concurrent_execs: 2,
            max_message_bytes: 262144,
            max_concurrent_streams: 16,
            max_concurrent_handshakes: 8,
            max_timeout: None,
            shutdown_grace: Duration::from_millis(1500),
            max_file_bytes: 10 << 20,
        }
    );
    assert_eq!(
        config.session,
        SessionConfig {
            path: "/bin".to_string(),
            root_path: "/sbin:/bin".to_string(),
            allow_root: false,
            env: [("LANG".to_string(), "C.UTF-8".to_string())].into(),
        }
    );
    assert!(config.warnings.is_empty());
    assert_eq!(
        config.retention,
        Retention {
            keep_for: Duration::from_secs(120),
            max_executions: 10,
            max_bytes: 1 << 20,
            keep_output: 64 << 10,
        }
    );
}

#[test]
fn the_obsolete_output_limit_is_accepted_with_a_warning() {
    let config = load("[limits]\nmax_output_bytes = \"1MiB\"").expect("still valid");
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with("limits.max_output_bytes is obsolete and ignored"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn errors_name_the_file_and_the_key() {
    check_error(
        "listen = \"nowhere\"",
        "config FILE: listen: 'nowhere' is not an address such as 0.0.0.0:7731",
    );
    check_error(
        "[limits]\nmax_timeout = \"forever\"",
        "config FILE: limits.max_timeout: bad duration 'forever': expected a number (examples: 30s, 250ms, 1m30s)",
    );
    check_error(
        "[limits]\nmax_output_bytes = \"1TB\"",
        "config FILE: limits.max_output_bytes: bad size '1TB': unknown unit (examples: 1MiB, 64KiB, 4096)",
    );
    check_error(
        "[limits]\nmax_concurrent_execs = 0",
        "config FILE: limits.max_concurrent_execs: must be at least 1",
    );
    check_error(
        "[limits]\nmax_message_bytes = 1000",
        "config FILE: limits.max_message_bytes: must be between 131072 and 4294967295 bytes",
    );
    check_error(
        "[retention]\nkeep_for = \"a while\"",
        "config FILE: retention.keep_for: bad duration 'a while': expected a number (examples: 30s, 250ms, 1m30s)",
    );
    check_error(
        "push_roots = [\"/srv/../root\"]",
        "config FILE: push_roots: '/srv/../root' is not an absolute path of plain names",
    );
    check_error(
        "[limits]\nmax_concurrent_handshakes = 0",
        "config FILE: limits.max_concurrent_handshakes: must be at least 1",
    );
    check_error(
        "[session]\npath = \"\"",
        "config FILE: session.path: must be a non-empty list of directories",
    );
    check_error(
        "[session]\nenv = { \"A=B\" = \"x\" }",
        "config FILE: session.env: \"A=B\": a variable name must be non-empty, without '=' or NUL, and its value without NUL",
    );
    check_error(
        "executor = \"podman\"",
        "config FILE: executor: 'podman' is none of \"auto\", \"direct\", \"systemd\"",
    );
    check_error(
        "allowed_controllers = []",
        "config FILE: allowed_controllers: name at least one controller identity, none empty",
    );
}

#[test]
fn errors_from_the_toml_layer() {
    let unknown = load("lisen = \"0.0.0.0:1\"").expect_err("unknown key");
    assert!(
        unknown.starts_with("config FILE: ") && unknown.contains("lisen"),
        "{unknown}"
    );
    let nested = load("[limits]\nmax_output = 1").expect_err("unknown nested key");
    assert!(nested.contains("max_output"), "{nested}");
    check_error(
        "[limits]\nmax_concurrent_execs = \"many\"",
        "config FILE: limits.max_concurrent_execs: expected an integer, found string \"many\"",
    );
    check_error(
        "listen = ",
        "config FILE: TOML parse error at line 1, column 10: string values must be quoted, expected literal string",
    );
}

#[test]
fn missing_file() {
    let error = AgentConfig::load(Path::new("/nonexistent/agent.toml")).expect_err("missing");
    assert_eq!(
        error.to_string(),
        "config /nonexistent/agent.toml: file not found"
    );
}

#[test]
fn the_shipped_example_is_valid_and_shows_the_defaults() {
    let example = load(include_str!("../../../deploy/agent.toml")).expect("deploy/agent.toml");
    assert_eq!(example, load("").expect("an empty file"));
}

/// `allow_root` guards root: only a TOML boolean is taken. The `config` crate alone would read
/// `"no"` as false and `2` as true.
#[test]
fn booleans_must_be_toml_booleans() {
    for (value, allowed) in [("true", true), ("false", false)] {
        let config = load(&format!("[session]\nallow_root = {value}")).expect("a boolean");
        assert_eq!(config.session.allow_root, allowed, "{value}");
    }
    for (value, found) in [
        ("\"no\"", "string \"no\""),
        ("\"false\"", "string \"false\""),
        ("\"0\"", "string \"0\""),
        ("0", "integer 0"),
        ("2", "integer 2"),
        ("1.0", "float 1"),
        ("[false]", "an array or a table"),
        ("{}", "an array or a table"),
    ] {
        check_error(
            &format!("[session]\nallow_root = {value}"),
            &format!("config FILE: session.allow_root: expected true or false, found {found}"),
        );
    }
}
