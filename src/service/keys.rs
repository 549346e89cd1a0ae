//! The CA's key ceremonies that the daemon puts in force without a restart: issuing and root
//! rollover, and the renewal of the delegated OCSP responders.

use super::wire::{Renewed, RenewedResponder, Rollover, Rotated};
use super::{Service, ServiceError};
use crate::ca::state::StoredCa;
use crate::store::{CertKey, IssuerId};

impl Service {
    /// `sceau ca rotate [--root]`: the key ceremony, then everything it changed put in force.
    /// For an issuing CA, in this order: OCSP answers for it and its CRL is published, then new
    /// certificates are issued by it (their CRL URL already resolves).
    /// On a CA with security officers, only as a ceremony (`sceau ceremony propose`).
    pub async fn rotate(
        &self,
        rollover: Rollover,
        common_name: Option<String>,
    ) -> Result<Rotated, ServiceError> {
        self.outside_ceremony(match rollover {
            Rollover::Issuing => "an issuing CA rollover",
            Rollover::Root => "a root rollover",
        })?;
        self.rotate_approved(rollover, common_name).await
    }

    /// [`Service::rotate`], authorised: by a single-person CA's operator or by a ceremony.
    pub(super) async fn rotate_approved(
        &self,
        rollover: Rollover,
        common_name: Option<String>,
    ) -> Result<Rotated, ServiceError> {
        if !self.hsm()?.status().available {
            return Err(ServiceError::HsmUnavailable);
        }
        let service = self.clone();
        Self::to_the_end(async move { service.rotate_now(rollover, common_name).await }).await
    }

    async fn rotate_now(
        &self,
        rollover: Rollover,
        common_name: Option<String>,
    ) -> Result<Rotated, ServiceError> {
        let (config, store, hsm, now) = (
            self.config.clone(),
            self.store.clone(),
            self.hsm()?.clone(),
            self.now(),
        );
        let ceremony = Self::blocking(move || {
            let name = common_name.as_deref();
            Ok(match rollover {
                Rollover::Issuing => {
                    crate::ca::ceremony::rotate_issuing(&config, &store, &hsm, now, name)
                        .map(|r| (r.state, Some((r.issuing, r.responder))))?
                }
                Rollover::Root => {
                    crate::ca::ceremony::rotate_root(&config, &store, &hsm, now, name)
                        .map(|s| (s, None))?
                }
            })
        })
        .await;
        // A failed ceremony revokes what it signed; a successful one adds a CRL or an ARL.
        self.effects.crl_changed();
        let (state, issuing) = ceremony?;
        let Some(va) = self.va() else {
            // Offline: the daemon puts the new CA in force when it starts.
            return Ok(rotated(&state, issuing.as_ref()));
        };
        va.after_rollover(self.hsm()?, &state)
            .await
            .map_err(|e| ServiceError::RolloverIncomplete(e.to_string()))?;
        if let Some((issuing, responder)) = &issuing {
            if let Some(key) = responder_certificate_key(responder) {
                va.after_issuance(&[key])
                    .await
                    .map_err(|e| ServiceError::Resigning(e.to_string()))?;
            }
            let issuer = crate::ca::Issuer::load(self.hsm()?, issuing)?;
            self.ca()?.switch_issuer(issuer);
        }
        if let Some(hook) = self.daemon.as_ref().and_then(|d| d.on_rollover.as_ref()) {
            hook(&state);
        }
        Ok(rotated(&state, issuing.as_ref()))
    }

    /// Whether a delegated responder is past two thirds of its certificate's life.
    pub fn responders_due(&self) -> bool {
        crate::ca::load_state(&self.store)
            .ok()
            .flatten()
            .is_some_and(|state| !state.responders_due(self.now(), false).is_empty())
    }

    /// Renews the delegated OCSP responders (key, certificate, state) of the issuing CAs in
    /// service, every one when `force`, else those past two thirds of their life, and (with the
    /// daemon) re-signs their responses.
    ///
    /// The renewal at two thirds of a certificate's life (`force` false, the daemon's timer) is
    /// pre-authorised by the CA's officers; renewing every responder now (`sceau ocsp
    /// renew-signer`) is a ceremony on a CA with officers.
    pub async fn renew_responders(&self, force: bool) -> Result<Renewed, ServiceError> {
        if force {
            self.outside_ceremony("renewing the OCSP responders now")?;
        }
        self.renew_responders_approved(force).await
    }

    /// [`Service::renew_responders`], authorised.
    pub(super) async fn renew_responders_approved(
        &self,
        force: bool,
    ) -> Result<Renewed, ServiceError> {
        if !self.hsm()?.status().available {
            return Err(ServiceError::HsmUnavailable);
        }
        let service = self.clone();
        Self::to_the_end(async move {
            let renewed = service.renew_responders_now(force).await;
            // A failed renewal revokes what it signed: the CRL follows.
            service.effects.crl_changed();
            renewed
        })
        .await
    }

    async fn renew_responders_now(&self, force: bool) -> Result<Renewed, ServiceError> {
        let now = self.now();
        let state = self.state()?;
        let hsm = self.hsm()?;
        let mut renewed = Vec::new();
        let mut resigned = 0;
        for issuing in state.responders_due(now, force) {
            let issuer = crate::ca::Issuer::load(hsm, issuing)?;
            let (config, store, hsm_owned, name) = (
                self.config.clone(),
                self.store.clone(),
                hsm.clone(),
                issuing.name.clone(),
            );
            let stored = Self::blocking(move || {
                Ok(crate::ca::ceremony::renew_responder(
                    &config, &store, &hsm_owned, now, &name,
                )?)
            })
            .await?;
            if let Some(va) = self.va() {
                resigned += va
                    .renew_signer(hsm, issuer.id, &stored)
                    .await
                    .map_err(|e| {
                        ServiceError::Resigning(format!(
                            "the new responder is in force, but re-signing failed (retried in the background): {e}"
                        ))
                    })?;
                // The new responder certificate is a certificate of the issuing CA like any
                // other: OCSP answers for it too.
                if let Some(key) = responder_certificate_key(&stored)
                    && let Err(error) = va.after_issuance(&[key]).await
                {
                    tracing::warn!(%error, "the new responder certificate's own OCSP responses are signed later");
                }
            }
            let (not_before, not_after) = readable_validity(&stored);
            renewed.push(RenewedResponder {
                issuing: issuing.name.clone(),
                responder: stored.name,
                key_label: stored.key_label,
                not_before,
                not_after,
            });
        }
        Ok(match self.va() {
            Some(_) => Renewed {
                renewed,
                responses_resigned: Some(resigned),
                responses: None,
            },
            None => Renewed {
                renewed,
                responses_resigned: None,
                responses: Some("re-signed by the daemon when it starts; the previous responders' are served until then".into()),
            },
        })
    }
}

fn rotated(state: &crate::ca::CaState, issuing: Option<&(StoredCa, StoredCa)>) -> Rotated {
    match issuing {
        Some((issuing, responder)) => {
            let (not_before, not_after) = readable_validity(issuing);
            Rotated::Issuing {
                issuing: issuing.name.clone(),
                key_label: issuing.key_label.clone(),
                not_before,
                not_after,
                responder: responder.name.clone(),
                previous: state
                    .issuing
                    .iter()
                    .rev()
                    .skip(1)
                    .map(|c| c.name.clone())
                    .collect(),
            }
        }
        None => Rotated::Root {
            root: state.root.as_ref().map(|r| r.name.clone()),
            links: state.root_links.last().map(|l| {
                [
                    format!("{}-signed-by-{}", l.new, l.old),
                    format!("{}-signed-by-{}", l.old, l.new),
                ]
            }),
        },
    }
}

/// notBefore and notAfter of a CA certificate, as text for people.
fn readable_validity(stored: &StoredCa) -> (Option<String>, Option<String>) {
    stored
        .validity()
        .map(|(start, end)| (start.to_string(), end.to_string()))
        .unzip()
}

/// The store key of a responder certificate (its issuer from the AKI, its serial).
fn responder_certificate_key(stored: &StoredCa) -> Option<CertKey> {
    let certificate: x509_cert::Certificate = der::Decode::from_der(&stored.certificate).ok()?;
    let serial =
        crate::x509::Serial::from_serial_number(certificate.tbs_certificate().serial_number())
            .ok()?;
    Some(CertKey {
        issuer: IssuerId(stored.authority_key_identifier()?),
        serial,
    })
}
