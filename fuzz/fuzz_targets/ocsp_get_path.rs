//! OCSP requests as GET paths (`/ocsp/{url-encoded base64}`): percent-decoding, base64 in both
//! alphabets, then the DER decoder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sceau_x509::ocsp_get::decode_get_path;
use sceau_x509::ocsp::{MAX_REQUEST, parse_request};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(der) = decode_get_path(path, MAX_REQUEST) {
        assert!(der.len() <= MAX_REQUEST + 16);
        let _ = parse_request(&der);
    }
});
