//! The agent's side of mutual TLS: the rustls server configuration built from the key,
//! certificate and CA files, and the client verifier that admits only allowed controllers.
//!
//! A client is admitted when its certificate chains to the CA for client authentication
//! (webpki: validity dates, signatures, EKU clientAuth when the certificate lists EKUs) AND it
//! carries the clientAuth EKU (webpki alone admits a certificate without the extension) AND the
//! end-entity certificate's Subject Common Name is one of `allowed_controllers`. Another agent's
//! certificate (EKU serverAuth only, CN = its host name) fails all three. Everything happens
//! during the handshake, so a rejected peer never reaches a gRPC handler.

use std::fmt;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::certificate::{self, Verdict};
use crate::config::AgentConfig;

/// The only application protocol the agent speaks.
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: cannot read: {source}")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "key {path} has mode {mode:04o}: it must not be readable by group or others (chmod 600 {path})"
    )]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error(
        "key {path} is owned by uid {owner}: only root or the agent's own user (uid {own}) may own it, since its owner can read it (chown {own} {path})"
    )]
    KeyOwnedByOther { path: PathBuf, owner: u32, own: u32 },
    #[error("{what} {path}: {reason}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// A server configuration, and what is wrong with its certificate that does not stop it from
/// being served.
#[derive(Debug)]
pub struct Served {
    pub server: Arc<ServerConfig>,
    /// For the log: the certificate expired or is not valid yet (see certificate.rs).
    pub warning: Option<String>,
}

/// Builds the server configuration: our certificate and key, ALPN h2, and client certificates
/// required and checked by [`ControllerVerifier`]. A certificate not issued by the CA is
/// refused; one out of its dates is served with a warning.
pub fn server_config(config: &AgentConfig) -> Result<Served, TlsError> {
    // Mode and owner are checked before the key is read: a readable key is the mistake to refuse.
    check_key_file(&config.key)?;
    let certificates = read_certificates("certificate", &config.certificate)?;
    let key_pem = read_file("key", &config.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError::Invalid {
        what: "key",
        path: config.key.clone(),
        reason: format!("no usable private key: {error}"),
    })?;
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates("CA", &config.ca)? {
        // The agent's own certificate given as its CA is a likely slip: refuse it by name.
        if let Some(reason) = volley_common::certificate::not_a_ca(&certificate) {
            return Err(TlsError::Invalid {
                what: "CA",
                path: config.ca.clone(),
                reason,
            });
        }
        roots.add(certificate).map_err(|error| TlsError::Invalid {
            what: "CA",
            path: config.ca.clone(),
            reason: error.to_string(),
        })?;
    }
    let warning = match certificate::judge(&certificates, &roots, UnixTime::now()) {
        Verdict::Good => None,
        Verdict::Warn(reason) => Some(format!(
            "certificate {} {reason}",
            config.certificate.display()
        )),
        Verdict::Refuse(reason) => {
            return Err(TlsError::Invalid {
                what: "certificate",
                path: config.certificate.clone(),
                reason,
            });
        }
    };
    let ca_invalid = |reason: String| TlsError::Invalid {
        what: "CA",
        path: config.ca.clone(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| ca_invalid(error.to_string()))?;
    let verifier = ControllerVerifier {
        inner: webpki,
        allowed: config.allowed_controllers.clone(),
    };
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ca_invalid(error.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(certificates, key)
        .map_err(|error| TlsError::Invalid {
            what: "certificate",
            path: config.certificate.clone(),
            reason: format!("unusable with key {}: {error}", config.key.display()),
        })?;
    server.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Controllers dial each agent once per run and never resume: no tickets to make and send.
    server.send_tls13_tickets = 0;
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Served {
        server: Arc::new(server),
        warning,
    })
}

fn check_key_file(path: &Path) -> Result<(), TlsError> {
    let metadata = std::fs::metadata(path).map_err(|source| TlsError::Unreadable {
        what: "key",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyExposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    // The owner may read it whatever its mode says (and change the mode).
    let (owner, own) = (metadata.uid(), rustix::process::geteuid().as_raw());
    if owner != 0 && owner != own {
        return Err(TlsError::KeyOwnedByOther {
            path: path.to_path_buf(),
            owner,
            own,
        });
    }
    Ok(())
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(what, path)?;
    let invalid = |reason: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(format!("bad PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(invalid("no PEM certificate in the file".to_string()));
    }
    Ok(certificates)
}

/// The Subject Common Name of a DER certificate, when it has exactly one that is valid text.
///
/// Two CNs would make "the" identity ambiguous, so such a certificate has none.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = certificate.subject().iter_common_name();
    let name = names.next()?.as_str().ok()?.to_string();
    names.next().is_none().then_some(name)
}

/// Whether a DER certificate lists the clientAuth extended key usage. `volley pki` gives it to
/// controller certificates only; a certificate without any EKU extension does not have it.
pub fn has_client_auth(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(|(_, certificate)| {
        matches!(certificate.extended_key_usage(), Ok(Some(usage)) if usage.value.client_auth)
    })
}

/// Why a certificate that chains to the CA is still refused.
#[derive(Debug, thiserror::Error)]
enum NotAllowed {
    #[error("client certificate {} is not an allowed controller", describe(.common_name))]
    Identity { common_name: Option<String> },
    #[error(
        "client certificate {} lacks the clientAuth extended key usage: it is no controller certificate",
        describe(.common_name)
    )]
    Usage { common_name: Option<String> },
}

fn describe(common_name: &Option<String>) -> String {
    match common_name {
        Some(name) => format!("CN '{name}'"),
        None => "without a single Common Name".to_string(),
    }
}

/// Webpki's chain check, then the controller identity check.
struct ControllerVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl fmt::Debug for ControllerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerVerifier")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ControllerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let common_name = common_name(end_entity);
        let refused = |reason: NotAllowed| {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(reason)),
            )))
        };
        if !has_client_auth(end_entity) {
            return refused(NotAllowed::Usage { common_name });
        }
        match &common_name {
            Some(name) if self.allowed.iter().any(|allowed| allowed == name) => {
                Ok(ClientCertVerified::assertion())
            }
            _ => refused(NotAllowed::Identity { common_name }),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why a failed handshake refused the peer, when it did; `None` for noise such as a port
/// scanner or a client that hung up, which deserves less than a warning.
pub fn refusal(error: &io::Error) -> Option<String> {
    let error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    match error {
        // Our own reason (a name not allowed) reads better than rustls' debug rendering of it.
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(reason))) => {
            Some(reason.to_string())
        }
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::PeerIncompatible(_) => Some(error.to_string()),
        _ => None,
    }
}
