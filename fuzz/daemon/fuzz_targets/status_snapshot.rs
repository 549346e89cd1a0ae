//! A status snapshot as a responder node reads it from the engine: the magic, then records
//! of any length and content. Whatever is read as a record must write back to the same octets
//! (nothing read is made up), and nothing panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sceau::va::snapshot::{encode, next_record, strip_magic};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(mut at)) = strip_magic(data) else {
        return;
    };
    while let Ok(Some((record, used))) = next_record(&data[at..]) {
        let mut written = Vec::new();
        encode(&record, &mut written).expect("a record read writes back");
        assert_eq!(written, &data[at..at + used], "read back differently");
        at += used;
    }
});
