//! What a sealed CA host serves (docs/ceremonies.md#the-pin): until the security officers
//! unseal it, the daemon has no PIN and signs nothing, but answers OCSP from the responses
//! its responders signed before and persisted, serves the CRLs last published and the CA
//! certificates, as a responder node does.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::crl::PublishedCrl;
use super::responder::{IssuerSetup, Responder};
use super::{Metrics, Served, VaError, served_fields};
use crate::config::Config;
use crate::issuer::CaState;
use crate::store::Store;
use crate::x509::time::Clock;

/// The sealed daemon's validation authority: pre-signed responses only.
pub struct SealedVa {
    responder: Responder,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    crls: HashMap<String, PublishedCrl>,
    ca_certificates: HashMap<String, Bytes>,
}

impl SealedVa {
    /// Reads the CA state's issuing CAs and responders, their persisted responses still valid,
    /// and the CRLs of the publish directory.
    pub fn open(
        config: &Config,
        store: Store,
        state: &CaState,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, VaError> {
        let metrics = Arc::new(Metrics::default());
        let mut issuers = Vec::new();
        for stored in &state.issuing {
            let identity = super::node::issuer_identity(&stored.name, &stored.certificate)
                .ok_or_else(|| VaError::Encoding(format!("the certificate of {}", stored.name)))?;
            issuers.push(IssuerSetup {
                identity,
                signer: None,
                previous: Vec::new(),
            });
        }
        let now = clock.now();
        // The responders whose certificates are valid now: a response by an expired one is
        // not served.
        let responders: Vec<([u8; 20], Bytes)> = state
            .ocsp_responders
            .iter()
            .filter_map(|r| {
                let certificate =
                    <x509_cert::Certificate as der::Decode>::from_der(&r.certificate).ok()?;
                let validity = certificate.tbs_certificate().validity();
                if crate::x509::Timestamp::from_x509_time(&validity.not_after) <= now {
                    return None;
                }
                let key = crate::x509::keys::key_identifier(
                    certificate.tbs_certificate().subject_public_key_info(),
                );
                Some((
                    key,
                    Bytes::from(super::responses::certs_tail(&r.certificate)),
                ))
            })
            .collect();
        let responder = Responder::new(
            issuers,
            0,
            config.ocsp.live_signing_limit,
            Some(store),
            metrics.clone(),
        )?;
        let loaded = responder.load_presigned(now, &responders)?;
        tracing::info!(
            loaded,
            "sealed: OCSP answers from the responses signed before"
        );
        let crls = state
            .issuing
            .iter()
            .map(|c| &c.name)
            .chain(state.roots().map(|r| &r.name))
            .filter_map(|name| super::crl::read_published(&config.publish_dir, name))
            .map(|crl| (crl.name.clone(), crl))
            .collect();
        Ok(Self {
            responder,
            metrics,
            clock,
            crls,
            ca_certificates: super::ca_certificates(state),
        })
    }
}

impl std::fmt::Debug for SealedVa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedVa")
            .field("responder", &self.responder)
            .finish_non_exhaustive()
    }
}

impl Served for SealedVa {
    served_fields!();

    fn crl(&self, name: &str) -> Option<PublishedCrl> {
        self.crls.get(name).cloned()
    }

    fn ca_certificate(&self, name: &str) -> Option<Bytes> {
        self.ca_certificates.get(name).cloned()
    }

    /// Never ready: a sealed daemon answers only what was signed before (`/readyz` says so).
    fn is_ready(&self) -> bool {
        false
    }
}
