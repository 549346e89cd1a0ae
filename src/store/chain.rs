//! The hash chain the store keeps in its `audit` table, as bytes: the store links each entry a
//! transaction records after the chain's head, in the transaction's own write batch, and keeps
//! the head under `meta/audit-head`. What an entry says, and how it is hashed, belongs to the
//! `audit` module (a floor above), through [`ChainEntry`].
use crate::x509::Timestamp;

/// The end of the chain: the last sequence number and its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty log.
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: [0; 32],
    };

    pub fn to_bytes(self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.hash);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let seq = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let hash = bytes.get(8..40)?.try_into().ok()?;
        (bytes.len() == 40).then_some(ChainHead { seq, hash })
    }
}

/// An entry of the chain, recorded by a transaction ([`super::Txn::audit`]) and linked by the
/// writer when the transaction's group is written.
pub trait ChainEntry: Send + 'static {
    /// The stored bytes of this entry linked after `head` at `time` (its sequence number is
    /// the new head's), and the new head; or why it cannot be written.
    fn link(self, head: ChainHead, time: Timestamp) -> Result<(Vec<u8>, ChainHead), String>;
}

/// A recorded entry, waiting for its place in the chain.
pub(super) type Link =
    Box<dyn FnOnce(ChainHead, Timestamp) -> Result<(Vec<u8>, ChainHead), String> + Send>;

/// Boxes `entry` for the writer.
pub(super) fn link_later(entry: impl ChainEntry) -> Link {
    Box::new(move |head, time| entry.link(head, time))
}
