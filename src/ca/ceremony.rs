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

use der::asn1::{AnyRef, BitString, SetOfVec};
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;
use x509_cert::certificate::Version;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::request::{CertReq, CertReqInfo};
use x509_cert::time::Validity;

use super::issue::{PendingCertificate, issue_all};
use super::{CaError, load_state};
use crate::audit::AuditEvent;
use crate::config::{Config, KeyConfig, PublishedUrls};
use crate::hsm::{Hsm, SigningKey};
use crate::issuer::Issuer;
use crate::issuer::state::{CaState, KeyRef, PendingIssuing, RootCa, RootLink, StoredCa};
use crate::store::schema::{Meta, meta_keys};
use crate::store::{CertKey, IssuerId, Store};
use crate::x509::ext::{self, Criticality, PolicyEntry};
use crate::x509::name::{Attribute, DistinguishedName};
use crate::x509::tbs::{TbsCertificateV3, raw_parts};
use crate::x509::{Serial, Timestamp, keys, oid, pem, sigalg};

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

fn generate(
    hsm: &Hsm,
    key: &KeyConfig,
    rsa_pss: bool,
    events: &mut Vec<AuditEvent>,
) -> Result<SigningKey, CaError> {
    let public_key = hsm.generate_key(&key.label, key.algorithm)?;
    events.push(AuditEvent::KeyGenerated {
        label: key.label.clone(),
        algorithm: key.algorithm.to_string(),
        key_id: hex::encode_upper(keys::key_identifier(&public_key)),
    });
    Ok(hsm.signing_key(&key.label, key.algorithm.scheme(rsa_pss))?)
}

fn years_later(now: Timestamp, years: u16) -> Result<Timestamp, CaError> {
    Ok(now
        .plus_years(years)
        .map_err(|e| CaError::Encoding(e.to_string()))?
        .minus_seconds(1))
}

/// The fields of a CA or responder certificate; the extensions are built from its SKI.
struct CaTemplate<'a> {
    issuer_id: IssuerId,
    issuer_subject: &'a [u8],
    /// DER of the subject Name.
    subject: Vec<u8>,
    public_key: &'a SubjectPublicKeyInfoOwned,
    not_after: Timestamp,
    policy: &'static str,
    extensions: ExtensionsFrom<'a>,
}

/// Builds a certificate's extensions from its subject key identifier.
type ExtensionsFrom<'a> = Box<dyn Fn(&[u8; 20]) -> Result<Vec<Extension>, der::Error> + 'a>;

/// A self-signed root (docs/design.md#ca-certificates).
fn root_template<'a>(
    config: &'a Config,
    subject_der: &'a [u8],
    key: &'a SigningKey,
    now: Timestamp,
) -> Result<CaTemplate<'a>, CaError> {
    Ok(CaTemplate {
        issuer_id: IssuerId(keys::key_identifier(key.public_key())),
        issuer_subject: subject_der,
        subject: subject_der.to_vec(),
        public_key: key.public_key(),
        not_after: years_later(now, config.root.validity_years)?,
        policy: ROOT_POLICY,
        // Self-signed: its own key identifier as AKI, and nothing to point at above it.
        extensions: Box::new(|ski: &[u8; 20]| ca_extensions(ski, ski, None, None)),
    })
}

/// An issuing CA under `root`; `urls` are those of that root's generation (its ARL and
/// certificate).
fn issuing_template<'a>(
    config: &'a Config,
    subject: &DistinguishedName,
    urls: &'a PublishedUrls,
    root: &'a Issuer,
    key: &'a SigningKey,
    now: Timestamp,
) -> Result<CaTemplate<'a>, CaError> {
    let not_after = years_later(now, config.issuing.validity_years)?.min(root.not_after);
    let root_key_id = root.key_identifier;
    Ok(CaTemplate {
        issuer_id: root.id,
        issuer_subject: &root.subject_der,
        subject: subject
            .to_der()
            .map_err(|e| CaError::Encoding(e.to_string()))?,
        public_key: key.public_key(),
        not_after,
        policy: ISSUING_POLICY,
        // RGS A4 II.1.2: pathLen 0 for a CA that certifies persons.
        extensions: Box::new(move |ski: &[u8; 20]| {
            ca_extensions(ski, &root_key_id, Some(0), Some(urls))
        }),
    })
}

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
    super::ceremony_intent::run(store, CeremonyKind::RotateIssuing, labels, now, || {
        plan.carry_out(config, store, hsm, now, &state)
    })
}

/// What an issuing CA rollover will make, decided (and its key labels announced) before any
/// key is generated.
struct IssuingPlan {
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
    super::ceremony_intent::run(store, CeremonyKind::RotateRoot, labels, now, || {
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
struct RootPlan<'a> {
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
fn link_template<'a>(
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

/// The extensions of a CA certificate (docs/design.md#ca-certificates): basicConstraints cA (with
/// `path_len`), keyCertSign and cRLSign, the key identifiers, anyPolicy and, for a certificate
/// signed by a root, that root's ARL and certificate URLs (`issuer_urls`).
fn ca_extensions(
    ski: &[u8; 20],
    authority_key_id: &[u8; 20],
    path_len: Option<u8>,
    issuer_urls: Option<&PublishedUrls>,
) -> Result<Vec<Extension>, der::Error> {
    let mut extensions = vec![
        ext::basic_constraints(true, path_len, Criticality::Critical)?,
        ext::key_usage(
            KeyUsages::KeyCertSign | KeyUsages::CRLSign,
            Criticality::Critical,
        )?,
        ext::subject_key_identifier(ski)?,
        ext::authority_key_identifier(authority_key_id)?,
        ext::certificate_policies(&[PolicyEntry {
            oid: oid::ANY_POLICY,
            cps_uri: None,
        }])?,
    ];
    if let Some(urls) = issuer_urls {
        extensions.push(ext::crl_distribution_points(&urls.arl)?);
        extensions.push(ext::authority_info_access(
            Some(&urls.root_ca_issuers),
            None,
        )?);
    }
    Ok(extensions)
}

/// The subject of generation `generation` of a CA configured with `configured`: the
/// configured name for the first, then the same name with ` <generation>` after its common
/// name (`AC AGENTS JUSTICE TEST 2`), or with `common_name` when one is given. Every
/// generation has a name of its own, so that relying parties and tools that find an issuer,
/// a CRL or a responder by name never take one generation for another.
fn generation_name(
    configured: &DistinguishedName,
    generation: usize,
    common_name: Option<&str>,
) -> DistinguishedName {
    match (common_name, configured.first(Attribute::CommonName)) {
        (Some(common_name), _) => configured.with_common_name(common_name),
        (None, _) if generation <= 1 => configured.clone(),
        (None, Some(base)) => configured.with_common_name(&format!("{base} {generation}")),
        (None, None) => configured.with_common_name(&format!("{generation}")),
    }
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
        txn.changed(crate::store::CA_CHANGE.to_owned());
        for event in events {
            txn.audit(event);
        }
        super::ceremony_intent::finish(txn);
        Ok(state)
    })
}

/// The key a rollover or renewal will make: the kind `configured`, under a [`fresh_label`].
fn fresh_key(
    hsm: &Hsm,
    store: &Store,
    configured: &KeyConfig,
    now: Timestamp,
) -> Result<KeyConfig, CaError> {
    Ok(KeyConfig {
        label: fresh_label(hsm, store, &configured.label, now)?,
        algorithm: configured.algorithm,
    })
}

/// The configured label when no key has it yet; otherwise (an earlier `init` was interrupted
/// and its key stays in the token) a [`fresh_label`].
fn free_label(
    hsm: &Hsm,
    store: &Store,
    configured: &str,
    now: Timestamp,
) -> Result<String, CaError> {
    if label_taken(hsm, store, configured)? {
        fresh_label(hsm, store, configured, now)
    } else {
        Ok(configured.to_owned())
    }
}

/// A label no key of the token has yet, for a key made by a rollover or renewal: the base label
/// and a UTC timestamp (`sceau-issuing-20261128170405`), with `-2`, `-3`... when several keys
/// are made in the same second (a forced renewal of every responder). A failed ceremony's key
/// stays in the token under its label and never collides with the retry.
/// Whether a label is used by a key of the token, or was announced by an interrupted ceremony
/// (it may have made the key, or may make it in a token that reappears): such a label is never
/// given to a new key, so that an orphan and a key in use never share one.
fn label_taken(hsm: &Hsm, store: &Store, label: &str) -> Result<bool, CaError> {
    Ok(hsm.has_key(label)?
        || super::ceremony_intent::orphan_key_labels(store)?
            .iter()
            .any(|orphan| orphan == label))
}

fn fresh_label(hsm: &Hsm, store: &Store, base: &str, now: Timestamp) -> Result<String, CaError> {
    let stamped = format!("{base}-{}", label_stamp(now)?);
    for n in 1..=100u32 {
        let label = if n == 1 {
            stamped.clone()
        } else {
            format!("{stamped}-{n}")
        };
        if !label_taken(hsm, store, &label)? {
            return Ok(label);
        }
    }
    Err(CaError::Refused(format!(
        "100 keys labelled {stamped}-* already: wait a second"
    )))
}

fn label_stamp(now: Timestamp) -> Result<String, CaError> {
    now.to_date_time()
        .map(|t| {
            format!(
                "{:04}{:02}{:02}{:02}{:02}{:02}",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minutes(),
                t.seconds()
            )
        })
        .map_err(|e| CaError::Encoding(e.to_string()))
}

/// The delegated OCSP responder (docs/design.md#ocsp-responder-certificate): a new key, a
/// short-lived certificate issued by `issuing`, with id-kp-OCSPSigning and
/// id-pkix-ocsp-nocheck and no AIA OCSP.
#[allow(clippy::too_many_arguments)]
fn issue_responder(
    config: &Config,
    key_config: &KeyConfig,
    store: &Store,
    hsm: &Hsm,
    (issuing, generation): (&Issuer, usize),
    now: Timestamp,
    events: &mut Vec<AuditEvent>,
) -> Result<StoredCa, CaError> {
    let key = generate(hsm, key_config, config.keys.rsa_pss, events)?;
    let issuer_key_id = issuing.key_identifier;
    let not_after = now
        .plus_seconds(u64::from(config.ocsp_responder.validity_days) * 86_400)
        .min(issuing.not_after);
    let der = issue_ca_certificate(
        store,
        &issuing.key,
        now,
        CaTemplate {
            issuer_id: issuing.id,
            issuer_subject: &issuing.subject_der,
            subject: generation_name(&config.ocsp_responder.subject, generation, None)
                .to_der()
                .map_err(|e| CaError::Encoding(e.to_string()))?,
            public_key: key.public_key(),
            not_after,
            policy: RESPONDER_POLICY,
            extensions: Box::new(move |ski: &[u8; 20]| {
                Ok(vec![
                    ext::basic_constraints(false, None, Criticality::Critical)?,
                    ext::key_usage(KeyUsages::DigitalSignature.into(), Criticality::Critical)?,
                    ext::extended_key_usage(&[oid::KP_OCSP_SIGNING], Criticality::NonCritical)?,
                    ext::subject_key_identifier(ski)?,
                    ext::authority_key_identifier(&issuer_key_id)?,
                    ext::ocsp_nocheck()?,
                    ext::certificate_policies(&[PolicyEntry {
                        oid: oid::ANY_POLICY,
                        cps_uri: None,
                    }])?,
                ])
            }),
        },
    )?;
    let name = format!("ocsp-{}", issuing.name);
    events.push(stored_event(&name, "ocsp-responder", key.label(), &der)?);
    Ok(StoredCa {
        name,
        key_label: key.label().to_owned(),
        scheme: key.scheme(),
        certificate: der,
    })
}

/// Builds, records, signs and stores one CA certificate; returns its DER.
fn issue_ca_certificate(
    store: &Store,
    signer: &SigningKey,
    now: Timestamp,
    template: CaTemplate<'_>,
) -> Result<Vec<u8>, CaError> {
    let algorithm = signer
        .scheme()
        .algorithm_identifier()
        .map_err(|e| CaError::Encoding(e.to_string()))?;
    let ski = keys::key_identifier(template.public_key);
    let signed = issue_all(
        store,
        signer,
        1,
        now,
        |serials| {
            let serial = serials
                .into_iter()
                .next()
                .ok_or(CaError::Encoding("no serial".into()))?;
            let tbs_der = ca_tbs(&serial, &algorithm, &template, &ski, now)
                .map_err(|e| CaError::Encoding(e.to_string()))?;
            Ok(vec![PendingCertificate {
                key: CertKey {
                    issuer: template.issuer_id,
                    serial,
                },
                tbs_der,
                policy: template.policy.to_owned(),
                holder: None,
                card: None,
                not_before: now,
                not_after: template.not_after,
                subject_der: None,
                public_key_der: None,
            }])
        },
        |_| None,
    )?;
    signed
        .signed
        .into_iter()
        .next()
        .map(|s| s.der)
        .ok_or_else(|| CaError::Encoding("no certificate signed".into()))
}

fn ca_tbs(
    serial: &Serial,
    algorithm: &AlgorithmIdentifierOwned,
    template: &CaTemplate<'_>,
    ski: &[u8; 20],
    now: Timestamp,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let subject = x509_cert::name::Name::from_der(&template.subject)?;
    // Self-signed: the issuer is this very subject.
    let tbs = TbsCertificateV3 {
        version: Version::V3,
        serial_number: serial.to_serial_number()?,
        signature: algorithm.clone(),
        issuer: AnyRef::from_der(template.issuer_subject)?,
        validity: Validity::new(now.to_x509_time()?, template.not_after.to_x509_time()?),
        subject,
        subject_public_key_info: template.public_key.clone(),
        extensions: (template.extensions)(ski)?,
    };
    Ok(tbs.to_der()?)
}

/// A PKCS#10 request for the issuing CA, signed by its HSM key (for an external root).
fn certification_request(
    key: &SigningKey,
    subject: &DistinguishedName,
) -> Result<Vec<u8>, CaError> {
    let encode = |e: der::Error| CaError::Encoding(e.to_string());
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject: subject
            .to_name()
            .map_err(|e| CaError::Encoding(e.to_string()))?,
        public_key: key.public_key().clone(),
        attributes: SetOfVec::new(),
    };
    let info_der = info.to_der().map_err(encode)?;
    let signature = key.sign(&info_der)?;
    key.verify(&info_der, &signature)?;
    let request = CertReq {
        info,
        algorithm: key.scheme().algorithm_identifier().map_err(encode)?,
        signature: BitString::from_bytes(&signature).map_err(encode)?,
    };
    request.to_der().map_err(encode)
}

/// A CA certificate: cA TRUE, keyCertSign and cRLSign; the issuing CA also pathLen 0.
fn check_ca_certificate(certificate: &Certificate, issuing: bool) -> Result<(), CaError> {
    let tbs = certificate.tbs_certificate();
    let bc = tbs
        .get_extension::<BasicConstraints>()
        .map_err(|e| CaError::Import(e.to_string()))?;
    match bc {
        Some((true, bc)) if bc.ca => {
            if issuing && bc.path_len_constraint != Some(0) {
                tracing::warn!(
                    "the issuing CA certificate has no pathLenConstraint 0 (RGS A4 II.1.2 asks for it)"
                );
            }
        }
        _ => {
            return Err(CaError::Import(
                "not a CA certificate (basicConstraints cA TRUE, critical)".into(),
            ));
        }
    }
    let ku = tbs
        .get_extension::<KeyUsage>()
        .map_err(|e| CaError::Import(e.to_string()))?;
    match ku {
        Some((true, ku)) if ku.key_cert_sign() && ku.crl_sign() => Ok(()),
        _ => Err(CaError::Import(
            "keyUsage must be critical with keyCertSign and cRLSign".into(),
        )),
    }
}

/// Checks a certificate's signature against a public key.
pub fn verify_certificate_signature(
    certificate_der: &[u8],
    signer: &SubjectPublicKeyInfoOwned,
) -> Result<(), String> {
    let certificate = Certificate::from_der(certificate_der).map_err(|e| e.to_string())?;
    let tbs = raw_parts(certificate_der)
        .map_err(|e| e.to_string())?
        .tbs_der;
    let signature = certificate
        .signature()
        .as_bytes()
        .ok_or("signature has unused bits")?;
    sigalg::verify(signer, certificate.signature_algorithm(), tbs, signature)
        .map_err(|e| e.to_string())
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
