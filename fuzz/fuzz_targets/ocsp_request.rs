//! OCSP requests as POST bodies: the strict DER decoder and its checks (nonce size, critical
//! extensions, CertID hash parameters, number of CertIDs).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sceau_x509::ocsp::{MAX_CERT_IDS, parse_request};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse_request(data) {
        assert!((1..=MAX_CERT_IDS).contains(&request.cert_ids.len()));
        if let Some(nonce) = request.nonce {
            assert!(!nonce.is_empty() && nonce.len() <= data.len());
        }
    }
});
