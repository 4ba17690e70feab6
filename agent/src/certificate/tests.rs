use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::*;

/// A CA as `volley pki init` makes one.
fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// An agent certificate from `ca`, valid between the two dates (year, month, day).
fn agent(
    ca: &CertifiedIssuer<'static, KeyPair>,
    from: (i32, u8, u8),
    to: (i32, u8, u8),
) -> CertificateDer<'static> {
    let mut params =
        CertificateParams::new(vec!["a01".to_string(), "127.0.0.1".to_string()]).expect("names");
    params.distinguished_name.push(DnType::CommonName, "a01");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
    let key = KeyPair::generate().expect("key");
    params
        .signed_by(&key, ca)
        .expect("certificate")
        .der()
        .clone()
}

fn roots(ca: &CertifiedIssuer<'static, KeyPair>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).expect("a CA");
    roots
}

fn check(certificate: CertificateDer<'static>, ca: &RootCertStore, expected: Verdict) {
    assert_eq!(judge(&[certificate], ca, UnixTime::now()), expected);
}

#[test]
fn a_certificate_is_judged_by_its_ca_and_its_dates() {
    let ca = authority("Volley CA");
    let ours = roots(&ca);
    check(agent(&ca, (2020, 1, 1), (2090, 1, 1)), &ours, Verdict::Good);
    check(
        agent(&ca, (2020, 1, 1), (2025, 1, 1)),
        &ours,
        Verdict::Warn(
            "expired on 2025-01-01: controllers will refuse it; renew it (volley agent renew)"
                .to_string(),
        ),
    );
    check(
        agent(&ca, (2089, 1, 1), (2090, 1, 1)),
        &ours,
        Verdict::Warn(
            "is not valid before 2089-01-01: controllers will refuse it until then; check this \
             host's clock, or renew it (volley agent renew)"
                .to_string(),
        ),
    );
    let not_ours = Verdict::Refuse(
        "it is not issued by the configured CA: controllers will refuse it; issue one from that \
         CA (volley agent renew) or set `ca` to the CA that issued it"
            .to_string(),
    );
    // Another CA, even one of the same name, and whether or not its certificate is in date.
    let other = authority("Volley CA");
    check(
        agent(&other, (2020, 1, 1), (2090, 1, 1)),
        &ours,
        not_ours.clone(),
    );
    check(agent(&other, (2020, 1, 1), (2025, 1, 1)), &ours, not_ours);
}

#[test]
fn a_certificate_from_any_ca_of_the_file_is_good() {
    let ca = authority("Volley CA");
    let next = authority("Volley CA 2");
    let mut both = roots(&ca);
    both.add(next.der().clone()).expect("a CA");
    check(
        agent(&next, (2020, 1, 1), (2090, 1, 1)),
        &both,
        Verdict::Good,
    );
}
