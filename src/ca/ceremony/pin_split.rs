//! The token's PIN split among the security officers, and the unsealing that brings it back.
//!
//! The `split-pin` ceremony draws a new random PIN, sets it on the token and deals it out as
//! Shamir shares over GF(256) (the `blahaj` crate), one per active officer, any M of them (the
//! officers' quorum) making the PIN again and fewer telling nothing of it. The store keeps, per
//! share, who holds it and the SHA-256 of its bytes, and a digest of the PIN: never a share,
//! never the PIN.
//!
//! After a start the daemon is sealed: it answers OCSP from its pre-signed responses and signs
//! nothing. Each officer presents their share inside a CMS SignedData made by their card's
//! signature key over [`UnsealRequest`]: this CA, the daemon's nonce of this start (a
//! submission is worth nothing after a restart) and the share. [`Unsealing::offer`] takes it
//! only from the very officer it was dealt to, still active, their card valid and not revoked,
//! and each person once. With M shares it makes the PIN, checks it against the stored digest
//! before any login (a wrong PIN would spend the token's retry counter), and hands it over.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::control::{put_json, read_json, txn_json};
use super::quorum::{OfficerSet, QuorumError};
use crate::ca::CaError;
use crate::hsm::Pin;
use crate::store::{Store, Txn};
use crate::x509::Timestamp;
use crate::x509::cms::{self, CmsError};

/// The first field of a share file.
pub const SHARE_KIND: &str = "sceau-pin-share/v1";
/// The first field of what an officer signs to present their share.
pub const UNSEAL_KIND: &str = "sceau-unseal/v1";
/// The first field of the daemon's answer to `GET /admin/unseal`.
pub const CHALLENGE_KIND: &str = "sceau-unseal-challenge/v1";
/// Characters of a PIN the ceremony draws (hexadecimal: 128 bits).
pub const PIN_LENGTH: usize = 32;

const SPLIT_STATE: &str = "pin-split";

/// One officer's share, as the ceremony writes it to a file for them. Its `Debug` hides the
/// share; the share is wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareFile {
    pub kind: String,
    pub ca: String,
    /// The split this share belongs to ([`SplitRecord::id`]).
    pub split: String,
    /// The share's x coordinate (1..=255).
    pub index: u8,
    pub quorum: usize,
    /// Whom it was dealt to: the officer's person, as the quorum rule reads it.
    pub holder: String,
    /// The officer's name as their certificate writes it (common name), for people to read.
    pub name: String,
    /// The share's bytes (x then y), base64.
    pub share: String,
}

impl Drop for ShareFile {
    fn drop(&mut self) {
        self.share.zeroize();
    }
}

impl std::fmt::Debug for ShareFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareFile")
            .field("split", &self.split)
            .field("index", &self.index)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// Who holds which share of a split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub index: u8,
    pub person: String,
    /// The officer's common name, for people to read.
    pub name: String,
    /// SHA-256 of the share's bytes, hex: a share is taken only as it was dealt.
    pub share_sha256: String,
}

/// A split of the PIN, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRecord {
    pub id: String,
    pub quorum: usize,
    pub made_at: Timestamp,
    /// [`pin_check`] of the PIN.
    pub pin_check: String,
    pub holders: Vec<Holder>,
}

/// The splits the store knows. `current` is the split whose PIN the token was last known to
/// hold; `pending`, a split recorded by a `split-pin` ceremony before its C_SetPIN, until the
/// change is known to have taken (then it becomes `current`) or to have failed (then it goes).
/// After a crash in between, the token holds one of the two PINs: both can unseal, and the
/// one that opens the CA becomes `current`. A confirmed split is never dropped for one that
/// was not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitState {
    pub current: Option<SplitRecord>,
    pub pending: Option<SplitRecord>,
}

impl SplitState {
    fn find(&self, id: &str) -> Option<&SplitRecord> {
        self.current
            .iter()
            .chain(&self.pending)
            .find(|record| record.id == id)
    }

    /// The state once the split `id` is known to be the token's PIN.
    pub fn confirmed(&self, id: &str) -> Self {
        match self.find(id) {
            Some(record) => Self {
                current: Some(record.clone()),
                pending: None,
            },
            None => self.clone(),
        }
    }

    /// The quorum of the split an unsealing aims at (the current one, else the pending one).
    fn quorum(&self) -> usize {
        self.current
            .as_ref()
            .or(self.pending.as_ref())
            .map_or(0, |record| record.quorum)
    }
}

/// The splits the store holds, if the PIN was ever split.
pub fn split_state(store: &Store) -> Result<Option<SplitState>, CaError> {
    read_json(store, SPLIT_STATE)
}

/// Records the splits in force (in the `split-pin` ceremony's transactions).
pub fn put_split_state(txn: &mut Txn<'_>, state: &SplitState) -> Result<(), CaError> {
    put_json(txn, SPLIT_STATE, state)
}

/// The splits in force, read in a transaction.
pub fn txn_split_state(txn: &Txn<'_>) -> Result<Option<SplitState>, CaError> {
    txn_json(txn, SPLIT_STATE)
}

/// A digest of the PIN, bound to its split: a 128-bit random PIN cannot be found from it.
pub fn pin_check(split: &str, pin: &[u8]) -> String {
    let mut input = b"sceau-pin-check/v1\0".to_vec();
    input.extend_from_slice(split.as_bytes());
    input.push(0);
    input.extend_from_slice(pin);
    let digest = hex::encode(crate::x509::keys::sha256(&input));
    input.zeroize();
    digest
}

/// Deals `pin` out to the officers of `officers` who can sign now (active, their card valid at
/// `now` and not revoked: a share dealt to an officer who cannot present it is lost): any
/// `officers.quorum` of the shares make it again. Returns the record to store and each
/// officer's share file.
pub fn deal(
    ca: &str,
    split: &str,
    pin: &Pin,
    officers: &OfficerSet,
    now: Timestamp,
    revoked: &dyn Fn(&[u8]) -> bool,
) -> Result<(SplitRecord, Vec<ShareFile>), QuorumError> {
    use base64::Engine;
    let persons = officers.validate()?;
    let holders: Vec<(&str, String)> = officers
        .usable(&persons, now, revoked)?
        .into_iter()
        .map(|(officer, person, _)| (person, display_name(&officer.certificate, person)))
        .collect();
    if holders.len() < officers.quorum {
        return Err(QuorumError::Quorum {
            quorum: officers.quorum,
            active: holders.len(),
        });
    }
    let threshold = u8::try_from(officers.quorum)
        .map_err(|_| QuorumError::Malformed("a quorum above 255".into()))?;
    if holders.len() > 255 {
        return Err(QuorumError::Malformed("more than 255 officers".into()));
    }
    let dealer = blahaj::Sharks(threshold).dealer(pin.expose());
    let mut files = Vec::new();
    let mut record = SplitRecord {
        id: split.to_owned(),
        quorum: officers.quorum,
        made_at: now,
        pin_check: pin_check(split, pin.expose()),
        holders: Vec::new(),
    };
    for ((person, name), share) in holders.into_iter().zip(dealer) {
        let bytes = Zeroizing::new(Vec::from(&share));
        let index = bytes[0];
        record.holders.push(Holder {
            index,
            person: person.to_owned(),
            name: name.clone(),
            share_sha256: hex::encode(crate::x509::keys::sha256(&bytes)),
        });
        files.push(ShareFile {
            kind: SHARE_KIND.into(),
            ca: ca.to_owned(),
            split: split.to_owned(),
            index,
            quorum: officers.quorum,
            holder: person.to_owned(),
            name,
            share: base64::engine::general_purpose::STANDARD.encode(&*bytes),
        });
    }
    Ok((record, files))
}

/// An officer's name for people to read: their certificate's common name, or their person.
pub fn display_name(certificate_der: &[u8], person: &str) -> String {
    <x509_cert::Certificate as der::Decode>::from_der(certificate_der)
        .ok()
        .and_then(|c| der::Encode::to_der(c.tbs_certificate().subject()).ok())
        .and_then(|subject| crate::x509::name::parse_distinguished_name(&subject).ok())
        .and_then(|name| {
            name.first(crate::x509::name::Attribute::CommonName)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| person.replace('\u{1f}', " "))
}

/// What an officer signs to present a share: `canonical_bytes` of it. The share itself is
/// sealed to the daemon's key of this start ([`Challenge::key`]): X25519 with a key of the
/// officer's tool made for this one presentation, HKDF-SHA256, AES-256-GCM. A presentation
/// kept in a file, or seen on its way, tells nothing of the share, and is worth nothing after
/// the daemon restarts.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsealRequest {
    pub kind: String,
    pub ca: String,
    pub nonce: String,
    /// The daemon's key it is sealed to (hex), as the challenge gave it.
    pub key: String,
    /// The split and the share's index: which share this is.
    pub split: String,
    pub index: u8,
    /// The presenting tool's X25519 public key for this presentation (hex).
    pub ephemeral: String,
    /// The share's bytes, sealed (base64 of the AES-256-GCM ciphertext and tag).
    pub sealed_share: String,
}

/// The AES-256-GCM key of one presentation, and the context it binds (additional data).
fn presentation_key(
    shared_secret: &[u8],
    context: &[u8],
) -> Result<aws_lc_rs::aead::LessSafeKey, aws_lc_rs::error::Unspecified> {
    use aws_lc_rs::{aead, hkdf};
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, UNSEAL_KIND.as_bytes());
    let prk = salt.extract(shared_secret);
    let info = [context];
    let okm = prk.expand(&info, &aead::AES_256_GCM)?;
    Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
}

/// What the sealing binds: this CA, the start, both public keys, which share.
fn presentation_context(
    ca: &str,
    nonce: &str,
    key: &str,
    ephemeral: &str,
    split: &str,
    index: u8,
) -> Vec<u8> {
    format!("{ca}\0{nonce}\0{key}\0{ephemeral}\0{split}\0{index}").into_bytes()
}

impl UnsealRequest {
    /// Seals `share` to the daemon's key in `challenge`.
    pub fn seal(challenge: &Challenge, share: &ShareFile) -> Result<Self, UnsealError> {
        use aws_lc_rs::{aead, agreement};
        use base64::Engine;
        let mut bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&share.share)
                .map_err(|e| UnsealError::Malformed(format!("share: {e}")))?,
        );
        let daemon_key = hex::decode(&challenge.key)
            .map_err(|_| UnsealError::Malformed("the daemon's key".into()))?;
        let mine = agreement::PrivateKey::generate(&agreement::X25519)
            .map_err(|_| UnsealError::Malformed("no random key".into()))?;
        let ephemeral = hex::encode(
            mine.compute_public_key()
                .map_err(|_| UnsealError::Malformed("no public key".into()))?
                .as_ref(),
        );
        let context = presentation_context(
            &challenge.ca,
            &challenge.nonce,
            &challenge.key,
            &ephemeral,
            &share.split,
            share.index,
        );
        let key = agreement::agree(
            &mine,
            agreement::UnparsedPublicKey::new(&agreement::X25519, &daemon_key),
            UnsealError::Malformed("the daemon's key is not an X25519 key".into()),
            |secret| {
                presentation_key(secret, &context)
                    .map_err(|_| UnsealError::Malformed("key derivation".into()))
            },
        )?;
        // One key per presentation: a fixed nonce is never reused under it.
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key([0; 12]),
            aead::Aad::from(&context),
            &mut *bytes,
        )
        .map_err(|_| UnsealError::Malformed("sealing the share".into()))?;
        Ok(Self {
            kind: UNSEAL_KIND.into(),
            ca: challenge.ca.clone(),
            nonce: challenge.nonce.clone(),
            key: challenge.key.clone(),
            split: share.split.clone(),
            index: share.index,
            ephemeral,
            sealed_share: base64::engine::general_purpose::STANDARD.encode(&*bytes),
        })
    }

    /// The bytes signed (JSON, fields in this order).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a sealed daemon asks for: its nonce of this start, and where the unsealing stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub kind: String,
    pub ca: String,
    pub nonce: String,
    /// The daemon's X25519 public key of this start (hex): shares are sealed to it.
    pub key: String,
    pub quorum: usize,
    /// The persons whose shares were taken so far.
    pub given: Vec<String>,
}

/// Why a share was not taken. Nothing is taken on an error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsealError {
    #[error("not a share presentation: {0}")]
    Malformed(String),
    #[error("not signed by an active security officer's card")]
    NotAnOfficer,
    #[error("the signature does not verify: {0}")]
    Signature(String),
    #[error("the presentation is for the CA {0}, not this one")]
    OtherCa(String),
    #[error("the presentation answers another start of the daemon (nonce): ask again")]
    StaleNonce,
    #[error("this share was dealt to {holder}, not to the officer who signed ({signer})")]
    NotTheHolder { holder: String, signer: String },
    #[error("no split {0} is in force: the share is of an earlier split")]
    UnknownSplit(String),
    #[error("the share is not the one dealt (its digest differs)")]
    AlteredShare,
    #[error("{0} has already presented a share")]
    SamePerson(String),
    #[error("the shares make a PIN that is not the split's: {0}")]
    WrongPin(String),
    #[error("the officer set: {0}")]
    Officers(String),
    #[error("the daemon is already unsealed")]
    Unsealed,
}

/// Where the presentation of shares stands, in a sealed daemon.
#[derive(Debug)]
pub enum Offered {
    /// Taken; `have` of `need` shares of this split.
    Waiting { have: usize, need: usize },
    /// The last share needed: the PIN, checked against its digest, and the split that made it.
    Complete { pin: Pin, split: String },
}

/// The shares taken from one officer: their name, and the share's bytes.
type Taken = BTreeMap<String, (String, Zeroizing<Vec<u8>>)>;

/// The shares presented since this start.
pub struct Unsealing {
    ca: String,
    nonce: String,
    /// This start's key, which shares are sealed to; never leaves the process.
    key: aws_lc_rs::agreement::PrivateKey,
    public_key: String,
    splits: SplitState,
    /// Split id → person → (name, share bytes).
    taken: BTreeMap<String, Taken>,
}

impl std::fmt::Debug for Unsealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealing")
            .field("ca", &self.ca)
            .field("given", &self.challenge().given)
            .finish_non_exhaustive()
    }
}

impl Unsealing {
    /// A new unsealing with a fresh nonce and key (every start, and after the token refused a
    /// PIN).
    pub fn new(ca: String, splits: SplitState) -> Result<Self, CaError> {
        use aws_lc_rs::rand::SecureRandom;
        let no_random = || CaError::Io("the system random number generator failed".into());
        let mut nonce = [0u8; 16];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| no_random())?;
        let key = aws_lc_rs::agreement::PrivateKey::generate(&aws_lc_rs::agreement::X25519)
            .map_err(|_| no_random())?;
        let public_key = hex::encode(key.compute_public_key().map_err(|_| no_random())?.as_ref());
        Ok(Self {
            ca,
            nonce: hex::encode(nonce),
            key,
            public_key,
            splits,
            taken: BTreeMap::new(),
        })
    }

    pub fn challenge(&self) -> Challenge {
        Challenge {
            kind: CHALLENGE_KIND.into(),
            ca: self.ca.clone(),
            nonce: self.nonce.clone(),
            key: self.public_key.clone(),
            quorum: self.splits.quorum(),
            given: self
                .taken
                .values()
                .flat_map(|persons| persons.values())
                .map(|(name, _)| name.clone())
                .collect(),
        }
    }

    /// How many shares were taken.
    pub fn given(&self) -> usize {
        self.taken.values().map(BTreeMap::len).sum()
    }

    /// Takes the share inside `presentation` (an attached CMS SignedData over an
    /// [`UnsealRequest`]) if an officer of `officers` usable at `now` signed it and it was
    /// dealt to them.
    pub fn offer(
        &mut self,
        presentation: &[u8],
        officers: &OfficerSet,
        now: Timestamp,
        revoked: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Offered, UnsealError> {
        let persons = officers
            .validate()
            .map_err(|e| UnsealError::Officers(e.to_string()))?;
        let usable = officers
            .usable(&persons, now, revoked)
            .map_err(|e| UnsealError::Officers(e.to_string()))?;
        let candidates: Vec<_> = usable.iter().map(|(_, _, c)| c).collect();
        let (content, signer) = match cms::verify_attached_by_one_of(presentation, &candidates) {
            Ok(verified) => verified,
            Err(CmsError::WrongSigner) => return Err(UnsealError::NotAnOfficer),
            Err(error) => return Err(UnsealError::Signature(error.to_string())),
        };
        let request: UnsealRequest =
            serde_json::from_slice(&content).map_err(|e| UnsealError::Malformed(e.to_string()))?;
        if request.kind != UNSEAL_KIND {
            return Err(UnsealError::Malformed(
                "not a sceau-unseal/v1 request".into(),
            ));
        }
        if request.ca != self.ca {
            return Err(UnsealError::OtherCa(request.ca.clone()));
        }
        if request.nonce != self.nonce || request.key != self.public_key {
            return Err(UnsealError::StaleNonce);
        }
        let signer_person = usable[signer].1;
        let signer_name = display_name(&usable[signer].0.certificate, signer_person);
        let split = self
            .splits
            .find(&request.split)
            .ok_or_else(|| UnsealError::UnknownSplit(request.split.clone()))?;
        let holder = split
            .holders
            .iter()
            .find(|h| h.index == request.index)
            .ok_or(UnsealError::AlteredShare)?;
        if holder.person != signer_person {
            return Err(UnsealError::NotTheHolder {
                holder: holder.name.clone(),
                signer: signer_name,
            });
        }
        let bytes = self.unseal_share(&request)?;
        if hex::encode(crate::x509::keys::sha256(&bytes)) != holder.share_sha256
            || bytes.first() != Some(&holder.index)
        {
            return Err(UnsealError::AlteredShare);
        }
        let (split_id, quorum, check) = (split.id.clone(), split.quorum, split.pin_check.clone());
        let taken = self.taken.entry(split_id.clone()).or_default();
        if taken.contains_key(signer_person) {
            return Err(UnsealError::SamePerson(signer_name));
        }
        taken.insert(signer_person.to_owned(), (signer_name, bytes));
        if taken.len() < quorum {
            return Ok(Offered::Waiting {
                have: taken.len(),
                need: quorum,
            });
        }
        let shares = taken
            .values()
            .map(|(_, bytes)| blahaj::Share::try_from(bytes.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| UnsealError::Malformed(e.to_owned()))?;
        let threshold =
            u8::try_from(quorum).map_err(|_| UnsealError::Malformed("quorum".into()))?;
        let secret = Zeroizing::new(
            blahaj::Sharks(threshold)
                .recover(&shares)
                .map_err(|e| UnsealError::WrongPin(e.to_owned()))?,
        );
        if pin_check(&split_id, &secret) != check {
            // Shares that passed their digests cannot do this; a store edited can.
            self.taken.remove(&split_id);
            return Err(UnsealError::WrongPin("its digest differs".into()));
        }
        let text = String::from_utf8(secret.to_vec())
            .map_err(|_| UnsealError::WrongPin("not text".into()))?;
        Ok(Offered::Complete {
            pin: Pin::from_secret(Zeroizing::new(text)),
            split: split_id,
        })
    }

    /// The share's bytes, opened with this start's key.
    fn unseal_share(&self, request: &UnsealRequest) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        use aws_lc_rs::{aead, agreement};
        use base64::Engine;
        let altered = || {
            UnsealError::Malformed("the sealed share does not open with this start's key".into())
        };
        let ephemeral = hex::decode(&request.ephemeral)
            .map_err(|_| UnsealError::Malformed("ephemeral: not hexadecimal".into()))?;
        let mut sealed = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&request.sealed_share)
                .map_err(|e| UnsealError::Malformed(format!("sealed_share: {e}")))?,
        );
        let context = presentation_context(
            &self.ca,
            &self.nonce,
            &self.public_key,
            &request.ephemeral,
            &request.split,
            request.index,
        );
        let key = agreement::agree(
            &self.key,
            agreement::UnparsedPublicKey::new(&agreement::X25519, &ephemeral),
            altered(),
            |secret| presentation_key(secret, &context).map_err(|_| altered()),
        )?;
        let opened = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key([0; 12]),
                aead::Aad::from(&context),
                &mut sealed,
            )
            .map_err(|_| altered())?;
        Ok(Zeroizing::new(opened.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_quorum_of_shares_makes_the_pin_and_fewer_do_not() {
        let pin = Pin::random(PIN_LENGTH).unwrap();
        assert_eq!(pin.expose().len(), PIN_LENGTH);
        let shares: Vec<blahaj::Share> = blahaj::Sharks(2).dealer(pin.expose()).take(3).collect();
        for pair in [[0, 1], [0, 2], [1, 2]] {
            let chosen = [shares[pair[0]].clone(), shares[pair[1]].clone()];
            assert_eq!(
                blahaj::Sharks(2).recover(&chosen).unwrap(),
                pin.expose(),
                "{pair:?}"
            );
        }
        assert!(blahaj::Sharks(2).recover(&shares[..1]).is_err());
        // One share alone, read as if the quorum were 1, is not the PIN.
        assert_ne!(
            blahaj::Sharks(1).recover(&shares[..1]).unwrap(),
            pin.expose()
        );
    }

    #[test]
    fn the_pin_check_binds_the_split() {
        assert_ne!(pin_check("a", b"1234"), pin_check("b", b"1234"));
        assert_ne!(pin_check("a", b"1234"), pin_check("a", b"1235"));
        assert_eq!(pin_check("a", b"1234"), pin_check("a", b"1234"));
    }
}
