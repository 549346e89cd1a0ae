//! CRLs (RFC 5280 §5), encoded in one pass into one buffer.
//!
//! A CRL with a million entries is about 46 MB of DER. [`CrlWriter`] reserves room at the front
//! of its buffer, appends the revoked entries as they come out of the store, and then writes the
//! headers (whose lengths are only known at the end) backwards into the reserved room: the TBS
//! and the final CertificateList are slices of the same buffer, never copied.
use der::Encode;

use super::Timestamp;
use super::tlv::{header, push_length};

/// Room reserved in front of the entries for every header up to revokedCertificates.
const FRONT: usize = 4096;

/// A positive INTEGER from a magnitude (a 0x00 pad when the top bit is set, X.690 §8.3).
fn push_integer(out: &mut Vec<u8>, magnitude: &[u8]) {
    let first = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let magnitude = &magnitude[first..];
    let pad = magnitude.first().is_none_or(|b| b & 0x80 != 0);
    out.push(0x02);
    push_length(out, magnitude.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(magnitude);
}

/// The fields of a CRL other than its entries.
#[derive(Debug, Clone)]
pub struct CrlHeader<'a> {
    /// DER of the AlgorithmIdentifier (same as the outer one).
    pub signature_algorithm: &'a [u8],
    /// DER of the issuer Name (the CA certificate's subject bytes).
    pub issuer: &'a [u8],
    pub this_update: Timestamp,
    pub next_update: Timestamp,
    /// DER of the Extensions SEQUENCE (AKI, cRLNumber, ExpiredCertsOnCRL).
    pub extensions: &'a [u8],
}

/// Builds a CRL entry by entry.
#[derive(Debug)]
pub struct CrlWriter {
    buf: Vec<u8>,
    entries: usize,
    /// Where the TBSCertList starts once `finish_tbs` ran.
    tbs_start: usize,
    tbs_end: usize,
}

impl CrlWriter {
    /// `expected_entries` sizes the buffer (about 46 octets an entry).
    pub fn new(expected_entries: usize) -> Self {
        let mut buf = Vec::with_capacity(FRONT + expected_entries * 48 + 1024);
        buf.resize(FRONT, 0);
        Self {
            buf,
            entries: 0,
            tbs_start: 0,
            tbs_end: 0,
        }
    }

    /// Appends one revokedCertificates entry (RFC 5280 §5.1.2.6, §5.3): serial, revocation date,
    /// then reasonCode (omitted for unspecified, docs/design.md#crl-and-arl) and invalidityDate.
    pub fn push(
        &mut self,
        serial: &[u8],
        revoked_at: Timestamp,
        reason: Option<u8>,
        invalidity_date: Option<Timestamp>,
    ) -> Result<(), der::Error> {
        let mut entry = Vec::with_capacity(64);
        push_integer(&mut entry, serial);
        revoked_at.to_x509_time()?.encode_to_vec(&mut entry)?;
        if reason.is_some() || invalidity_date.is_some() {
            let mut extensions = Vec::with_capacity(48);
            if let Some(code) = reason {
                // Extension { 2.5.29.21, OCTET STRING { ENUMERATED code } }
                extensions.extend_from_slice(&[
                    0x30, 0x0a, 0x06, 0x03, 0x55, 0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01, code,
                ]);
            }
            if let Some(date) = invalidity_date {
                // Extension { 2.5.29.24, OCTET STRING { GeneralizedTime } }
                let time = date.to_generalized_time()?.to_der()?;
                extensions.extend_from_slice(&header(0x30, 5 + 2 + time.len()));
                extensions.extend_from_slice(&[0x06, 0x03, 0x55, 0x1d, 0x18]);
                extensions.extend_from_slice(&header(0x04, time.len()));
                extensions.extend_from_slice(&time);
            }
            entry.extend_from_slice(&header(0x30, extensions.len()));
            entry.extend_from_slice(&extensions);
        }
        self.buf.extend_from_slice(&header(0x30, entry.len()));
        self.buf.extend_from_slice(&entry);
        self.entries += 1;
        Ok(())
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Writes the TBSCertList headers in front of the entries and the CRL extensions after
    /// them; returns the TBS bytes, to be signed.
    ///
    /// ```text
    /// TBSCertList  ::=  SEQUENCE  {
    ///      version                 Version OPTIONAL, -- v2
    ///      signature               AlgorithmIdentifier,
    ///      issuer                  Name,
    ///      thisUpdate              Time,
    ///      nextUpdate              Time OPTIONAL,
    ///      revokedCertificates     SEQUENCE OF SEQUENCE {...} OPTIONAL,
    ///      crlExtensions           [0] EXPLICIT Extensions OPTIONAL }
    /// ```
    pub fn finish_tbs(&mut self, crl: &CrlHeader<'_>) -> Result<&[u8], der::Error> {
        let entries_len = self.buf.len() - FRONT;
        // crlExtensions [0] EXPLICIT, after the entries.
        self.buf
            .extend_from_slice(&header(0xa0, crl.extensions.len()));
        self.buf.extend_from_slice(crl.extensions);
        let mut fields = Vec::with_capacity(256 + crl.issuer.len());
        fields.extend_from_slice(&[0x02, 0x01, 0x01]); // version v2
        fields.extend_from_slice(crl.signature_algorithm);
        fields.extend_from_slice(crl.issuer);
        crl.this_update.to_x509_time()?.encode_to_vec(&mut fields)?;
        crl.next_update.to_x509_time()?.encode_to_vec(&mut fields)?;
        // An empty revokedCertificates is omitted, never an empty SEQUENCE (RFC 5280 §5.1.2.6).
        if self.entries > 0 {
            fields.extend_from_slice(&header(0x30, entries_len));
        }
        let body_len = fields.len() + (self.buf.len() - FRONT);
        let mut front = header(0x30, body_len);
        front.extend_from_slice(&fields);
        if front.len() > FRONT {
            return Err(der::ErrorKind::Overlength.into());
        }
        self.tbs_start = FRONT - front.len();
        self.buf[self.tbs_start..FRONT].copy_from_slice(&front);
        self.tbs_end = self.buf.len();
        Ok(&self.buf[self.tbs_start..self.tbs_end])
    }

    /// Appends the algorithm and the signature and returns the CertificateList DER.
    ///
    /// ```text
    /// CertificateList  ::=  SEQUENCE  {
    ///      tbsCertList          TBSCertList,
    ///      signatureAlgorithm   AlgorithmIdentifier,
    ///      signatureValue       BIT STRING  }
    /// ```
    pub fn finish(
        mut self,
        signature_algorithm: &[u8],
        signature: &[u8],
    ) -> Result<CrlDer, der::Error> {
        self.buf.extend_from_slice(signature_algorithm);
        self.buf
            .extend_from_slice(&header(0x03, signature.len() + 1));
        self.buf.push(0);
        self.buf.extend_from_slice(signature);
        let outer = header(0x30, self.buf.len() - self.tbs_start);
        if outer.len() > self.tbs_start {
            return Err(der::ErrorKind::Overlength.into());
        }
        let start = self.tbs_start - outer.len();
        self.buf[start..self.tbs_start].copy_from_slice(&outer);
        Ok(CrlDer {
            buf: self.buf,
            start,
        })
    }
}

/// A finished CRL: DER in a buffer that may have unused room in front.
#[derive(Debug, Clone)]
pub struct CrlDer {
    buf: Vec<u8>,
    start: usize,
}

impl CrlDer {
    pub fn as_der(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The DER, in a shared buffer for serving (the unused front room is dropped).
    pub fn into_bytes(self) -> bytes::Bytes {
        let start = self.start;
        bytes::Bytes::from(self.buf).slice(start..)
    }
}

/// What the CA needs to know of a published CRL, read without decoding its entries: a
/// million-entry CRL decoded into `x509_cert` types takes hundreds of megabytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrlSummary {
    pub number: Option<u64>,
    pub this_update: Timestamp,
    pub next_update: Option<Timestamp>,
    pub entries: usize,
}

/// The key identifier of a DER CRL's authorityKeyIdentifier extension (RFC 5280 §5.2.1): which
/// CA key signed it.
pub fn authority_key_identifier(der: &[u8]) -> Option<[u8; 20]> {
    use der::Decode;
    use x509_cert::ext::pkix::AuthorityKeyIdentifier;
    let crl =
        x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der).ok()?;
    let extension = crl
        .tbs_cert_list
        .crl_extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER)?;
    let aki = AuthorityKeyIdentifier::from_der(extension.extn_value.as_bytes()).ok()?;
    aki.key_identifier?.as_bytes().try_into().ok()
}

/// Whether `der` is a CRL signed by the key `signer` (the outer SEQUENCE's first element is
/// the TBS, as in a certificate).
pub fn signed_by(der: &[u8], signer: &spki::SubjectPublicKeyInfoOwned) -> bool {
    use der::{Decode, asn1::AnyRef};
    let Ok(crl) = x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der)
    else {
        return false;
    };
    let tbs = AnyRef::from_der(der)
        .and_then(|outer| der::SliceReader::new(outer.value()))
        .and_then(|mut fields| der::Reader::tlv_bytes(&mut fields).map(<[u8]>::to_vec));
    let (Ok(tbs), Some(signature)) = (tbs, crl.signature.as_bytes()) else {
        return false;
    };
    super::sigalg::verify(signer, &crl.signature_algorithm, &tbs, signature).is_ok()
}

/// One entry of a CRL as published (RFC 5280 §5.3.1-5.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedEntry {
    pub serial: super::Serial,
    pub revoked_at: Timestamp,
    /// The reasonCode extension (absent: unspecified).
    pub reason: Option<u8>,
    pub invalidity_date: Option<Timestamp>,
}

/// The entries of a DER CRL, every field a restore must take back as it was. A full decode:
/// not for the hot path.
pub fn revoked_entries(der: &[u8]) -> Option<Vec<PublishedEntry>> {
    use der::Decode;
    use x509_cert::ext::pkix::CrlReason;
    let crl =
        x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der).ok()?;
    let mut out = Vec::new();
    for entry in crl.tbs_cert_list.revoked_certificates.iter().flatten() {
        let serial = super::Serial::from_serial_number(&entry.serial_number).ok()?;
        let extension = |oid| {
            entry
                .crl_entry_extensions
                .iter()
                .flatten()
                .find(move |e| e.extn_id == oid)
        };
        let reason = match extension(const_oid::db::rfc5280::ID_CE_CRL_REASONS) {
            Some(e) => Some(CrlReason::from_der(e.extn_value.as_bytes()).ok()? as u8),
            None => None,
        };
        // An entry whose extension cannot be read is not guessed at: the whole CRL is refused.
        let invalidity_date = match extension(const_oid::db::rfc5280::ID_CE_INVALIDITY_DATE) {
            Some(e) => Some(Timestamp::from_x509_time(
                &x509_cert::time::Time::GeneralTime(
                    der::asn1::GeneralizedTime::from_der(e.extn_value.as_bytes()).ok()?,
                ),
            )),
            None => None,
        };
        out.push(PublishedEntry {
            serial,
            revoked_at: Timestamp::from_x509_time(&entry.revocation_date),
            reason,
            invalidity_date,
        });
    }
    Some(out)
}

/// Reads a DER CRL's number, times and entry count (RFC 5280 §5.1), walking the entries'
/// TLV headers only.
pub fn summarize(der: &[u8]) -> Result<CrlSummary, der::Error> {
    use der::{Decode, Header, Reader, SliceReader, Tag};
    use x509_cert::time::Time;
    let mut outer = SliceReader::new(der)?;
    Header::decode(&mut outer)?.tag().assert_eq(Tag::Sequence)?;
    let tbs = Header::decode(&mut outer)?;
    tbs.tag().assert_eq(Tag::Sequence)?;
    let mut fields = SliceReader::new(outer.read_slice(tbs.length())?)?;
    if Tag::peek(&fields)? == Tag::Integer {
        fields.tlv_bytes()?; // version
    }
    fields.tlv_bytes()?; // signature
    fields.tlv_bytes()?; // issuer
    let this_update = Timestamp::from_x509_time(&fields.decode::<Time>()?);
    let mut next_update = None;
    if !fields.is_finished() && matches!(Tag::peek(&fields)?, Tag::UtcTime | Tag::GeneralizedTime) {
        next_update = Some(Timestamp::from_x509_time(&fields.decode::<Time>()?));
    }
    let mut entries = 0;
    if !fields.is_finished() && Tag::peek(&fields)? == Tag::Sequence {
        let revoked = Header::decode(&mut fields)?;
        let mut list = SliceReader::new(fields.read_slice(revoked.length())?)?;
        while !list.is_finished() {
            list.tlv_bytes()?;
            entries += 1;
        }
    }
    let mut number = None;
    if !fields.is_finished() {
        let wrapper = Header::decode(&mut fields)?;
        let extensions =
            x509_cert::ext::Extensions::from_der(fields.read_slice(wrapper.length())?)?;
        number = extensions
            .iter()
            .find(|e| e.extn_id == super::oid::EXT_CRL_NUMBER)
            .map(|e| x509_cert::ext::pkix::CrlNumber::from_der(e.extn_value.as_bytes()))
            .transpose()?
            .map(|n| {
                n.0.as_bytes()
                    .iter()
                    .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            });
    }
    Ok(CrlSummary {
        number,
        this_update,
        next_update,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;
    use x509_cert::crl::CertificateList;

    #[test]
    fn a_crl_decodes_with_x509_cert() {
        let mut writer = CrlWriter::new(3);
        let t = Timestamp::parse_rfc3339("2026-11-25T10:00:00Z").unwrap();
        writer
            .push(&[0x01, 0x02], t, Some(1), Some(t.minus_seconds(3600)))
            .unwrap();
        writer.push(&[0x80, 0x00], t, None, None).unwrap();
        writer.push(&[0x7f; 20], t, Some(4), None).unwrap();
        let alg = hex::decode("300a06082a8648ce3d040303").unwrap();
        let issuer =
            hex::decode("3010310e300c06035504030c05416765ee74".replace("ee", "6e")).unwrap();
        let ext = hex::decode("300d300b0603551d140404020203e8").unwrap();
        let tbs = writer
            .finish_tbs(&CrlHeader {
                signature_algorithm: &alg,
                issuer: &issuer,
                this_update: t,
                next_update: t.plus_seconds(26 * 3600),
                extensions: &ext,
            })
            .unwrap()
            .to_vec();
        let crl = writer.finish(&alg, &[0x30, 0x00]).unwrap();
        let decoded: CertificateList = CertificateList::from_der(crl.as_der()).unwrap();
        let entries = decoded.tbs_cert_list.revoked_certificates.as_ref().unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].serial_number.as_bytes(), &[0x00, 0x80, 0x00]);
        assert_eq!(decoded.tbs_cert_list.to_der().unwrap(), tbs);
        // What a restore takes back from a published CRL: serials, times, reasons and
        // invalidity dates, exactly.
        let entries = revoked_entries(crl.as_der()).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].revoked_at, t);
        assert_eq!(
            (entries[0].reason, entries[1].reason, entries[2].reason),
            (Some(1), None, Some(4))
        );
        assert_eq!(entries[1].serial, crate::Serial::from_hex("8000").unwrap());
        let invalidity: Vec<_> = entries.iter().map(|e| e.invalidity_date).collect();
        assert_eq!(invalidity, [Some(t.minus_seconds(3600)), None, None]);
        assert_eq!(
            summarize(crl.as_der()).unwrap(),
            CrlSummary {
                number: Some(1000),
                this_update: t,
                next_update: Some(t.plus_seconds(26 * 3600)),
                entries: 3,
            }
        );
    }

    #[test]
    fn an_empty_crl_has_no_revoked_certificates_field() {
        let mut writer = CrlWriter::new(0);
        let t = Timestamp::parse_rfc3339("2026-11-25T10:00:00Z").unwrap();
        let alg = hex::decode("300a06082a8648ce3d040303").unwrap();
        let issuer = hex::decode("3000").unwrap();
        let ext = hex::decode("300d300b0603551d140404020203e8").unwrap();
        writer
            .finish_tbs(&CrlHeader {
                signature_algorithm: &alg,
                issuer: &issuer,
                this_update: t,
                next_update: t.plus_seconds(60),
                extensions: &ext,
            })
            .unwrap();
        let crl = writer.finish(&alg, &[0x30, 0x00]).unwrap();
        let decoded: CertificateList = CertificateList::from_der(crl.as_der()).unwrap();
        assert!(decoded.tbs_cert_list.revoked_certificates.is_none());
    }
}
