//! DER tag-and-length headers for the encoders that assemble large objects from parts (CRLs,
//! pre-signed OCSP responses) without re-encoding the parts.

/// Appends the DER length of `len` (X.690 §8.1.3: short form below 128, else minimal long form).
pub fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().position(|b| *b != 0).unwrap_or(7);
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// The tag and length of a TLV whose content is `len` octets.
pub fn header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(6);
    out.push(tag);
    push_length(&mut out, len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_minimal() {
        assert_eq!(header(0x30, 0x7f), [0x30, 0x7f]);
        assert_eq!(header(0x30, 0x80), [0x30, 0x81, 0x80]);
        assert_eq!(header(0x04, 0x1234), [0x04, 0x82, 0x12, 0x34]);
        assert_eq!(
            header(0x30, 46_200_000),
            [0x30, 0x84, 0x02, 0xc0, 0xf4, 0xc0]
        );
    }
}
