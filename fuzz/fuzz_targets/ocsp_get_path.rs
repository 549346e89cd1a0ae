//! OCSP requests as GET paths (`/ocsp/{url-encoded base64}`): percent-decoding, base64 in both
//! alphabets, then the DER decoder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sceau::http::va::{MAX_REQUEST, decode_get_path};
use sceau::x509::ocsp::parse_request;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(der) = decode_get_path(path) {
        assert!(der.len() <= MAX_REQUEST + 16);
        let _ = parse_request(&der);
    }
});
