//! Operators' person keys kept up to date with the rule of names.
//!
//! An operator record stores its person key, and the person index (`operator_persons`) is keyed
//! by it, so that one person holds one role. When the rule that makes the key changes (issue 18:
//! the UTS #39 skeleton replaced a table of accents; a newer `unicode-security` may bring new
//! confusables), keys stored by the old rule would let a look-alike of an existing operator be
//! designated as a second person. So every opening recomputes each operator's key from the
//! subject of the certificate it was designated with, and moves the index rows with it, in one
//! audited write; nothing is written when nothing changed.
use std::collections::BTreeMap;

use super::operators::{self, OperatorRecord, PersonRecord, Role};
use super::operators::{OperatorPersons, Operators};
use super::{RaError, certificate_subject};
use crate::audit::AuditEvent;
use crate::store::Store;

/// Re-keys the operators whose stored person key differs from the current rule's. Returns the
/// ids of the operators re-keyed.
pub(super) fn rekey(store: &Store) -> Result<Vec<String>, RaError> {
    let mut records = Vec::new();
    for row in store.scan::<Operators>(&[], &[])? {
        records.push(row?.1);
    }
    let changed: Vec<(OperatorRecord, String)> = records
        .iter()
        .filter_map(|record| {
            // A certificate that no longer parses keeps its key (and its role rules).
            let subject = certificate_subject(&record.certificate).ok()?;
            let key = operators::person_key(&subject);
            (key != record.person).then(|| (record.clone(), key))
        })
        .collect();
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    // Active operators that the new keys find to be one person: reported, and from now on
    // compared as one person (neither approves what the other submitted).
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in records.iter().filter(|r| r.is_active()) {
        let key = changed
            .iter()
            .find(|(c, _)| c.id == record.id)
            .map_or(record.person.clone(), |(_, key)| key.clone());
        by_key.entry(key).or_default().push(record.id.clone());
    }
    let shared: Vec<Vec<String>> = by_key.into_values().filter(|ids| ids.len() > 1).collect();
    for group in &shared {
        tracing::warn!(
            operators = ?group,
            "active operators found to be one person by the rule of names: withdraw all but one"
        );
    }
    let ids: Vec<String> = changed.iter().map(|(r, _)| r.id.clone()).collect();
    let event = AuditEvent::OperatorPersonsRekeyed {
        operators: ids.clone(),
        shared,
    };
    store.commit(move |txn| -> Result<(), RaError> {
        for (mut record, key) in changed {
            let old = txn.get::<OperatorPersons>(&record.person)?;
            if let Some(old) = old {
                let merged = merge(
                    txn.get::<OperatorPersons>(&key)?.unwrap_or_default(),
                    old,
                    |id| {
                        txn.get::<Operators>(&id.to_owned())
                            .ok()
                            .flatten()
                            .is_some_and(|o| o.is_active())
                    },
                );
                txn.put::<OperatorPersons>(&key, &merged)?;
                // The row under the old key stays: another operator may still be indexed there,
                // and a stale row only ever refuses (a role or a re-designation), never allows.
            }
            record.person = key;
            txn.put::<Operators>(&record.id.clone(), &record)?;
        }
        txn.audit(event);
        Ok(())
    })?;
    Ok(ids)
}

/// Two index rows of what is now one person: an active role stays (the first active one), and
/// the withdrawal that stands against more ranks wins.
fn merge(into: PersonRecord, from: PersonRecord, active: impl Fn(&str) -> bool) -> PersonRecord {
    let keep_active = into
        .active
        .clone()
        .filter(|id| active(id))
        .or(from.active.clone().filter(|id| active(id)))
        .or(into.active.clone())
        .or(from.active.clone());
    let rank = |w: &operators::Withdrawal| w.by_role.unwrap_or(Role::Ae);
    let withdrawn = match (into.withdrawn, from.withdrawn) {
        (Some(a), Some(b)) => Some(if rank(&b) < rank(&a) { b } else { a }),
        (a, b) => a.or(b),
    };
    PersonRecord {
        active: keep_active,
        withdrawn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::Timestamp;

    fn withdrawal(role: Role) -> operators::Withdrawal {
        operators::Withdrawal {
            at: Timestamp::parse_rfc3339("2026-11-28T12:00:00Z").unwrap(),
            by: format!("{role}"),
            by_role: Some(role),
            cascade_from: None,
        }
    }

    /// An operator stored with a key of an older rule: re-keyed from its certificate at the
    /// next opening, its index row moved, in one audited write; a second opening changes
    /// nothing.
    #[test]
    fn stored_keys_of_an_older_rule_are_recomputed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let pem = include_bytes!("../../tests/fixtures/cms/ec.pem");
        let der = crate::x509::pem::decode_pem_or_der(pem, &["CERTIFICATE"]).unwrap();
        let expected = operators::person_key(&certificate_subject(&der).unwrap());
        let record = OperatorRecord {
            id: "card-old".into(),
            holder: "holder-old".into(),
            person: "fr\u{1f}isabelle\u{1f}mille".into(),
            certificate: der,
            subject: "CN=CMS EC signer".into(),
            issuer: crate::store::IssuerId([1; 20]),
            role: Role::Aed,
            scope: operators::Scope::default(),
            designated_by: None,
            designated_at: Timestamp::parse_rfc3339("2026-11-28T12:00:00Z").unwrap(),
            withdrawn: None,
        };
        let stored = record.clone();
        store
            .commit(move |txn| -> Result<(), RaError> {
                txn.put::<Operators>(&stored.id.clone(), &stored)?;
                let row = PersonRecord {
                    active: Some(stored.id.clone()),
                    withdrawn: None,
                };
                txn.put::<OperatorPersons>(&stored.person, &row)?;
                Ok(())
            })
            .unwrap();
        let before = store.audit_head().seq;
        assert_eq!(rekey(&store).unwrap(), vec!["card-old".to_owned()]);
        let rekeyed = store.get::<Operators>(&record.id).unwrap().unwrap();
        assert_eq!(rekeyed.person, expected);
        let row = store.get::<OperatorPersons>(&expected).unwrap().unwrap();
        assert_eq!(row.active.as_deref(), Some("card-old"));
        assert_eq!(store.audit_head().seq, before + 1);
        assert!(rekey(&store).unwrap().is_empty());
        assert_eq!(store.audit_head().seq, before + 1);
    }

    #[test]
    fn merged_rows_keep_an_active_role_and_the_strongest_withdrawal() {
        let active = |id: &str| id == "card-a";
        let into = PersonRecord {
            active: Some("card-gone".into()),
            withdrawn: Some(withdrawal(Role::Aed)),
        };
        let from = PersonRecord {
            active: Some("card-a".into()),
            withdrawn: Some(withdrawal(Role::Aec)),
        };
        let merged = merge(into, from, active);
        assert_eq!(merged.active.as_deref(), Some("card-a"));
        assert_eq!(merged.withdrawn.and_then(|w| w.by_role), Some(Role::Aec));
        let lone = merge(PersonRecord::default(), PersonRecord::default(), active);
        assert_eq!(lone, PersonRecord::default());
    }
}
