//! The JSON documents operators sign (the content of an RA request): id, time and action, with
//! every field the RA reads.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sceau::ra::request;
use sceau::x509::Timestamp;

fuzz_target!(|data: &[u8]| {
    let now = Timestamp::from_unix_seconds(1_795_000_000);
    let _ = request::parse(data, data.to_vec(), now, 300);
});
