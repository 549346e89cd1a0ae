//! OCSP requests sent with GET (RFC 6960 Appendix A.1): the DER request, base64-encoded and
//! then URL-encoded, as the last segment of the path.
use base64::Engine as _;

/// The DER request a GET path carries: percent-decoding, then base64 (standard alphabet;
/// padding optional; the URL-safe alphabet is accepted too, as some clients send it). `None`
/// for a path longer than a `max_request`-octet request can encode, or not decodable.
pub fn decode_get_path(encoded: &str, max_request: usize) -> Option<Vec<u8>> {
    if encoded.is_empty() || encoded.len() > max_request * 4 / 3 + 16 {
        return None;
    }
    // Percent-escapes decoded between runs copied whole; the padding dropped.
    let mut text = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some(at) = rest.iter().position(|b| *b == b'%') {
        text.extend_from_slice(&rest[..at]);
        let escape = rest.get(at + 1..at + 3)?;
        text.push(hex_digit(escape[0])? << 4 | hex_digit(escape[1])?);
        rest = &rest[at + 3..];
    }
    text.extend_from_slice(rest);
    while text.last() == Some(&b'=') {
        text.pop();
    }
    // Built at compile time: padding is optional in what clients send.
    const NO_PAD: base64::engine::GeneralPurposeConfig =
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone);
    const STANDARD: base64::engine::GeneralPurpose =
        base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, NO_PAD);
    const URL_SAFE: base64::engine::GeneralPurpose =
        base64::engine::GeneralPurpose::new(&base64::alphabet::URL_SAFE, NO_PAD);
    STANDARD
        .decode(&text)
        .or_else(|_| URL_SAFE.decode(&text))
        .ok()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_paths_decode_with_or_without_percent_encoding() {
        let der = b"\x30\x03\x0a\x01\x00\xfb\xff";
        let b64 = base64::engine::general_purpose::STANDARD.encode(der); // "MAMKAQD7/w=="
        assert_eq!(decode_get_path(&b64, 64), Some(der.to_vec()));
        let encoded = b64
            .replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D");
        assert_eq!(decode_get_path(&encoded, 64), Some(der.to_vec()));
        assert_eq!(decode_get_path("%zz", 64), None);
        assert_eq!(decode_get_path("", 64), None);
        assert_eq!(decode_get_path("!!!", 64), None);
        // Longer than a 64-octet request can be.
        assert_eq!(decode_get_path(&"A".repeat(120), 64), None);
    }
}
