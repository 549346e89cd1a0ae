//! PKCS#10 requests as the CA and the RA receive them (PEM or DER), parsed then verified.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sceau_x509::csr::ParsedCsr;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = ParsedCsr::parse(data) {
        let _ = csr.subject();
        let _ = csr.verify();
    }
});
