//! Rollovers: a new issuing CA beside the old one, a new root with its link certificates.

use der::Decode;
use x509_cert::Certificate;

use super::{
    CaTemplate, ROOT_POLICY, ca_extensions, check_new_subject, export, fresh_key, generate,
    generation_name, issue_ca_certificate, issue_responder, issuing_template, root_template,
    stored_event, update_state,
};
use crate::audit::AuditEvent;
use crate::ca::CaError;
use crate::ca::ceremony_intent::CeremonyKind;
use crate::config::{Config, KeyConfig, PublishedUrls};
use crate::hsm::Hsm;
use crate::issuer::Issuer;
use crate::issuer::state::{CaState, KeyRef, RootCa, RootLink, StoredCa};
use crate::store::Store;
use crate::x509::Timestamp;
use crate::x509::name::DistinguishedName;

/// What `sceau ca rotate` made.
#[derive(Debug)]
pub struct IssuingRollover {
    pub issuing: StoredCa,
    pub responder: StoredCa,
    pub state: CaState,
}

/// `sceau ca rotate`: a new issuing CA key in the HSM, its certificate signed by the current
/// root, and its delegated OCSP responder. It becomes the last issuing CA of the state (the one
/// that issues); the previous ones stay, to sign CRLs and OCSP responses for what they issued.
/// The new CA keeps the subject of the configuration and publishes under its own name
/// (`ac-agents-2`): its CRL and certificate URLs are derived from the configured ones.
pub fn rotate_issuing(
    config: &Config,
    store: &Store,
    hsm: &Hsm,
    now: Timestamp,
    common_name: Option<&str>,
) -> Result<IssuingRollover, CaError> {
    let state = super::load_state(store)?
        .ok_or_else(|| CaError::NotInitialized(store.path().to_path_buf()))?;
    let (Some(first), Some(previous)) = (state.first_issuing_name(), state.issuing.last()) else {
        return Err(CaError::AwaitingImport);
    };
    let root = state
        .root
        .as_ref()
        .and_then(|r| r.signing())
        .ok_or_else(|| {
            CaError::Refused(
                "the root key is not in this HSM: a new issuing CA must be certified by the external root (`sceau init --external-root` on a new store)".into(),
            )
        })?;
    let generation = state.issuing.len() + 1;
    let name = format!("{first}-{generation}");
    let subject = generation_name(&config.issuing.subject, generation, common_name);
    check_new_subject(&state, &subject)?;
    // Every URL the new CA and its certificates need, before any key is made.
    let root_urls = config
        .urls
        .for_root(state.first_root_name().unwrap_or(&root.name), &root.name)
        .map_err(CaError::Refused)?;
    config.urls.for_ca(first, &name).map_err(CaError::Refused)?;
    let root = Issuer::load(hsm, &root)?;
    let plan = IssuingPlan {
        previous: previous.name.clone(),
        name,
        subject,
        generation,
        root,
        root_urls,
        issuing_key: fresh_key(hsm, store, &config.keys.issuing, now)?,
        responder_key: fresh_key(hsm, store, &config.keys.ocsp, now)?,
    };
    let labels = vec![
        plan.issuing_key.label.clone(),
        plan.responder_key.label.clone(),
    ];
    crate::ca::ceremony_intent::run(store, CeremonyKind::RotateIssuing, labels, now, || {
        plan.carry_out(config, store, hsm, now, &state)
    })
}

/// What an issuing CA rollover will make, decided (and its key labels announced) before any
/// key is generated.
pub(super) struct IssuingPlan {
    previous: String,
    name: String,
    subject: DistinguishedName,
    generation: usize,
    root: Issuer,
    root_urls: PublishedUrls,
    issuing_key: KeyConfig,
    responder_key: KeyConfig,
}

impl IssuingPlan {
    fn carry_out(
        &self,
        config: &Config,
        store: &Store,
        hsm: &Hsm,
        now: Timestamp,
        state: &CaState,
    ) -> Result<IssuingRollover, CaError> {
        let mut events = Vec::new();
        let key = generate(hsm, &self.issuing_key, config.keys.rsa_pss, &mut events)?;
        let der = issue_ca_certificate(
            store,
            &self.root.key,
            now,
            issuing_template(
                config,
                &self.subject,
                &self.root_urls,
                &self.root,
                &key,
                now,
            )?,
        )?;
        events.push(stored_event(&self.name, "issuing", key.label(), &der)?);
        let issuing = StoredCa {
            name: self.name.clone(),
            key_label: key.label().to_owned(),
            scheme: key.scheme(),
            certificate: der,
        };
        let loaded = Issuer::load(hsm, &issuing)?;
        let responder = issue_responder(
            config,
            &self.responder_key,
            store,
            hsm,
            (&loaded, self.generation),
            now,
            &mut events,
        )?;
        events.push(AuditEvent::CaRolledOver {
            role: "issuing".into(),
            previous: self.previous.clone(),
            current: self.name.clone(),
        });
        crate::failpoint::hit("ceremony-before-commit");
        let (added, added_responder) = (issuing.clone(), responder.clone());
        let saved = update_state(store, state, events, move |state| {
            state.issuing.push(added);
            state.ocsp_responders.push(added_responder);
        })?;
        export(&saved, &config.certs_dir())?;
        Ok(IssuingRollover {
            issuing,
            responder,
            state: saved,
        })
    }
}

/// `sceau ca rotate --root`: a new root key and its self-signed certificate (same subject), and
/// the two link certificates of RFC 4210 §4.4: the new key signed by the old one (relying
/// parties that trust the old root accept what the new one certifies) and the old key signed
/// by the new one (the reverse). The next `sceau ca rotate` certifies its issuing CA with the
/// new root; the old root keeps signing its ARL.
pub fn rotate_root(
    config: &Config,
    store: &Store,
    hsm: &Hsm,
    now: Timestamp,
    common_name: Option<&str>,
) -> Result<CaState, CaError> {
    let state = super::load_state(store)?
        .ok_or_else(|| CaError::NotInitialized(store.path().to_path_buf()))?;
    let old_root = state.root.as_ref().ok_or(CaError::AwaitingImport)?;
    let old = old_root.signing().ok_or_else(|| {
        CaError::Refused(
            "the root key is not in this HSM: an external root rolls over where its key is".into(),
        )
    })?;
    let first = state.first_root_name().unwrap_or(&old.name).to_owned();
    let generation = state.previous_roots.len() + 2;
    let name = format!("{first}-{generation}");
    let subject = generation_name(&config.root.subject, generation, common_name);
    check_new_subject(&state, &subject)?;
    let subject_der = subject
        .to_der()
        .map_err(|e| CaError::Encoding(e.to_string()))?;
    let old_urls = config
        .urls
        .for_root(&first, &old.name)
        .map_err(CaError::Refused)?;
    let new_urls = config
        .urls
        .for_root(&first, &name)
        .map_err(CaError::Refused)?;
    let old = Issuer::load(hsm, &old)?;
    let key_config = fresh_key(hsm, store, &config.keys.root, now)?;
    let labels = vec![key_config.label.clone()];
    crate::ca::ceremony_intent::run(store, CeremonyKind::RotateRoot, labels, now, || {
        let plan = RootPlan {
            old: &old,
            name,
            subject_der: &subject_der,
            old_urls: &old_urls,
            new_urls: &new_urls,
            key: &key_config,
        };
        plan.carry_out(config, store, hsm, now, &state)
    })
}

/// What a root rollover will make, decided (and its key label announced) before the key is
/// generated.
pub(super) struct RootPlan<'a> {
    old: &'a Issuer,
    name: String,
    subject_der: &'a [u8],
    old_urls: &'a PublishedUrls,
    new_urls: &'a PublishedUrls,
    key: &'a KeyConfig,
}

impl RootPlan<'_> {
    fn carry_out(
        self,
        config: &Config,
        store: &Store,
        hsm: &Hsm,
        now: Timestamp,
        state: &CaState,
    ) -> Result<CaState, CaError> {
        let RootPlan {
            old,
            name,
            subject_der,
            old_urls,
            new_urls,
            key,
        } = self;
        let mut events = Vec::new();
        let key = generate(hsm, key, config.keys.rsa_pss, &mut events)?;
        let root_der = issue_ca_certificate(
            store,
            &key,
            now,
            root_template(config, subject_der, &key, now)?,
        )?;
        events.push(stored_event(&name, "root", key.label(), &root_der)?);
        let new = Issuer::from_parts(
            name.clone(),
            root_der.clone(),
            Certificate::from_der(&root_der).map_err(|e| CaError::Encoding(e.to_string()))?,
            key.clone(),
        )?;
        // Link certificates live as long as the old root: after that, only the new one is trusted.
        let link_not_after = old.not_after.min(new.not_after);
        let mut link = |signer: &Issuer, subject: &Issuer, signer_urls: &PublishedUrls| {
            let der = issue_ca_certificate(
                store,
                &signer.key,
                now,
                link_template(signer, subject, link_not_after, signer_urls),
            )?;
            events.push(stored_event(
                &format!("{}-signed-by-{}", subject.name, signer.name),
                "root-link",
                signer.key.label(),
                &der,
            )?);
            Ok::<_, CaError>(der)
        };
        let new_with_old = link(old, &new, old_urls)?;
        let old_with_new = link(&new, old, new_urls)?;
        events.push(AuditEvent::CaRolledOver {
            role: "root".into(),
            previous: old.name.clone(),
            current: name.clone(),
        });
        let link = RootLink {
            old: old.name.clone(),
            new: name.clone(),
            new_with_old,
            old_with_new,
        };
        let new_root = RootCa {
            name,
            certificate: root_der,
            key: Some(KeyRef {
                label: key.label().to_owned(),
                scheme: key.scheme(),
            }),
        };
        crate::failpoint::hit("ceremony-before-commit");
        let saved = update_state(store, state, events, move |state| {
            if let Some(previous) = state.root.replace(new_root) {
                state.previous_roots.push(previous);
            }
            state.root_links.push(link);
        })?;
        export(&saved, &config.certs_dir())?;
        Ok(saved)
    }
}

/// A link certificate: `subject`'s key certified by `signer` (both roots have the same subject,
/// so it is self-issued, RFC 5280 §6.1), as a CA certificate of `signer` with `signer`'s ARL.
pub(super) fn link_template<'a>(
    signer: &'a Issuer,
    subject: &'a Issuer,
    not_after: Timestamp,
    signer_urls: &'a PublishedUrls,
) -> CaTemplate<'a> {
    let signer_key_id = signer.key_identifier;
    CaTemplate {
        issuer_id: signer.id,
        issuer_subject: &signer.subject_der,
        subject: subject.subject_der.clone(),
        public_key: subject
            .certificate
            .tbs_certificate()
            .subject_public_key_info(),
        not_after,
        policy: ROOT_POLICY,
        extensions: Box::new(move |ski: &[u8; 20]| {
            ca_extensions(ski, &signer_key_id, None, Some(signer_urls))
        }),
    }
}
