//! The agent's certificate: judging the one a host has, and issuing a new one whose key is made
//! on the host.
//!
//! Issuing: `volley-agent keygen` (the binary just installed) writes a new key next to the
//! current one (`agent.key.new`, 0600) and prints a certificate request; the controller signs
//! it with the CA ([`Pki::sign_agent_request`]: the names and usage are the controller's, not
//! the request's) and uploads the certificate as `agent.pem.new`; then both are renamed into
//! place. The private key never crosses the connection, and nothing here prints it. A step that
//! fails after keygen removes the new key and certificate, so none is left beside the pair.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;

use crate::pki::Pki;
use crate::plan::HostSpec;
use crate::shell::quote;

use super::remote::{Remote, StepError};

/// A certificate with less time left than this is replaced by `install` (and `renew` replaces
/// it whatever its age).
pub const RENEW_BEFORE: time::Duration = time::Duration::days(30);

/// The addresses an agent's certificate names besides its host name: the inventory address,
/// when it is an IP address.
pub fn addresses(host: &HostSpec) -> Vec<IpAddr> {
    host.address.parse().into_iter().collect()
}

/// Why a host's certificate must be replaced, or `None` when it is good: it chains to our CA,
/// names the host and its address for a server, and has more than [`RENEW_BEFORE`] left.
pub fn problem(ca: &str, certificate: &str, host: &HostSpec) -> Option<String> {
    let der = match CertificateDer::from_pem_slice(certificate.as_bytes()) {
        Ok(der) => der,
        Err(error) => return Some(format!("not a certificate ({error})")),
    };
    let verifier = match verifier(ca) {
        Ok(verifier) => verifier,
        Err(error) => return Some(error),
    };
    let mut names = vec![host.host.clone()];
    names.extend(addresses(host).iter().map(IpAddr::to_string));
    for name in names {
        let Ok(server_name) = ServerName::try_from(name.clone()) else {
            return Some(format!("'{name}' cannot be named by a certificate"));
        };
        if let Err(error) =
            verifier.verify_server_cert(&der, &[], &server_name, &[], UnixTime::now())
        {
            return Some(format!("not valid for {name} under this CA ({error})"));
        }
    }
    match expiry(&der) {
        Some(expires) if expires - OffsetDateTime::now_utc() > RENEW_BEFORE => None,
        Some(expires) => Some(format!("expires {}", date(expires))),
        None => Some("its validity cannot be read".to_string()),
    }
}

fn verifier(ca: &str) -> Result<Arc<WebPkiServerVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let certificate = certificate.map_err(|e| format!("bad CA certificate: {e}"))?;
        roots
            .add(certificate)
            .map_err(|e| format!("bad CA certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("bad CA certificate: {e}"))
}

/// When a DER certificate stops being valid.
pub fn expiry(der: &[u8]) -> Option<OffsetDateTime> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    OffsetDateTime::from_unix_timestamp(certificate.validity().not_after.timestamp()).ok()
}

/// A PEM certificate as DER, for comparing with what an agent serves.
pub fn der(pem: &str) -> Option<Vec<u8>> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|der| der.to_vec())
}

pub use crate::pki::date;

/// Whole days from now until `when` (negative once past).
pub fn days_left(when: OffsetDateTime) -> i64 {
    (when - OffsetDateTime::now_utc()).whole_days()
}

/// Makes a new key on the host and puts the certificate for it in place of the current pair.
/// Returns the new certificate's PEM.
pub async fn issue(remote: &Remote<'_>, pki: &Pki, host: &HostSpec) -> Result<String, StepError> {
    const STEP: &str = "certificate";
    let layout = remote.layout;
    let mut keygen = format!(
        "\"$BINARY\" keygen --key {} --name {}",
        quote(&layout.new_key()),
        quote(&host.host)
    );
    for address in addresses(host) {
        keygen.push_str(&format!(" --address {address}"));
    }
    let placed = async {
        let request = remote
            .script(STEP, &format!("make_config_dir\n{keygen}\n"))
            .await?;
        let certificate = pki
            .sign_agent_request(&request, &host.host, &addresses(host))
            .map_err(|error| StepError::new(STEP, error.to_string()))?;
        remote
            .put(
                STEP,
                &layout.new_certificate(),
                Bytes::from(certificate.clone()),
                0o644,
            )
            .await?;
        // Key first: between the two renames the agent (which holds its pair in memory) is
        // not disturbed, and a reload checks that the pair on disk matches before using it.
        remote
            .script(
                STEP,
                "mv -f \"$KEY.new\" \"$KEY\"\nmv -f \"$CERTIFICATE.new\" \"$CERTIFICATE\"\n",
            )
            .await?;
        Ok(certificate)
    }
    .await;
    if placed.is_err() {
        // A new key that no certificate will use is not left on the host; the step's own
        // failure is the reason, whatever this cleanup meets. Once the new key is in place,
        // its certificate is its only match: it stays beside it.
        let _ = remote
            .script(
                STEP,
                "if [ -e \"$KEY.new\" ]; then rm -f \"$KEY.new\" \"$CERTIFICATE.new\"; fi\n",
            )
            .await;
    }
    placed
}

#[cfg(test)]
mod tests {
    use volley_common::inventory::TransportChoice;

    use super::*;

    fn host(name: &str, address: &str) -> HostSpec {
        HostSpec {
            name: name.to_string(),
            address: address.to_string(),
            port: 22,
            user: "root".to_string(),
            identity_files: Vec::new(),
            identities_only: false,
            host: name.to_string(),
            agent_port: 7731,
            transport: TransportChoice::Auto,
            agent_prefix: None,
            become_root: false,
            jump: Vec::new(),
        }
    }

    #[test]
    fn a_certificate_is_judged_by_ca_names_and_time_left() {
        let home = tempfile::tempdir().unwrap();
        let pki = Pki::new(home.path().join("pki"));
        pki.init(crate::pki::DEFAULT_IDENTITY).unwrap();
        let ca = std::fs::read_to_string(pki.ca_certificate()).unwrap();
        let h01 = host("h01", "127.40.0.1");
        let (good, _) = pki
            .agent_certificate("h01", &["127.40.0.1".parse().unwrap()])
            .unwrap();
        assert_eq!(problem(&ca, &good, &h01), None);
        let expires = expiry(&der(&good).unwrap()).unwrap();
        assert!(
            (820..=826).contains(&days_left(expires)),
            "{}",
            date(expires)
        );

        let (no_address, _) = pki.agent_certificate("h01", &[]).unwrap();
        let why = problem(&ca, &no_address, &h01).unwrap();
        assert!(why.starts_with("not valid for 127.40.0.1"), "{why}");
        let why = problem(&ca, &good, &host("h02", "127.40.0.1")).unwrap();
        assert!(why.starts_with("not valid for h02"), "{why}");

        let other = Pki::new(home.path().join("other"));
        other.init(crate::pki::DEFAULT_IDENTITY).unwrap();
        let (foreign, _) = other
            .agent_certificate("h01", &["127.40.0.1".parse().unwrap()])
            .unwrap();
        assert!(problem(&ca, &foreign, &h01).is_some());
        assert_eq!(
            problem(&ca, "garbage", &h01).as_deref(),
            Some("not a certificate (no items found)")
        );
    }
}
