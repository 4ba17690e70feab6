use super::*;

/// Renders the parsed list as `@group` or space-separated targets, elements joined by " | ",
/// or the error message.
fn check(input: &str, expected: &str) {
    let actual = match parse_list(input) {
        Ok(patterns) => patterns
            .iter()
            .map(|pattern| match pattern {
                Pattern::Group(name) => format!("@{name}"),
                Pattern::Hosts(hosts) => {
                    let words: Vec<String> = hosts.iter().map(Target::to_string).collect();
                    words.join(" ")
                }
            })
            .collect::<Vec<_>>()
            .join(" | "),
        Err(error) => error.to_string(),
    };
    assert_eq!(actual, expected, "input: {input:?}");
}

#[test]
fn valid_lists() {
    let cases = [
        ("db1", "db1"),
        (
            "web[01-03].example.com,db1",
            "web01.example.com web02.example.com web03.example.com | db1",
        ),
        ("web[8-12]", "web8 web9 web10 web11 web12"),
        ("web[08-10]", "web08 web09 web10"),
        ("n[098-100]", "n098 n099 n100"),
        ("n[01-3]", "n01 n02 n03"),
        ("n[0-2]", "n0 n1 n2"),
        ("n[1-3,7,10-12]", "n1 n2 n3 n7 n10 n11 n12"),
        ("n[1,1,2]", "n1 n1 n2"),
        ("n1,n1", "n1 | n1"),
        ("r[1-2]-n[01-02]", "r1-n01 r1-n02 r2-n01 r2-n02"),
        (
            "deploy@web[1-3]:2222",
            "deploy@web1:2222 deploy@web2:2222 deploy@web3:2222",
        ),
        ("10.0.0.[1-3]", "10.0.0.1 10.0.0.2 10.0.0.3"),
        ("h:[22-23]", "h:22 h:23"),
        ("[::1]:2222", "[::1]:2222"),
        ("root@[fe80::1]:22", "root@[fe80::1]:22"),
        ("[fe80::1%eth0]", "fe80::1%eth0"),
        ("::1", "::1"),
        (
            "web[01-,db1",
            "bad target pattern 'web[01-,db1': unclosed '[' at column 4",
        ),
        (
            " x, web 1 ",
            "bad target pattern 'web 1': whitespace inside a target at column 4",
        ),
        ("@web", "@web"),
        ("@web, @db.prod-1 ,x", "@web | @db.prod-1 | x"),
        (" a , , b ,", "a | b"),
        ("", ""),
        ("u.name@h_1", "u.name@h_1"),
    ];
    for (input, expected) in cases {
        check(input, expected);
    }
}

#[test]
fn malformed_lists() {
    let cases = [
        ("web[01-", "unclosed '[' at column 4"),
        ("web]1", "stray ']' at column 4"),
        ("web[]", "empty range '[]' at column 4"),
        ("web[a-c]", "non-digit 'a' in range at column 5"),
        ("web[1-c]", "non-digit 'c' in range at column 7"),
        ("web[1 ,2]", "non-digit ' ' in range at column 6"),
        ("web[5-1]", "reversed range 5-1 at column 5"),
        ("n[1,,3]", "empty item in range at column 5"),
        ("n[1,]", "empty item in range at column 5"),
        ("n[-3]", "missing number before '-' at column 3"),
        ("n[1-]", "missing number after '-' at column 5"),
        ("n[1-2-3]", "non-digit '-' in range at column 6"),
        ("n[1-[2]]", "nested '[' at column 5"),
        (
            "n[001-01]",
            "bounds 001 and 01 are padded to different widths at column 3",
        ),
        (
            "n[99999999999999999999]",
            "number 99999999999999999999 is too large at column 3",
        ),
        (
            "n[1-1000001]",
            "expands to more than 1000000 targets at column 2",
        ),
        (
            "a[1-1000]b[1-1001]",
            "expands to more than 1000000 targets at column 11",
        ),
        ("deploy@", "empty host at column 8"),
        ("@", "empty group name after '@' at column 2"),
        (":22", "empty host at column 1"),
        ("h:0", "port 0 out of range 1-65535 at column 3"),
        ("h:70000", "port 70000 out of range 1-65535 at column 3"),
        ("h:abc", "port 'abc' is not a number at column 3"),
        ("h:", "empty port after ':' at column 3"),
        ("a@@b", "second '@' (a user cannot contain '@') at column 3"),
        ("web 1", "whitespace inside a target at column 4"),
        ("@we b", "invalid character ' ' in group name at column 4"),
        (
            "@web[1-2]",
            "a group reference cannot contain a range at column 5",
        ),
        ("web/1", "invalid character '/' in host name at column 4"),
        ("-web", "a host name cannot start with '-' at column 1"),
        ("root@.web", "a host name cannot start with '.' at column 6"),
        ("web..x", "empty label ('..') in host name at column 5"),
        (
            "root@127.87.0.010:22",
            "'127.87.0.010' is not an IPv4 address as written (four numbers 0-255, without \
             leading zeros, which resolvers read as octal) at column 6",
        ),
        (
            "10.1",
            "'10.1' is not an IPv4 address as written (four numbers 0-255, without leading \
             zeros, which resolvers read as octal) at column 1",
        ),
        ("[::1]x", "unexpected 'x' after ']' at column 6"),
        ("[::g]", "invalid character 'g' in IPv6 address at column 4"),
        ("[1::2::3]", "'1::2::3' is not an IPv6 address at column 2"),
        ("[fe80::1%]", "empty zone after '%' at column 10"),
        ("h:[0-1]", "port 0 out of range 1-65535 at column 3"),
        (
            "r[1-2]-n[01-02]:abc",
            "port 'abc' is not a number at column 17",
        ),
        ("x[1-2]y@", "empty host at column 9"),
        ("[2001:db8::[1-2]]", "nested '[' at column 12"),
    ];
    for (input, reason) in cases {
        check(input, &format!("bad target pattern '{input}': {reason}"));
    }
    let long = format!("{}.example", "w".repeat(250));
    check(
        &long,
        &format!("bad target pattern '{long}': host name longer than 253 characters at column 254"),
    );
}

#[test]
fn expand_keeps_words_unparsed() {
    let cases: [(&str, &[&str]); 4] = [
        ("web 1", &["web 1"]),
        ("", &[""]),
        ("a[1-2]b[3,3]", &["a1b3", "a1b3", "a2b3", "a2b3"]),
        ("[::1]", &["[::1]"]),
    ];
    for (input, expected) in cases {
        assert_eq!(
            expand(input),
            Ok(expected.iter().map(|w| w.to_string()).collect())
        );
    }
    assert_eq!(
        expand("n[1-1000000]").map(|words| words.len()),
        Ok(MAX_WORDS)
    );
}

#[test]
fn target_fields_and_display_round_trip() {
    let cases = [
        ("web1", None, "web1", None, "web1"),
        (
            "deploy@web1:2222",
            Some("deploy"),
            "web1",
            Some(2222),
            "deploy@web1:2222",
        ),
        ("[::1]:22", None, "::1", Some(22), "[::1]:22"),
        (
            "root@[fe80::1%eth0]",
            Some("root"),
            "fe80::1%eth0",
            None,
            "root@fe80::1%eth0",
        ),
        ("[::1]", None, "::1", None, "::1"),
    ];
    for (word, user, host, port, shown) in cases {
        let target: Target = word.parse().unwrap_or_else(|e| panic!("{word}: {e}"));
        let expected = Target {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        };
        assert_eq!(target, expected, "word: {word}");
        assert_eq!(target.to_string(), shown);
        assert_eq!(Target::parse(shown), Ok(target));
    }
    let error = Target::parse("@host").map_err(|e| e.to_string());
    assert_eq!(
        error,
        Err("bad target pattern '@host': empty user before '@' at column 1".into())
    );
}

#[test]
fn glob() {
    let cases = [
        ("web*", "web01", true),
        ("WEB*", "web01", true),
        ("web*", "db01", false),
        ("*", "", true),
        ("", "", true),
        ("", "a", false),
        ("web??", "web01", true),
        ("web??", "web1", false),
        ("*.example.com", "web1.example.com", true),
        ("*.example.com", "web1.example.org", false),
        ("w*b*1", "web-lab-01", true),
        ("w*b*1", "web-lab-02", false),
        ("a*a*a", "aaa", true),
        ("a*a*a", "aa", false),
        ("**x", "abx", true),
    ];
    for (pattern, name, expected) in cases {
        assert_eq!(glob_match(pattern, name), expected, "{pattern} vs {name}");
    }
}
