//! Test certificates made with rcgen, shaped as `volley pki` makes them: a CA, controller
//! certificates (CN = identity, EKU clientAuth) and agent certificates (CN = host name, SANs,
//! EKU serverAuth).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, in PEM.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub certificate: String,
    pub key: String,
}

/// A certificate authority, as `volley pki init` makes one.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Authority {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    pub fn certificate(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, mut params: CertificateParams, common_name: &str) -> Credentials {
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&key, &self.issuer).expect("certificate");
        Credentials {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A controller certificate: CN = its identity, EKU clientAuth.
    pub fn controller(&self, identity: &str) -> Credentials {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, identity)
    }

    /// A certificate with a controller's name but no extended key usage at all, which webpki
    /// alone would admit for client authentication.
    pub fn controller_without_usage(&self, identity: &str) -> Credentials {
        let params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
        self.issue(params, identity)
    }

    /// A controller certificate whose validity ended years ago.
    pub fn expired_controller(&self, identity: &str) -> Credentials {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.issue(params, identity)
    }

    /// An agent certificate whose validity ended years ago.
    pub fn expired_agent(&self, host: &str) -> Credentials {
        let mut params = CertificateParams::new(vec![host.to_string(), "127.0.0.1".to_string()])
            .expect("parameters");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.issue(params, host)
    }

    /// An agent certificate: CN = host name, SANs name and loopback address, EKU serverAuth.
    pub fn agent(&self, host: &str) -> Credentials {
        let mut params = CertificateParams::new(vec![host.to_string(), "127.0.0.1".to_string()])
            .expect("parameters");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, host)
    }
}
