//! CMS SignedData as operators sign their RA requests, verified against an operator
//! certificate (the test fixture's): the envelope, the signed attributes, the signature.
#![no_main]
use std::sync::OnceLock;

use der::Decode;
use libfuzzer_sys::fuzz_target;
use sceau_x509::{cms, pem};
use x509_cert::Certificate;

fn signer() -> &'static Certificate {
    static SIGNER: OnceLock<Certificate> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let der = pem::decode_pem_or_der(
            include_bytes!("../../tests/fixtures/cms/ec.pem"),
            &[pem::CERTIFICATE],
        )
        .expect("the fixture certificate");
        Certificate::from_der(&der).expect("the fixture certificate")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = cms::verify_attached(data, signer());
});
