//! The `sceau` command.
//!
//! `main` parses the arguments, sets up logging and calls [`run`]; any error is printed once,
//! naming the file and the field involved, and the process exits with the status of its kind
//! ([`Failure`]: 64 usage, 65 data, 69 unavailable, 70 internal, 74 I/O, 77 refused, 78
//! configuration).

mod actions;
mod admin_client;
mod args;
mod audit_bundle;
mod card;
mod ceremony;
mod error;
mod node;
mod ra_client;
mod restore;
mod serve;
mod unseal;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use args::*;
pub(crate) use error::{Classify, Context, ContextAs};
pub use error::{CliError, Failure};

use crate::audit;
use crate::ca::{self, CertificateAuthority};
use crate::config::Config;
use crate::hsm::Hsm;
use crate::policy::PolicySet;
use crate::store::Store;
use crate::x509::time::{Clock, FixedClock, SystemClock};

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Node = cli.command {
        return node::node(&cli.config);
    }
    // An auditor's command (verify) and an officer's (approve, with their card): no
    // configuration, no store, not the CA's HSM.
    if let Command::Ceremony(
        command @ (CeremonyCommand::Verify { .. } | CeremonyCommand::Approve { .. }),
    ) = cli.command
    {
        return ceremony::without_configuration(command);
    }
    // An auditor's check of a bundle: no configuration, no store, no HSM.
    if let Command::Audit(AuditCommand::Verify {
        bundle: Some(bundle),
        anchor: Some(anchor),
        report,
        ..
    }) = &cli.command
    {
        return audit_bundle::verify(bundle, anchor, report.as_deref());
    }
    // An RA operator's commands run on their workstation, with their card.
    if let Command::Ra(RaArgs {
        client,
        command: RaCommand::Client(command),
    }) = cli.command
    {
        return ra_client::run(&client, command);
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Serve {
            listen_va,
            listen_ra,
            listen_admin,
        } => serve::serve(
            &config,
            serve::ListenOverrides {
                va: listen_va,
                ra: listen_ra,
                admin: listen_admin,
            },
        ),
        Command::Node => node::node(&cli.config),
        Command::Revoke {
            serial,
            card,
            reason,
            invalidity_date,
            at,
        } => actions::revoke(
            &config,
            crate::service::wire::RevokeBody {
                serial,
                card,
                reason,
                invalidity_date,
                at,
            },
        ),
        Command::Backup { out } => actions::backup(&config, &out),
        Command::Restore {
            from,
            proposal,
            approvals,
        } => restore::restore(&config, &from, proposal.as_deref(), &approvals),
        Command::Publish { all: _ } => actions::publish_all(&config),
        Command::Scheduled(ScheduledCommand::List) => scheduled_list(&config),
        Command::Scheduled(ScheduledCommand::Cancel { id }) => {
            actions::scheduled_cancel(&config, &id)
        }
        Command::Crl => actions::crl(&config),
        Command::Init {
            external_root,
            without_dual_control,
        } => init(&config, external_root, without_dual_control),
        Command::Ceremony(command) => ceremony::ceremony(&config, command),
        Command::Unseal(args) => unseal::unseal(&config, args),
        Command::Ca(CaCommand::Export { out }) => ca_export(&config, &out),
        Command::Ca(CaCommand::ImportCert { file, root }) => {
            ca_import(&config, &file, root.as_deref())
        }
        Command::Ca(CaCommand::Show) => ca_show(&config),
        Command::Ca(CaCommand::Rotate { root, common_name }) => {
            actions::ca_rotate(&config, root, common_name.as_deref())
        }
        Command::Issue(args) => actions::issue(&config, &args),
        Command::Card(CardCommand::Issue {
            holder,
            card,
            auth_csr,
            sign_csr,
            auth_policy,
            sign_policy,
            out_dir,
        }) => {
            let body = actions::card_body(
                holder,
                card,
                (&auth_csr, &sign_csr),
                (auth_policy, sign_policy),
            )?;
            actions::card_issue(&config, body, out_dir.as_deref())
        }
        Command::Cert(CertCommand::Show { serial }) => cert_show(&config, &serial),
        Command::Ocsp(OcspCommand::RenewSigner) => actions::ocsp_renew_signer(&config),
        Command::Ra(RaArgs {
            command:
                RaCommand::Bootstrap {
                    card,
                    organization,
                    unit,
                    policy,
                },
            ..
        }) => ra_bootstrap(&config, card, organization, unit, policy),
        Command::Ra(RaArgs {
            command: RaCommand::Client(_),
            ..
        }) => Err(CliError::internal(
            "the RA client runs without configuration",
        )),
        Command::Audit(AuditCommand::Verify { anchor, expect, .. }) => {
            audit_verify(&config, anchor.as_deref(), &expect)
        }
        Command::Audit(AuditCommand::Checkpoint) => actions::audit_checkpoint(&config),
        Command::Audit(AuditCommand::Export {
            bundle: Some(bundle),
            from,
            to,
            ..
        }) => audit_bundle::export(&config, &bundle, (from.as_deref(), to.as_deref())),
        Command::Audit(AuditCommand::Export { out, .. }) => audit_export(&config, out.as_deref()),
        Command::Check => check(&config),
    }
}

/// Applies `[hsm] module_env` to this process before the PKCS#11 module is loaded: the process
/// re-executes itself with the variables set (no `set_var` in a running program).
pub fn apply_module_env(config: &Config) -> Result<(), CliError> {
    let missing: Vec<_> = config
        .module_env
        .iter()
        .filter(|(name, value)| std::env::var(name).ok().as_deref() != Some(value.as_str()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    const MARK: &str = "SCEAU_MODULE_ENV_APPLIED";
    if std::env::var_os(MARK).is_some() {
        return Err(CliError::new(
            Failure::Config,
            format!(
                "{}: hsm.module_env: could not set {}",
                config.path.display(),
                missing
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context(|| "locating the sceau executable".into())?;
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(config.module_env.iter())
        .env(MARK, "1")
        .exec();
    Err(CliError::internal(format!(
        "re-executing sceau with hsm.module_env: {error}"
    )))
}

fn open_hsm(config: &Config) -> Result<Hsm, CliError> {
    apply_module_env(config)?;
    Hsm::open(config.hsm.clone()).context(|| {
        format!(
            "{}: [hsm] token {:?}",
            config.path.display(),
            config.hsm.token_label
        )
    })
}

fn open_store(config: &Config) -> Result<Store, CliError> {
    Store::open(&config.store_dir())
        .context(|| format!("opening the store {}", config.store_dir().display()))
}

/// The store for a read-only command: opened normally when no daemon holds it, or else as a
/// secondary instance beside the daemon (`Store::open_reader`), so that `cert show`, `ca show`,
/// `audit verify` and `audit export` work while `sceau serve` runs, and check what the disk holds
/// rather than what the daemon says. The guard removes the secondary's scratch directory.
fn open_store_for_reading(config: &Config) -> Result<(ScratchDir, Store), CliError> {
    match Store::open(&config.store_dir()) {
        Ok(store) => Ok((ScratchDir(None), store)),
        Err(crate::store::StoreError::Locked { .. }) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path =
                std::env::temp_dir().join(format!("sceau-reader-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&path).context(|| format!("creating {}", path.display()))?;
            let scratch = ScratchDir(Some(path.clone()));
            let store = Store::open_reader(&config.store_dir(), &path).context(|| {
                format!(
                    "reading the store {} beside the running daemon",
                    config.store_dir().display()
                )
            })?;
            Ok((scratch, store))
        }
        Err(e) => Err(CliError::new(
            e.failure(),
            format!("opening the store {}: {e}", config.store_dir().display()),
        )),
    }
}

/// A directory removed when dropped (bound before the store that uses it, so dropped after it).
struct ScratchDir(Option<PathBuf>);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

fn open_ca(config: &Config) -> Result<(CertificateAuthority, Hsm), CliError> {
    let store = open_store(config)?;
    ca::ceremony::control::check_policies(&store, &config.policies_dir)?;
    let policies = Arc::new(PolicySet::load_dir(&config.policies_dir)?);
    let hsm = open_hsm(config)?;
    let ca = CertificateAuthority::open(store, &hsm, policies, config.urls.clone(), clock())?;
    Ok((ca, hsm))
}

/// The system clock, or the time pinned by `SCEAU_NOW` in test builds.
pub(crate) fn clock() -> Arc<dyn Clock> {
    match crate::failpoint::pinned_now() {
        Some(now) => Arc::new(FixedClock(now)),
        None => Arc::new(SystemClock),
    }
}

fn init(config: &Config, external_root: bool, without_dual_control: bool) -> Result<(), CliError> {
    if !without_dual_control {
        return Err(CliError::usage(
            "a CA's key ceremonies are run by its security officers: `sceau ceremony propose init --officer CERT ... --quorum M` (docs/ceremonies.md); for development and tests only, `sceau init --without-dual-control`",
        ));
    }
    // Load the policies first: a ceremony with unusable policies would be wasted.
    PolicySet::load_dir(&config.policies_dir)?;
    let hsm = open_hsm(config)?;
    let store = open_store(config)?;
    ca::ceremony::control::declare_single_person(&store, clock().now())?;
    match ca::ceremony::init(config, &store, &hsm, clock().now(), external_root)? {
        ca::ceremony::InitOutcome::Ready { state, files } => {
            println!("CA initialised in {}", config.store_dir().display());
            if let Some(root) = &state.root {
                println!("  root        {}", root.name);
            }
            for issuing in &state.issuing {
                println!(
                    "  issuing CA  {} (key {:?})",
                    issuing.name, issuing.key_label
                );
            }
            for responder in &state.ocsp_responders {
                println!(
                    "  OCSP signer {} (key {:?})",
                    responder.name, responder.key_label
                );
            }
            for file in files {
                println!("  wrote {}", file.display());
            }
        }
        ca::ceremony::InitOutcome::AwaitingRoot { csr } => {
            println!(
                "issuing CA key generated; its certification request is in {}",
                csr.display()
            );
            println!(
                "have the root sign it, then run: sceau ca import-cert ISSUING.pem [--root ROOT.pem]"
            );
        }
    }
    Ok(())
}

fn ca_export(config: &Config, out: &Path) -> Result<(), CliError> {
    let state = match Store::open(&config.store_dir()) {
        Ok(store) => ca::load_state(&store)?
            .ok_or_else(|| ca::CaError::NotInitialized(config.store_dir()))?,
        // The daemon holds the store: ask it.
        Err(crate::store::StoreError::Locked { .. }) => {
            match admin_client::call(config, "/admin/ca/state", serde_json::json!({}))? {
                Some(body) => serde_json::from_slice(&body)?,
                None => {
                    return Err(CliError::unavailable(format!(
                        "the store {} is locked, and no daemon answers",
                        config.store_dir().display()
                    )));
                }
            }
        }
        Err(error) => {
            return Err(CliError::new(
                error.failure(),
                format!(
                    "opening the store {}: {error}",
                    config.store_dir().display()
                ),
            ));
        }
    };
    for file in ca::ceremony::export(&state, out)? {
        println!("{}", file.display());
    }
    Ok(())
}

fn ca_import(config: &Config, file: &Path, root: Option<&Path>) -> Result<(), CliError> {
    let bundle = std::fs::read_to_string(file).context(|| format!("reading {}", file.display()))?;
    let root_pem = match root {
        Some(path) => {
            Some(std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let hsm = open_hsm(config)?;
    let store = open_store(config)?;
    ca::ceremony::import_issuing_certificate(
        config,
        &store,
        &hsm,
        clock().now(),
        &bundle,
        root_pem.as_deref(),
    )
    .context(|| format!("importing {}", file.display()))?;
    println!("issuing CA certificate imported; the CA is ready");
    Ok(())
}

fn ca_show(config: &Config) -> Result<(), CliError> {
    let (_scratch, store) = open_store_for_reading(config)?;
    let state =
        ca::load_state(&store)?.ok_or_else(|| ca::CaError::NotInitialized(config.store_dir()))?;
    let describe =
        |role: &str, name: &str, der: &[u8], key: Option<&str>| -> Result<(), CliError> {
            let certificate: x509_cert::Certificate = der::Decode::from_der(der)?;
            let tbs = certificate.tbs_certificate();
            println!("{role:<12} {name}");
            println!("  subject    {}", tbs.subject());
            println!(
                "  serial     {}",
                crate::x509::Serial::from_serial_number(tbs.serial_number())?
            );
            println!(
                "  valid      {} .. {}",
                tbs.validity().not_before,
                tbs.validity().not_after
            );
            println!("  key        {}", key.unwrap_or("(kept outside this HSM)"));
            Ok(())
        };
    for root in state.roots() {
        describe(
            "root",
            &root.name,
            &root.certificate,
            root.key.as_ref().map(|k| k.label.as_str()),
        )?;
    }
    for link in &state.root_links {
        let name = format!("{}-signed-by-{}", link.new, link.old);
        describe("root link", &name, &link.new_with_old, Some("-"))?;
        let name = format!("{}-signed-by-{}", link.old, link.new);
        describe("root link", &name, &link.old_with_new, Some("-"))?;
    }
    let key_of = |label: &str| {
        if state.key_destroyed(label) {
            format!("{label} (destroyed in the HSM: retired)")
        } else {
            label.to_owned()
        }
    };
    for ca in &state.issuing {
        describe(
            "issuing CA",
            &ca.name,
            &ca.certificate,
            Some(&key_of(&ca.key_label)),
        )?;
    }
    for responder in &state.ocsp_responders {
        describe(
            "OCSP signer",
            &responder.name,
            &responder.certificate,
            Some(&key_of(&responder.key_label)),
        )?;
    }
    if let Some(pending) = &state.pending_issuing {
        println!(
            "pending      {} awaits its certificate (key {:?})",
            pending.name, pending.key_label
        );
    }
    Ok(())
}

fn scheduled_list(config: &Config) -> Result<(), CliError> {
    let (_scratch, store) = open_store_for_reading(config)?;
    let all = crate::ca::schedule::list(&store)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "scheduled": all }))?
    );
    Ok(())
}

/// `sceau ra bootstrap`: the scope (every policy when none is named), then the action.
fn ra_bootstrap(
    config: &Config,
    card: String,
    organizations: Vec<String>,
    units: Vec<String>,
    policies: Vec<String>,
) -> Result<(), CliError> {
    let policies = if policies.is_empty() {
        PolicySet::load_dir(&config.policies_dir)?
            .names()
            .map(str::to_owned)
            .collect()
    } else {
        policies
    };
    let scope = crate::ra::operators::Scope {
        organizations: organizations.into_iter().collect(),
        units: units.into_iter().collect(),
        policies: policies.into_iter().collect(),
    };
    actions::ra_bootstrap(config, crate::service::wire::BootstrapBody { card, scope })
}

fn cert_show(config: &Config, serial: &str) -> Result<(), CliError> {
    let serial = crate::x509::Serial::from_hex(serial).context(|| format!("serial {serial:?}"))?;
    let (_scratch, store) = open_store_for_reading(config)?;
    let info = ca::lookup(&store, &serial)?;
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

/// The public key of the audit key in the HSM, when the token can be opened from here and
/// holds it (`None` otherwise: the anchor file is then the only reference).
fn audit_key_in_hsm(config: &Config) -> Option<spki::SubjectPublicKeyInfoOwned> {
    let hsm = open_hsm(config).ok()?;
    if !hsm.has_key(&config.keys.audit).ok()? {
        return None;
    }
    let key = hsm
        .signing_key(&config.keys.audit, crate::hsm::KeySpec::P256.scheme(false))
        .ok()?;
    Some(key.public_key().clone())
}

/// The audit key's public key kept outside the store (`--anchor FILE`, PEM).
fn read_anchor(path: &Path) -> Result<spki::SubjectPublicKeyInfoOwned, CliError> {
    let text = std::fs::read_to_string(path)
        .context(|| format!("reading the audit anchor {}", path.display()))?;
    let der = crate::x509::pem::decode_pem_or_der(text.as_bytes(), &["PUBLIC KEY"])
        .context_as(Failure::Data, || {
            format!("{}: not a PEM public key", path.display())
        })?;
    <spki::SubjectPublicKeyInfoOwned as der::Decode>::from_der(&der)
        .context(|| format!("{}: not a public key", path.display()))
}

fn audit_verify(config: &Config, anchor: Option<&Path>, expect: &[String]) -> Result<(), CliError> {
    let (_scratch, store) = open_store_for_reading(config)?;
    let entries = store
        .audit_entries()?
        .collect::<Result<Vec<_>, _>>()
        .context(|| "reading the audit log".into())?;
    let head = store.audit_head();
    let recorded = audit::checkpoint::recorded_key(&store)?;
    let key = match anchor {
        Some(path) => {
            let anchor = read_anchor(path)?;
            if recorded.as_ref() != Some(&anchor) {
                return Err(CliError::data(format!(
                    "the audit key recorded in the store is not the anchor {}: the store's key was replaced",
                    path.display()
                )));
            }
            // The HSM's key too, when the token can be reached from here.
            if let Some(in_hsm) = audit_key_in_hsm(config)
                && in_hsm != anchor
            {
                return Err(CliError::data(format!(
                    "the audit key {:?} in the HSM is not the anchor {}",
                    config.keys.audit,
                    path.display()
                )));
            }
            Some(anchor)
        }
        None => recorded,
    };
    for expected in expect {
        let (seq, hash) = expected
            .split_once(':')
            .and_then(|(s, h)| Some((s.parse::<u64>().ok()?, h.to_ascii_lowercase())))
            .ok_or_else(|| CliError::usage(format!("--expect {expected:?}: SEQ:HASH")))?;
        let stored = store.get::<crate::store::schema::Audit>(&seq)?;
        let found = stored
            .as_deref()
            .and_then(|s| audit::decode(s).ok())
            .map(|(h, _)| hex::encode(h));
        if found.is_none() && seq > head.seq {
            return Err(CliError::data(format!(
                "audit entries {}..={seq} were cut: the journal recorded entry {seq} (hash {hash}) but the log ends at entry {}",
                head.seq + 1,
                head.seq
            )));
        }
        if found.as_deref() != Some(hash.as_str()) {
            return Err(CliError::data(format!(
                "audit entry {seq} is {} (the journal recorded hash {hash}): the log was cut or rewritten from there",
                if found.is_some() {
                    "different"
                } else {
                    "missing"
                }
            )));
        }
    }
    let verified = audit::verify_chain(entries, head, key.as_ref())?;
    println!(
        "audit log verified: {} entries, {} signed checkpoints, head {}",
        verified.entries,
        verified.checkpoints,
        hex::encode(head.hash)
    );
    // What no checkpoint vouches for yet: a cut there shows only against the journal's copy.
    match verified.last_checkpoint {
        Some((entry, vouched)) => println!(
            "last checkpoint: entry {entry}, vouching for entries 1..={vouched}; {} entries after it are not yet signed (check the journal's checkpoints with --expect SEQ:HASH)",
            verified.entries - entry
        ),
        None => println!("no signed checkpoint yet"),
    }
    Ok(())
}

fn audit_export(config: &Config, out: Option<&Path>) -> Result<(), CliError> {
    let (_scratch, store) = open_store_for_reading(config)?;
    let mut writer: Box<dyn Write> = match out {
        Some(path) => {
            Box::new(std::fs::File::create(path).context(|| format!("--out {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    for entry in store.audit_entries()? {
        let (_, stored) = entry?;
        let (hash, record) = audit::decode(&stored).map_err(CliError::data)?;
        let mut line = serde_json::to_value(&record)?;
        if let Some(object) = line.as_object_mut() {
            object.insert("hash".into(), serde_json::Value::String(hex::encode(hash)));
        }
        serde_json::to_writer(&mut writer, &line)?;
        writer.write_all(b"\n")?;
    }
    Ok(())
}

fn check(config: &Config) -> Result<(), CliError> {
    let policies = PolicySet::load_dir(&config.policies_dir)?;
    println!("configuration {}: ok", config.path.display());
    println!(
        "policies: {}",
        policies.names().collect::<Vec<_>>().join(", ")
    );
    let (ca, hsm) = open_ca(config)?;
    println!(
        "HSM token {:?}: logged in; {}",
        config.hsm.token_label,
        serde_json::to_string(&hsm.status())?
    );
    println!(
        "issuing CA {}: key {:?} matches its certificate",
        ca.issuer().name,
        ca.issuer().key.label()
    );
    let orphans = ca::ceremony_intent::orphan_key_labels(ca.store())?;
    if orphans.is_empty() {
        println!("orphan keys: none");
    } else {
        // Announced by an interrupted ceremony: made or not, never used by a CA.
        let described: Vec<String> = orphans
            .iter()
            .map(|label| match hsm.has_key(label) {
                Ok(true) => format!("{label} (in the token: the ceremony destroy-key destroys it)"),
                Ok(false) => format!("{label} (never made, or already destroyed)"),
                Err(error) => format!("{label} ({error})"),
            })
            .collect();
        println!(
            "orphan keys of interrupted ceremonies (used by no CA): {}",
            described.join(", ")
        );
    }
    use ca::ceremony::control::DualControl;
    match ca::ceremony::control::dual_control(ca.store())? {
        Some(DualControl::Officers(set)) => println!(
            "key ceremonies: approved by {} of {} security officers",
            set.quorum,
            set.officers.iter().filter(|o| o.active).count()
        ),
        Some(DualControl::SinglePerson { declared_at }) => println!(
            "key ceremonies: WITHOUT DUAL CONTROL since {declared_at} (development and tests only: one person runs every key operation)"
        ),
        None => {
            println!("key ceremonies: no dual control declared (a store made before it existed)")
        }
    }
    Ok(())
}
