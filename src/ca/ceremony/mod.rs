//! The key ceremony: `sceau init`, `sceau init --external-root`, `sceau ca import-cert`.
//!
//! The root key (P-384 or RSA-4096), the issuing "AC Agents" key (P-384 or RSA-3072) and the
//! delegated OCSP responder key are generated in the HSM, sensitive and non-extractable; their
//! certificates follow docs/design.md#ca-certificates and
//! docs/design.md#ocsp-responder-certificate. Each certificate goes through the same
//! intent-then-sign cycle as holder certificates. The CA state is written last, in one batch
//! with the ceremony's audit events, so a store is either initialised or not.
use super::ceremony_intent::CeremonyKind;
use std::path::{Path, PathBuf};

use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::Extension;

use super::{CaError, load_state};

mod certificates;
pub mod control;
mod labels;
pub mod pin_split;
pub mod quorum;
mod retire;
mod rollover;
pub mod transcript;

use crate::audit::AuditEvent;
use crate::config::{Config, KeyConfig};
use crate::hsm::Hsm;
use crate::issuer::Issuer;
use crate::issuer::state::{CaState, KeyRef, PendingIssuing, RootCa, StoredCa};
use crate::store::Store;
use crate::store::schema::{Meta, meta_keys};
use crate::x509::name::{Attribute, DistinguishedName};
use crate::x509::{Serial, Timestamp, keys, pem};
pub use certificates::verify_certificate_signature;
use certificates::{
    CaTemplate, ca_extensions, certification_request, check_ca_certificate, generation_name,
    issue_ca_certificate, issue_responder, issuing_template, root_template,
};
use labels::{free_label, fresh_key, generate};
pub use retire::{Retired, destroy_retired, issuer_id, retired};
pub use rollover::{IssuingRollover, rotate_issuing, rotate_root};

/// Policy names recorded for the CA's own certificates.
pub const ROOT_POLICY: &str = "ca-root";
pub const ISSUING_POLICY: &str = "ca-issuing";
pub const RESPONDER_POLICY: &str = "ocsp-responder";

/// Whether a certificate of this policy is one of the CA's own (made only in a ceremony).
pub(super) fn is_ca_policy(policy: &str) -> bool {
    [ROOT_POLICY, ISSUING_POLICY, RESPONDER_POLICY].contains(&policy)
}

/// What `sceau init` did.
#[derive(Debug)]
pub enum InitOutcome {
    /// The CA is ready; its certificates were written to these files.
    Ready {
        state: Box<CaState>,
        files: Vec<PathBuf>,
    },
    /// `--external-root`: the issuing CA's CSR was written to this file.
    AwaitingRoot { csr: PathBuf },
}

/// `sceau init`: the whole ceremony, or (with `external_root`) up to the issuing CA's CSR.
pub fn init(
    config: &Config,
    store: &Store,
    hsm: &Hsm,
    now: Timestamp,
    external_root: bool,
) -> Result<InitOutcome, CaError> {
    // An init interrupted earlier (a crash, an HSM failure) is resolved first: what it signed
    // is revoked and its keys are reported as orphans. Their labels stay taken, so this run
    // generates under fresh ones.
    super::ceremony_intent::resolve(store, now)?;
    if let Some(state) = load_state(store)? {
        return Err(CaError::AlreadyInitialized(state.created_at));
    }
    let issuing_config = KeyConfig {
        label: free_label(hsm, store, &config.keys.issuing.label, now)?,
        algorithm: config.keys.issuing.algorithm,
    };
    if external_root {
        return super::ceremony_intent::run(
            store,
            CeremonyKind::Init,
            vec![issuing_config.label.clone()],
            now,
            || init_awaiting_root(config, store, hsm, now, &issuing_config),
        );
    }
    let root_config = KeyConfig {
        label: free_label(hsm, store, &config.keys.root.label, now)?,
        algorithm: config.keys.root.algorithm,
    };
    let ocsp_config = KeyConfig {
        label: free_label(hsm, store, &config.keys.ocsp.label, now)?,
        algorithm: config.keys.ocsp.algorithm,
    };
    let labels = vec![
        root_config.label.clone(),
        issuing_config.label.clone(),
        ocsp_config.label.clone(),
    ];
    super::ceremony_intent::run(store, CeremonyKind::Init, labels, now, || {
        init_with_root(
            config,
            store,
            hsm,
            now,
            [&root_config, &issuing_config, &ocsp_config],
        )
    })
}

/// `sceau init --external-root`: the issuing key and its CSR.
fn init_awaiting_root(
    config: &Config,
    store: &Store,
    hsm: &Hsm,
    now: Timestamp,
    issuing_config: &KeyConfig,
) -> Result<InitOutcome, CaError> {
    let rsa_pss = config.keys.rsa_pss;
    let mut events = Vec::new();
    let issuing_key = generate(hsm, issuing_config, rsa_pss, &mut events)?;
    let csr = certification_request(&issuing_key, &config.issuing.subject)?;
    let pending = PendingIssuing {
        name: config.issuing.name.clone(),
        key_label: issuing_key.label().to_owned(),
        scheme: issuing_key.scheme(),
        csr: csr.clone(),
    };
    events.push(AuditEvent::ExternalRootRequestCreated {
        key_label: pending.key_label.clone(),
        subject: config.issuing.subject.to_string(),
    });
    let state = CaState {
        root: None,
        previous_roots: Vec::new(),
        root_links: Vec::new(),
        issuing: Vec::new(),
        ocsp_responders: Vec::new(),
        pending_issuing: Some(pending),
        created_at: now,
        destroyed_keys: Vec::new(),
    };
    save_state(store, state, events)?;
    let path = config
        .certs_dir()
        .join(format!("{}.csr", config.issuing.name));
    write_file(
        &path,
        pem::encode(pem::CERTIFICATE_REQUEST, &csr).as_bytes(),
    )?;
    Ok(InitOutcome::AwaitingRoot { csr: path })
}

/// `sceau init`: the root, the issuing CA and its responder, under the announced key labels.
fn init_with_root(
    config: &Config,
    store: &Store,
    hsm: &Hsm,
    now: Timestamp,
    [root_config, issuing_config, ocsp_config]: [&KeyConfig; 3],
) -> Result<InitOutcome, CaError> {
    let rsa_pss = config.keys.rsa_pss;
    let mut events = Vec::new();

    // Root (docs/design.md#ca-certificates): self-signed.
    let root_key = generate(hsm, root_config, rsa_pss, &mut events)?;
    let root_subject = config
        .root
        .subject
        .to_der()
        .map_err(|e| CaError::Encoding(e.to_string()))?;
    let root_der = issue_ca_certificate(
        store,
        &root_key,
        now,
        root_template(config, &root_subject, &root_key, now)?,
    )?;
    events.push(stored_event(
        &config.root.name,
        "root",
        root_key.label(),
        &root_der,
    )?);
    let root = Issuer::from_parts(
        config.root.name.clone(),
        root_der.clone(),
        Certificate::from_der(&root_der).map_err(|e| CaError::Encoding(e.to_string()))?,
        root_key.clone(),
    )?;

    // Issuing CA "AC Agents" (docs/design.md#ca-certificates), signed by the root.
    let issuing_key = generate(hsm, issuing_config, rsa_pss, &mut events)?;
    let issuing_der = issue_ca_certificate(
        store,
        &root_key,
        now,
        issuing_template(
            config,
            &config.issuing.subject,
            &config.urls,
            &root,
            &issuing_key,
            now,
        )?,
    )?;
    events.push(stored_event(
        &config.issuing.name,
        "issuing",
        issuing_key.label(),
        &issuing_der,
    )?);
    let issuing_stored = StoredCa {
        name: config.issuing.name.clone(),
        key_label: issuing_key.label().to_owned(),
        scheme: issuing_key.scheme(),
        certificate: issuing_der,
    };
    let issuing = Issuer::load(hsm, &issuing_stored)?;

    let responder = issue_responder(
        config,
        ocsp_config,
        store,
        hsm,
        (&issuing, 1),
        now,
        &mut events,
    )?;
    let state = CaState {
        root: Some(RootCa {
            name: config.root.name.clone(),
            certificate: root_der,
            key: Some(KeyRef {
                label: root_key.label().to_owned(),
                scheme: root_key.scheme(),
            }),
        }),
        previous_roots: Vec::new(),
        root_links: Vec::new(),
        issuing: vec![issuing_stored],
        ocsp_responders: vec![responder],
        pending_issuing: None,
        created_at: now,
        destroyed_keys: Vec::new(),
    };
    crate::failpoint::hit("ceremony-before-commit");
    events.push(AuditEvent::CaInitialized {
        root: Some(config.root.name.clone()),
        issuing: config.issuing.name.clone(),
        external_root: false,
    });
    save_state(store, state.clone(), events)?;
    let mut files = export(&state, &config.certs_dir())?;
    // The audit key is made now and its public key written beside the CA certificates: the
    // anchor that `sceau audit verify --anchor` checks the checkpoints against, kept outside
    // the store it protects.
    crate::audit::checkpoint::write(store, hsm, &config.keys.audit)
        .map_err(|e| CaError::Refused(format!("the first audit checkpoint: {e}")))?;
    if let Some(pem) =
        crate::audit::checkpoint::anchor_pem(store).map_err(|e| CaError::Encoding(e.to_string()))?
    {
        let path = config.certs_dir().join("audit-key.pem");
        write_file(&path, pem.as_bytes())?;
        files.push(path);
    }
    Ok(InitOutcome::Ready {
        state: Box::new(state),
        files,
    })
}

/// `sceau ca import-cert`: completes `init --external-root` with the issuing CA certificate
/// (and the root, from the same bundle or `root_pem`).
pub fn import_issuing_certificate(
    config: &Config,
    store: &Store,
    hsm: &Hsm,
    now: Timestamp,
    bundle_pem: &str,
    root_pem: Option<&str>,
) -> Result<CaState, CaError> {
    // The responder key is the one key this step makes: announced first, like any ceremony's.
    let ocsp_config = KeyConfig {
        label: free_label(hsm, store, &config.keys.ocsp.label, now)?,
        algorithm: config.keys.ocsp.algorithm,
    };
    super::ceremony_intent::run(
        store,
        CeremonyKind::Import,
        vec![ocsp_config.label.clone()],
        now,
        || {
            import_with(
                config,
                store,
                hsm,
                now,
                (bundle_pem, root_pem),
                &ocsp_config,
            )
        },
    )
}

fn import_with(
    config: &Config,
    store: &Store,
    hsm: &Hsm,
    now: Timestamp,
    (bundle_pem, root_pem): (&str, Option<&str>),
    ocsp_config: &KeyConfig,
) -> Result<CaState, CaError> {
    let mut state =
        load_state(store)?.ok_or_else(|| CaError::NotInitialized(store.path().to_path_buf()))?;
    let pending = state.pending_issuing.clone().ok_or_else(|| {
        CaError::Import(
            "no issuing CA is waiting for a certificate (was `sceau init --external-root` run?)"
                .into(),
        )
    })?;
    let mut certificates = pem::decode_all(bundle_pem, pem::CERTIFICATE)
        .map_err(|e| CaError::Import(e.to_string()))?;
    if let Some(root) = root_pem {
        certificates.extend(
            pem::decode_all(root, pem::CERTIFICATE).map_err(|e| CaError::Import(e.to_string()))?,
        );
    }
    let mut parsed = Vec::new();
    for der in &certificates {
        parsed.push(
            Certificate::from_der(der)
                .map_err(|e| CaError::Import(format!("not a certificate: {e}")))?,
        );
    }
    let key = hsm.signing_key(&pending.key_label, pending.scheme)?;
    let position = parsed
        .iter()
        .position(|c| c.tbs_certificate().subject_public_key_info() == key.public_key())
        .ok_or_else(|| {
            CaError::Import(format!(
                "no certificate in the file is for the key {:?}",
                pending.key_label
            ))
        })?;
    let issuing_der = certificates.remove(position);
    let issuing_cert = parsed.remove(position);
    check_ca_certificate(&issuing_cert, true)?;

    let issuer_of_issuing = issuing_cert
        .tbs_certificate()
        .issuer()
        .to_der()
        .map_err(|e| CaError::Import(e.to_string()))?;
    let root_index = parsed
        .iter()
        .position(|c| c.tbs_certificate().subject().to_der().ok().as_deref() == Some(issuer_of_issuing.as_slice()))
        .ok_or_else(|| CaError::Import("the root certificate is missing: put it after the issuing CA certificate, or give --root FILE".into()))?;
    let root_der = certificates.remove(root_index);
    let root_cert = parsed.remove(root_index);
    check_ca_certificate(&root_cert, false)?;
    let root_spki = root_cert.tbs_certificate().subject_public_key_info();
    verify_certificate_signature(&root_der, root_spki)
        .map_err(|e| CaError::Import(format!("the root is not self-signed: {e}")))?;
    verify_certificate_signature(&issuing_der, root_spki).map_err(|e| {
        CaError::Import(format!(
            "the issuing CA certificate is not signed by this root: {e}"
        ))
    })?;

    let issuing_stored = StoredCa {
        name: pending.name.clone(),
        key_label: pending.key_label.clone(),
        scheme: pending.scheme,
        certificate: issuing_der,
    };
    let issuing = Issuer::load(hsm, &issuing_stored)?;
    let mut events = vec![stored_event(
        &pending.name,
        "issuing",
        &pending.key_label,
        &issuing_stored.certificate,
    )?];
    let responder = issue_responder(
        config,
        ocsp_config,
        store,
        hsm,
        (&issuing, 1),
        now,
        &mut events,
    )?;
    state.root = Some(RootCa {
        name: config.root.name.clone(),
        certificate: root_der,
        key: None,
    });
    state.issuing.push(issuing_stored);
    state.ocsp_responders.push(responder);
    state.pending_issuing = None;
    events.push(AuditEvent::CaInitialized {
        root: Some(config.root.name.clone()),
        issuing: pending.name,
        external_root: true,
    });
    let saved = state.clone();
    store.commit(move |txn| -> Result<(), CaError> {
        let bytes = serde_json::to_vec(&saved).map_err(|e| CaError::Encoding(e.to_string()))?;
        txn.put::<Meta>(&meta_keys::CA_STATE.to_owned(), &bytes)?;
        control::mark_key_change(txn)?;
        txn.changed(crate::store::CA_CHANGE.to_owned());
        for event in events {
            txn.audit(event);
        }
        super::ceremony_intent::finish(txn);
        Ok(())
    })?;
    export(&state, &config.certs_dir())?;
    Ok(state)
}

/// Writes every CA certificate and OCSP responder certificate of `state` into `dir` as PEM:
/// `<root>.pem`, `<issuing>.pem` for every generation (`ac-agents.pem`, `ac-agents-2.pem`),
/// `ocsp-<issuing>.pem` (earlier responders of the same CA get `-<n>`), and the root link
/// certificates `<new>-signed-by-<old>.pem` and `<old>-signed-by-<new>.pem`.
pub fn export(state: &CaState, dir: &Path) -> Result<Vec<PathBuf>, CaError> {
    let mut files = Vec::new();
    let mut write = |name: &str, der: &[u8]| -> Result<(), CaError> {
        let path = dir.join(format!("{name}.pem"));
        write_file(&path, pem::encode(pem::CERTIFICATE, der).as_bytes())?;
        files.push(path);
        Ok(())
    };
    for root in state.roots() {
        write(&root.name, &root.certificate)?;
    }
    for link in &state.root_links {
        write(
            &format!("{}-signed-by-{}", link.new, link.old),
            &link.new_with_old,
        )?;
        write(
            &format!("{}-signed-by-{}", link.old, link.new),
            &link.old_with_new,
        )?;
    }
    for ca in &state.issuing {
        write(&ca.name, &ca.certificate)?;
    }
    for (i, responder) in state.ocsp_responders.iter().enumerate() {
        let same_name = |r: &&StoredCa| r.name == responder.name;
        let later = state.ocsp_responders[i + 1..]
            .iter()
            .filter(same_name)
            .count();
        let name = if later == 0 {
            responder.name.clone()
        } else {
            let rank = state.ocsp_responders[..i].iter().filter(same_name).count() + 1;
            format!("{}-{rank}", responder.name)
        };
        write(&name, &responder.certificate)?;
    }
    Ok(files)
}

fn years_later(now: Timestamp, years: u16) -> Result<Timestamp, CaError> {
    Ok(now
        .plus_years(years)
        .map_err(|e| CaError::Encoding(e.to_string()))?
        .minus_seconds(1))
}

/// Builds a certificate's extensions from its subject key identifier.
type ExtensionsFrom<'a> = Box<dyn Fn(&[u8; 20]) -> Result<Vec<Extension>, der::Error> + 'a>;

/// `sceau ocsp renew-signer`, and the daemon before two thirds of the responder certificate's
/// life: a new key in the HSM and a new responder certificate from the issuing CA named
/// `issuing`, added to the CA state (the previous one stays, to serve its responses until
/// re-signed).
pub fn renew_responder(
    config: &Config,
    store: &Store,
    hsm: &Hsm,
    now: Timestamp,
    issuing: &str,
) -> Result<StoredCa, CaError> {
    let state = super::load_state(store)?
        .ok_or_else(|| CaError::NotInitialized(store.path().to_path_buf()))?;
    let position = state
        .issuing
        .iter()
        .position(|c| c.name == issuing)
        .ok_or_else(|| CaError::NotFound(format!("no issuing CA named {issuing:?}")))?;
    let issuing = Issuer::load(hsm, &state.issuing[position])?;
    let key = fresh_key(hsm, store, &config.keys.ocsp, now)?;
    super::ceremony_intent::run(
        store,
        CeremonyKind::RenewResponder,
        vec![key.label.clone()],
        now,
        || {
            let mut events = Vec::new();
            let responder = issue_responder(
                config,
                &key,
                store,
                hsm,
                (&issuing, position + 1),
                now,
                &mut events,
            )?;
            crate::failpoint::hit("ceremony-before-commit");
            let added = responder.clone();
            let saved = update_state(store, &state, events, move |state| {
                state.ocsp_responders.push(added);
            })?;
            export(&saved, &config.certs_dir())?;
            Ok(responder)
        },
    )
}

/// Refuses a name already used by a CA of the state (an explicit --common-name), and a common
/// name that is empty, longer than RFC 5280's 64 characters, or has control characters.
fn check_new_subject(state: &CaState, subject: &DistinguishedName) -> Result<(), CaError> {
    let common_name = subject.first(Attribute::CommonName).unwrap_or_default();
    if common_name.trim().is_empty()
        || common_name.chars().count() > 64
        || common_name.chars().any(char::is_control)
    {
        return Err(CaError::Refused(format!(
            "common name {common_name:?}: 1 to 64 characters, no control characters (--common-name)"
        )));
    }
    let der = subject
        .to_der()
        .map_err(|e| CaError::Refused(format!("subject {subject}: {e}")))?;
    let certificates = state
        .roots()
        .map(|r| &r.certificate)
        .chain(state.issuing.iter().map(|c| &c.certificate));
    for certificate in certificates {
        let used = Certificate::from_der(certificate)
            .ok()
            .and_then(|c| c.tbs_certificate().subject().to_der().ok());
        if used.as_deref() == Some(der.as_slice()) {
            return Err(CaError::Refused(format!(
                "the subject {subject} is already a CA's: each generation needs a name of its own"
            )));
        }
    }
    Ok(())
}

/// Applies `change` to the stored CA state with `events`, unless another ceremony changed the
/// state since `read` was loaded (two rotations at once: the second is refused).
fn update_state(
    store: &Store,
    read: &CaState,
    events: Vec<AuditEvent>,
    change: impl FnOnce(&mut CaState) + Send + 'static,
) -> Result<CaState, CaError> {
    let expected = read.clone();
    store.commit(move |txn| -> Result<CaState, CaError> {
        let key = meta_keys::CA_STATE.to_owned();
        let bytes = txn
            .get::<Meta>(&key)?
            .ok_or_else(|| CaError::Corrupt("the CA state vanished".into()))?;
        let mut state: CaState =
            serde_json::from_slice(&bytes).map_err(|e| CaError::Corrupt(e.to_string()))?;
        if state != expected {
            return Err(CaError::Refused(
                "another key ceremony changed the CA meanwhile; nothing was changed, run it again"
                    .into(),
            ));
        }
        change(&mut state);
        let bytes = serde_json::to_vec(&state).map_err(|e| CaError::Encoding(e.to_string()))?;
        txn.put::<Meta>(&key, &bytes)?;
        control::mark_key_change(txn)?;
        txn.changed(crate::store::CA_CHANGE.to_owned());
        for event in events {
            txn.audit(event);
        }
        super::ceremony_intent::finish(txn);
        Ok(state)
    })
}

fn stored_event(name: &str, role: &str, label: &str, der: &[u8]) -> Result<AuditEvent, CaError> {
    let certificate = Certificate::from_der(der).map_err(|e| CaError::Encoding(e.to_string()))?;
    let serial = Serial::from_serial_number(certificate.tbs_certificate().serial_number())?;
    Ok(AuditEvent::CaCertificateStored {
        name: name.to_owned(),
        role: role.to_owned(),
        serial: serial.to_hex(),
        subject: certificate.tbs_certificate().subject().to_string(),
        key_label: label.to_owned(),
        sha256: hex::encode(keys::sha256(der)),
    })
}

fn save_state(store: &Store, state: CaState, events: Vec<AuditEvent>) -> Result<(), CaError> {
    store.commit(move |txn| -> Result<(), CaError> {
        let key = meta_keys::CA_STATE.to_owned();
        if txn.contains::<Meta>(&key)? {
            return Err(CaError::AlreadyInitialized(state.created_at));
        }
        let bytes = serde_json::to_vec(&state).map_err(|e| CaError::Encoding(e.to_string()))?;
        txn.put::<Meta>(&key, &bytes)?;
        control::require_declared(txn)?;
        control::mark_key_change(txn)?;
        txn.changed(crate::store::CA_CHANGE.to_owned());
        for event in events {
            txn.audit(event);
        }
        super::ceremony_intent::finish(txn);
        Ok(())
    })
}

/// Writes a file through a temporary file of its own, synced, and a rename, so readers never
/// see half of it and a crash never loses it ([`crate::durable`]).
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    crate::durable::write_file(path, contents)
        .map_err(|e| CaError::Io(format!("{}: {e}", path.display())))
}
