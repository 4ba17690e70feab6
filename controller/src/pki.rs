//! The operator's private certificate authority: `volley pki init` and `volley pki issue`.
//!
//! Layout of the PKI directory (default `~/.config/volley/pki`, mode 0700):
//! `ca.pem` / `ca.key` (the CA), `controller.pem` / `controller.key` (the controller's client
//! certificate, Common Name = its identity, EKU clientAuth), and `agents/NAME.pem` /
//! `agents/NAME.key` (server certificates, Common Name = the host name, the host's name and
//! address as SANs, EKU serverAuth). Private keys are written 0600 at creation, never widened.
//! Agents trust only this CA and allow only named controller identities; the controller trusts
//! only this CA for agents and checks that an agent's certificate names the host it dialled.
//! `volley agent install` does not use `agents/`: the agent makes its key on its host, and
//! [`Pki::sign_agent_request`] signs the request it sends.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The controller identity agents allow by default.
pub const DEFAULT_IDENTITY: &str = "volley-controller";
/// How long issued certificates are valid: 825 days, the longest browsers ever accepted, a
/// habit worth keeping; `volley agent renew` replaces them before then.
const VALID_DAYS: i64 = 825;
const CA_VALID_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "pki {dir}: already initialised: its CA and the controller's certificate are there \
         (`volley pki issue` makes agent certificates)"
    )]
    Exists { dir: PathBuf },
    #[error("pki {dir}: not initialised: run `volley pki init` first")]
    Missing { dir: PathBuf },
    /// The CA is here, the controller's certificate or key is not.
    #[error(
        "pki {dir}: no {missing}: `volley pki init` issues the controller's certificate again \
         from the CA there"
    )]
    NoController { dir: PathBuf, missing: String },
    /// Files of the controller's are missing, and the CA's key is kept elsewhere.
    #[error("pki {dir}: no {missing}: copy it from where the CA is kept")]
    Incomplete { dir: PathBuf, missing: String },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: readable by group or others (mode {mode:04o}); run chmod 600 {path}")]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("bad certificate name '{name}': {reason}")]
    Name { name: String, reason: String },
    #[error(
        "'{name}' is a controller identity: an agent certificate must not carry it (agents would \
         take the name for a controller's); give the host another name"
    )]
    ControllerName { name: String },
    /// One of the CA's two files is here without the other: a new CA must not be made beside
    /// it (agents trust the old one), nor may anything be signed.
    #[error(
        "pki {dir}: {present} is here but not {missing}: copy {missing} from where the CA is kept \
         (a new CA would not be trusted by the agents that trust this one)"
    )]
    HalfCa {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
    /// `ca.key` does not belong to `ca.pem`: what it signs would verify against nothing.
    #[error(
        "pki {dir}: ca.key is not the key of ca.pem: certificates it signed would not verify; \
         put back the CA's own key"
    )]
    CaMismatch { dir: PathBuf },
    /// The controller's certificate is past its end: agents refuse it.
    #[error(
        "pki {dir}: controller.pem expired on {on}: agents refuse it; `volley pki init` issues \
         it again from the CA there"
    )]
    ControllerExpired { dir: PathBuf, on: String },
    #[error("bad certificate request: {0}")]
    Request(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The PKI directory.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

/// The files of one issued certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl Issued {
    /// Writes the key (0600, created so before any byte lands) and the certificate, in place of
    /// any files of those names.
    fn replace(&self, key: &str, certificate: &str) -> Result<(), PkiError> {
        for path in [&self.key, &self.certificate] {
            let _ = fs::remove_file(path);
        }
        write_file(&self.key, key, 0o600)?;
        write_file(&self.certificate, certificate, 0o644)
    }
}

/// What `init` made: the controller's certificate and key, and whether the CA is new.
#[derive(Clone, Debug)]
pub struct Initialised {
    pub issued: Issued,
    pub new_ca: bool,
    /// The controller's certificate was there and ended within [`RENEW_WITHIN`]: renewed.
    pub renewed: bool,
}

/// A certificate's date as `2028-03-01`: a day is precise enough, and hosts issued the same day
/// then read the same.
pub fn date(when: time::OffsetDateTime) -> String {
    let date = when.date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// What the controller presents and trusts, as PEM.
#[derive(Clone, Debug)]
pub struct ControllerCredentials {
    pub ca: String,
    pub certificate: String,
    pub key: String,
    /// When the certificate stops being valid.
    pub not_after: time::OffsetDateTime,
}

/// How long before its end a controller certificate is renewed by `volley pki init`, and
/// warned of by every run through agents.
pub const RENEW_WITHIN: time::Duration = time::Duration::days(30);

impl Pki {
    pub fn new(dir: PathBuf) -> Pki {
        Pki { dir }
    }

    pub fn ca_certificate(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn exists(&self) -> bool {
        self.dir.join("ca.key").exists()
    }

    /// Whether the controller can use the agent transport: the CA certificate and its own
    /// certificate and key. The CA's key may be kept elsewhere.
    pub fn has_controller_credentials(&self) -> bool {
        self.missing_credentials().is_empty()
    }

    /// Whether any of the files the agent transport needs is there: a PKI that is only partly
    /// there is a mistake to report, not one to run without.
    pub fn has_any_credentials(&self) -> bool {
        self.missing_credentials().len() < 3
    }

    /// Which of the files the agent transport needs are not there.
    fn missing_credentials(&self) -> Vec<&'static str> {
        ["ca.pem", "controller.pem", "controller.key"]
            .into_iter()
            .filter(|file| !self.dir.join(file).exists())
            .collect()
    }

    /// Creates the CA and the controller's certificate with `identity` as its Common Name. Where
    /// the CA is there already but the controller's certificate or key is not, or the
    /// certificate ends within [`RENEW_WITHIN`], issues that again from the CA (`new_ca` false):
    /// agents that trust the CA keep working.
    pub fn init(&self, identity: &str) -> Result<Initialised, PkiError> {
        self.check_ca_halves()?;
        let new_ca = !self.exists();
        let renewing = self.has_controller_credentials() && self.controller_ends_soon();
        if !new_ca && self.has_controller_credentials() && !renewing {
            return Err(PkiError::Exists {
                dir: self.dir.clone(),
            });
        }
        check_name(identity)?;
        if new_ca {
            private_dir(&self.dir)?;
            private_dir(&self.dir.join("agents"))?;
            let ca_key = new_key()?;
            let ca = ca_params()?.self_signed(&ca_key)?;
            write_file(&self.dir.join("ca.key"), &ca_key.serialize_pem(), 0o600)?;
            write_file(&self.dir.join("ca.pem"), &ca.pem(), 0o644)?;
        }

        let issuer = self.issuer()?;
        let key = new_key()?;
        let mut params = leaf_params(identity)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let certificate = params.signed_by(&key, &issuer)?;
        let issued = Issued {
            certificate: self.dir.join("controller.pem"),
            key: self.dir.join("controller.key"),
        };
        // What is left of a lost pair goes.
        issued.replace(&key.serialize_pem(), &certificate.pem())?;
        Ok(Initialised {
            issued,
            new_ca,
            renewed: renewing,
        })
    }

    /// Issues an agent's server certificate naming `name` and `addresses`, into `agents/`.
    pub fn issue_agent(&self, name: &str, addresses: &[IpAddr]) -> Result<Issued, PkiError> {
        let mut issued = self.issue_agents(&[(name.to_string(), addresses.to_vec())])?;
        Ok(issued.remove(0).0)
    }

    /// Issues the certificates of `agents` (names and addresses), into `agents/`: all are made
    /// before any is written, so a bad name leaves every file as it was. Each comes with
    /// whether it replaced a certificate of that name.
    pub fn issue_agents(
        &self,
        agents: &[(String, Vec<IpAddr>)],
    ) -> Result<Vec<(Issued, bool)>, PkiError> {
        let made = agents
            .iter()
            .map(|(name, addresses)| self.agent_certificate(name, addresses))
            .collect::<Result<Vec<_>, _>>()?;
        let dir = self.dir.join("agents");
        private_dir(&dir)?;
        let mut issued = Vec::new();
        for ((name, _), (certificate, key)) in agents.iter().zip(made) {
            let files = Issued {
                certificate: dir.join(format!("{name}.pem")),
                key: dir.join(format!("{name}.key")),
            };
            let replaced = files.certificate.exists();
            files.replace(&key, &certificate)?;
            issued.push((files, replaced));
        }
        Ok(issued)
    }

    /// An agent certificate and its key, as PEM, without writing them.
    pub fn agent_certificate(
        &self,
        name: &str,
        addresses: &[IpAddr],
    ) -> Result<(String, String), PkiError> {
        let params = self.agent_params(name, addresses)?;
        let issuer = self.issuer()?;
        let key = new_key()?;
        let certificate = params.signed_by(&key, &issuer)?;
        Ok((certificate.pem(), key.serialize_pem()))
    }

    /// Signs an agent's certificate request (made on the host by `volley-agent keygen`, whose
    /// key never leaves it). Only the request's public key is used: the names, the key usage
    /// and the validity are ours, whatever the request asks for. The request's signature is
    /// checked, which proves its maker holds the key.
    pub fn sign_agent_request(
        &self,
        request: &str,
        name: &str,
        addresses: &[IpAddr],
    ) -> Result<String, PkiError> {
        let request = CertificateSigningRequestParams::from_pem(request)
            .map_err(|e| PkiError::Request(e.to_string()))?;
        let params = self.agent_params(name, addresses)?;
        let issuer = self.issuer()?;
        Ok(params.signed_by(&request.public_key, &issuer)?.pem())
    }

    /// The controller's identity: its certificate's Common Name, which agents must allow.
    pub fn controller_identity(&self) -> Result<String, PkiError> {
        Ok(self.controller_certificate()?.0)
    }

    /// Whether the controller's certificate ends within [`RENEW_WITHIN`] (or has ended), so
    /// that `volley pki init` issues it again.
    fn controller_ends_soon(&self) -> bool {
        self.controller_certificate()
            .is_ok_and(|(_, end)| end < time::OffsetDateTime::now_utc() + RENEW_WITHIN)
    }

    /// The controller certificate's Common Name and end of validity.
    fn controller_certificate(&self) -> Result<(String, time::OffsetDateTime), PkiError> {
        let path = self.dir.join("controller.pem");
        let pem = read(&path)?;
        let unreadable = |reason: String| PkiError::File {
            path: path.clone(),
            reason,
        };
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| unreadable(format!("not a certificate ({e})")))?;
        let (_, certificate) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| unreadable(format!("not a certificate ({e})")))?;
        let name = certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|name| name.as_str().ok())
            .ok_or_else(|| unreadable("no Common Name".to_string()))?;
        Ok((
            name.to_string(),
            certificate.validity().not_after.to_datetime(),
        ))
    }

    /// The CA certificate and the controller's certificate and key, for the agent transport.
    pub fn controller_credentials(&self) -> Result<ControllerCredentials, PkiError> {
        let missing = self.missing_credentials();
        if !missing.is_empty() {
            let dir = self.dir.clone();
            let ca_here = self.exists() && self.ca_certificate().exists();
            return Err(match (missing.len(), ca_here) {
                (3, false) => PkiError::Missing { dir },
                (_, true) => PkiError::NoController {
                    dir,
                    missing: missing.join(", "),
                },
                (_, false) => PkiError::Incomplete {
                    dir,
                    missing: missing.join(", "),
                },
            });
        }
        let (_, not_after) = self.controller_certificate()?;
        if not_after < time::OffsetDateTime::now_utc() {
            return Err(PkiError::ControllerExpired {
                dir: self.dir.clone(),
                on: date(not_after),
            });
        }
        Ok(ControllerCredentials {
            ca: read(&self.dir.join("ca.pem"))?,
            certificate: read(&self.dir.join("controller.pem"))?,
            key: read_private(&self.dir.join("controller.key"))?,
            not_after,
        })
    }

    /// An agent certificate's parameters, refusing a name that is a controller identity: the
    /// PKI's own controller's, or the default one agents allow.
    fn agent_params(
        &self,
        name: &str,
        addresses: &[IpAddr],
    ) -> Result<CertificateParams, PkiError> {
        let own = self.controller_identity().ok();
        let controllers = [Some(DEFAULT_IDENTITY), own.as_deref()];
        if controllers
            .into_iter()
            .flatten()
            .any(|identity| identity.eq_ignore_ascii_case(name))
        {
            return Err(PkiError::ControllerName {
                name: name.to_string(),
            });
        }
        agent_params(name, addresses)
    }

    /// Refuses a CA that is half here: its certificate without its key, or the other way.
    fn check_ca_halves(&self) -> Result<(), PkiError> {
        let (key, certificate) = (self.exists(), self.ca_certificate().exists());
        let (present, missing) = match (key, certificate) {
            (true, false) => ("ca.key", "ca.pem"),
            (false, true) => ("ca.pem", "ca.key"),
            _ => return Ok(()),
        };
        Err(PkiError::HalfCa {
            dir: self.dir.clone(),
            present,
            missing,
        })
    }

    /// Whether this PKI can sign agents' certificates: `ca.key` is here and is the key of
    /// `ca.pem`. Checked before any host is contacted by the operations that must sign.
    pub fn check_can_sign(&self) -> Result<(), PkiError> {
        self.issuer().map(|_| ())
    }

    /// The CA, ready to sign: its key, checked to be the key of its certificate.
    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        self.check_ca_halves()?;
        if !self.exists() {
            return Err(PkiError::Missing {
                dir: self.dir.clone(),
            });
        }
        let key_path = self.dir.join("ca.key");
        let key = KeyPair::from_pem(&read_private(&key_path)?).map_err(|e| PkiError::File {
            path: key_path,
            reason: format!("not a private key ({e})"),
        })?;
        let ca_path = self.ca_certificate();
        let pem = read(&ca_path)?;
        let not_a_ca = |reason: String| PkiError::File {
            path: ca_path.clone(),
            reason: format!("not a CA certificate ({reason})"),
        };
        let der =
            CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| not_a_ca(e.to_string()))?;
        let (_, certificate) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| not_a_ca(e.to_string()))?;
        if certificate.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::CaMismatch {
                dir: self.dir.clone(),
            });
        }
        Issuer::from_ca_cert_pem(&pem, key).map_err(|e| not_a_ca(e.to_string()))
    }
}

/// An agent's certificate: Common Name = the host name, the name and addresses as SANs, EKU
/// serverAuth only.
/// A new key for the CA, the controller or an agent: Ed25519. Every run makes one TLS handshake
/// per host, in which the controller checks two signatures (the CA's on the agent's certificate,
/// the agent's on the handshake) and makes one (its own certificate's); with Ed25519 keys that
/// side of the handshake costs about a sixth less CPU than with P-256 (`bench/scale.sh`'s
/// in-memory handshake), and the agent's signature less too. Keys and certificates of either
/// kind are accepted wherever volley reads them: a CA made before keeps signing with P-256.
fn new_key() -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(&rcgen::PKCS_ED25519)
}

fn agent_params(name: &str, addresses: &[IpAddr]) -> Result<CertificateParams, PkiError> {
    check_name(name)?;
    let mut params = leaf_params(name)?;
    let mut names = Vec::new();
    match name.parse::<IpAddr>() {
        Ok(ip) => names.push(SanType::IpAddress(ip)),
        Err(_) => names.push(SanType::DnsName(name.try_into().map_err(
            |e: rcgen::Error| PkiError::Name {
                name: name.to_string(),
                reason: e.to_string(),
            },
        )?)),
    }
    for address in addresses {
        if !names.contains(&SanType::IpAddress(*address)) {
            names.push(SanType::IpAddress(*address));
        }
    }
    params.subject_alt_names = names;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Volley CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_VALID_DAYS);
    Ok(params)
}

fn leaf_params(common_name: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, VALID_DAYS);
    Ok(params)
}

/// From a day ago (clocks disagree) to `days` from now.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let fine = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
        && !name.starts_with(['.', '-']);
    if fine {
        Ok(())
    } else {
        Err(PkiError::Name {
            name: name.to_string(),
            reason: "use a host name or address (letters, digits, '-', '.', ':')".to_string(),
        })
    }
}

/// Creates `dir` (and parents) and makes it 0700.
fn private_dir(dir: &Path) -> Result<(), PkiError> {
    let error = |e: std::io::Error| PkiError::File {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    fs::create_dir_all(dir).map_err(error)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(error)
}

/// Writes a new file created with `mode`, so a key is never readable by others, even briefly.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let error = |e: std::io::Error| PkiError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|e| PkiError::File {
        path: path.to_path_buf(),
        reason: crate::plan::io_reason(&e),
    })
}

/// Reads a private key, refusing one that group or others can read.
fn read_private(path: &Path) -> Result<String, PkiError> {
    let metadata = fs::metadata(path).map_err(|e| PkiError::File {
        path: path.to_path_buf(),
        reason: crate::plan::io_reason(&e),
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::KeyMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    read(path)
}

#[cfg(test)]
mod tests;
