use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn der(pem: &str) -> CertificateDer<'static> {
    let mut reader = pem.as_bytes();
    let block = PemObject::from_pem_reader(&mut reader);
    block.unwrap()
}

/// Verifies `certificate` as a server certificate for `name` against the PKI's CA, as the
/// controller's TLS client does.
fn verify(pki: &Pki, certificate: &str, name: &str) -> Result<(), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(der(&fs::read_to_string(pki.ca_certificate()).unwrap()))
        .unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    verifier
        .verify_server_cert(&der(certificate), &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn init_writes_private_keys_0600_in_a_0700_directory() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    pki.init(DEFAULT_IDENTITY).unwrap();
    assert_eq!(mode(&pki.dir), 0o700);
    assert_eq!(mode(&pki.dir.join("agents")), 0o700);
    assert_eq!(mode(&pki.dir.join("ca.key")), 0o600);
    assert_eq!(mode(&pki.dir.join("controller.key")), 0o600);
    let error = pki.init(DEFAULT_IDENTITY).unwrap_err().to_string();
    assert!(error.contains("already initialised"), "{error}");
}

/// A lost controller certificate is issued again from the CA, which stays: agents that trust
/// it need nothing new. Before that, the error says so rather than ask for a new PKI.
#[test]
fn init_issues_a_lost_controller_certificate_again_from_the_same_ca() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    assert!(pki.init(DEFAULT_IDENTITY).unwrap().new_ca);
    let ca = fs::read_to_string(pki.ca_certificate()).unwrap();
    let (agent, _) = pki.agent_certificate("web01", &[]).unwrap();
    fs::remove_file(pki.dir.join("controller.pem")).unwrap();
    let error = pki.controller_credentials().unwrap_err().to_string();
    assert!(
        error.ends_with(
            "no controller.pem: `volley pki init` issues the controller's certificate again \
             from the CA there"
        ),
        "{error}"
    );

    let made = pki.init(DEFAULT_IDENTITY).unwrap();
    assert!(!made.new_ca);
    assert_eq!(fs::read_to_string(pki.ca_certificate()).unwrap(), ca);
    assert_eq!(mode(&made.issued.key), 0o600);
    pki.controller_credentials().unwrap();
    verify(&pki, &agent, "web01").unwrap();

    // With the CA's key kept elsewhere, the missing file must come from there.
    fs::remove_file(pki.dir.join("ca.key")).unwrap();
    fs::remove_file(pki.dir.join("controller.key")).unwrap();
    let error = pki.controller_credentials().unwrap_err().to_string();
    assert!(
        error.ends_with("no controller.key: copy it from where the CA is kept"),
        "{error}"
    );
}

#[test]
fn agent_certificates_name_their_host_and_address() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    pki.init(DEFAULT_IDENTITY).unwrap();
    let issued = pki
        .issue_agent("web01.example.com", &["10.0.0.11".parse().unwrap()])
        .unwrap();
    assert_eq!(mode(&issued.key), 0o600);
    let certificate = fs::read_to_string(&issued.certificate).unwrap();
    verify(&pki, &certificate, "web01.example.com").unwrap();
    verify(&pki, &certificate, "10.0.0.11").unwrap();
    assert!(
        verify(&pki, &certificate, "web02.example.com").is_err(),
        "another host's name must not verify"
    );
    let (other, _) = pki.agent_certificate("127.0.0.9", &[]).unwrap();
    verify(&pki, &other, "127.0.0.9").unwrap();
}

/// Every key volley makes is Ed25519 (cheaper handshakes); a CA of P-256, as volley made them
/// before, keeps issuing certificates that verify.
#[test]
fn new_keys_are_ed25519_and_a_p256_ca_made_before_still_issues() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    let controller = pki.init(DEFAULT_IDENTITY).unwrap().issued;
    let agent = pki.issue_agent("web01", &[]).unwrap();
    for key in [pki.dir.join("ca.key"), controller.key, agent.key] {
        let key = KeyPair::from_pem(&fs::read_to_string(&key).unwrap()).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ED25519);
    }

    let old = Pki::new(home.path().join("old"));
    private_dir(&old.dir).unwrap();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca = ca_params().unwrap().self_signed(&ca_key).unwrap();
    write_file(&old.dir.join("ca.key"), &ca_key.serialize_pem(), 0o600).unwrap();
    write_file(&old.dir.join("ca.pem"), &ca.pem(), 0o644).unwrap();
    assert!(!old.init(DEFAULT_IDENTITY).unwrap().new_ca);
    let (certificate, _) = old.agent_certificate("web01", &[]).unwrap();
    verify(&old, &certificate, "web01").unwrap();
    assert!(verify(&pki, &certificate, "web01").is_err());
}

#[test]
fn another_ca_does_not_verify() {
    let home = tempfile::tempdir().unwrap();
    let ours = Pki::new(home.path().join("ours"));
    let theirs = Pki::new(home.path().join("theirs"));
    ours.init(DEFAULT_IDENTITY).unwrap();
    theirs.init(DEFAULT_IDENTITY).unwrap();
    let (certificate, _) = theirs.agent_certificate("web01", &[]).unwrap();
    assert!(verify(&ours, &certificate, "web01").is_err());
}

#[test]
fn a_readable_key_and_a_missing_pki_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    let error = pki.controller_credentials().unwrap_err().to_string();
    assert!(
        error.ends_with("not initialised: run `volley pki init` first"),
        "{error}"
    );
    pki.init(DEFAULT_IDENTITY).unwrap();
    pki.controller_credentials().unwrap();
    let key = pki.dir.join("controller.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let error = pki.controller_credentials().unwrap_err().to_string();
    assert!(
        error.contains("readable by group or others (mode 0644)"),
        "{error}"
    );
}

#[test]
fn bad_names_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    pki.init(DEFAULT_IDENTITY).unwrap();
    for name in ["", "a b", "-x", "web/01"] {
        assert!(pki.issue_agent(name, &[]).is_err(), "{name:?}");
    }
}

#[test]
fn controller_identities_are_refused_as_agent_names() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    pki.init("ops-controller").unwrap();
    let key = KeyPair::generate().unwrap();
    let request = CertificateParams::new(vec!["web01".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    for name in ["ops-controller", "OPS-Controller", "volley-controller"] {
        let expected = format!(
            "'{name}' is a controller identity: an agent certificate must not carry it (agents would take the name for a controller's); give the host another name"
        );
        let issued = pki.issue_agent(name, &[]).unwrap_err();
        assert_eq!(issued.to_string(), expected);
        let signed = pki.sign_agent_request(&request, name, &[]).unwrap_err();
        assert_eq!(signed.to_string(), expected);
        assert!(!pki.dir.join("agents").join(format!("{name}.pem")).exists());
    }
    pki.issue_agent("web01", &[]).unwrap();
}

#[test]
fn controller_certificates_carry_client_auth_and_agents_server_auth_only() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    let controller = pki.init(DEFAULT_IDENTITY).unwrap();
    let agent = pki.issue_agent("web01", &[]).unwrap();
    let usage = |path: &Path| {
        let der = der(&fs::read_to_string(path).unwrap());
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let usage = parsed.extended_key_usage().unwrap().unwrap().value.clone();
        (usage.client_auth, usage.server_auth)
    };
    assert_eq!(usage(&controller.issued.certificate), (true, false));
    assert_eq!(usage(&agent.certificate), (false, true));
}

#[test]
fn a_request_gets_our_names_and_usage_not_its_own() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    pki.init(DEFAULT_IDENTITY).unwrap();
    // The request asks for another name, a CA flag and client authentication.
    let key = KeyPair::generate().unwrap();
    let mut asked = CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
    asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    asked.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let request = asked.serialize_request(&key).unwrap().pem().unwrap();
    let certificate = pki
        .sign_agent_request(&request, "web01", &["10.0.0.11".parse().unwrap()])
        .unwrap();
    verify(&pki, &certificate, "web01").unwrap();
    verify(&pki, &certificate, "10.0.0.11").unwrap();
    assert!(verify(&pki, &certificate, "evil.example.com").is_err());
    let der = der(&certificate);
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!parsed.is_ca());
    let usage = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(usage.server_auth && !usage.client_auth);
    assert_eq!(
        parsed.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
}

#[test]
fn a_tampered_request_and_garbage_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    pki.init(DEFAULT_IDENTITY).unwrap();
    let error = pki.sign_agent_request("not a request", "web01", &[]);
    assert!(
        error
            .unwrap_err()
            .to_string()
            .starts_with("bad certificate request")
    );
    let key = KeyPair::generate().unwrap();
    let request = CertificateParams::new(vec!["web01".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let mut bytes = request.der().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        data_encoding::BASE64.encode(&bytes)
    );
    assert!(pki.sign_agent_request(&tampered, "web01", &[]).is_err());
}

#[test]
fn the_controller_identity_is_its_common_name() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    pki.init("ops-controller").unwrap();
    assert_eq!(pki.controller_identity().unwrap(), "ops-controller");
}

#[test]
fn a_ca_half_here_or_with_another_key_signs_nothing_and_no_new_ca_is_made_beside_it() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    pki.init(DEFAULT_IDENTITY).unwrap();
    let ca = fs::read_to_string(pki.ca_certificate()).unwrap();
    let ca_key = fs::read_to_string(pki.dir.join("ca.key")).unwrap();

    // The CA's key lost (and the controller's certificate with it): init must not make a new
    // key beside the old certificate, and nothing is signed.
    fs::remove_file(pki.dir.join("ca.key")).unwrap();
    fs::remove_file(pki.dir.join("controller.pem")).unwrap();
    let half = "ca.pem is here but not ca.key: copy ca.key from where the CA is kept";
    let error = pki.init(DEFAULT_IDENTITY).unwrap_err().to_string();
    assert!(error.contains(half), "{error}");
    assert!(!pki.dir.join("ca.key").exists(), "init wrote a key");
    let error = pki.issue_agent("web01", &[]).unwrap_err().to_string();
    assert!(error.contains(half), "{error}");
    assert!(!pki.dir.join("agents/web01.pem").exists());

    // Another CA's key in its place: refused before signing.
    let other = Pki::new(home.path().join("other"));
    other.init(DEFAULT_IDENTITY).unwrap();
    fs::copy(other.dir.join("ca.key"), pki.dir.join("ca.key")).unwrap();
    for error in [
        pki.init(DEFAULT_IDENTITY).unwrap_err().to_string(),
        pki.issue_agent("web01", &[]).unwrap_err().to_string(),
    ] {
        assert!(
            error.ends_with("ca.key is not the key of ca.pem: certificates it signed would not verify; put back the CA's own key"),
            "{error}"
        );
    }
    assert!(!pki.dir.join("controller.pem").exists());

    // Its own key back: the controller's certificate is issued again from the same CA.
    fs::write(pki.dir.join("ca.key"), &ca_key).unwrap();
    assert!(!pki.init(DEFAULT_IDENTITY).unwrap().new_ca);
    assert_eq!(fs::read_to_string(pki.ca_certificate()).unwrap(), ca);
}

#[test]
fn a_batch_with_a_bad_name_issues_none_and_a_reissue_says_so() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    pki.init(DEFAULT_IDENTITY).unwrap();
    let batch = |names: &[&str]| -> Vec<(String, Vec<IpAddr>)> {
        names
            .iter()
            .map(|name| (name.to_string(), Vec::new()))
            .collect()
    };
    assert!(pki.issue_agents(&batch(&["web01", "../evil"])).is_err());
    assert!(
        !pki.dir.join("agents/web01.pem").exists(),
        "written before the bad name"
    );
    let issued = pki.issue_agents(&batch(&["web01"])).unwrap();
    assert!(!issued[0].1);
    let issued = pki.issue_agents(&batch(&["web01", "web02"])).unwrap();
    assert_eq!(
        issued
            .iter()
            .map(|(_, replaced)| *replaced)
            .collect::<Vec<_>>(),
        [true, false]
    );
}

/// Replaces the controller's certificate (and key) with one of the PKI's CA that ends at
/// `not_after`.
fn controller_ending(pki: &Pki, not_after: time::OffsetDateTime) {
    let issuer = pki.issuer().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = leaf_params(DEFAULT_IDENTITY).unwrap();
    params.not_before = not_after - time::Duration::days(100);
    params.not_after = not_after;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let certificate = params.signed_by(&key, &issuer).unwrap();
    fs::write(pki.dir.join("controller.pem"), certificate.pem()).unwrap();
    fs::write(pki.dir.join("controller.key"), key.serialize_pem()).unwrap();
}

#[test]
fn an_ending_controller_certificate_is_renewed_by_init_and_an_ended_one_refused() {
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::new(home.path().join("pki"));
    pki.init(DEFAULT_IDENTITY).unwrap();
    let now = time::OffsetDateTime::now_utc();
    assert!(pki.init(DEFAULT_IDENTITY).is_err(), "a fresh one is kept");

    // Ending within RENEW_WITHIN: still usable (runs warn), and init issues it again.
    controller_ending(&pki, now + time::Duration::days(10));
    let ending = pki.controller_credentials().unwrap().not_after;
    assert!(ending < now + RENEW_WITHIN);
    let made = pki.init(DEFAULT_IDENTITY).unwrap();
    assert!(made.renewed && !made.new_ca);
    assert!(pki.controller_credentials().unwrap().not_after > now + RENEW_WITHIN);

    // Ended: refused before any agent is dialled, naming the day; init renews it.
    let ended = now - time::Duration::days(2);
    controller_ending(&pki, ended);
    let error = pki.controller_credentials().unwrap_err().to_string();
    assert!(
        error.ends_with(&format!(
            "controller.pem expired on {}: agents refuse it; `volley pki init` issues it again \
             from the CA there",
            date(ended)
        )),
        "{error}"
    );
    assert!(pki.init(DEFAULT_IDENTITY).unwrap().renewed);
    pki.controller_credentials().unwrap();
}
