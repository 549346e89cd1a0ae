//! Certificate serial numbers.
//!
//! RFC 5280 §4.1.2.2: "The serial number MUST be a positive integer assigned by the CA to each
//! certificate. It MUST be unique for each certificate issued by a given CA ... CAs MUST NOT
//! use serialNumber values longer than 20 octets." sceau chooses 159 random bits with the top
//! bit clear (as `openssl ca -rand_serial` does): at most 20 DER octets, never a pad
//! (docs/design.md#common-rules).
use core::fmt;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use x509_cert::serial_number::SerialNumber;

/// A positive serial number, held as its minimal big-endian magnitude (no sign octet).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// Longest magnitude allowed: 20 octets with the top bit clear (so no 0x00 sign pad).
    pub const MAX_LEN: usize = 20;

    /// 159 bits from the operating system's CSPRNG.
    pub fn random() -> Result<Self, SerialError> {
        let rng = SystemRandom::new();
        loop {
            let mut bytes = [0u8; Self::MAX_LEN];
            rng.fill(&mut bytes).map_err(|_| SerialError::Rng)?;
            bytes[0] &= 0x7f;
            let serial = Self::from_magnitude(&bytes)?;
            // Zero is not a valid serial; the chance is 2^-159, but the rule is absolute.
            if !serial.0.is_empty() {
                return Ok(serial);
            }
        }
    }

    /// From big-endian magnitude bytes; leading zeros are removed.
    pub fn from_magnitude(bytes: &[u8]) -> Result<Self, SerialError> {
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let magnitude = &bytes[first..];
        if magnitude.len() > Self::MAX_LEN
            || (magnitude.len() == Self::MAX_LEN && magnitude[0] & 0x80 != 0)
        {
            return Err(SerialError::TooLong);
        }
        Ok(Self(magnitude.to_vec()))
    }

    /// From hexadecimal, as `openssl x509 -serial` prints it (case and colons are ignored).
    pub fn from_hex(text: &str) -> Result<Self, SerialError> {
        let digits: String = text
            .trim()
            .trim_start_matches("serial=")
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes = hex::decode(&padded).map_err(|_| SerialError::NotHex)?;
        let serial = Self::from_magnitude(&bytes)?;
        if serial.0.is_empty() {
            return Err(SerialError::Zero);
        }
        Ok(serial)
    }

    /// From the serialNumber field of a decoded certificate.
    pub fn from_serial_number(serial: &SerialNumber) -> Result<Self, SerialError> {
        let bytes = serial.as_bytes();
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(SerialError::Negative);
        }
        Self::from_magnitude(bytes)
    }

    /// Big-endian magnitude, without a sign octet.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Upper-case hexadecimal without separators, as OpenSSL prints serials.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(&self.0)
    }

    /// The X.509 field (DER INTEGER content adds the 0x00 pad when the top bit is set).
    pub fn to_serial_number(&self) -> Result<SerialNumber, der::Error> {
        SerialNumber::new(&self.0)
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why a serial number was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SerialError {
    #[error("serial number longer than 20 octets")]
    TooLong,
    #[error("serial number is negative")]
    Negative,
    #[error("serial number is zero")]
    Zero,
    #[error("serial number is not hexadecimal")]
    NotHex,
    #[error("the system random number generator failed")]
    Rng,
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;

    #[test]
    fn random_serials_fit_in_20_der_octets() {
        for _ in 0..1000 {
            let serial = Serial::random().unwrap();
            let der = serial.to_serial_number().unwrap().to_der().unwrap();
            // tag, length, then at most 20 content octets, positive.
            assert_eq!(der[0], 0x02);
            assert!(der[1] as usize <= 20, "{der:02x?}");
            assert!(der[2] & 0x80 == 0);
            // X.690 §8.3.2: a leading 0x00 only when the next octet's top bit is set.
            assert!(
                der[2] != 0 || der[3] & 0x80 != 0,
                "non-minimal DER {der:02x?}"
            );
        }
    }

    #[test]
    fn hex_round_trip_ignores_case_and_colons() {
        let serial = Serial::from_hex("0a:bc:01").unwrap();
        assert_eq!(serial.to_hex(), "0ABC01");
        assert_eq!(serial.as_bytes(), &[0x0a, 0xbc, 0x01]);
        assert_eq!(Serial::from_hex("serial=ABC01").unwrap(), serial);
    }

    #[test]
    fn refuses_overlong_negative_and_zero() {
        assert_eq!(
            Serial::from_magnitude(&[0x80; 20]),
            Err(SerialError::TooLong)
        );
        assert_eq!(Serial::from_magnitude(&[1; 21]), Err(SerialError::TooLong));
        assert_eq!(Serial::from_hex("00"), Err(SerialError::Zero));
        assert_eq!(Serial::from_hex("xyz"), Err(SerialError::NotHex));
    }
}
