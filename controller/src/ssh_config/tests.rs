use super::*;

const HOME: &str = "/home/op";
const ORIGIN: &str = "/home/op/.ssh/config";

/// The settings in one line, `None`s left out: `hostname=h user=u port=22 id=/a id=/b`.
fn describe(config: &SshHostConfig) -> String {
    let mut parts = Vec::new();
    parts.extend(
        config
            .hostname
            .iter()
            .map(|value| format!("hostname={value}")),
    );
    parts.extend(config.user.iter().map(|value| format!("user={value}")));
    parts.extend(config.port.iter().map(|value| format!("port={value}")));
    let ids = config.identity_files.iter();
    parts.extend(ids.map(|path| format!("id={}", path.display())));
    parts.join(" ")
}

#[track_caller]
fn check(text: &str, host: &str, expected: &str) {
    let config = SshConfig::parse(text, Path::new(ORIGIN), Path::new(HOME)).unwrap();
    let actual = describe(&config.lookup(host, "op"));
    assert_eq!(actual, expected, "{host} in {text:?}");
}

#[test]
fn lookups() {
    check("", "web1", "");
    // The first value obtained wins, across blocks in file order.
    let text = "Host web1\n User a\nHost *\n User b\n Port 2200\n Port 2201";
    check(text, "web1", "user=a port=2200");
    check(text, "db1", "user=b port=2200");
    // Lines before any Host apply to every host, and come first.
    check(
        "User pre\nHost web1\n User a\n Port 2",
        "web1",
        "user=pre port=2",
    );
    check("User pre\nHost web1\n User a", "db1", "user=pre");
    // Patterns: several per line, wildcards, negations; compared case-sensitively.
    check("Host a web1 c\n User u", "web1", "user=u");
    check("Host *.example.com\n User w", "db.example.com", "user=w");
    check("Host *.example.com\n User w", "example.com", "");
    check("Host web?\n User w", "web1", "user=w");
    check("Host web?\n User w", "web10", "");
    check("Host * !db*\n User u", "web1", "user=u");
    check("Host * !db*\n User u", "db1", "");
    check("Host !db1 *\n User u", "db1", "");
    check("Host !db1\n User u", "web1", "");
    check("Host web1\n User u", "WEB1", "");
    // Keywords in any case, `=` with or without spaces, tabs, CRLF.
    check(
        "HOST web1\n uSeR u\n PORT 22\n hostNAME h",
        "web1",
        "hostname=h user=u port=22",
    );
    check(
        "Host=web1\nUser=a\nPort = 2200\nHostName =h",
        "web1",
        "hostname=h user=a port=2200",
    );
    check("Host\tweb1\r\n\tUser\tu\r\n", "web1", "user=u");
    // Quotes and escapes, as OpenSSH splits arguments.
    check("Host \"web1\"\n User \"a b\"", "web1", "user=a b");
    check(
        "IdentityFile \"~/my keys/id\"",
        "h",
        "id=/home/op/my keys/id",
    );
    check("IdentityFile '/x y/z'", "h", "id=/x y/z");
    check("IdentityFile /a\"b c\"d", "h", "id=/ab cd");
    check("IdentityFile /a\\ b", "h", "id=/a b");
    check("User \"\\\"q\\\"\"", "h", "user=\"q\"");
    // Comments.
    check(
        "# c\nHost web1 # trailing\n  # indented\n User u # comment",
        "web1",
        "user=u",
    );
    check("User a#b", "h", "user=a#b");
    // Match blocks never apply, except `Match all`.
    check(
        "Match host web1\n User m\nHost *\n User u",
        "web1",
        "user=u",
    );
    check(
        "Match exec true\n User x\nMatch all\n User y",
        "web1",
        "user=y",
    );
    let text = "Host db\n User d\nMatch all\n Port 2200";
    check(text, "db", "user=d port=2200");
    check(text, "web1", "port=2200");
    check("Host web1\n User a\nMatch All\n User b", "web2", "user=b");
    // HostName tokens: %h is the host, lowercased as OpenSSH does.
    check(
        "Host *\n HostName %h.internal",
        "web1",
        "hostname=web1.internal",
    );
    check(
        "Host *\n HostName %h.internal",
        "WEB1",
        "hostname=web1.internal",
    );
    check("HostName a%%b", "h", "hostname=a%b");
    // Keywords we do not use, with or without values.
    check(
        "Host *\n ForwardAgent yes\n ProxyJump b\n Compression\n NewThing x\n User u",
        "h",
        "user=u",
    );
}

#[test]
fn identity_files() {
    let text = "Host *\n User remote\n HostName h.example.com\n Port 2200\n\
                IdentityFile ~/.ssh/id_%h_%r_%u_%n_%p\n IdentityFile %d/k\n\
                IdentityFile relative\n IdentityFile /abs/%%x\n IdentityFile ~";
    let expected = "hostname=h.example.com user=remote port=2200 \
                    id=/home/op/.ssh/id_h.example.com_remote_op_web1_2200 id=/home/op/k \
                    id=/home/op/.ssh/relative id=/abs/%x id=/home/op";
    check(text, "web1", expected);
    // Without HostName, User or Port: the host, the local user, 22.
    check("IdentityFile ~/%h-%r-%p", "Web1", "id=/home/op/web1-op-22");
    // Values accumulate across blocks; a file named twice is offered once.
    let text = "Host web1\n IdentityFile ~/a\nHost *\n IdentityFile ~/b\n IdentityFile ~/a";
    check(text, "web1", "id=/home/op/a id=/home/op/b");
    check(text, "db1", "id=/home/op/b id=/home/op/a");
}

#[test]
fn errors_name_file_and_line() {
    for (text, expected) in [
        ("Host web1\n Port abc", "2: bad Port 'abc'"),
        ("Port 0", "1: bad Port '0'"),
        ("Port 65536", "1: bad Port '65536'"),
        ("Port -1", "1: bad Port '-1'"),
        // Every line is checked, also in blocks that match no host.
        ("Host nothing\n\n Port 22x", "3: bad Port '22x'"),
        ("Port", "1: Port needs a value"),
        ("User \"\"", "1: User needs a value"),
        ("Port 22 23", "1: Port takes one value"),
        ("User \"a", "1: unterminated quote"),
        ("Host", "1: Host needs at least one pattern"),
        (
            "Host # only a comment",
            "1: Host needs at least one pattern",
        ),
        ("Include", "1: Include needs a file"),
        ("HostName %x", "1: HostName '%x': token %x is not supported"),
        (
            "IdentityFile ~/k%",
            "1: IdentityFile '~/k%': lone % at the end",
        ),
        (
            "IdentityFile %l",
            "1: IdentityFile '%l': token %l is not supported",
        ),
        (
            "IdentityFile ~bob/k",
            "1: IdentityFile '~bob/k': ~user paths are not supported",
        ),
    ] {
        let error = SshConfig::parse(text, Path::new(ORIGIN), Path::new(HOME)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("ssh config {ORIGIN}:{expected}"),
            "{text:?}"
        );
    }
}

/// A home directory holding `.ssh/` files.
fn home_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = home.path().join(".ssh").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    home
}

fn load_from(home: &tempfile::TempDir) -> Result<SshConfig, SshConfigError> {
    SshConfig::load(&home.path().join(".ssh/config"), home.path())
}

#[test]
fn includes() {
    let home = home_with(&[
        (
            "config",
            "Include conf.d/web ~/.ssh/absent\nHost *\n User fallback",
        ),
        ("conf.d/web", "Host web1\n User inc\n Port 2201"),
    ]);
    let config = load_from(&home).unwrap();
    assert_eq!(describe(&config.lookup("web1", "op")), "user=inc port=2201");
    assert_eq!(describe(&config.lookup("db1", "op")), "user=fallback");

    // Included inside a block: the file's lines are under that block's condition, its Host
    // lines cannot reach beyond it, and the block goes on after the Include.
    let home = home_with(&[
        (
            "config",
            "Host web*\n Include extra\n Port 2202\nHost *\n Port 2203",
        ),
        (
            "extra",
            "User inner\nHost web1\n IdentityFile id_w1\nHost db\n User escaped",
        ),
    ]);
    let config = load_from(&home).unwrap();
    let id = home.path().join(".ssh/id_w1");
    let expected = format!("user=inner port=2202 id={}", id.display());
    assert_eq!(describe(&config.lookup("web1", "op")), expected);
    assert_eq!(
        describe(&config.lookup("web2", "op")),
        "user=inner port=2202"
    );
    assert_eq!(describe(&config.lookup("db", "op")), "port=2203");

    // Included from a Match block: never applies. Wildcard Includes are skipped.
    let home = home_with(&[
        (
            "config",
            "Match exec x\n Include extra\nHost *\n Include conf.d/*\n Port 1",
        ),
        ("extra", "User never"),
        ("conf.d/a", "User never"),
    ]);
    let config = load_from(&home).unwrap();
    assert_eq!(describe(&config.lookup("web1", "op")), "port=1");
}

#[test]
fn include_errors() {
    // An error in an included file names that file.
    let home = home_with(&[("config", "Include other"), ("other", "\nPort x")]);
    let error = load_from(&home).unwrap_err().to_string();
    let other = home.path().join(".ssh/other");
    assert_eq!(
        error,
        format!("ssh config {}:2: bad Port 'x'", other.display())
    );

    let home = home_with(&[("config", "Include config")]);
    let error = load_from(&home).unwrap_err().to_string();
    assert!(
        error.ends_with(":1: Include nested more than 16 deep"),
        "{error}"
    );
}

#[test]
fn missing_file_is_empty_and_unreadable_is_an_error() {
    let home = home_with(&[]);
    let config = load_from(&home).unwrap();
    assert_eq!(config.lookup("web1", "op"), SshHostConfig::default());
    assert_eq!(
        SshConfig::empty().lookup("web1", "op"),
        SshHostConfig::default()
    );

    let error = SshConfig::load(home.path(), home.path()).unwrap_err();
    let message = error.to_string();
    let prefix = format!("ssh config {}: cannot read: ", home.path().display());
    assert!(message.starts_with(&prefix), "{message}");
}
