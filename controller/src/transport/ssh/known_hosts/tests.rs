use super::*;
use std::os::unix::fs::PermissionsExt;
use std::sync::Barrier;

use russh::keys::EcdsaCurve;
use russh::keys::ssh_key::public::Ed25519PublicKey;

// Made with `ssh-keygen -t ... -C ''`; fingerprints from `ssh-keygen -lf`.
const A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdbTLy94mjn+XBcuF9rTg9Abd/T5315Iq46HvIHN26W";
const B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5Nb5j/Z62qO2Od9TyRJLrnGwEU479Wb2jQtyjOyuKs";
const E: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKrTkwxWwH+KSS6uyAkwGcZ0Ea8d8rj0YSSI0doCA128QFaWeX1SrqKGSPuaLvtgL2PSNcg0xUadkTBf4YJiZ+o=";
const R: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC6vbKZWGjJk0tY+UVhrnAZ0Lnztov8ZR+7Es++zcCBaqJOk4XKJwHlSYDY5yHpp0YYbCg5hi84pblwgjUkPUgVHUXjpbBiLbV7oeOjM59WwIoBg69Zvxb9qAgZTdM4L9+ARBB3f30CDnI9L97pzTQDoZEj4d89wkvDJaX5lhynFST6gI6yaynUGSuonNuHSUs33ktB6nB21EE9utdX1fMlbvac8TPd8vC3cmLWhQLJ+H2F38TdSfDExNQVWpYH2AA2N4+6YZ4u0X8xQzjr4tV1MvroOyXYYv8Ihav8vWFRkg7YxN11+WW8ufGyv2u4HwrjAjBGFivqQdU9Qxs3tUIN";
// `ssh-keygen -H` of "web1.example.com A" and "[web2.example.com]:2222 B".
const HASHED: &str = "|1|kU9c4Jfd3L4rCYjD7KBOrWRtizI=|lP4o0PDHwQCnFakrYbwH9jxTgfE= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdbTLy94mjn+XBcuF9rTg9Abd/T5315Iq46HvIHN26W\n\
    |1|jSX0Y/sPNNOYWXYN73kz5WfA8II=|616XmPOh/njF2lda0qnHooL5D9w= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5Nb5j/Z62qO2Od9TyRJLrnGwEU479Wb2jQtyjOyuKs\n";

fn key(openssh: &str) -> PublicKey {
    PublicKey::from_openssh(openssh).unwrap()
}

/// A distinct Ed25519 key per `n`; the bytes need not be a valid curve point to be compared.
fn numbered_key(n: u32) -> PublicKey {
    let mut bytes = [7u8; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    PublicKey::from(Ed25519PublicKey(bytes))
}

/// Replaces `{A}`, `{B}`, `{E}`, `{R}` with the keys, and `{A:tab}` with A's fields
/// tab-separated.
fn expand(text: &str) -> String {
    text.replace("{A:tab}", &A.replace(' ', "\t"))
        .replace("{A}", A)
        .replace("{B}", B)
        .replace("{E}", E)
        .replace("{R}", R)
}

fn known_hosts(text: &str) -> KnownHosts {
    KnownHosts::parse(Path::new("/test/known_hosts"), expand(text).as_bytes())
}

/// A hashed name as `ssh-keygen -H` writes it, with a fixed salt.
fn hashed(name: &str) -> String {
    let salt = [0x5a_u8; 20];
    let digest = Hmac::<Sha1>::new_from_slice(&salt)
        .unwrap()
        .chain_update(name)
        .finalize()
        .into_bytes();
    format!("|1|{}|{}", BASE64.encode(&salt), BASE64.encode(&digest))
}

#[test]
fn verdicts() {
    use Verdict::*;
    #[track_caller]
    fn check(text: &str, host: &str, port: u16, presented: &str, expected: Verdict) {
        let actual = known_hosts(text).check(host, port, &key(presented));
        assert_eq!(actual, expected, "{host}:{port} against {text:?}");
    }
    check("web1 {A}", "web1", 22, A, Known);
    check("Web1.Example.COM {A}", "WEB1.example.com", 22, A, Known);
    check("web1,web2,10.0.0.2 {A}", "10.0.0.2", 22, A, Known);
    check("web1,web1 {A}", "web1", 22, A, Known);
    check("web1 {A}", "web2", 22, A, Unknown);
    check("web1 {A}", "web", 22, A, Unknown);
    check("", "web1", 22, A, Unknown);
    // Ports: bare names are port 22 only, `[h]:p` that port only.
    check("[web1]:2222 {A}", "web1", 2222, A, Known);
    check("[web1]:2222 {A}", "web1", 22, A, Unknown);
    check("web1 {A}", "web1", 2222, A, Unknown);
    check("[web1]:22 {A}", "web1", 22, A, Unknown);
    check("[::1]:2222 {A}", "::1", 2222, A, Known);
    check("::1 {A}", "::1", 22, A, Known);
    // Hashed names, as written by `ssh-keygen -H`.
    check(HASHED, "web1.example.com", 22, A, Known);
    check(HASHED, "WEB1.example.com", 22, A, Known);
    check(HASHED, "web2.example.com", 2222, B, Known);
    check(HASHED, "web2.example.com", 22, B, Unknown);
    check(HASHED, "web1.example.com", 22, B, Changed { line: 1 });
    // Wildcards, also inside brackets.
    check("*.example.com {A}", "db.example.com", 22, A, Known);
    check("*.example.com {A}", "example.com", 22, A, Unknown);
    check("?eb1 {A}", "web1", 22, A, Known);
    check("?eb1 {A}", "wweb1", 22, A, Unknown);
    check("w*1*2 {A}", "w1x12", 22, A, Known);
    check("w*1*2 {A}", "w1x21", 22, A, Unknown);
    check("* {A}", "web1", 2222, A, Known);
    check("[10.0.0.*]:2222 {A}", "10.0.0.7", 2222, A, Known);
    check("[10.0.0.*]:2222 {A}", "10.0.0.7", 22, A, Unknown);
    check("[10.0.0.*]:2222 {A}", "10.0.1.7", 2222, A, Unknown);
    // A matching negation excludes the line, wherever it stands.
    check(
        "*.example.com,!db.example.com {A}",
        "db.example.com",
        22,
        A,
        Unknown,
    );
    check(
        "*.example.com,!db.example.com {A}",
        "web.example.com",
        22,
        A,
        Known,
    );
    check("!web1,web1 {A}", "web1", 22, A, Unknown);
    check("web1,!web1 {A}", "web1", 22, A, Unknown);
    check("web1,!db* {A}", "web1", 22, A, Known);
    check("!web1 {A}", "web2", 22, A, Unknown);
    // Layout: tabs, comments, blank lines, CRLF, trailing comments.
    check("web1\t\t{A:tab}\t# a comment", "web1", 22, A, Known);
    check("  \tweb1 {A}", "web1", 22, A, Known);
    check(
        "# web1 {A}\n\n   # indented\nweb1 {B}",
        "web1",
        22,
        A,
        Changed { line: 4 },
    );
    check("web1 {A}\r\n", "web1", 22, A, Known);
    check("web1 {A} root@somewhere else", "web1", 22, A, Known);
    // Changed for a different key of the same algorithm, and, as OpenSSH has it, for a host
    // known by keys of other algorithms only (the same algorithm's line named first).
    check("web1 {B}", "web1", 22, A, Changed { line: 1 });
    check("web1 {E}", "web1", 22, A, Changed { line: 1 });
    check("web1 {E}\nweb1 {R}", "web1", 22, A, Changed { line: 1 });
    check("web1 {E}\nweb1 {B}", "web1", 22, A, Changed { line: 2 });
    check("web2 {E}", "web1", 22, A, Unknown);
    check("@revoked web1 {E}", "web1", 22, A, Unknown);
    check("web1 {B}\nweb1 {A}", "web1", 22, A, Known);
    check(
        "x {B}\nweb1 {E}\n* {B}\nweb1 {B}",
        "web1",
        22,
        A,
        Changed { line: 3 },
    );
    check("web1 {R}", "web1", 22, R, Known);
    check("web1 {E}", "web1", 22, E, Known);
    // Revoked wins over anything, for matching hosts only, and is no "changed" key.
    check(
        "web1 {A}\n@revoked web1 {A}",
        "web1",
        22,
        A,
        Revoked { line: 2 },
    );
    check(
        "@revoked * {A}\nweb1 {A}",
        "web1",
        22,
        A,
        Revoked { line: 1 },
    );
    check("@revoked web2 {A}\nweb1 {A}", "web1", 22, A, Known);
    check("@revoked web1 {B}\nweb1 {A}", "web1", 22, A, Known);
    check("@revoked web1 {B}", "web1", 22, A, Unknown);
    check(
        "@revoked\tweb1\t{A:tab}",
        "web1",
        22,
        A,
        Revoked { line: 1 },
    );
    // Lines we do not use.
    check(
        "@cert-authority *.example.com {A}",
        "a.example.com",
        22,
        A,
        Unknown,
    );
    check(
        "@cert-authority *.example.com {B}",
        "a.example.com",
        22,
        A,
        Unknown,
    );
    check("@bogus web1 {B}\nweb1 {A}", "web1", 22, A, Known);
}

#[test]
fn generated_hashed_names() {
    for (written, host, port, expected) in [
        ("web1", "web1", 22, Verdict::Known),
        ("web1", "WEB1", 22, Verdict::Known),
        ("web1", "web1", 2222, Verdict::Unknown),
        ("[web1]:2222", "web1", 2222, Verdict::Known),
        ("[web1]:2222", "web1", 22, Verdict::Unknown),
        ("[10.1.2.3]:2200", "10.1.2.3", 2200, Verdict::Known),
    ] {
        let text = format!("{} {A}\n", hashed(written));
        let actual = known_hosts(&text).check(host, port, &key(A));
        assert_eq!(actual, expected, "{host}:{port} against hashed {written}");
    }
}

#[test]
fn malformed_lines_are_skipped_and_counted() {
    let blob_of_a = A.split(' ').nth(1).unwrap();
    let text = format!(
        "web1\nweb1 ssh-ed25519\nweb1 ssh-ed25519 notbase64!!\nweb1 ssh-rsa {blob_of_a}\n\
         @bogus web1 {{A}}\n@revoked\n|1|nosalt {{A}}\n|1|!!|!! {{A}}\nweb1 {{A}}\n"
    );
    let mut bytes = expand(&text).into_bytes();
    bytes.extend_from_slice(b"web1 \xff\xfe {A}\n");
    let known = KnownHosts::parse(Path::new("kh"), &bytes);
    assert_eq!(known.skipped, 9);
    assert_eq!(known.check("web1", 22, &key(A)), Verdict::Known);
}

#[test]
fn algorithms() {
    let rsa =
        [Some(HashAlg::Sha512), Some(HashAlg::Sha256), None].map(|hash| Algorithm::Rsa { hash });
    let p256 = Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    };
    let text =
        "web1 {E}\nweb1,web3 {A}\n*.example.com {R}\n@revoked web2 {B}\nweb1 {B}\n[web1]:2222 {R}";
    let known = known_hosts(text);
    for (host, port, expected) in [
        ("web1", 22, vec![p256.clone(), Algorithm::Ed25519]),
        ("web3", 22, vec![Algorithm::Ed25519]),
        ("a.example.com", 22, rsa.to_vec()),
        ("web1", 2222, rsa.to_vec()),
        ("web2", 22, vec![]),
        ("nowhere", 22, vec![]),
    ] {
        assert_eq!(known.algorithms(host, port), expected, "{host}:{port}");
    }
}

#[test]
fn fingerprints_match_ssh_keygen() {
    assert_eq!(
        fingerprint(&key(A)),
        "SHA256:/VIanV3QlnBSoek4Pu/fdlIobug+tm8wrXQsHvvIEsk"
    );
    assert_eq!(
        fingerprint(&key(E)),
        "SHA256:bdGlMp7tVg1UUz6EpqZ1Tg87fYHXrpyVvDFCSFEPda0"
    );
    assert_eq!(
        fingerprint(&key(R)),
        "SHA256:jpkIj/F+H6o6BvB+jn8A4ZIs9cWP/oX3JAtXAscRXNw"
    );
}

#[test]
fn many_lines_each_host_finds_its_own() {
    let mut text = String::new();
    for n in 0..1200_u32 {
        let line = numbered_key(n).to_openssh().unwrap();
        let host = match n % 3 {
            0 => format!("host{n}"),
            1 => format!("[host{n}]:2222"),
            _ => hashed(&format!("host{n}")),
        };
        text.push_str(&format!("{host} {line}\n"));
    }
    text.push_str("*.wild {A}\n");
    let known = known_hosts(&text);
    for n in 0..1200_u32 {
        let port = if n % 3 == 1 { 2222 } else { 22 };
        let host = format!("host{n}");
        assert_eq!(
            known.check(&host, port, &numbered_key(n)),
            Verdict::Known,
            "{host}"
        );
        let other = numbered_key(n + 1);
        assert_eq!(
            known.check(&host, port, &other),
            Verdict::Changed {
                line: n as usize + 1
            }
        );
    }
}

#[test]
fn missing_file_knows_no_host() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let known = KnownHosts::load(&path).unwrap();
    assert_eq!(known.path(), path);
    assert_eq!(known.check("web1", 22, &key(A)), Verdict::Unknown);
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let error = KnownHosts::load(dir.path()).unwrap_err();
    assert!(matches!(error, KnownHostsError::Read { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "known_hosts {}: cannot read: ",
            dir.path().display()
        )),
        "{message}"
    );
    assert!(
        !message.contains('\n') && !message.ends_with('.'),
        "{message}"
    );
}

#[test]
fn learn_then_check_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    let known = KnownHosts::load(&path).unwrap();
    known.learn("Web1", "Web1", 22, &key(A)).unwrap();
    known.learn("app2", "web2", 2222, &key(R)).unwrap();
    // Learning a known key again writes nothing, and lists nothing.
    known.learn("web1", "web1", 22, &key(A)).unwrap();
    let learned: Vec<String> = known
        .learned()
        .iter()
        .map(|key| {
            format!(
                "{} {} {} {}",
                key.host, key.address, key.key_type, key.fingerprint
            )
        })
        .collect();
    assert_eq!(
        learned,
        [
            format!("Web1 Web1:22 ED25519 {}", fingerprint(&key(A))),
            format!("app2 web2:2222 RSA {}", fingerprint(&key(R))),
        ]
    );
    assert_eq!(known.check("web1", 22, &key(A)), Verdict::Known);
    assert_eq!(known.check("web2", 2222, &key(R)), Verdict::Known);
    assert_eq!(
        known.check("web1", 22, &key(B)),
        Verdict::Changed { line: 1 }
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        format!("web1 {A}\n[web2]:2222 {R}\n")
    );
    let reloaded = KnownHosts::load(&path).unwrap();
    assert_eq!(reloaded.check("web2", 2222, &key(R)), Verdict::Known);
    assert_eq!(reloaded.skipped, 0);
}

/// In a file whose every entry is hashed, a learned key's host is hashed too (ssh does so where
/// `HashKnownHosts` is on); elsewhere it is written plain.
#[test]
fn a_key_learned_into_a_hashed_file_is_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    fs::write(&path, HASHED).unwrap();
    let known = KnownHosts::load(&path).unwrap();
    known.learn("web2", "web2", 2222, &key(B)).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let learned = text.strip_prefix(HASHED).unwrap();
    assert!(learned.starts_with("|1|"), "{learned:?}");
    assert!(!learned.contains("web2"), "{learned:?}");
    let reloaded = KnownHosts::load(&path).unwrap();
    assert_eq!(reloaded.check("web2", 2222, &key(B)), Verdict::Known);
    assert_eq!(
        reloaded.check("WEB2", 2222, &key(B)),
        Verdict::Known,
        "names are hashed lowercased, as they are looked up"
    );
    assert_eq!(reloaded.check("web2", 22, &key(B)), Verdict::Unknown);
}

#[test]
fn learning_a_revoked_key_leaves_it_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    fs::write(&path, format!("@revoked * {A}\n")).unwrap();
    let known = KnownHosts::load(&path).unwrap();
    known.learn("web1", "web1", 22, &key(A)).unwrap();
    assert_eq!(
        known.check("web1", 22, &key(A)),
        Verdict::Revoked { line: 1 }
    );
}

#[test]
fn learn_creates_private_file_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/known_hosts");
    KnownHosts::load(&path)
        .unwrap()
        .learn("web1", "web1", 22, &key(A))
        .unwrap();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
}

#[test]
fn learn_after_a_last_line_without_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    fs::write(&path, format!("# keys\nweb1 {A}")).unwrap();
    let known = KnownHosts::load(&path).unwrap();
    known.learn("web2", "web2", 22, &key(B)).unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        format!("# keys\nweb1 {A}\nweb2 {B}\n")
    );
    // The learned line is numbered as it now stands in the file.
    assert_eq!(
        known.check("web2", 22, &key(A)),
        Verdict::Changed { line: 3 }
    );
    let reloaded = KnownHosts::load(&path).unwrap();
    assert_eq!(
        reloaded.check("web2", 22, &key(A)),
        Verdict::Changed { line: 3 }
    );
    assert_eq!(reloaded.check("web1", 22, &key(A)), Verdict::Known);
}

#[test]
fn learn_refuses_names_that_would_change_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let known = KnownHosts::load(&dir.path().join("known_hosts")).unwrap();
    for host in [
        "", "a b", "a,b", "*.x", "h?", "!h", "#h", "@h", "|1|x", "[h]:22", "a\nb",
    ] {
        let error = known.learn(host, host, 22, &key(A)).unwrap_err();
        assert!(
            matches!(error, KnownHostsError::BadHost { .. }),
            "{host:?}: {error:?}"
        );
    }
    assert!(!dir.path().join("known_hosts").exists());
}

#[test]
fn many_threads_learning_at_once_write_whole_lines() {
    const THREADS: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    fs::write(&path, format!("web1 {A}")).unwrap();
    let known = Arc::new(KnownHosts::load(&path).unwrap());
    let start = Arc::new(Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|n| {
            let (known, start) = (known.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                known.learn(
                    &format!("host{n}"),
                    &format!("host{n}"),
                    22,
                    &numbered_key(n),
                )
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), THREADS as usize + 1);
    let reloaded = KnownHosts::load(&path).unwrap();
    assert_eq!(reloaded.skipped, 0);
    for n in 0..THREADS {
        let host = format!("host{n}");
        assert_eq!(
            reloaded.check(&host, 22, &numbered_key(n)),
            Verdict::Known,
            "{host}"
        );
    }
}

#[test]
fn is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KnownHosts>();
}
