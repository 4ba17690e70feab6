//! What a CA file must hold, checked alike by the controller (`ca.pem` of its PKI) and the agent
//! (its `ca` setting).

/// Why a DER certificate cannot serve as a CA, if it cannot: it does not parse, or it is no CA
/// (basicConstraints without CA:TRUE, as a host's or a controller's own certificate).
pub fn not_a_ca(der: &[u8]) -> Option<String> {
    match x509_parser::parse_x509_certificate(der) {
        Err(error) => Some(format!("a certificate that does not parse: {error}")),
        Ok((_, certificate)) => match certificate.basic_constraints() {
            Ok(Some(constraints)) if constraints.value.ca => None,
            _ => Some("it is not a CA certificate (no basicConstraints CA:TRUE)".to_string()),
        },
    }
}
