//! Issuance outside the RA (`sceau issue`, `sceau card issue`) and the RA's first AE.

use super::wire::{BootstrapBody, Bootstrapped, CardBody, CardIssued, IssueBody, Issued};
use super::{Service, ServiceError};
use crate::ca::{CardRequest, IssuedCertificate};
use crate::policy::IssuanceRequest;
use crate::store::CertKey;
use crate::x509::Timestamp;

fn issued(certificate: &IssuedCertificate) -> Issued {
    Issued {
        serial: certificate.serial.to_hex(),
        policy: certificate.policy.clone(),
        certificate: certificate.pem(),
    }
}

fn key(certificate: &IssuedCertificate) -> CertKey {
    CertKey {
        issuer: certificate.issuer,
        serial: certificate.serial.clone(),
    }
}

impl Service {
    /// Issues one certificate, then makes OCSP answer "good" for it.
    pub async fn issue(&self, body: IssueBody) -> Result<Issued, ServiceError> {
        let not_after = match &body.not_after {
            Some(text) => {
                Some(
                    Timestamp::parse_rfc3339(text).map_err(|e| ServiceError::Invalid {
                        field: "not-after",
                        detail: format!("{text:?}: {e}"),
                    })?,
                )
            }
            None => None,
        };
        let ca = self.ca()?.clone();
        let service = self.clone();
        Self::to_the_end(async move {
            let certificate = Self::blocking(move || {
                let request = IssuanceRequest {
                    policy: body.policy,
                    csr: body.csr.into_bytes(),
                    subject: None,
                    not_after,
                };
                Ok(ca.issue(&request, body.holder.as_deref())?)
            })
            .await?;
            tracing::info!(issuer = %certificate.issuer, serial = %certificate.serial, policy = %certificate.policy, card = "-", "certificate issued");
            service.effects.issued(&[key(&certificate)]).await;
            Ok(issued(&certificate))
        })
        .await
    }

    /// Issues both certificates of a card (or neither), then makes OCSP answer for them.
    pub async fn issue_card(&self, body: CardBody) -> Result<CardIssued, ServiceError> {
        let ca = self.ca()?.clone();
        let service = self.clone();
        Self::to_the_end(async move {
            let card = Self::blocking(move || {
                let request = CardRequest {
                    holder: body.holder,
                    card: body.card,
                    authentication: IssuanceRequest {
                        policy: body.authentication_policy,
                        csr: body.authentication_csr.into_bytes(),
                        ..Default::default()
                    },
                    signature: IssuanceRequest {
                        policy: body.signature_policy,
                        csr: body.signature_csr.into_bytes(),
                        ..Default::default()
                    },
                };
                Ok(ca.issue_card(&request, None)?)
            })
            .await?;
            for certificate in [&card.authentication, &card.signature] {
                tracing::info!(issuer = %certificate.issuer, serial = %certificate.serial, card = %card.card, holder = %card.holder, "certificate issued");
            }
            service
                .effects
                .issued(&[key(&card.authentication), key(&card.signature)])
                .await;
            Ok(CardIssued {
                authentication: issued(&card.authentication),
                signature: issued(&card.signature),
                card: card.card,
                holder: card.holder,
            })
        })
        .await
    }

    /// Registers the RA's first AE (its card's authentication certificate is the credential).
    pub async fn bootstrap(&self, body: BootstrapBody) -> Result<Bootstrapped, ServiceError> {
        let service = self.clone();
        Self::blocking(move || {
            let state = service.state()?;
            let record = crate::ra::bootstrap(
                &service.store,
                &state,
                &body.card,
                body.scope,
                service.now(),
            )
            .map_err(|e| ServiceError::Bootstrap {
                rule: e.rule().unwrap_or_else(|| "internal".into()),
                detail: e.to_string(),
            })?;
            Ok(Bootstrapped {
                operator: record.id,
                role: record.role,
                subject: record.subject,
                scope: record.scope,
            })
        })
        .await
    }
}
