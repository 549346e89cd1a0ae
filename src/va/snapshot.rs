//! Status snapshots: every status of the status bucket as of one revision, in one object of the
//! files bucket, so that a new responder node reads a few thousand chunks instead of one
//! message per certificate. (A million certificates as messages cost the engine about 6 s of
//! CPU and the node 9 s, most of it per message; the same statuses as one object cost a
//! fraction of that, and what changed since comes from the bucket as before.)
//!
//! An object `snapshot/<revision>` holds the magic [`MAGIC`], then records, each a 4-octet
//! big-endian length and that many octets:
//!
//! ```text
//! key length (1) | key: the status bucket's key, ASCII
//! flags (1): 1 revocation time, 2 reason, 4 invalidity date, 8 SHA-1 response, 16 SHA-256 response
//! status (1): 0 good, 1 revoked, 2 unknown
//! [revocation time: 8] [reason: 1] [invalidity date: 8]     (Unix seconds, big-endian)
//! per response: DER length (4) | DER (as in the bucket: without its `certs` tail when it
//!               names one) | thisUpdate (8) | nextUpdate (8) | tail id length (1) | tail id
//! ```
//!
//! The codec does no I/O: the publisher writes records as it reads the store, the node reads
//! them as chunks arrive ([`next_record`]).

/// What every snapshot object starts with (its format's version included).
pub const MAGIC: &[u8] = b"sceau-status-snapshot/1\n";

/// The objects' prefix in the files bucket.
pub const PREFIX: &str = "snapshot/";

/// No record is longer (two responses of a few KB and a key): a length above it is damage,
/// not a record to wait for.
pub const MAX_RECORD: usize = 1 << 20;

const REVOKED_AT: u8 = 1;
const REASON: u8 = 2;
const INVALIDITY: u8 = 4;
const SHA1: u8 = 8;
const SHA256: u8 = 16;

/// A status word, as the bucket's JSON spells it (`good`, `revoked`, `unknown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWord {
    Good,
    Revoked,
    Unknown,
}

impl StatusWord {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Revoked => "revoked",
            Self::Unknown => "unknown",
        }
    }

    pub fn from_word(word: &str) -> Self {
        match word {
            "good" => Self::Good,
            "revoked" => Self::Revoked,
            _ => Self::Unknown,
        }
    }
}

/// One pre-signed response of a record, borrowed from where it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresignedRef<'a> {
    pub der: &'a [u8],
    pub this_update: u64,
    pub next_update: u64,
    /// The files bucket's `tail/<id>` that completes `der`.
    pub tail: Option<&'a str>,
}

/// One certificate's status, as a bucket entry says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRecord<'a> {
    pub key: &'a str,
    pub status: StatusWord,
    pub revoked_at: Option<u64>,
    pub reason: Option<u8>,
    pub invalidity_date: Option<u64>,
    /// SHA-1 and SHA-256 CertIDs, in that order.
    pub responses: [Option<PresignedRef<'a>>; 2],
}

/// Why a snapshot cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a status snapshot (its first octets are not the magic)")]
    NotASnapshot,
    #[error("a record of {0} octets (at most {MAX_RECORD})")]
    TooLong(usize),
    #[error("a record ends early")]
    Truncated,
    #[error("a record has {0} octets after its last field")]
    Trailing(usize),
    #[error("a record's key or tail id is not ASCII")]
    NotAscii,
    #[error("a record's status is {0} (0, 1 or 2)")]
    BadStatus(u8),
    #[error("a record's flags {0:#04x} name fields this version does not know")]
    UnknownFlags(u8),
    #[error("a record's {0} is too long for its length field")]
    FieldTooLong(&'static str),
}

/// Appends `record` to `out`, its length first.
pub fn encode(record: &StatusRecord<'_>, out: &mut Vec<u8>) -> Result<(), SnapshotError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    push_short(out, record.key, "key")?;
    let mut flags = 0;
    for (present, flag) in [
        (record.revoked_at.is_some(), REVOKED_AT),
        (record.reason.is_some(), REASON),
        (record.invalidity_date.is_some(), INVALIDITY),
        (record.responses[0].is_some(), SHA1),
        (record.responses[1].is_some(), SHA256),
    ] {
        if present {
            flags |= flag;
        }
    }
    out.push(flags);
    out.push(match record.status {
        StatusWord::Good => 0,
        StatusWord::Revoked => 1,
        StatusWord::Unknown => 2,
    });
    if let Some(at) = record.revoked_at {
        out.extend_from_slice(&at.to_be_bytes());
    }
    if let Some(reason) = record.reason {
        out.push(reason);
    }
    if let Some(date) = record.invalidity_date {
        out.extend_from_slice(&date.to_be_bytes());
    }
    for response in record.responses.iter().flatten() {
        let length = u32::try_from(response.der.len())
            .map_err(|_| SnapshotError::FieldTooLong("response"))?;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(response.der);
        out.extend_from_slice(&response.this_update.to_be_bytes());
        out.extend_from_slice(&response.next_update.to_be_bytes());
        push_short(out, response.tail.unwrap_or(""), "tail id")?;
    }
    let length = out.len() - start - 4;
    if length > MAX_RECORD {
        out.truncate(start);
        return Err(SnapshotError::TooLong(length));
    }
    out[start..start + 4].copy_from_slice(&(length as u32).to_be_bytes());
    Ok(())
}

fn push_short(out: &mut Vec<u8>, text: &str, field: &'static str) -> Result<(), SnapshotError> {
    let length = u8::try_from(text.len()).map_err(|_| SnapshotError::FieldTooLong(field))?;
    out.push(length);
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// The next whole record at the start of `buffer` and how many octets it took (`None`: more
/// octets are needed). The magic must have been taken off first ([`strip_magic`]).
pub fn next_record(buffer: &[u8]) -> Result<Option<(StatusRecord<'_>, usize)>, SnapshotError> {
    let Some(length) = buffer.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    if length > MAX_RECORD {
        return Err(SnapshotError::TooLong(length));
    }
    let Some(body) = buffer.get(4..4 + length) else {
        return Ok(None);
    };
    Ok(Some((decode(body)?, 4 + length)))
}

/// Checks the magic at the start of a snapshot; returns how many octets it took (`None`: more
/// octets are needed).
pub fn strip_magic(buffer: &[u8]) -> Result<Option<usize>, SnapshotError> {
    let seen = buffer.len().min(MAGIC.len());
    if buffer[..seen] != MAGIC[..seen] {
        return Err(SnapshotError::NotASnapshot);
    }
    Ok((seen == MAGIC.len()).then_some(seen))
}

/// Decodes one record's body (without its length).
pub fn decode(body: &[u8]) -> Result<StatusRecord<'_>, SnapshotError> {
    let mut cursor = Cursor(body);
    let key = cursor.short_text()?;
    let flags = cursor.octet()?;
    if flags & !(REVOKED_AT | REASON | INVALIDITY | SHA1 | SHA256) != 0 {
        return Err(SnapshotError::UnknownFlags(flags));
    }
    let status = match cursor.octet()? {
        0 => StatusWord::Good,
        1 => StatusWord::Revoked,
        2 => StatusWord::Unknown,
        other => return Err(SnapshotError::BadStatus(other)),
    };
    let revoked_at = (flags & REVOKED_AT != 0)
        .then(|| cursor.u64())
        .transpose()?;
    let reason = (flags & REASON != 0).then(|| cursor.octet()).transpose()?;
    let invalidity_date = (flags & INVALIDITY != 0)
        .then(|| cursor.u64())
        .transpose()?;
    let mut responses = [None, None];
    for (slot, flag) in responses.iter_mut().zip([SHA1, SHA256]) {
        if flags & flag == 0 {
            continue;
        }
        let length = cursor.u32()? as usize;
        let der = cursor.take(length)?;
        let this_update = cursor.u64()?;
        let next_update = cursor.u64()?;
        let tail = cursor.short_text()?;
        *slot = Some(PresignedRef {
            der,
            this_update,
            next_update,
            tail: (!tail.is_empty()).then_some(tail),
        });
    }
    if !cursor.0.is_empty() {
        return Err(SnapshotError::Trailing(cursor.0.len()));
    }
    Ok(StatusRecord {
        key,
        status,
        revoked_at,
        reason,
        invalidity_date,
        responses,
    })
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn octet(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn short_text(&mut self) -> Result<&'a str, SnapshotError> {
        let length = self.octet()? as usize;
        let text = self.take(length)?;
        if !text.is_ascii() {
            return Err(SnapshotError::NotAscii);
        }
        // ASCII is UTF-8.
        std::str::from_utf8(text).map_err(|_| SnapshotError::NotAscii)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoked() -> StatusRecord<'static> {
        StatusRecord {
            key: "00ff.0a",
            status: StatusWord::Revoked,
            revoked_at: Some(1_796_317_694),
            reason: Some(4),
            invalidity_date: Some(1_796_000_000),
            responses: [
                Some(PresignedRef {
                    der: b"\x30\x03\x0a\x01\x00",
                    this_update: 10,
                    next_update: 20,
                    tail: Some("0123"),
                }),
                None,
            ],
        }
    }

    fn good() -> StatusRecord<'static> {
        StatusRecord {
            key: "00ff.0b",
            status: StatusWord::Good,
            revoked_at: None,
            reason: None,
            invalidity_date: None,
            responses: [None, None],
        }
    }

    /// What is written reads back field for field, record after record, whatever the
    /// chunks the stream arrives in.
    #[test]
    fn records_read_back_as_written_from_any_split() {
        let mut snapshot = MAGIC.to_vec();
        encode(&revoked(), &mut snapshot).unwrap();
        encode(&good(), &mut snapshot).unwrap();
        for split in 0..snapshot.len() {
            let mut buffer = snapshot[..split].to_vec();
            let mut read = Vec::new();
            let mut magic_taken = false;
            let mut feed = |buffer: &mut Vec<u8>, read: &mut Vec<String>| {
                if !magic_taken {
                    match strip_magic(buffer).unwrap() {
                        Some(n) => {
                            buffer.drain(..n);
                            magic_taken = true;
                        }
                        None => return,
                    }
                }
                while let Some((record, used)) = next_record(buffer).unwrap() {
                    read.push(format!("{record:?}"));
                    buffer.drain(..used);
                }
            };
            feed(&mut buffer, &mut read);
            buffer.extend_from_slice(&snapshot[split..]);
            feed(&mut buffer, &mut read);
            assert_eq!(
                read,
                [format!("{:?}", revoked()), format!("{:?}", good())],
                "split at {split}"
            );
            assert!(buffer.is_empty());
        }
    }

    /// Damage is refused, never read as a status: another format, a length beyond any record,
    /// a record cut short, octets after the last field, a status word that does not exist.
    #[test]
    fn damaged_snapshots_are_refused() {
        assert_eq!(
            strip_magic(b"sceau-status-snapshot/2\n"),
            Err(SnapshotError::NotASnapshot)
        );
        assert_eq!(strip_magic(b"sceau-"), Ok(None));
        assert_eq!(
            next_record(&[0x7f, 0xff, 0xff, 0xff]),
            Err(SnapshotError::TooLong(0x7fff_ffff))
        );
        let mut one = Vec::new();
        encode(&revoked(), &mut one).unwrap();
        let body = &one[4..];
        for cut in 0..body.len() {
            assert!(decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer), Err(SnapshotError::Trailing(1)));
        let mut bad_status = body.to_vec();
        bad_status[1 + 7 + 1] = 9;
        assert_eq!(decode(&bad_status), Err(SnapshotError::BadStatus(9)));
        let mut unknown_flags = body.to_vec();
        unknown_flags[1 + 7] |= 0x80;
        assert_eq!(
            decode(&unknown_flags),
            Err(SnapshotError::UnknownFlags(unknown_flags[1 + 7]))
        );
        let mut not_ascii = body.to_vec();
        not_ascii[1] = 0xc3;
        assert_eq!(decode(&not_ascii), Err(SnapshotError::NotAscii));
    }
}
