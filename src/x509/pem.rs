//! PEM armour for the objects the CA reads and writes (RFC 7468).
use der::pem::{self, LineEnding};

/// Label of a PEM certificate.
pub const CERTIFICATE: &str = "CERTIFICATE";
/// Label of a PEM certification request.
pub const CERTIFICATE_REQUEST: &str = "CERTIFICATE REQUEST";

/// Encodes DER bytes as PEM with the given label.
pub fn encode(label: &str, der: &[u8]) -> String {
    // Encoding into a String cannot fail for a valid label and in-memory data.
    pem::encode_string(label, LineEnding::LF, der).unwrap_or_default()
}

/// Accepts PEM (with one of the `labels`) or raw DER, and returns the DER bytes.
pub fn decode_pem_or_der(input: &[u8], labels: &[&str]) -> Result<Vec<u8>, PemError> {
    let trimmed = input.trim_ascii_start();
    if !trimmed.starts_with(b"-----BEGIN ") {
        return Ok(input.to_vec());
    }
    let (label, der) = pem::decode_vec(trimmed).map_err(|e| PemError::Malformed(e.to_string()))?;
    if !labels.contains(&label) {
        return Err(PemError::UnexpectedLabel {
            found: label.to_owned(),
            expected: labels.join(" or "),
        });
    }
    Ok(der)
}

/// Splits a PEM bundle into the DER of each block labelled `label`, in order.
pub fn decode_all(input: &str, label: &str) -> Result<Vec<Vec<u8>>, PemError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start..];
        let stop = after
            .find(&end)
            .ok_or_else(|| PemError::Malformed(format!("{begin} without {end}")))?;
        let block = &after[..stop + end.len()];
        let (_, der) =
            pem::decode_vec(block.as_bytes()).map_err(|e| PemError::Malformed(e.to_string()))?;
        out.push(der);
        rest = &after[stop + end.len()..];
    }
    Ok(out)
}

/// Why PEM input was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    #[error("malformed PEM: {0}")]
    Malformed(String),
    #[error("PEM label {found:?} where {expected} was expected")]
    UnexpectedLabel { found: String, expected: String },
}
