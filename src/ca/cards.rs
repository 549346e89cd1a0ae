//! Cards: both certificates of a card issued together or not at all (two keys, one holder, a
//! card that outlives neither), and their renewal, which supersedes the previous pair in the
//! same write.

use super::{
    AlongWrite, CaError, CardWrite, CertificateAuthority, IssuedCertificate, PendingCertificate,
    issue, issue_all, revoke,
};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::issuer::Issuer;
use crate::policy::{IssuanceRequest, Rejection, Violation};
use crate::store::CardRecord;
use crate::store::schema::Cards;
use crate::x509::serial::SerialError;
use crate::x509::{Serial, Timestamp, keys};

/// A request for a card: one holder, two CSRs (two key pairs: a combined certificate is not
/// allowed at RGS ***, RGS A2 I.1.1).
#[derive(Clone, Debug)]
pub struct CardRequest {
    pub holder: String,
    /// The card's identifier; a random one is made when absent.
    pub card: Option<String>,
    pub authentication: IssuanceRequest,
    pub signature: IssuanceRequest,
}

/// Both certificates of a card.
#[derive(Clone, Debug)]
pub struct IssuedCard {
    pub card: String,
    pub holder: String,
    pub authentication: IssuedCertificate,
    pub signature: IssuedCertificate,
}

/// How long a card lives (the brief: certificates 3 years, cards 6).
pub const CARD_LIFETIME_YEARS: u16 = 6;

/// A card issued by a renewal (or a new card, with nothing superseded).
#[derive(Clone, Debug)]
pub struct RenewedCard {
    pub card: IssuedCard,
    /// The previous certificates, revoked as superseded in the same write.
    pub superseded: Vec<revoke::RevokedCertificate>,
}

/// Whether a card issuance makes a new card or renews one.
#[derive(Clone, Debug)]
enum CardPlan {
    New,
    Renewal(CardRecord),
}

impl CardPlan {
    fn card_expires_at(&self, now: Timestamp) -> Result<Timestamp, CaError> {
        match self {
            CardPlan::New => now
                .plus_years(CARD_LIFETIME_YEARS)
                .map_err(|e| CaError::Encoding(e.to_string())),
            CardPlan::Renewal(existing) => Ok(existing.card_expires_at),
        }
    }
}

impl CertificateAuthority {
    /// Issues both certificates of a card, or neither; `along` (the RA's request record), when
    /// given, is written in the same batch as the card.
    pub fn issue_card(
        &self,
        request: &CardRequest,
        along: Option<AlongWrite>,
    ) -> Result<IssuedCard, CaError> {
        let card_id = match &request.card {
            Some(id) => id.clone(),
            None => random_card_id()?,
        };
        let issued = self.issue_pair(request, &card_id, CardPlan::New, along)?;
        Ok(issued.card)
    }

    /// Renews a card: two new certificates for new keys of the same holder, at most once and
    /// within the card's lifetime; the card's previous certificates are revoked as superseded
    /// in the same write (RGS A2 IV.6: a renewal needs new keys). `along`, when given, is
    /// written in the same batch as the new certificates.
    pub fn renew_card(
        &self,
        request: &CardRequest,
        along: Option<AlongWrite>,
    ) -> Result<RenewedCard, CaError> {
        let card_id = request
            .card
            .clone()
            .ok_or_else(|| CaError::Refused("a renewal names its card".into()))?;
        let existing = self
            .store
            .get::<Cards>(&card_id)?
            .ok_or_else(|| CaError::NotFound(format!("card {card_id} is unknown")))?;
        if existing.holder != request.holder {
            return Err(CaError::Refused(format!(
                "card {card_id} belongs to another holder"
            )));
        }
        if existing.renewals > 0 {
            return Err(CaError::Refused(format!(
                "card {card_id} was already renewed (a card is renewed once)"
            )));
        }
        if self.clock.now() >= existing.card_expires_at {
            return Err(CaError::Refused(format!(
                "card {card_id} expired on {}",
                existing.card_expires_at
            )));
        }
        self.issue_pair(request, &card_id, CardPlan::Renewal(existing), along)
    }

    /// Checks a card request against the policies and the store (keys never certified, names
    /// not given to another holder) without recording or signing anything: what the
    /// registration authority runs when a request is submitted.
    pub fn check_card(&self, request: &CardRequest) -> Result<(), CaError> {
        let card_id = request.card.clone().unwrap_or_default();
        let plan = match &request.card {
            Some(card) => match self.store.get::<Cards>(card)? {
                Some(existing) => CardPlan::Renewal(existing),
                None => CardPlan::New,
            },
            None => CardPlan::New,
        };
        // Serials drawn as issuance would; nothing is recorded under them.
        let serials = (0..2).map(|_| Serial::random()).collect::<Result<_, _>>()?;
        let now = self.clock.now();
        let pending = self.card_pending(&self.issuer(), request, &card_id, &plan, now, serials)?;
        issue::precheck(&self.store, &pending)
    }

    /// The two linted certificates of a card, under `serials`.
    fn card_pending(
        &self,
        issuer: &Issuer,
        request: &CardRequest,
        card_id: &str,
        plan: &CardPlan,
        now: Timestamp,
        serials: Vec<Serial>,
    ) -> Result<Vec<PendingCertificate>, CaError> {
        check_identifier("holder", &request.holder)?;
        check_identifier("card", card_id)?;
        let auth_policy = self.policy(&request.authentication.policy)?;
        let sign_policy = self.policy(&request.signature.policy)?;
        if auth_policy.name == sign_policy.name {
            return Err(CaError::Refused(
                "a card needs two different policies (authentication and signature)".into(),
            ));
        }
        let profile = issuer.profile(&self.urls_of(issuer)?)?;
        let card_expires_at = plan.card_expires_at(now)?;
        // A renewed card's certificates end with the card at the latest.
        let cap = |issuance: &IssuanceRequest, policy: &crate::policy::Policy| {
            let mut capped = issuance.clone();
            if let CardPlan::Renewal(_) = plan {
                // The policy's own rule: capping at exactly three calendar years (one second
                // too many) refused every renewal (issue 10 problem 4).
                let longest = policy
                    .latest_not_after(now)
                    .map_err(|e| CaError::Encoding(e.to_string()))?;
                let wanted = capped.not_after.unwrap_or(longest).min(card_expires_at);
                capped.not_after = Some(wanted);
            }
            Ok::<_, CaError>(capped)
        };
        let mut serials = serials.into_iter();
        let (Some(first), Some(second)) = (serials.next(), serials.next()) else {
            return Err(CaError::Encoding("two serials expected".into()));
        };
        let prepare = |request: &IssuanceRequest, policy: &crate::policy::Policy, serial| {
            let capped = cap(request, policy)?;
            Ok::<_, CaError>(crate::policy::prepare(
                policy, &profile, &capped, serial, now,
            )?)
        };
        let auth = prepare(&request.authentication, &auth_policy, first)?;
        let sign = prepare(&request.signature, &sign_policy, second)?;
        check_card_pair(&auth_policy.name, &auth, &sign, card_expires_at)?;
        let holder = Some(request.holder.clone());
        let card = Some(card_id.to_owned());
        Ok(vec![
            PendingCertificate::from_linted(issuer.id, auth, holder.clone(), card.clone()),
            PendingCertificate::from_linted(issuer.id, sign, holder, card),
        ])
    }

    fn issue_pair(
        &self,
        request: &CardRequest,
        card_id: &str,
        plan: CardPlan,
        along: Option<AlongWrite>,
    ) -> Result<RenewedCard, CaError> {
        if let CardPlan::New = plan
            && self.store.get::<Cards>(&card_id.to_owned())?.is_some()
        {
            return Err(CaError::Refused(format!("card {card_id} already exists")));
        }
        let now = self.clock.now();
        let issuer = self.issuer();
        let issuer_id = issuer.id;
        let card_expires_at = plan.card_expires_at(now)?;
        let issued = issue_all(
            &self.store,
            &issuer.key,
            2,
            now,
            |serials| self.card_pending(&issuer, request, card_id, &plan, now, serials),
            |signed| {
                let key = |i: usize| signed.get(i).map(|s| s.pending.key.clone());
                let record = CardRecord {
                    card: card_id.to_owned(),
                    holder: request.holder.clone(),
                    authentication: key(0)?,
                    signature: key(1)?,
                    issued_at: now,
                    card_expires_at,
                    renewals: 0,
                    superseded: Vec::new(),
                };
                Some(match &plan {
                    CardPlan::New => CardWrite::New(record, along),
                    CardPlan::Renewal(previous) => CardWrite::Renewal(
                        CardRecord {
                            issued_at: previous.issued_at,
                            renewals: previous.renewals + 1,
                            superseded: vec![
                                previous.authentication.clone(),
                                previous.signature.clone(),
                            ],
                            ..record
                        },
                        along,
                    ),
                })
            },
        )?;
        let mut certificates = issued.signed.into_iter().map(|s| IssuedCertificate {
            issuer: issuer_id,
            serial: s.pending.key.serial.clone(),
            policy: s.pending.policy.clone(),
            der: s.der,
            not_after: s.pending.not_after,
        });
        let (Some(authentication), Some(signature)) = (certificates.next(), certificates.next())
        else {
            return Err(CaError::Encoding("two certificates expected".into()));
        };
        Ok(RenewedCard {
            card: IssuedCard {
                card: card_id.to_owned(),
                holder: request.holder.clone(),
                authentication,
                signature,
            },
            superseded: issued.superseded,
        })
    }
}

/// The two certificates of a card: two different keys (RGS A2 I.1.1: no dual use at ***), the
/// same holder name, and neither outlives the card.
fn check_card_pair(
    policy: &str,
    authentication: &crate::policy::LintedTbs,
    signature: &crate::policy::LintedTbs,
    card_expires_at: Timestamp,
) -> Result<(), CaError> {
    let mut violations = Vec::new();
    if keys::sha256(authentication.public_key_der()) == keys::sha256(signature.public_key_der()) {
        violations.push(Violation {
            rule: "card-keys-identical",
            message: "the authentication and signature certificates need two different key pairs (RGS A2 I.1.1)".into(),
        });
    }
    if authentication.subject_der() != signature.subject_der() {
        violations.push(Violation {
            rule: "card-subjects-differ",
            message: "both certificates of a card name the same holder".into(),
        });
    }
    if authentication.not_after() > card_expires_at || signature.not_after() > card_expires_at {
        violations.push(Violation {
            rule: "card-validity",
            message: "a certificate may not outlive its card".into(),
        });
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(CaError::Rejected(Rejection {
            policy: policy.to_owned(),
            violations,
        }))
    }
}

/// Holder and card identifiers: 1 to 64 of [A-Za-z0-9._-] (they appear in store keys and URLs).
pub(super) fn check_identifier(what: &str, value: &str) -> Result<(), CaError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CaError::Refused(format!(
            "{what} identifier {value:?}: 1 to 64 characters among A-Z a-z 0-9 . _ -"
        )))
    }
}

/// 128 random bits, hexadecimal: card ids and scheduled revocation ids.
pub fn random_card_id() -> Result<String, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Serial(SerialError::Rng))?;
    Ok(hex::encode(bytes))
}
