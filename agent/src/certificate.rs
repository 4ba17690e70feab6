//! The agent's own certificate judged as controllers judge it, at start and at every reload:
//! issued by the configured CA, and valid now.
//!
//! Controllers refuse an agent whose certificate fails either check, and a fleet with `auto`
//! then quietly falls back to SSH; the agent is where the operator looks, so it says so. A
//! certificate not issued by its CA can never work: it is refused. One that expired or is not
//! valid yet is only warned about: the agent must stay up to be renewed (`volley agent renew`).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};
use x509_parser::time::ASN1Time;

/// A name no certificate of a Volley PKI carries: the check is about the CA and the dates, and
/// a name mismatch only proves that everything before it passed.
const NO_NAME: &str = "volley-agent.invalid";

/// What the agent's certificate is worth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Good,
    /// Served, with a warning (to follow "certificate PATH "): controllers refuse it now, a
    /// renewal fixes it.
    Warn(String),
    /// Not served: it does not chain to the CA, so no controller can ever accept it.
    Refuse(String),
}

/// Judges `chain` (the certificate file: the agent's certificate, then any intermediates)
/// against `roots` (the CA file) at `now`.
pub fn judge(chain: &[CertificateDer<'static>], roots: &RootCertStore, now: UnixTime) -> Verdict {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Verdict::Refuse("no certificate".to_string());
    };
    let validity = match x509_parser::parse_x509_certificate(end_entity) {
        Ok((_, parsed)) => parsed.validity().clone(),
        Err(error) => return Verdict::Refuse(format!("it does not parse: {error}")),
    };
    // The chain is checked at a moment when the certificate itself is valid, so that its dates,
    // judged apart, do not hide whether the CA issued it.
    let within = middle(validity.not_before, validity.not_after);
    match chain_error(end_entity, intermediates, roots, within) {
        None => {}
        Some(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            return Verdict::Refuse(
                "it is not issued by the configured CA: controllers will refuse it; \
                 issue one from that CA (volley agent renew) or set `ca` to the CA that issued it"
                    .to_string(),
            );
        }
        Some(error) => {
            return Verdict::Warn(format!("fails the check controllers make: {error}"));
        }
    }
    let now_seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if validity.not_after.timestamp() < now_seconds {
        return Verdict::Warn(format!(
            "expired on {}: controllers will refuse it; renew it (volley agent renew)",
            date(validity.not_after)
        ));
    }
    if validity.not_before.timestamp() > now_seconds {
        return Verdict::Warn(format!(
            "is not valid before {}: controllers will refuse it until then; check this host's \
             clock, or renew it (volley agent renew)",
            date(validity.not_before)
        ));
    }
    Verdict::Good
}

/// Why webpki refuses the chain for a server at `at`, if it does; a wrong name is no refusal.
fn chain_error(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &RootCertStore,
    at: UnixTime,
) -> Option<CertificateError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots.clone()),
        provider,
    )
    .build()
    {
        Ok(verifier) => verifier,
        // No usable root: nothing can chain to it.
        Err(_) => return Some(CertificateError::UnknownIssuer),
    };
    let name = ServerName::try_from(NO_NAME).ok()?;
    match verifier.verify_server_cert(end_entity, intermediates, &name, &[], at) {
        Ok(_) => None,
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => None,
        Err(rustls::Error::InvalidCertificate(error)) => Some(error),
        Err(other) => Some(CertificateError::Other(rustls::OtherError(Arc::new(other)))),
    }
}

/// Halfway between two times, as webpki takes time.
fn middle(from: ASN1Time, to: ASN1Time) -> UnixTime {
    let seconds = from.timestamp() / 2 + to.timestamp() / 2;
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

/// `2025-01-01`: a day is precise enough for a certificate's end.
fn date(time: ASN1Time) -> String {
    let date = time.to_datetime().date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

#[cfg(test)]
mod tests;
