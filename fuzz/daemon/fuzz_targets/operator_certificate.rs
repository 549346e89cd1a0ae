//! Operator certificates (PEM or DER: TLS client certificates, cards' certificates): decoded and
//! read the way the RA reads an operator's certificate (validity, serial, subject).
#![no_main]
use der::{Decode, Encode};
use libfuzzer_sys::fuzz_target;
use sceau::x509::name::parse_distinguished_name;
use sceau::x509::{Serial, Timestamp, pem};
use x509_cert::Certificate;

fuzz_target!(|data: &[u8]| {
    let Ok(der) = pem::decode_pem_or_der(data, &[pem::CERTIFICATE]) else {
        return;
    };
    let Ok(certificate) = Certificate::from_der(&der) else {
        return;
    };
    let tbs = certificate.tbs_certificate();
    let not_before = Timestamp::from_x509_time(&tbs.validity().not_before);
    let not_after = Timestamp::from_x509_time(&tbs.validity().not_after);
    let _ = not_before <= not_after;
    let _ = Serial::from_serial_number(tbs.serial_number());
    if let Ok(subject) = tbs.subject().to_der() {
        let _ = parse_distinguished_name(&subject);
    }
    let _ = sceau::ra::operators::operator_id(&der);
});
