//! `volley-agent check-key`: whether a private key is the key of a certificate, as the agent
//! itself would find at its next start. The installer runs it on the host, so that the key
//! never leaves it:
//!
//! ```text
//! volley-agent check-key --key /etc/volley/agent.key --certificate /etc/volley/agent.pem
//! ```
//!
//! Exit 0: they match. Exit 1, with one line on stderr: they do not, or one cannot be read.
//! Nothing of the key is printed.

use std::path::{Path, PathBuf};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Arguments of `volley-agent check-key`.
#[derive(Debug, clap::Args)]
pub struct CheckKeyArgs {
    /// The private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The certificate (PEM); its first one is the agent's own.
    #[arg(long, value_name = "FILE")]
    pub certificate: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckKeyError {
    #[error("{what} {path}: {reason}")]
    Unusable {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("key {key} is not the key of certificate {certificate}")]
    Mismatch { key: PathBuf, certificate: PathBuf },
}

/// Succeeds when `args.key` is the private key of the certificate in `args.certificate`.
pub fn check_key(args: &CheckKeyArgs) -> Result<(), CheckKeyError> {
    let unusable = |what, path: &Path, reason: String| CheckKeyError::Unusable {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certificate = CertificateDer::from_pem_file(&args.certificate)
        .map_err(|error| unusable("certificate", &args.certificate, error.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&args.key)
        .map_err(|error| unusable("key", &args.key, error.to_string()))?;
    let signing =
        any_supported_type(&key).map_err(|error| unusable("key", &args.key, error.to_string()))?;
    CertifiedKey::new(vec![certificate], signing)
        .keys_match()
        .map_err(|_| CheckKeyError::Mismatch {
            key: args.key.clone(),
            certificate: args.certificate.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_only_its_own_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let pair = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            let certificate = params.self_signed(&key).unwrap();
            (
                write(&format!("{name}.key"), &key.serialize_pem()),
                write(&format!("{name}.pem"), &certificate.pem()),
            )
        };
        let (key, certificate) = pair("web01");
        let (other_key, _) = pair("web02");
        let check = |key: &PathBuf, certificate: &PathBuf| {
            check_key(&CheckKeyArgs {
                key: key.clone(),
                certificate: certificate.clone(),
            })
            .map_err(|error| error.to_string())
        };
        assert_eq!(check(&key, &certificate), Ok(()));
        assert_eq!(
            check(&other_key, &certificate),
            Err(format!(
                "key {} is not the key of certificate {}",
                other_key.display(),
                certificate.display()
            ))
        );
        let garbage = write("garbage", "not a key\n");
        let why = check(&garbage, &certificate).unwrap_err();
        assert!(
            why.starts_with(&format!("key {}: ", garbage.display())),
            "{why}"
        );
        let why = check(&key, &garbage).unwrap_err();
        assert!(
            why.starts_with(&format!("certificate {}: ", garbage.display())),
            "{why}"
        );
    }
}
