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

/// A PKI with the CA's certificate but not its key (a controller that has only the public
/// half) cannot sign: renew says so before contacting any host; install fails a host that
/// needs a certificate before uploading anything to it, and no new key is left behind.
#[test]
fn a_pki_without_the_ca_key_is_refused_before_the_hosts_are_touched() {
    let installation = Installation::new(SshFleet::start(2), &[]);
    let hosts: Vec<String> = installation
        .fleet
        .hosts()
        .iter()
        .map(|host| host.name.clone())
        .collect();
    installation
        .agent("install", &["-w", &hosts[0]])
        .assert_code(0);
    let pki = installation.fleet.client_home().join(".config/volley/pki");
    let half = installation.fleet.dir().join("half-pki");
    std::fs::create_dir(&half).unwrap();
    for file in ["ca.pem", "controller.pem", "controller.key"] {
        std::fs::copy(pki.join(file), half.join(file)).unwrap();
    }
    let half = half.display().to_string();

    let output = installation.agent("renew", &["-w", &hosts[0], "--pki", &half]);
    output.assert_code(64);
    assert!(
        output.stderr.starts_with("volley: pki ")
            && output.stderr.contains("ca.pem is here but not ca.key")
            && output.stderr.lines().count() == 1,
        "{}",
        output.describe()
    );
    assert!(
        !installation
            .file(&hosts[0], "etc/volley/agent.key.new")
            .exists()
    );

    let output = installation.agent("install", &["-w", &hosts[1], "--pki", &half]);
    output.assert_code(1);
    let reason = output.records()[0].reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("certificate failed: pki ")
            && reason.contains("ca.pem is here but not ca.key"),
        "{reason}"
    );
    assert!(
        !installation
            .file(&hosts[1], "usr/local/bin/volley-agent")
            .exists(),
        "the binary was uploaded first"
    );
    assert!(
        !installation
            .file(&hosts[1], "etc/volley/agent.key.new")
            .exists()
    );
}
