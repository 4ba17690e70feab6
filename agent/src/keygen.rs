//! `volley-agent keygen`: the agent's private key, made on the host it will serve, and a
//! certificate signing request for it.
//!
//! ```text
//! volley-agent keygen --key /etc/volley/agent.key.new --name web01 --address 10.0.0.11
//! ```
//!
//! The key is written to `--key`, created with mode 0600 before any byte lands (a file already
//! there is replaced), and never printed. Stdout carries only the request, in PEM: the
//! controller reads it over SSH, signs it with its CA and sends back the certificate. The
//! request asks for `--name` and the addresses, but the controller decides what the
//! certificate says; nothing in the request is trusted.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, KeyPair, SanType};

/// Arguments of `volley-agent keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the new private key (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The host name the certificate should carry.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// An address the certificate should carry (repeatable).
    #[arg(long, value_name = "IP")]
    pub address: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad name '{0}': use a host name (letters, digits, '-', '_', '.') or an address")]
    Name(String),
    #[error("cannot make the key or the request: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Writes a new key to `args.key` and returns the certificate request, in PEM.
pub fn keygen(args: &KeygenArgs) -> Result<String, KeygenError> {
    let name = match args.name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(dns_name(&args.name)?),
    };
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, args.name.as_str());
    params.subject_alt_names = std::iter::once(name)
        .chain(args.address.iter().copied().map(SanType::IpAddress))
        .collect();
    // Ed25519, as `volley pki` makes every key: cheaper handshakes on both ends.
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let request = params.serialize_request(&key)?.pem()?;
    write_private(&args.key, key.serialize_pem().as_bytes())?;
    Ok(request)
}

fn dns_name(name: &str) -> Result<rcgen::string::Ia5String, KeygenError> {
    let fine = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !fine {
        return Err(KeygenError::Name(name.to_string()));
    }
    name.try_into()
        .map_err(|_| KeygenError::Name(name.to_string()))
}

/// Creates `path` with mode 0600 and writes `contents`; a file already there is removed first,
/// so that the mode of a new file is ours, never an old file's.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeygenError> {
    let error = |source| KeygenError::Write {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(error(e)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rcgen::CertificateSigningRequestParams;

    use super::*;

    #[test]
    fn the_key_stays_in_its_file_and_the_request_carries_its_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("agent.key.new");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let request = keygen(&KeygenArgs {
            key: key.clone(),
            name: "web01".to_string(),
            address: vec!["10.0.0.11".parse().unwrap()],
        })
        .unwrap();
        assert!(!request.contains("PRIVATE KEY"), "{request}");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let pem = std::fs::read_to_string(&key).unwrap();
        let pair = KeyPair::from_pem(&pem).unwrap();
        let parsed = CertificateSigningRequestParams::from_pem(&request).unwrap();
        assert_eq!(
            rcgen::PublicKeyData::der_bytes(&parsed.public_key),
            pair.public_key_raw()
        );
    }

    #[test]
    fn a_bad_name_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("agent.key.new");
        let error = keygen(&KeygenArgs {
            key: key.clone(),
            name: "bad name\u{7f}".to_string(),
            address: vec![],
        });
        assert!(error.is_err());
        assert!(!key.exists());
    }
}
