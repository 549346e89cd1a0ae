//! Pure X.509 encoding: names, serial numbers, times, public keys, extensions, TBS certificates,
//! certification requests, and signature verification.
//!
//! Nothing here performs I/O or holds a private key. Building a certificate stops at the DER
//! bytes of its `TBSCertificate`; [`tbs::assemble_certificate`] attaches a signature made
//! elsewhere (by the HSM), so that the bytes that were linted and recorded are the bytes signed.

pub mod cms;
pub mod crl;
pub mod csr;
pub mod ext;
pub mod keys;
pub mod name;
pub mod ocsp;
pub mod ocsp_get;
pub mod oid;
pub mod pem;
pub mod revocation;
pub mod serial;
pub mod sigalg;
pub mod tbs;
pub mod time;
pub mod tlv;

pub use serial::Serial;
pub use time::Timestamp;
