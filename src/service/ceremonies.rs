//! Key ceremonies under dual control: a proposal, M approvals, then the operation, run only from
//! what the proposal says, and a transcript signed by the audit key.
//!
//! `sceau ceremony propose` makes the proposal ([`Service::propose`]); the officers sign its
//! bytes; `sceau ceremony run` ([`Service::carry_out`]) claims it (the quorum checked and the
//! proposal marked carried out in one store transaction: [`control::claim`]), runs the
//! operation through the same service functions the single-person commands use, records the
//! outcome and writes the transcript. A CA whose officers are declared refuses those commands
//! run alone ([`control::require_single_person`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::wire::{BackupBody, CarriedOut, ProposeBody, Rollover, RunBody};
use super::{Service, ServiceError};
use crate::ca::CaError;
use crate::ca::ceremony::control::{self, Outcome};
use crate::ca::ceremony::quorum::{OfficerSet, Operation, Proposal};
use crate::ca::ceremony::transcript::{self, TranscriptBody};

/// What `destroy-key` may destroy.
#[derive(Clone, Copy, Debug)]
enum Destroyable {
    /// A key left by an interrupted ceremony, which nothing uses.
    Orphan,
    /// A key the CA state names, retired ([`crate::ca::ceremony::retired`]).
    Retired,
}

/// The operation as the proposal's parameters state it.
enum Plan {
    Init(OfficerSet),
    Rotate(Rollover, Option<String>),
    RenewResponders,
    Backup(PathBuf),
    ChangeOfficers(OfficerSet),
    /// A key left in the token by an interrupted ceremony (an orphan), destroyed.
    DestroyKey(String),
    /// Run by `sceau restore --proposal` on the host restored to, not by [`Service::carry_out`].
    Restore,
    /// A new random PIN on the token, split among the officers into share files in this
    /// directory (`service::unseal`).
    SplitPin(PathBuf),
    /// The policy files of this directory (with this digest) put in force.
    ChangePolicies(PathBuf, String),
}

/// The key specifications in the configuration, written into every proposal that makes keys: a
/// configuration changed between the proposal and its run is refused.
fn key_specs(config: &crate::config::Config) -> String {
    let keys = &config.keys;
    format!(
        "root {} {:?}; issuing {} {:?}; ocsp {} {:?}; rsa-pss {}",
        keys.root.algorithm,
        keys.root.label,
        keys.issuing.algorithm,
        keys.issuing.label,
        keys.ocsp.algorithm,
        keys.ocsp.label,
        keys.rsa_pss
    )
}

/// The configuration file and the policy files as they are now, by digest: written into
/// every proposal and compared at its run, so that what the operation reads besides its
/// parameters (token, names, validity, URLs, policies) is what the officers approved.
pub fn configuration(config: &crate::config::Config) -> Result<String, ServiceError> {
    Ok(format!(
        "{} sha256 {}; policies sha256 {}",
        config.path.display(),
        hex::encode(config.source_sha256),
        policies_digest(&config.policies_dir)?
    ))
}

/// [`crate::policy::files_digest`] of `dir`, hexadecimal.
pub(super) fn policies_digest(dir: &std::path::Path) -> Result<String, ServiceError> {
    crate::policy::files_digest(dir)
        .map(hex::encode)
        .map_err(|e| ServiceError::Ca(CaError::Io(format!("{}: {e}", dir.display()))))
}

fn invalid(field: &'static str, detail: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        field,
        detail: detail.into(),
    }
}

/// The officer set a proposal's parameters name.
fn officer_set(parameters: &BTreeMap<String, String>) -> Result<OfficerSet, ServiceError> {
    OfficerSet::from_parameters(parameters).map_err(|e| invalid("parameters", e.to_string()))
}

/// Reads the plan from an operation and its parameters: unknown parameters are refused, so a
/// proposal says nothing that is not carried out.
fn plan(
    operation: Operation,
    parameters: &BTreeMap<String, String>,
    config: &crate::config::Config,
) -> Result<Plan, ServiceError> {
    let allowed: &[&str] = match operation {
        Operation::Init | Operation::ChangeOfficers => {
            &["quorum", "officer.", "keys", "configuration"]
        }
        Operation::RotateIssuing | Operation::RotateRoot => {
            &["common-name", "keys", "configuration"]
        }
        Operation::RenewResponders => &["keys", "configuration"],
        Operation::Backup => &["out", "configuration"],
        Operation::Restore => &["manifest", "configuration"],
        Operation::DestroyKey => &["key-label", "configuration"],
        Operation::SplitPin => &["shares-out", "configuration"],
        Operation::ChangePolicies => &["policies-from", "policies", "configuration"],
    };
    for name in parameters.keys() {
        let known = allowed
            .iter()
            .any(|a| name == a || (a.ends_with('.') && name.starts_with(a)));
        if !known {
            return Err(invalid(
                "parameters",
                format!("{name:?} is not a parameter of {}", operation.as_str()),
            ));
        }
    }
    for (name, current) in [
        ("keys", key_specs(config)),
        ("configuration", configuration(config)?),
    ] {
        if !allowed.contains(&name) {
            continue;
        }
        match parameters.get(name) {
            Some(proposed) if *proposed == current => {}
            Some(proposed) => {
                return Err(invalid(
                    "parameters",
                    format!(
                        "the proposal was made with {name} {proposed:?}, this CA now has {current:?}: the configuration changed, propose again"
                    ),
                ));
            }
            None => return Err(invalid("parameters", format!("{name}: missing"))),
        }
    }
    Ok(match operation {
        Operation::Init => Plan::Init(officer_set(parameters)?),
        Operation::ChangeOfficers => Plan::ChangeOfficers(officer_set(parameters)?),
        Operation::RotateIssuing => {
            Plan::Rotate(Rollover::Issuing, parameters.get("common-name").cloned())
        }
        Operation::RotateRoot => {
            Plan::Rotate(Rollover::Root, parameters.get("common-name").cloned())
        }
        Operation::RenewResponders => Plan::RenewResponders,
        Operation::Backup => {
            let out = PathBuf::from(
                parameters
                    .get("out")
                    .ok_or_else(|| invalid("parameters.out", "the backup directory to create"))?,
            );
            if !out.is_absolute() {
                return Err(invalid("parameters.out", "give an absolute path"));
            }
            Plan::Backup(out)
        }
        Operation::Restore => Plan::Restore,
        Operation::DestroyKey => Plan::DestroyKey(
            parameters
                .get("key-label")
                .cloned()
                .ok_or_else(|| invalid("parameters.key-label", "the key to destroy"))?,
        ),
        Operation::SplitPin => {
            let out = PathBuf::from(parameters.get("shares-out").ok_or_else(|| {
                invalid(
                    "parameters.shares-out",
                    "the directory to create for the share files",
                )
            })?);
            if !out.is_absolute() {
                return Err(invalid("parameters.shares-out", "give an absolute path"));
            }
            Plan::SplitPin(out)
        }
        Operation::ChangePolicies => {
            let from = PathBuf::from(parameters.get("policies-from").ok_or_else(|| {
                invalid(
                    "parameters.policies-from",
                    "the directory of the policy files to put in force",
                )
            })?);
            if !from.is_absolute() {
                return Err(invalid("parameters.policies-from", "give an absolute path"));
            }
            let found = policies_digest(&from)?;
            match parameters.get("policies") {
                Some(proposed) if *proposed == found => {}
                _ => {
                    return Err(invalid(
                        "parameters.policies",
                        format!(
                            "the files in {} are not those the proposal names (now sha256 {found}): propose again",
                            from.display()
                        ),
                    ));
                }
            }
            crate::policy::PolicySet::load_dir(&from)
                .map_err(|e| invalid("parameters.policies-from", e.to_string()))?;
            Plan::ChangePolicies(from, found)
        }
    })
}

/// Refuses an officer set with an RA operator in it (one person never holds both roles).
fn no_ra_operator(store: &crate::store::Store, set: &OfficerSet) -> Result<(), ServiceError> {
    let operators = crate::ra::operators::operator_persons_without_country(store)?;
    for officer in &set.officers {
        let person = crate::ca::ceremony::quorum::person_of(&officer.certificate)
            .map_err(|e| invalid("parameters.officer", e.to_string()))?;
        if operators.contains(&person) {
            return Err(invalid(
                "parameters.officer",
                format!(
                    "{} is an RA operator: a security officer may not be one",
                    person.replace('\u{1f}', " ")
                ),
            ));
        }
    }
    Ok(())
}

impl Service {
    /// `sceau ceremony propose`: the proposal's canonical bytes, for the officers to sign.
    pub async fn propose(&self, body: ProposeBody) -> Result<Vec<u8>, ServiceError> {
        let service = self.clone();
        Self::blocking(move || service.propose_now(body)).await
    }

    fn propose_now(&self, body: ProposeBody) -> Result<Vec<u8>, ServiceError> {
        let operation = Operation::parse(&body.operation).ok_or_else(|| {
            invalid(
                "operation",
                format!(
                    "{:?}: one of {}",
                    body.operation,
                    Operation::ALL.map(Operation::as_str).join(", ")
                ),
            )
        })?;
        if operation == Operation::Restore {
            return Err(invalid(
                "operation",
                "a restore is proposed from the backup: sceau ceremony propose restore --backup DIR",
            ));
        }
        // Offline, an interrupted ceremony is settled first: the keys it left are then known
        // orphans. (The daemon settled any at its start, and one in its record now is running.)
        if self.va().is_none() {
            crate::ca::ceremony_intent::resolve_when_idle(&self.store, self.now())?;
        }
        let mut parameters = body.parameters;
        if !matches!(
            operation,
            Operation::Backup
                | Operation::DestroyKey
                | Operation::SplitPin
                | Operation::ChangePolicies
        ) {
            parameters.insert("keys".into(), key_specs(&self.config));
        }
        parameters.insert("configuration".into(), configuration(&self.config)?);
        if operation == Operation::ChangePolicies
            && let Some(from) = parameters.get("policies-from")
        {
            let digest = policies_digest(std::path::Path::new(from))?;
            parameters.insert("policies".into(), digest);
        }
        let plan = plan(operation, &parameters, &self.config)?;
        let initialised = crate::ca::load_state(&self.store)?.is_some();
        match (&plan, initialised) {
            (Plan::Init(_), true) => {
                return Err(ServiceError::Ca(CaError::AlreadyInitialized(
                    self.state()?.created_at,
                )));
            }
            (Plan::Init(set) | Plan::ChangeOfficers(set), _) => no_ra_operator(&self.store, set)?,
            (_, false) => return Err(ServiceError::NotInitialized),
            (Plan::DestroyKey(label), true) => {
                self.destroyable(label)?;
            }
            _ => {}
        }
        let proposal = control::new_proposal(
            control::ca_id(&self.store)?,
            control::key_head(&self.store)?,
            operation,
            parameters,
            self.now(),
            body.valid_for_seconds,
        )?;
        Ok(proposal.canonical_bytes())
    }

    /// `sceau ceremony run`: checks the approvals and claims the proposal, runs the operation
    /// it states, records the outcome and writes the transcript (signed by the audit key) and
    /// its readable report into `data_dir/ceremonies`.
    pub async fn carry_out(&self, body: RunBody) -> Result<CarriedOut, ServiceError> {
        use base64::Engine;
        let engine = base64::engine::general_purpose::STANDARD;
        let proposal_bytes = engine
            .decode(&body.proposal)
            .map_err(|e| invalid("proposal", e.to_string()))?;
        let approvals = body
            .approvals
            .iter()
            .map(|a| engine.decode(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("approvals", e.to_string()))?;
        let proposal = Proposal::from_canonical_bytes(&proposal_bytes)
            .map_err(|e| invalid("proposal", e.to_string()))?;
        let plan = plan(proposal.operation, &proposal.parameters, &self.config)?;
        if let Plan::Restore = plan {
            return Err(invalid(
                "operation",
                "a restore runs on the host restored to: sceau restore --from DIR --proposal FILE --approval FILE ...",
            ));
        }
        if let Plan::Init(_) = plan
            && self.va().is_some()
        {
            return Err(invalid(
                "operation",
                "init runs with no daemon: stop it first",
            ));
        }
        if !self.hsm()?.status().available {
            return Err(ServiceError::HsmUnavailable);
        }
        // In flight from before its claim: a concurrent run's conclusion of interrupted claims
        // never takes this one for one of them.
        let in_flight = InFlight::enter(&proposal.id);
        self.conclude_interrupted().await?;
        let service = self.clone();
        Self::to_the_end(async move {
            let _in_flight = in_flight;
            let declares = match &plan {
                Plan::Init(set) => Some(set.clone()),
                _ => None,
            };
            if let Plan::Init(set) | Plan::ChangeOfficers(set) = &plan {
                no_ra_operator(&service.store, set)?;
            }
            let (store, now) = (service.store.clone(), service.now());
            let revocations = store.clone();
            let claimed = Self::blocking(move || {
                Ok(control::claim(
                    &store,
                    proposal_bytes,
                    approvals,
                    declares,
                    now,
                    move |c| control::revoked_in(&revocations, c),
                )?)
            })
            .await?;
            let id = Proposal::from_canonical_bytes(&claimed.proposal)
                .map_err(|e| invalid("proposal", e.to_string()))?
                .id;
            let result = service.run_plan(plan).await;
            service.conclude(id, result).await
        })
        .await
    }

    /// Runs what an approved proposal states, through the same functions as the
    /// single-person commands.
    async fn run_plan(&self, plan: Plan) -> Result<BTreeMap<String, String>, ServiceError> {
        let answer = match plan {
            Plan::Init(_) => {
                let (config, store, hsm, now) = (
                    self.config.clone(),
                    self.store.clone(),
                    self.hsm()?.clone(),
                    self.now(),
                );
                Self::blocking(move || {
                    crate::policy::PolicySet::load_dir(&config.policies_dir)
                        .map_err(|e| invalid("policies", e.to_string()))?;
                    // The policies the officers approved with the CA (the proposal named them).
                    let approved = policies_digest(&config.policies_dir)?;
                    store.commit(move |txn| -> Result<(), CaError> {
                        control::approve_policies(txn, &approved)
                    })?;
                    match crate::ca::ceremony::init(&config, &store, &hsm, now, false)? {
                        crate::ca::ceremony::InitOutcome::Ready { files, .. } => {
                            Ok(serde_json::json!({ "files": files }))
                        }
                        crate::ca::ceremony::InitOutcome::AwaitingRoot { csr } => {
                            Ok(serde_json::json!({ "csr": csr }))
                        }
                    }
                })
                .await?
            }
            Plan::Rotate(rollover, common_name) => {
                json(self.rotate_approved(rollover, common_name).await?)?
            }
            Plan::RenewResponders => json(self.renew_responders_approved(true).await?)?,
            Plan::Backup(out) => json(self.backup_approved(BackupBody { out }).await?)?,
            Plan::Restore => return Err(invalid("operation", "a restore runs with sceau restore")),
            Plan::DestroyKey(label) => {
                let kind = self.destroyable(&label)?;
                let (store, hsm, now) = (self.store.clone(), self.hsm()?.clone(), self.now());
                let destroyed = Self::blocking(move || match kind {
                    Destroyable::Orphan => {
                        let objects = hsm.destroy_key(&label).map_err(CaError::from)?;
                        crate::ca::ceremony_intent::forget_orphan(&store, &label, objects)?;
                        Ok(serde_json::json!({ "destroyed": label, "objects": objects, "was": "orphan" }))
                    }
                    Destroyable::Retired => {
                        let (retired, objects) =
                            crate::ca::ceremony::destroy_retired(&store, &hsm, &label, now)?;
                        let was = match retired {
                            crate::ca::ceremony::Retired::Responder => "retired OCSP responder",
                            crate::ca::ceremony::Retired::Issuing => "retired issuing CA",
                        };
                        Ok(serde_json::json!({ "destroyed": label, "objects": objects, "was": was }))
                    }
                })
                .await?;
                // The running daemon stops signing for a CA whose key is destroyed: no more
                // CRLs, no more OCSP responses (its responder's key goes with it).
                if let (Some(va), Some(state)) = (self.va(), crate::ca::load_state(&self.store)?) {
                    for retired in state
                        .issuing
                        .iter()
                        .filter(|c| state.key_destroyed(&c.key_label))
                    {
                        va.crls.retire(&retired.name);
                        if let Ok(id) = crate::ca::ceremony::issuer_id(&retired.certificate) {
                            va.responder.retire_signer(id);
                        }
                    }
                }
                destroyed
            }
            Plan::SplitPin(out) => self.split_pin(out).await?,
            Plan::ChangePolicies(from, digest) => self.change_policies(from, digest).await?,
            Plan::ChangeOfficers(set) => {
                let summary = format!("{} of {}", set.quorum, set.officers.len());
                let misfit = super::unseal::split_misfit(&self.store, &set)?;
                self.store
                    .commit_async(move |txn| -> Result<(), CaError> {
                        control::replace_officers(txn, &set)
                    })
                    .await?;
                match misfit {
                    Some(warning) => {
                        tracing::warn!("{warning}");
                        serde_json::json!({ "officers": summary, "pin split": warning })
                    }
                    None => serde_json::json!({ "officers": summary }),
                }
            }
        };
        let mut details = BTreeMap::new();
        flatten("", &answer, &mut details);
        // What is in force now: every CA certificate's fingerprint.
        if let Some(state) = crate::ca::load_state(&self.store)? {
            let certificates = state
                .roots()
                .map(|r| (r.name.clone(), r.certificate.clone()))
                .chain(state.issuing.iter().chain(&state.ocsp_responders).map(|c| {
                    (
                        format!("{} ({})", c.name, c.key_label),
                        c.certificate.clone(),
                    )
                }));
            for (name, der) in certificates {
                details.insert(
                    format!("in force: {name}"),
                    hex::encode(crate::x509::keys::sha256(&der)),
                );
            }
        }
        Ok(details)
    }

    /// Records the outcome of the claimed ceremony `id`, signs the transcript with the audit
    /// key, writes it and its report into `data_dir/ceremonies`; then returns the operation's
    /// own error, if it failed.
    pub async fn conclude(
        &self,
        id: String,
        result: Result<BTreeMap<String, String>, ServiceError>,
    ) -> Result<CarriedOut, ServiceError> {
        let outcome = Outcome {
            succeeded: result.is_ok(),
            details: match &result {
                Ok(details) => details.clone(),
                Err(error) => BTreeMap::from([("error".to_owned(), error.to_string())]),
            },
            finished_at: self.now(),
        };
        let service = self.clone();
        let written = Self::blocking(move || {
            let (record, finished_seq) = control::finish(&service.store, &id, outcome)?;
            let body = TranscriptBody::of(&record, finished_seq)
                .map_err(|e| ServiceError::Ca(CaError::Corrupt(e.to_string())))?;
            let file = service.seal(&body)?;
            let dir = service.config.data_dir.join("ceremonies");
            std::fs::create_dir_all(&dir)
                .map_err(|e| CaError::Io(format!("{}: {e}", dir.display())))?;
            let transcript_path = dir.join(format!("{id}.json"));
            let report_path = dir.join(format!("{id}.html"));
            crate::ca::ceremony::write_file(&transcript_path, &file)?;
            crate::ca::ceremony::write_file(&report_path, transcript::report(&body).as_bytes())?;
            Ok((body, transcript_path, report_path))
        })
        .await?;
        // The operation's own error, once the ceremony is on record.
        result?;
        let (body, transcript, report) = written;
        Ok(CarriedOut {
            id: body.id,
            operation: body.operation,
            succeeded: body.outcome.succeeded,
            transcript,
            report,
            details: body.outcome.details,
        })
    }

    /// The transcript's bytes, signed by the audit key (a checkpoint first: it creates the key
    /// when none is recorded yet and vouches for the chain the transcript points into).
    fn seal(&self, body: &TranscriptBody) -> Result<Vec<u8>, ServiceError> {
        let hsm = self.hsm()?;
        let label = &self.config.keys.audit;
        let outcome = crate::audit::checkpoint::write_or_verify(&self.store, hsm, label);
        if let Some(daemon) = &self.daemon {
            daemon
                .audit_watch
                .record(outcome)
                .map_err(|e| ServiceError::Checkpoint(e.to_string()))?;
        } else {
            outcome.map_err(|e| ServiceError::Checkpoint(e.to_string()))?;
        }
        let key = hsm
            .signing_key(label, crate::hsm::KeySpec::P256.scheme(false))
            .map_err(|e| ServiceError::Checkpoint(e.to_string()))?;
        transcript::seal(body, |bytes| key.sign(bytes).map_err(|e| e.to_string()))
            .map_err(ServiceError::Checkpoint)
    }

    /// Refuses to destroy any key but an orphan: one left in the token by an interrupted
    /// ceremony and used by nothing (`sceau ceremony status` lists them). The keys of retired
    /// CAs and responders are not destroyed yet: their CRLs and responses still name them.
    fn destroyable(&self, label: &str) -> Result<Destroyable, ServiceError> {
        let orphans = crate::ca::ceremony_intent::orphan_key_labels(&self.store)?;
        let state = crate::ca::load_state(&self.store)?;
        let named = state
            .iter()
            .flat_map(|s| s.key_labels())
            .any(|l| l == label);
        if !named {
            // Never a key the configuration points at, whatever the orphan list (a value in
            // the store) says.
            let keys = &self.config.keys;
            let configured = [
                &keys.root.label,
                &keys.issuing.label,
                &keys.ocsp.label,
                &keys.audit,
            ]
            .iter()
            .any(|l| l.as_str() == label);
            if configured {
                return Err(invalid(
                    "parameters.key-label",
                    format!("{label:?} is a key the configuration names: it is never destroyed"),
                ));
            }
            if orphans.iter().any(|o| o == label) {
                return Ok(Destroyable::Orphan);
            }
            return Err(invalid(
                "parameters.key-label",
                format!(
                    "{label:?} is neither a retired key of this CA nor an orphan (orphans: {orphans:?})"
                ),
            ));
        }
        // A key the CA state names: only a retired one.
        let state = state.ok_or(ServiceError::NotInitialized)?;
        crate::ca::ceremony::retired(&self.store, &state, label, self.now())
            .map_err(|e| invalid("parameters.key-label", e.to_string()))?;
        Ok(Destroyable::Retired)
    }

    /// Concludes, as failed, every claimed ceremony that has no outcome and does not run in
    /// this process: the process that claimed it stopped (a crash, kill -9) before the
    /// outcome. Its transcript is written then, so every claim ends in one.
    async fn conclude_interrupted(&self) -> Result<(), ServiceError> {
        let unfinished: Vec<String> = control::records(&self.store)?
            .into_iter()
            .filter(|r| r.outcome.is_none())
            .filter_map(|r| {
                Proposal::from_canonical_bytes(&r.proposal)
                    .ok()
                    .map(|p| p.id)
            })
            .filter(|id| !InFlight::running(id))
            .collect();
        for id in unfinished {
            let interrupted = Err(ServiceError::Ca(CaError::Refused(
                "interrupted: the process stopped before the outcome was recorded (its keys, if any, are orphans: see sceau ceremony status)".into(),
            )));
            match self.conclude(id.clone(), interrupted).await {
                Err(ServiceError::Ca(CaError::Refused(text)))
                    if text.starts_with("interrupted") =>
                {
                    tracing::warn!(ceremony = %id, "concluded an interrupted ceremony as failed");
                }
                Err(other) => return Err(other),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Refuses a key operation run alone where officers are declared.
    pub(super) fn outside_ceremony(&self, what: &str) -> Result<(), ServiceError> {
        Ok(control::require_single_person(&self.store, what)?)
    }
}

fn json(answer: impl Serialize) -> Result<serde_json::Value, ServiceError> {
    serde_json::to_value(answer).map_err(|e| ServiceError::Ca(CaError::Encoding(e.to_string())))
}

/// The ceremonies running in this process, by id: a claim without an outcome that is not
/// here was interrupted. (The store is one process's alone: the daemon or the CLI.)
struct InFlight(String);

static IN_FLIGHT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl InFlight {
    fn enter(id: &str) -> Self {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.to_owned());
        InFlight(id.to_owned())
    }

    fn running(id: &str) -> bool {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|i| i == id)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut running = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        // One entry: two runs of one proposal each hold their own.
        if let Some(position) = running.iter().position(|i| *i == self.0) {
            running.swap_remove(position);
        }
    }
}

/// `details` gets every leaf of `value`, named by its path (`renewed.0.key_label`).
fn flatten(prefix: &str, value: &serde_json::Value, details: &mut BTreeMap<String, String>) {
    let name = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                flatten(&name(key), inner, details);
            }
        }
        serde_json::Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                flatten(&name(&index.to_string()), inner, details);
            }
        }
        serde_json::Value::String(text) => {
            details.insert(prefix.to_owned(), text.clone());
        }
        serde_json::Value::Null => {}
        other => {
            details.insert(prefix.to_owned(), other.to_string());
        }
    }
}
