//! Operators of the registration authority: who they are (a person, holding an agent card), what
//! they may do (a role) and on whom (a scope), and the rules of the hierarchy AE > AEC > AED > OC.
//!
//! An operator is designated with a card of the store (holder id and card id), never with a loose
//! certificate. The card's current authentication certificate is the TLS credential; its
//! signature certificate (keyUsage nonRepudiation) signs the requests, and nothing else does: an
//! approval must be attributable to the person, and the authentication key only proves presence. The role follows the card through its renewal, and a person holds one active
//! role at a time, whichever of their cards it is bound to.
//!
//! | role | designates | submits card requests | approves / rejects | revokes |
//! | --- | --- | --- | --- | --- |
//! | AE (autorité d'enregistrement) | AE (alter ego), AEC | no | yes | yes |
//! | AEC (AE centrale) | AED | no | yes | yes |
//! | AED (AE déléguée) | OC, AED | yes | yes, never its own submission | yes |
//! | OC (opérateur de certification) | — | yes | no | yes |
//!
//! Every action is limited to the operator's scope: the organisations (subject O) and units
//! (subject OU; none listed means every unit of those organisations) of the holders, and the
//! certification policies. A designee's scope is never wider than its designator's, and
//! withdrawing an operator withdraws everyone it designated, transitively.
use core::fmt;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::store::{IssuerId, base64_bytes};
use crate::x509::Timestamp;
use crate::x509::name::{Attribute, DistinguishedName};

/// A role in the hierarchy, highest first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "AE")]
    Ae,
    #[serde(rename = "AEC")]
    Aec,
    #[serde(rename = "AED")]
    Aed,
    #[serde(rename = "OC")]
    Oc,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Ae => "AE",
            Role::Aec => "AEC",
            Role::Aed => "AED",
            Role::Oc => "OC",
        })
    }
}

impl Role {
    /// Whether an operator of this role may designate one of `designee`'s role.
    pub fn may_designate(self, designee: Role) -> bool {
        matches!(
            (self, designee),
            // An AE designates its alter ego (the convention: "toute personne ayant acquis le
            // rôle d'AE peut désigner un alter-ego").
            (Role::Ae, Role::Ae | Role::Aec)
                | (Role::Aec, Role::Aed)
                | (Role::Aed, Role::Oc | Role::Aed)
        )
    }

    /// The OC meets the holder face to face and submits; an AED may act as OC.
    pub fn may_submit(self) -> bool {
        matches!(self, Role::Oc | Role::Aed)
    }

    /// Approval and rejection: an AED or above.
    pub fn may_decide(self) -> bool {
        matches!(self, Role::Ae | Role::Aec | Role::Aed)
    }
}

/// On whom an operator acts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Subject O values of the holders.
    pub organizations: BTreeSet<String>,
    /// Subject OU values, one of which the holder must carry; empty: every unit.
    #[serde(default)]
    pub units: BTreeSet<String>,
    /// Certification policies (file names, e.g. `justice-auth`).
    pub policies: BTreeSet<String>,
}

impl Scope {
    /// Whether a holder named `subject` is in this scope.
    pub fn covers_holder(&self, subject: &DistinguishedName) -> bool {
        let organization = subject
            .values(Attribute::Organization)
            .any(|o| self.organizations.contains(o));
        let unit = self.units.is_empty()
            || subject
                .values(Attribute::OrganizationalUnit)
                .any(|u| self.units.contains(u));
        organization && unit
    }

    pub fn covers_policy(&self, policy: &str) -> bool {
        self.policies.contains(policy)
    }

    /// Why `self` is wider than `designator` (a designee's scope may only be narrower), if it is.
    pub fn widening_over(&self, designator: &Scope) -> Option<String> {
        if let Some(o) = self
            .organizations
            .difference(&designator.organizations)
            .next()
        {
            return Some(format!(
                "organisation {o:?} is outside the designator's scope"
            ));
        }
        if let Some(p) = self.policies.difference(&designator.policies).next() {
            return Some(format!("policy {p:?} is outside the designator's scope"));
        }
        if !designator.units.is_empty() {
            if self.units.is_empty() {
                return Some("every unit: the designator is limited to some units".into());
            }
            if let Some(u) = self.units.difference(&designator.units).next() {
                return Some(format!("unit {u:?} is outside the designator's scope"));
            }
        }
        None
    }
}

/// A registered operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    /// The operator's id: the id of the card the role is bound to.
    pub id: String,
    /// The holder of that card.
    pub holder: String,
    /// The person ([`person_key`] of the card's subject): one active role per person.
    pub person: String,
    /// The card's authentication certificate at designation (the card's current one
    /// authenticates: a renewal keeps the role).
    #[serde(with = "base64_bytes")]
    pub certificate: Vec<u8>,
    pub subject: String,
    /// The operator CA that issued the certificate (for revocation checks).
    pub issuer: IssuerId,
    pub role: Role,
    pub scope: Scope,
    /// The designator's id; `None` for the AE registered by `sceau ra bootstrap`.
    pub designated_by: Option<String>,
    pub designated_at: Timestamp,
    pub withdrawn: Option<Withdrawal>,
}

impl OperatorRecord {
    pub fn is_active(&self) -> bool {
        self.withdrawn.is_none()
    }
}

/// What the RA knows of a person as an operator, whichever of their cards.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonRecord {
    /// The id of their active operator role.
    pub active: Option<String>,
    /// Their latest withdrawal (it stands against a re-designation by a lower rank).
    pub withdrawn: Option<Withdrawal>,
}

crate::store::table!(
    /// Registration-authority operators, by operator id (the id of the card the role is
    /// bound to).
    Operators, "operators", String, OperatorRecord
);
crate::store::table!(
    /// Person ([`person_key`]) -> their active operator role and their latest withdrawal: one
    /// active role per person, checked inside the commit that designates.
    OperatorPersons, "operator_persons", String, PersonRecord
);
crate::store::json_value!(OperatorRecord, PersonRecord);

/// When and by whom an operator's rights were withdrawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub at: Timestamp,
    pub by: String,
    /// The withdrawer's role then (a later change of their role does not weaken it).
    #[serde(default)]
    pub by_role: Option<Role>,
    /// Set when the withdrawal followed from withdrawing this designator.
    pub cascade_from: Option<String>,
}

/// Who a subject names, as a person: [`crate::policy::names::person_key`], the one rule of
/// names (case, accents, spacing and look-alike letters folded by the UTS #39 skeleton). The
/// rules that compare persons (one role per person, the two-person rule, acting on one's own
/// card) compare these keys; the holder id is compared too (see [`holder_key`]).
pub fn person_key(subject: &DistinguishedName) -> String {
    crate::policy::names::person_key(subject)
}

/// The persons holding an active RA operator role, as a security officer's person is read
/// (first given name and surname, without the country: [`crate::ca::ceremony::quorum`]).
pub fn operator_persons_without_country(
    store: &crate::store::Store,
) -> Result<std::collections::BTreeSet<String>, crate::store::StoreError> {
    let mut persons = std::collections::BTreeSet::new();
    for row in store.scan::<OperatorPersons>(&[], &[])? {
        let (key, record) = row?;
        if record.active.is_none() || key.starts_with("holder\u{1f}") {
            continue;
        }
        persons.insert(crate::ca::ceremony::quorum::without_country(&key));
    }
    Ok(persons)
}

/// The key of a holder id in the person index: one active role per holder as well.
pub fn holder_key(holder: &str) -> String {
    format!("holder\u{1f}{holder}")
}

/// The operator id of a certificate: its SHA-256, lowercase hex (what
/// `openssl x509 -outform DER | sha256sum` prints).
pub fn operator_id(certificate_der: &[u8]) -> String {
    hex::encode(crate::x509::keys::sha256(certificate_der))
}

/// Whether `ancestor` designated `operator`, directly or through its designees.
pub fn designated_through(
    operator: &OperatorRecord,
    ancestor: &str,
    lookup: impl Fn(&str) -> Option<OperatorRecord>,
) -> bool {
    let mut next = operator.designated_by.clone();
    // The chain is at most a few links long; the bound stops a corrupted loop.
    for _ in 0..64 {
        match next {
            Some(id) if id == ancestor => return true,
            Some(id) => next = lookup(&id).and_then(|o| o.designated_by),
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ra_tables_are_opened_by_the_store() {
        use crate::store::Table;
        use crate::store::schema::ALL_TABLES;
        for name in [
            Operators::NAME,
            OperatorPersons::NAME,
            super::super::cards::CardRequests::NAME,
            super::super::Evidence::NAME,
            super::super::holders::Handovers::NAME,
            super::super::bulk::BulkRevocations::NAME,
        ] {
            assert!(
                ALL_TABLES.contains(&name),
                "{name} is not in store::schema::ALL_TABLES"
            );
        }
    }

    fn scope(organizations: &[&str], units: &[&str], policies: &[&str]) -> Scope {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Scope {
            organizations: set(organizations),
            units: set(units),
            policies: set(policies),
        }
    }

    fn holder(o: &str, units: &[&str]) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        dn.push(Attribute::Country, "FR")
            .push(Attribute::Organization, o);
        for u in units {
            dn.push(Attribute::OrganizationalUnit, *u);
        }
        dn.push(Attribute::CommonName, "Jean DUPONT");
        dn
    }

    #[test]
    fn the_hierarchy_designates_downwards_only() {
        use Role::*;
        let allowed: Vec<(Role, Role)> = [Ae, Aec, Aed, Oc]
            .into_iter()
            .flat_map(|a| [Ae, Aec, Aed, Oc].into_iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.may_designate(*b))
            .collect();
        assert_eq!(
            allowed,
            vec![(Ae, Ae), (Ae, Aec), (Aec, Aed), (Aed, Aed), (Aed, Oc)]
        );
        assert!(Oc.may_submit() && Aed.may_submit() && !Aec.may_submit() && !Ae.may_submit());
        assert!(!Oc.may_decide() && Aed.may_decide() && Aec.may_decide() && Ae.may_decide());
    }

    #[test]
    fn scopes_cover_organisations_units_and_policies() {
        let dap = scope(&["JUSTICE"], &["DAP"], &["justice-auth"]);
        assert!(dap.covers_holder(&holder("JUSTICE", &["0002 123456789", "DAP"])));
        assert!(!dap.covers_holder(&holder("JUSTICE", &["0002 123456789", "DSJ"])));
        assert!(!dap.covers_holder(&holder("INTERIEUR", &["DAP"])));
        let everywhere = scope(&["JUSTICE"], &[], &["justice-auth"]);
        assert!(everywhere.covers_holder(&holder("JUSTICE", &["0002 123456789"])));
        assert!(dap.covers_policy("justice-auth") && !dap.covers_policy("justice-sign"));
    }

    #[test]
    fn a_designee_scope_may_only_narrow() {
        let wide = scope(&["JUSTICE", "ANTS"], &[], &["justice-auth", "justice-sign"]);
        let narrow = scope(&["JUSTICE"], &["DAP"], &["justice-auth"]);
        assert_eq!(narrow.widening_over(&wide), None);
        assert!(wide.widening_over(&narrow).is_some());
        let other_unit = scope(&["JUSTICE"], &["DSJ"], &["justice-auth"]);
        assert!(other_unit.widening_over(&narrow).is_some());
        let all_units = scope(&["JUSTICE"], &[], &["justice-auth"]);
        assert!(all_units.widening_over(&narrow).is_some());
        let more_policies = scope(&["JUSTICE"], &["DAP"], &["justice-auth", "justice-sign"]);
        assert!(more_policies.widening_over(&narrow).is_some());
    }
}
