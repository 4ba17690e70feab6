//! Certificates that install must replace, and a PKI that cannot sign.

use volley_tests::SshFleet;

use crate::installation::Installation;

/// A key that is not the certificate's: the running agent holds the old pair in memory, but
/// would not start again, so install issues a new certificate instead of saying "unchanged".
#[test]
fn a_key_that_is_not_the_certificates_gets_a_new_certificate() {
    let installation = Installation::new(SshFleet::start(1), &[]);
    let host = installation.fleet.hosts()[0].name.clone();
    installation.agent("install", &["-w", &host]).assert_code(0);
    let binary = installation.file(&host, "usr/local/bin/volley-agent");
    let other = installation.fleet.dir().join("other.key");
    let made = std::process::Command::new(&binary)
        .args(["keygen", "--name", "other", "--key"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    std::fs::rename(&other, installation.file(&host, "etc/volley/agent.key")).unwrap();

    let output = installation.agent("install", &["-w", &host]);
    output.assert_code(0);
    let record = &output.records()[0];
    assert!(
        record
            .stdout
            .starts_with("changed: certificate, reloaded; "),
        "{}",
        output.describe()
    );
    let matches = std::process::Command::new(&binary)
        .arg("check-key")
        .arg("--key")
        .arg(installation.file(&host, "etc/volley/agent.key"))
        .arg("--certificate")
        .arg(installation.file(&host, "etc/volley/agent.pem"))
        .output()
        .unwrap();
    assert!(matches.status.success(), "{matches:?}");
    let output = installation.agent("install", &["-w", &host]);
    output.assert_code(0);
    assert!(
        output.records()[0].stdout.starts_with("unchanged; "),
        "{}",
        output.describe()
    );
}
