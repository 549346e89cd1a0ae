//! How many certificates end soon: the counts an alerting system watches (issue 12: renewals
//! are asked for in time only if someone sees them coming).
use std::sync::atomic::{AtomicU64, Ordering};

use super::CaError;
use crate::store::schema::{ExpiryIndex, Revocations};
use crate::store::{Reader, Store};
use crate::x509::Timestamp;

/// The windows counted, in days.
pub const WINDOWS_DAYS: [u64; 3] = [30, 60, 90];

/// Unrevoked certificates whose notAfter falls within each of [`WINDOWS_DAYS`] from `now`
/// (the windows nest: the 60-day count includes the 30-day one).
pub fn count_expiring(store: &Store, now: Timestamp) -> Result<[u64; 3], CaError> {
    let longest = now.plus_seconds(WINDOWS_DAYS[2] * 86_400);
    let mut counts = [0u64; 3];
    // The index is ordered by notAfter (8 big-endian octets first).
    let from = now.unix_seconds().to_be_bytes();
    for row in store.scan::<ExpiryIndex>(&from, &[])? {
        let (key, ()) = row?;
        if key.not_after > longest {
            break;
        }
        if key.not_after < now || store.contains::<Revocations>(&key.certificate)? {
            continue;
        }
        for (count, days) in counts.iter_mut().zip(WINDOWS_DAYS) {
            if key.not_after <= now.plus_seconds(days * 86_400) {
                *count += 1;
            }
        }
    }
    Ok(counts)
}

/// The last counts, refreshed by the daemon every minute and read by `/metrics`.
#[derive(Debug, Default)]
pub struct ExpiringGauge([AtomicU64; 3]);

impl ExpiringGauge {
    pub fn set(&self, counts: [u64; 3]) {
        for (gauge, count) in self.0.iter().zip(counts) {
            gauge.store(count, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.0[i].load(Ordering::Relaxed))
    }
}
