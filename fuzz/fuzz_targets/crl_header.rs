//! The CRL header reader used at start-up on the published CRLs (number, times, entry count,
//! read without decoding the entries).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sceau_x509::crl::summarize;

fuzz_target!(|data: &[u8]| {
    if let Ok(summary) = summarize(data) {
        assert!(summary.entries <= data.len());
    }
});
