//! What several bench tools share (included by each with `#[path]`): their arguments, reading
//! an HTTP answer, opening the CA of a configuration.
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use sceau::ca::CertificateAuthority;
use sceau::config::Config;
use sceau::hsm::Hsm;
use sceau::policy::PolicySet;
use sceau::store::Store;
use sceau::x509::time::SystemClock;

/// The tool's arguments (`cargo bench` adds `--bench`, which is not one).
pub fn arguments() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect()
}

/// An answer's status and whole body.
pub async fn read_response(response: hyper::Response<hyper::body::Incoming>) -> (u16, Bytes) {
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}

/// The CA of `config` (its store already initialised), as the daemon opens it.
pub fn open_ca(config: &Config, hsm: &Hsm) -> CertificateAuthority {
    let store = Store::open(&config.store_dir()).expect("store");
    let policies = Arc::new(PolicySet::load_dir(&config.policies_dir).expect("policies"));
    CertificateAuthority::open(
        store,
        hsm,
        policies,
        config.urls.clone(),
        Arc::new(SystemClock),
    )
    .expect("ca")
}
