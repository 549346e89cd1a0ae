//! sceau: a certificate-authority daemon for a public-sector smart-card PKI (RGS ***).
//!
//! # Design
//!
//! Each role of the PKI (RFC 3647) is one module with a narrow interface. A request goes
//! `ra` -> `ca` -> `policy` (checks and the linted TBS), then `ca` -> (`hsm`, `store`, `audit`);
//! `va` reads what `ca` wrote and signs OCSP responses and CRLs. docs/design.md#architecture has
//! the picture, docs/design.md#floors which module may import which (and where the imports of
//! today still reach up), docs/design.md#profiles what sceau signs.
//!
//! - [`x509`]: pure encoding and decoding (TBS certificates, names, serials, times, CSRs,
//!   signature verification). No I/O, no keys. A crate of its own (`sceau-x509`, in
//!   `src/x509`), so that it builds, tests and fuzzes without RocksDB, PKCS#11 or tokio.
//! - [`policy`]: certification policies loaded from `policies/*.toml`. Turns an issuance request
//!   into a linted TBS certificate, or into the list of rules it breaks.
//! - [`hsm`]: the PKCS#11 module, a pool of sessions on dedicated threads, key generation and
//!   signing. Keys never leave it.
//! - [`issuer`]: the issuer state (the CA certificates and their keys, a CA that can sign,
//!   revoked entries), shared by `ca`, which writes it, and `va`, which signs with it.
//! - [`ca`]: the key ceremony and issuance: record the intent, sign, store.
//! - [`store`]: RocksDB, the only module that touches it. Every state change is one atomic write
//!   batch that carries its audit event.
//! - [`ra`]: the registration authority: operators (AE > AEC > AED > OC), CMS-signed requests,
//!   the two-person card workflow.
//! - [`va`]: the validation authority: OCSP from pre-signed responses, CRL publication.
//! - [`http`]: the listeners (public validation, administration).
//! - [`audit`]: the hash-chained event log.
//! - [`backup`]: consistent online backups of the store, checked, and restores that never
//!   reuse a published CRL number nor lose a published revocation.
//! - [`config`]: the daemon's TOML configuration, validated at load.
//! - [`cli`]: the `sceau` command.
//!
//! The invariants the code keeps (each has a test that can fail) are listed in
//! `docs/invariants.md`; the most important one: nothing is signed that is not recorded first.
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod audit;
pub mod backup;
pub mod ca;
pub mod cli;
pub mod config;
pub mod durable;
pub mod failpoint;
pub mod hsm;
pub mod http;
pub mod issuer;
pub mod notices;
pub mod policy;
pub mod ra;
pub mod service;
pub mod store;
pub mod va;
pub use sceau_x509 as x509;
