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
    if let Some(hops) = &config.proxy_jump {
        let hops: Vec<String> = hops
            .iter()
            .map(|hop| {
                let user = hop
                    .user
                    .as_ref()
                    .map_or(String::new(), |user| format!("{user}@"));
                let port = hop.port.map_or(String::new(), |port| format!(":{port}"));
                format!("{user}{}{port}", hop.host)
            })
            .collect();
        parts.push(format!("jump={}", hops.join(",")));
    }
    parts.join(" ")
}

#[track_caller]
fn check(text: &str, host: &str, expected: &str) {
    let config = SshConfig::parse(text, Path::new(ORIGIN), Path::new(HOME)).unwrap();
    let actual = describe(&config.lookup(host, "op").unwrap());
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
    // Match blocks: `all`, `host` (HostName so far), `originalhost`, `localuser`.
    check(
        "Match host web1\n User m\nHost *\n User u",
        "web1",
        "user=m",
    );
    check("Match host db1\n User m\nHost *\n User u", "web1", "user=u");
    check(
        "Host web1\n HostName web1.internal\nMatch host *.internal\n User i",
        "web1",
        "hostname=web1.internal user=i",
    );
    check(
        "Host web1\n HostName %h.internal\nMatch host web1.internal\n User i",
        "web1",
        "hostname=web1.internal user=i",
    );
    check(
        "Host web1\n HostName web1.internal\nMatch originalhost web1 !localuser root\n Port 2",
        "web1",
        "hostname=web1.internal port=2",
    );
    // A Match Volley cannot evaluate does not matter when what it can evaluate rules it out, or
    // when its block only holds what Volley ignores.
    check("Match exec true host db*\n User x", "web1", "");
    check(
        "Match exec true\n ServerAliveInterval 5\nHost *\n User u",
        "web1",
        "user=u",
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
    // Keywords Volley ignores, with or without values, and unknown ones listed in
    // IgnoreUnknown (which must come first).
    check(
        "IgnoreUnknown New*,Other\nHost *\n ForwardAgent yes\n Compression\n NewThing x\n User u",
        "h",
        "user=u",
    );
    // Refused directives with the values that leave OpenSSH's default in place.
    check(
        "Host *\n Ciphers +aes128-cbc\n AddressFamily any\n ProxyCommand none\n User u",
        "h",
        "user=u jump=",
    );
    // Only the first value of a refused directive counts.
    check("Host *\n Ciphers +x\n Ciphers aes256-ctr", "h", "");
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
fn identities_only_is_read_first_value_first() {
    let lookup = |text: &str, host: &str| {
        let config = SshConfig::parse(text, Path::new(ORIGIN), Path::new(HOME)).unwrap();
        config.lookup(host, "op").unwrap().identities_only
    };
    let text = "Host web1\n IdentitiesOnly yes\nHost *\n IdentitiesOnly no";
    assert!(lookup(text, "web1"));
    assert!(!lookup(text, "db1"));
    assert!(!lookup("", "db1"));
    let error = SshConfig::parse("IdentitiesOnly maybe", Path::new(ORIGIN), Path::new(HOME))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("ssh config {ORIGIN}:1: bad IdentitiesOnly 'maybe': yes or no")
    );
}

#[test]
fn identity_files_take_environment_variables_as_openssh_does() {
    // PATH is set wherever tests run.
    let path = std::env::var("PATH").unwrap();
    check("IdentityFile /k/${PATH}/x", "h", &format!("id=/k/{path}/x"));
    // Cargo's runners set it, relative: the path stays under ~.
    let name = std::env::var("CARGO_PKG_NAME").unwrap();
    check(
        "IdentityFile ~/${CARGO_PKG_NAME}-%h",
        "h",
        &format!("id=/home/op/{name}-h"),
    );
    let lookup = |text: &str| {
        let config = SshConfig::parse(text, Path::new(ORIGIN), Path::new(HOME)).unwrap();
        config.lookup("h", "op").unwrap_err().to_string()
    };
    assert_eq!(
        lookup("Host h\n IdentityFile ${VOLLEY_TEST_NEVER_SET}/k"),
        format!(
            "ssh config {ORIGIN}:2: IdentityFile '${{VOLLEY_TEST_NEVER_SET}}/k': environment variable VOLLEY_TEST_NEVER_SET is not set"
        )
    );
    assert_eq!(
        lookup("IdentityFile /k/${PATH"),
        format!("ssh config {ORIGIN}:1: IdentityFile '/k/${{PATH': '${{' without its '}}'")
    );
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
    assert_eq!(
        describe(&config.lookup("web1", "op").unwrap()),
        "user=inc port=2201"
    );
    assert_eq!(
        describe(&config.lookup("db1", "op").unwrap()),
        "user=fallback"
    );

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
    assert_eq!(describe(&config.lookup("web1", "op").unwrap()), expected);
    assert_eq!(
        describe(&config.lookup("web2", "op").unwrap()),
        "user=inner port=2202"
    );
    assert_eq!(describe(&config.lookup("db", "op").unwrap()), "port=2203");

    // Included from a Match block, it applies when the Match does. Globs are expanded and
    // sorted, as OpenSSH's glob(3) does.
    let home = home_with(&[
        (
            "config",
            "Match originalhost db*\n Include extra\nHost *\n Include conf.d/*.conf\n Port 1",
        ),
        ("extra", "User db"),
        ("conf.d/b.conf", "User b\n IdentityFile id_b"),
        ("conf.d/a.conf", "IdentityFile id_a"),
        ("conf.d/a.conf.bak", "User never"),
    ]);
    let config = load_from(&home).unwrap();
    let ids = |names: &[&str]| -> String {
        let ids: Vec<String> = names
            .iter()
            .map(|name| format!("id={}", home.path().join(".ssh").join(name).display()))
            .collect();
        ids.join(" ")
    };
    assert_eq!(
        describe(&config.lookup("web1", "op").unwrap()),
        format!("user=b port=1 {}", ids(&["id_a", "id_b"]))
    );
    assert_eq!(
        describe(&config.lookup("db1", "op").unwrap()),
        format!("user=db port=1 {}", ids(&["id_a", "id_b"]))
    );
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
    assert_eq!(
        config.lookup("web1", "op").unwrap(),
        SshHostConfig::default()
    );
    assert_eq!(
        SshConfig::empty().lookup("web1", "op").unwrap(),
        SshHostConfig::default()
    );

    let error = SshConfig::load(home.path(), home.path()).unwrap_err();
    let message = error.to_string();
    let prefix = format!("ssh config {}: cannot read: ", home.path().display());
    assert!(message.starts_with(&prefix), "{message}");
}

#[track_caller]
fn check_error(text: &str, host: &str, expected: &str) {
    let config = SshConfig::parse(text, Path::new(ORIGIN), Path::new(HOME)).unwrap();
    let error = config.lookup(host, "op").unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("ssh config {ORIGIN}:{expected}"),
        "{text:?}"
    );
}

#[test]
fn what_volley_cannot_honour_is_refused_where_it_applies() {
    let proxy = "ProxyCommand applies to web1, but volley reaches hosts directly or through \
                 ProxyJump (-J) only";
    check_error(
        "Host web*\n ProxyCommand nc %h %p",
        "web1",
        &format!("2: {proxy}"),
    );
    // Not where it does not apply.
    check(
        "Host db*\n ProxyCommand nc %h %p\nHost *\n User u",
        "web1",
        "user=u",
    );
    check_error(
        "Host *\n User u\n HostKeyAlias other",
        "web1",
        "3: HostKeyAlias applies to web1, but volley checks one known_hosts file, by the \
         address dialled (--known-hosts)",
    );
    check_error(
        "Host *\n CertificateFile ~/.ssh/id-cert.pub",
        "web1",
        "2: CertificateFile applies to web1, but volley authenticates with plain keys: \
         IdentityFile, -i and the agent at SSH_AUTH_SOCK",
    );
    check_error(
        "Host *\n KexAlgorithms curve25519-sha256",
        "web1",
        "2: KexAlgorithms applies to web1, but volley negotiates its own algorithms; only \
         additions (+...) are accepted",
    );
    check_error(
        "Host *\n UserKnownHostsFile /dev/null",
        "web1",
        "2: UserKnownHostsFile applies to web1, but volley checks one known_hosts file, by the \
         address dialled (--known-hosts)",
    );
    // ProxyCommand and ProxyJump share a slot: the first one wins, the other has no effect.
    check(
        "Host *\n ProxyJump b\n ProxyCommand nc %h %p",
        "web1",
        "jump=b",
    );
    check_error(
        "Host *\n ProxyCommand nc %h %p\n ProxyJump b",
        "web1",
        &format!("2: {proxy}"),
    );
    check("Host *\n ProxyCommand none\n ProxyJump b", "web1", "jump=");
    // An unknown keyword is refused as OpenSSH refuses it, unless IgnoreUnknown came first.
    check_error(
        "Host *\n Bogus yes",
        "web1",
        "2: unknown directive Bogus applies to web1 (list it in IgnoreUnknown to have it skipped)",
    );
    check_error(
        "Host *\n Bogus yes\n IgnoreUnknown Bogus",
        "web1",
        "2: unknown directive Bogus applies to web1 (list it in IgnoreUnknown to have it skipped)",
    );
    // A Match Volley cannot evaluate, in front of settings that matter.
    check_error(
        "Host *\n User u\nMatch exec \"test -f /x\"\n User x",
        "web1",
        "3: this Match block may apply to web1, but volley cannot evaluate 'exec' (only all, \
         host, originalhost and localuser)",
    );
    check_error(
        "Match host web1 !final\n Port 2",
        "web1",
        "1: this Match block may apply to web1, but volley cannot evaluate '!final' (only all, \
         host, originalhost and localuser)",
    );
}

#[test]
fn proxy_jump() {
    check("Host web*\n ProxyJump bastion", "web1", "jump=bastion");
    check(
        "Host web*\n ProxyJump op@b1:2222,ssh://b2",
        "web1",
        "jump=op@b1:2222,b2",
    );
    // The first value obtained wins, `none` included.
    check(
        "Host web1\n ProxyJump none\nHost *\n ProxyJump bastion",
        "web1",
        "jump=",
    );
    // %h (HostName), %n (as written), %p, %r.
    check(
        "Host *\n HostName %h.lan\n User u\n Port 2\n ProxyJump %r@gw-%n:%p,j-%h",
        "web1",
        "hostname=web1.lan user=u port=2 jump=u@gw-web1:2,j-web1.lan",
    );
    for (text, expected) in [
        (
            "Host *\n ProxyJump a,,b",
            "2: ProxyJump bad jump host '': no host",
        ),
        (
            "ProxyJump %d",
            "1: ProxyJump '%d': token %d is not supported",
        ),
        ("ProxyJump a b", "1: ProxyJump takes one value"),
    ] {
        let error = SshConfig::parse(text, Path::new(ORIGIN), Path::new(HOME)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("ssh config {ORIGIN}:{expected}"),
            "{text:?}"
        );
    }
    // A value whose tokens expand into nonsense is caught at lookup.
    check_error(
        "Host *\n ProxyJump %h:x",
        "web1",
        "2: ProxyJump bad jump host 'web1:x': bad port 'x'",
    );
}
