//! The daemon's configuration: one TOML file, validated when loaded.
//!
//! Unknown keys are refused, and every error names the file, the line and the key. Relative
//! paths are resolved against the directory of the configuration file, so that
//! `config/sceau.toml` works from any working directory. The PIN is never in this file: it comes
//! from a file or an environment variable (see [`crate::hsm::PinSource`]).

pub mod source;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

pub use source::{LoadError, SourceFile};

mod raw;
use raw::*;

use crate::hsm::{HsmSettings, KeySpec, PinSource};
use crate::x509::name::{Attribute, DistinguishedName};

/// "0002 " followed by a SIREN (9 digits) or a SIRET (14 digits): ISO 6523 ICD 0002
/// (RGS A4 VII.1). The rule of the policies' organizational units too (`policy` re-exports it).
pub fn is_siren_unit(value: &str) -> bool {
    value.strip_prefix("0002 ").is_some_and(|id| {
        (id.len() == 9 || id.len() == 14) && id.chars().all(|c| c.is_ascii_digit())
    })
}

/// Where `sceau` looks for its configuration when neither `-c` nor `SCEAU_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/sceau/sceau.toml";

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// RocksDB store and the certificates written by `sceau init`.
    pub data_dir: PathBuf,
    /// Where CRLs are written for a web server or CDN.
    pub publish_dir: PathBuf,
    pub policies_dir: PathBuf,
    pub hsm: HsmSettings,
    /// Environment the PKCS#11 module reads (e.g. SOFTHSM2_CONF), applied before it is loaded.
    pub module_env: BTreeMap<String, String>,
    pub keys: KeysConfig,
    pub root: CaConfig,
    pub issuing: CaConfig,
    pub ocsp_responder: ResponderConfig,
    pub urls: PublishedUrls,
    pub listen: ListenConfig,
    pub ocsp: OcspConfig,
    pub crl: CrlConfig,
    /// The registration authority listener; absent: not served.
    pub ra: Option<RaConfig>,
    /// The engine responder nodes read the status from (`[nats]`); none: no publication.
    pub nats: Option<NatsConfig>,
    /// Scheduled backups (`[backup]`); none: only `sceau backup`.
    pub backup: Option<BackupConfig>,
}

/// Scheduled backups (`[backup]`): every `every_hours`, into a new directory of `dir` named by
/// its UTC time, checked after it is written; the `keep` newest are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupConfig {
    pub dir: PathBuf,
    pub every_hours: u64,
    pub keep: usize,
}

/// NATS JetStream, where the CA host publishes what responder nodes serve (`[nats]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs, e.g. `["nats://10.0.0.5:4222", "nats://10.0.0.6:4222"]`.
    pub servers: Vec<String>,
    /// The key-value bucket of certificate status (key `<issuer>.<serial>`).
    #[serde(default = "default_status_bucket")]
    pub status_bucket: String,
    /// The object store of CRLs and CA certificates.
    #[serde(default = "default_files_bucket")]
    pub files_bucket: String,
    /// Copies of each bucket in the cluster (1 to 5).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// A NATS credentials file (JWT and NKey seed).
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// CA certificates to trust for TLS to the servers (TLS is then required).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Health says "degraded" when what changed has waited longer than this to be published.
    #[serde(default = "default_lag_alert")]
    pub lag_alert_seconds: u64,
}

fn default_status_bucket() -> String {
    "sceau-status".into()
}

fn default_files_bucket() -> String {
    "sceau-files".into()
}

fn default_replicas() -> usize {
    1
}

fn default_lag_alert() -> u64 {
    30
}

/// The registration authority (`[ra]`).
#[derive(Debug, Clone)]
pub struct RaConfig {
    /// The listener's TLS certificate chain and private key (PEM files).
    pub tls_certificate: PathBuf,
    pub tls_private_key: PathBuf,
    /// How far a signed request's `time` may be from the CA's clock.
    pub time_window_seconds: u64,
    /// Per-operator rate limit.
    pub requests_per_minute: u32,
    pub burst: u32,
    /// The policies of a card's two certificates.
    pub authentication_policy: String,
    pub signature_policy: String,
}

/// The OCSP responder (all optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcspConfig {
    /// nextUpdate - thisUpdate; responses are re-signed after half of it (RFC 9919;
    /// docs/design.md#ocsp-responses: at most 24 h).
    pub validity_hours: u32,
    /// Live signatures at once (nonce requests, several CertIDs, unknown serials). Past it a
    /// nonce request gets the pre-signed response (RFC 9654) and the rest `tryLater`.
    pub live_signing_limit: usize,
    /// Cache-Control max-age of GET responses, never beyond nextUpdate: what an HTTP cache may
    /// keep serving after a revocation.
    pub cache_max_age_seconds: u64,
}

impl Default for OcspConfig {
    fn default() -> Self {
        Self {
            validity_hours: 24,
            live_signing_limit: 64,
            cache_max_age_seconds: 300,
        }
    }
}

/// CRL publication (all optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrlConfig {
    /// nextUpdate - thisUpdate (RGS ***: publication interval + 2 h).
    pub next_update_hours: u32,
    /// Regenerate at least this often.
    pub interval_hours: u32,
    /// After a revocation, wait this long so that a burst of revocations makes one CRL.
    pub coalesce_seconds: u64,
    /// nextUpdate - thisUpdate of the root's ARL (at most a year, EN 319 411-1 CSS-6.3.9-13).
    pub arl_next_update_days: u32,
}

impl Default for CrlConfig {
    fn default() -> Self {
        Self {
            next_update_hours: 26,
            interval_hours: 6,
            coalesce_seconds: 2,
            arl_next_update_days: 30,
        }
    }
}

/// Labels and algorithms of the CA's keys in the HSM.
#[derive(Debug, Clone)]
pub struct KeysConfig {
    pub root: KeyConfig,
    pub issuing: KeyConfig,
    pub ocsp: KeyConfig,
    /// The P-256 key that signs audit checkpoints (made when first needed).
    pub audit: String,
    /// RSA keys sign with RSASSA-PSS instead of PKCS#1 v1.5.
    pub rsa_pss: bool,
}

#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub label: String,
    pub algorithm: KeySpec,
}

/// A CA certificate to create at the key ceremony.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Short name, used for file names and URLs (`racine`, `ac-agents`).
    pub name: String,
    pub subject: DistinguishedName,
    pub validity_years: u16,
}

/// The delegated OCSP responder certificate.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    pub subject: DistinguishedName,
    pub validity_days: u32,
}

/// URLs written inside certificates. They must be public names (docs/design.md#conformance):
/// they are what relying parties fetch, not where this process listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedUrls {
    /// The issuing CA's CRL (CRL distribution point of holder certificates).
    pub crl: String,
    /// The root's ARL (CRL distribution point of the issuing CA certificate).
    pub arl: String,
    /// The OCSP responder (AIA of holder certificates).
    pub ocsp: String,
    /// The issuing CA certificate (AIA caIssuers of holder certificates).
    pub ca_issuers: String,
    /// The root certificate (AIA caIssuers of the issuing CA certificate).
    pub root_ca_issuers: String,
    /// The certification practice statement (CPS qualifier of certificatePolicies).
    pub cps: String,
}

impl PublishedUrls {
    /// The URLs of a later generation of a CA (after `sceau ca rotate`): each CA publishes its
    /// CRL and certificate under its own name, so the configured `crl` and `ca_issuers` URLs
    /// (written for the first issuing CA, `first`) get `name` in place of `first` in their
    /// last path segment. URLs already in certificates never change meaning.
    pub fn for_ca(&self, first: &str, name: &str) -> Result<PublishedUrls, String> {
        Ok(PublishedUrls {
            crl: renamed("crl", &self.crl, first, name)?,
            ca_issuers: renamed("ca_issuers", &self.ca_issuers, first, name)?,
            ..self.clone()
        })
    }

    /// The same for a later generation of the root: its ARL and certificate URLs.
    pub fn for_root(&self, first: &str, name: &str) -> Result<PublishedUrls, String> {
        Ok(PublishedUrls {
            arl: renamed("arl", &self.arl, first, name)?,
            root_ca_issuers: renamed("root_ca_issuers", &self.root_ca_issuers, first, name)?,
            ..self.clone()
        })
    }
}

/// `url` with the file stem `first` of its last path segment replaced by `name`.
fn renamed(field: &str, url: &str, first: &str, name: &str) -> Result<String, String> {
    if first == name {
        return Ok(url.to_owned());
    }
    let (directory, file) = url.rsplit_once('/').unwrap_or(("", url));
    match file.strip_prefix(first) {
        Some(extension) if extension.is_empty() || extension.starts_with('.') => {
            Ok(format!("{directory}/{name}{extension}"))
        }
        _ => Err(format!(
            "[urls] {field} = {url:?} does not end with the CA name {first:?}: the URL of {name:?} cannot be derived from it"
        )),
    }
}

/// Listener addresses (overridable on the command line).
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Public validation listener: OCSP, CRLs, CA certificates.
    pub va: SocketAddr,
    /// Registration authority listener (mutual TLS).
    pub ra: SocketAddr,
    /// Administration: health, metrics, local commands.
    pub admin: SocketAddr,
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let file = SourceFile::read(path)?;
        Self::from_source(&file)
    }

    pub fn from_source(file: &SourceFile) -> Result<Self, LoadError> {
        let raw: RawConfig = file.parse()?;
        let base = file.base_dir();
        let resolve = |value: &Spanned<String>, key: &str| -> Result<PathBuf, LoadError> {
            if value.get_ref().trim().is_empty() {
                return Err(file.error(value.span(), key, "must not be empty"));
            }
            Ok(resolve_path(&base, value.get_ref()))
        };

        let hsm = &raw.hsm;
        let pin = match (&hsm.pin_file, &hsm.pin_env, &hsm.pin_credential) {
            (Some(path), None, None) => PinSource::File(resolve(path, "hsm.pin_file")?),
            (None, Some(name), None) => {
                if name.get_ref().is_empty() || name.get_ref().contains('=') {
                    return Err(file.error(
                        name.span(),
                        "hsm.pin_env",
                        "not a valid environment variable name",
                    ));
                }
                PinSource::Env(name.get_ref().clone())
            }
            (None, None, Some(name)) => {
                let valid = !name.get_ref().is_empty()
                    && name
                        .get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !valid {
                    return Err(file.error(
                        name.span(),
                        "hsm.pin_credential",
                        "a credential name (letters, digits, - _ .), as in LoadCredential=NAME:FILE",
                    ));
                }
                PinSource::Credential(name.get_ref().clone())
            }
            (None, None, None) => {
                return Err(file.file_error(
                    Some("hsm"),
                    "the PIN source is missing: set pin_file, pin_env or pin_credential (never the PIN itself)",
                ));
            }
            _ => {
                return Err(file.file_error(
                    Some("hsm"),
                    "give one of pin_file, pin_env and pin_credential",
                ));
            }
        };
        if !(1..=64).contains(hsm.sessions.get_ref()) {
            return Err(file.error(
                hsm.sessions.span(),
                "hsm.sessions",
                "must be between 1 and 64",
            ));
        }
        if !(1..=1_000_000).contains(hsm.queue.get_ref()) {
            return Err(file.error(
                hsm.queue.span(),
                "hsm.queue",
                "must be between 1 and 1000000",
            ));
        }
        non_empty(file, &hsm.token_label, "hsm.token_label")?;
        let mut module_env = BTreeMap::new();
        for (name, value) in &hsm.module_env {
            let resolved =
                if value.get_ref().starts_with("./") || value.get_ref().starts_with("../") {
                    resolve_path(&base, value.get_ref()).display().to_string()
                } else {
                    value.get_ref().clone()
                };
            module_env.insert(name.clone(), resolved);
        }
        let hsm_settings = HsmSettings {
            module: resolve(&hsm.module, "hsm.module")?,
            token_label: hsm.token_label.get_ref().clone(),
            pin,
            sessions: *hsm.sessions.get_ref(),
            queue_capacity: *hsm.queue.get_ref(),
        };

        let key = |raw: &RawKey, name: &str| -> Result<KeyConfig, LoadError> {
            non_empty(file, &raw.label, &format!("keys.{name}.label"))?;
            Ok(KeyConfig {
                label: raw.label.get_ref().clone(),
                algorithm: *raw.algorithm.get_ref(),
            })
        };
        let keys = KeysConfig {
            root: key(&raw.keys.root, "root")?,
            issuing: key(&raw.keys.issuing, "issuing")?,
            ocsp: key(&raw.keys.ocsp, "ocsp")?,
            audit: match &raw.keys.audit {
                Some(audit) => {
                    if *audit.algorithm.get_ref() != KeySpec::P256 {
                        return Err(file.error(
                            audit.algorithm.span(),
                            "keys.audit.algorithm",
                            "the audit checkpoint key is p256",
                        ));
                    }
                    key(audit, "audit")?.label
                }
                None => "sceau-audit".to_owned(),
            },
            rsa_pss: raw.keys.rsa_pss,
        };
        let labels = [
            &keys.root.label,
            &keys.issuing.label,
            &keys.ocsp.label,
            &keys.audit,
        ];
        let distinct: std::collections::BTreeSet<_> = labels.iter().collect();
        if distinct.len() != labels.len() {
            return Err(file.file_error(
                Some("keys"),
                "the root, issuing, ocsp and audit keys need four different labels",
            ));
        }
        if matches!(keys.ocsp.algorithm, KeySpec::Rsa4096) {
            return Err(file.error(
                raw.keys.ocsp.algorithm.span(),
                "keys.ocsp.algorithm",
                "the OCSP signer is p256, p384 or rsa3072",
            ));
        }

        let root = ca_config(file, &raw.root, "root", 1..=40)?;
        let issuing = ca_config(file, &raw.issuing, "issuing", 4..=30)?;
        if issuing.validity_years >= root.validity_years {
            return Err(file.error(
                raw.issuing.validity_years.span(),
                "issuing.validity_years",
                "the issuing CA must expire before the root",
            ));
        }
        if root.name == issuing.name {
            return Err(file.error(
                raw.issuing.name.span(),
                "issuing.name",
                "must differ from root.name",
            ));
        }
        let days = *raw.ocsp_responder.validity_days.get_ref();
        if !(1..=92).contains(&days) {
            return Err(file.error(
                raw.ocsp_responder.validity_days.span(),
                "ocsp_responder.validity_days",
                "must be between 1 and 92 (RFC 9919: short-lived, renewed regularly)",
            ));
        }
        let ocsp_responder = ResponderConfig {
            subject: subject(file, &raw.ocsp_responder.subject, "ocsp_responder.subject")?,
            validity_days: days,
        };

        let u = &raw.urls;
        let urls = PublishedUrls {
            crl: url(file, &u.crl, "urls.crl", &["http"])?,
            arl: url(file, &u.arl, "urls.arl", &["http"])?,
            ocsp: url(file, &u.ocsp, "urls.ocsp", &["http"])?,
            ca_issuers: url(file, &u.ca_issuers, "urls.ca_issuers", &["http"])?,
            root_ca_issuers: url(file, &u.root_ca_issuers, "urls.root_ca_issuers", &["http"])?,
            cps: url(file, &u.cps, "urls.cps", &["http", "https"])?,
        };

        let address = |value: &Spanned<String>, key: &str| -> Result<SocketAddr, LoadError> {
            value
                .get_ref()
                .parse()
                .map_err(|_| file.error(value.span(), key, "not an address such as 127.0.0.1:8080"))
        };
        let listen = ListenConfig {
            va: address(&raw.listen.va, "listen.va")?,
            ra: address(&raw.listen.ra, "listen.ra")?,
            admin: address(&raw.listen.admin, "listen.admin")?,
        };

        let ocsp = raw.ocsp.get_ref().clone();
        if !(1..=168).contains(&ocsp.validity_hours) || ocsp.live_signing_limit == 0 {
            return Err(file.error(
                raw.ocsp.span(),
                "ocsp",
                "validity_hours is 1 to 168 and live_signing_limit at least 1",
            ));
        }
        let crl = raw.crl.get_ref().clone();
        if crl.next_update_hours <= crl.interval_hours
            || crl.interval_hours == 0
            || crl.interval_hours > 24
        {
            return Err(file.error(
                raw.crl.span(),
                "crl",
                "interval_hours is 1 to 24 (RGS ***: a CRL at least every 24 h) and next_update_hours longer than it",
            ));
        }
        if !(1..=365).contains(&crl.arl_next_update_days) {
            return Err(file.error(
                raw.crl.span(),
                "crl.arl_next_update_days",
                "1 to 365 (an ARL at least yearly)",
            ));
        }

        let ra = match &raw.ra {
            None => None,
            Some(r) => {
                if !(10..=3600).contains(r.time_window_seconds.get_ref()) {
                    return Err(file.error(
                        r.time_window_seconds.span(),
                        "ra.time_window_seconds",
                        "must be between 10 and 3600",
                    ));
                }
                if *r.requests_per_minute.get_ref() == 0 || *r.burst.get_ref() == 0 {
                    return Err(file.error(
                        r.requests_per_minute.span(),
                        "ra.requests_per_minute",
                        "requests_per_minute and burst must be at least 1",
                    ));
                }
                non_empty(file, &r.authentication_policy, "ra.authentication_policy")?;
                non_empty(file, &r.signature_policy, "ra.signature_policy")?;
                Some(RaConfig {
                    tls_certificate: resolve(&r.tls_certificate, "ra.tls_certificate")?,
                    tls_private_key: resolve(&r.tls_private_key, "ra.tls_private_key")?,
                    time_window_seconds: *r.time_window_seconds.get_ref(),
                    requests_per_minute: *r.requests_per_minute.get_ref(),
                    burst: *r.burst.get_ref(),
                    authentication_policy: r.authentication_policy.get_ref().clone(),
                    signature_policy: r.signature_policy.get_ref().clone(),
                })
            }
        };

        let nats = match &raw.nats {
            None => None,
            Some(spanned) => {
                let nats = spanned.get_ref();
                if nats.servers.is_empty() {
                    return Err(file.error(
                        spanned.span(),
                        "nats.servers",
                        "name at least one server",
                    ));
                }
                if !(1..=5).contains(&nats.replicas) {
                    return Err(file.error(spanned.span(), "nats.replicas", "1 to 5"));
                }
                let bucket_name = |name: &str| {
                    !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                };
                if !bucket_name(&nats.status_bucket) || !bucket_name(&nats.files_bucket) {
                    return Err(file.error(
                        spanned.span(),
                        "nats.status_bucket",
                        "bucket names are letters, digits, - and _",
                    ));
                }
                Some(nats.clone())
            }
        };

        let backup = match &raw.backup {
            None => None,
            Some(b) => {
                if !(1..=24 * 31).contains(b.every_hours.get_ref()) {
                    return Err(file.error(b.every_hours.span(), "backup.every_hours", "1 to 744"));
                }
                if *b.keep.get_ref() == 0 {
                    return Err(file.error(b.keep.span(), "backup.keep", "at least 1"));
                }
                Some(BackupConfig {
                    dir: resolve(&b.dir, "backup.dir")?,
                    every_hours: *b.every_hours.get_ref(),
                    keep: *b.keep.get_ref(),
                })
            }
        };

        Ok(Config {
            path: file.path().to_path_buf(),
            data_dir: resolve(&raw.data_dir, "data_dir")?,
            publish_dir: resolve(&raw.publish_dir, "publish_dir")?,
            policies_dir: resolve(&raw.policies_dir, "policies_dir")?,
            hsm: hsm_settings,
            module_env,
            keys,
            root,
            issuing,
            ocsp_responder,
            urls,
            listen,
            ocsp,
            crl,
            ra,
            nats,
            backup,
        })
    }

    /// The RocksDB directory.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// Where `sceau init` writes the CA certificates.
    pub fn certs_dir(&self) -> PathBuf {
        self.data_dir.join("certs")
    }
}

/// `value` if absolute, else `base/value`, with `.` and `..` resolved lexically (so that
/// messages show `var/data`, not `config/../var/data`).
fn resolve_path(base: &Path, value: &str) -> PathBuf {
    use std::path::Component;
    let joined = base.join(value);
    let mut out = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn non_empty(file: &SourceFile, value: &Spanned<String>, key: &str) -> Result<(), LoadError> {
    if value.get_ref().trim().is_empty() {
        return Err(file.error(value.span(), key, "must not be empty"));
    }
    Ok(())
}

fn ca_config(
    file: &SourceFile,
    raw: &RawCa,
    table: &str,
    years: std::ops::RangeInclusive<u16>,
) -> Result<CaConfig, LoadError> {
    let name = raw.name.get_ref();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(file.error(
            raw.name.span(),
            &format!("{table}.name"),
            "letters, digits and '-' only",
        ));
    }
    if !years.contains(raw.validity_years.get_ref()) {
        return Err(file.error(
            raw.validity_years.span(),
            &format!("{table}.validity_years"),
            format!("must be between {} and {}", years.start(), years.end()),
        ));
    }
    Ok(CaConfig {
        name: name.clone(),
        subject: subject(file, &raw.subject, &format!("{table}.subject"))?,
        validity_years: *raw.validity_years.get_ref(),
    })
}

/// Checks a CA or responder subject against RGS A4 VII.1 and builds it in RGS order.
fn subject(
    file: &SourceFile,
    raw: &RawSubject,
    table: &str,
) -> Result<DistinguishedName, LoadError> {
    let country = raw.country.get_ref();
    if country.len() != 2 || !country.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(file.error(
            raw.country.span(),
            &format!("{table}.C"),
            "two upper-case letters (ISO 3166), e.g. \"FR\"",
        ));
    }
    for (value, key) in [
        (&raw.organization, "O"),
        (&raw.organizational_unit, "OU"),
        (&raw.common_name, "CN"),
    ] {
        let text = value.get_ref();
        if text.trim().is_empty() || text.chars().count() > 64 || text.chars().any(char::is_control)
        {
            return Err(file.error(
                value.span(),
                &format!("{table}.{key}"),
                "1 to 64 printable characters",
            ));
        }
    }
    if !is_siren_unit(raw.organizational_unit.get_ref()) {
        return Err(file.error(
            raw.organizational_unit.span(),
            &format!("{table}.OU"),
            "must be \"0002 \" followed by the SIREN (9 digits) or SIRET (14 digits), RGS A4 VII.1",
        ));
    }
    let mut dn = DistinguishedName::new();
    dn.push(Attribute::Country, country.clone())
        .push(Attribute::Organization, raw.organization.get_ref().clone())
        .push(
            Attribute::OrganizationalUnit,
            raw.organizational_unit.get_ref().clone(),
        );
    if let Some(id) = &raw.organization_identifier {
        if !id.get_ref().starts_with("NTRFR-") {
            return Err(file.error(
                id.span(),
                &format!("{table}.organizationIdentifier"),
                "must start with NTRFR- (EN 319 412-1)",
            ));
        }
        dn.push(Attribute::OrganizationIdentifier, id.get_ref().clone());
    }
    dn.push(Attribute::CommonName, raw.common_name.get_ref().clone());
    dn.to_der()
        .map_err(|e| file.error(raw.common_name.span(), table, e.to_string()))?;
    Ok(dn)
}

/// Checks a URL published in certificates: an allowed scheme, ASCII (it is an IA5String),
/// no spaces, and a public host name (pkilint's ETSI lints refuse localhost and addresses).
fn url(
    file: &SourceFile,
    value: &Spanned<String>,
    key: &str,
    schemes: &[&str],
) -> Result<String, LoadError> {
    let text = value.get_ref();
    let bad = |why: &str| Err(file.error(value.span(), key, why.to_owned()));
    let Some((scheme, rest)) = text.split_once("://") else {
        return bad("not a URL (scheme://host/path)");
    };
    if !schemes.contains(&scheme) {
        return bad(&format!("the scheme must be {}", schemes.join(" or ")));
    }
    if !text.is_ascii()
        || text
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return bad("must be ASCII without spaces (IA5String)");
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let looks_like_address = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
    if host.is_empty() || host == "localhost" || looks_like_address || !host.contains('.') {
        return bad(
            "needs a public DNS name that relying parties resolve (not localhost or an IP address)",
        );
    }
    Ok(text.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/sceau.toml");

    #[test]
    fn the_example_configuration_loads() {
        let file = SourceFile::from_text(Path::new("config/sceau.toml"), EXAMPLE);
        let config = Config::from_source(&file).unwrap();
        assert_eq!(config.issuing.name, "ac-agents");
        assert_eq!(config.data_dir, Path::new("var/data"));
        assert_eq!(config.policies_dir, Path::new("policies"));
        assert!(matches!(config.hsm.pin, PinSource::File(_)));
    }

    #[test]
    fn a_bad_url_names_its_line_and_key() {
        let text = EXAMPLE.replace(
            "http://ocsp.pki.justice.example.fr",
            "http://127.0.0.1:8080",
        );
        let file = SourceFile::from_text(Path::new("c.toml"), &text);
        let err = Config::from_source(&file).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("urls.ocsp"));
        let line = text
            .lines()
            .position(|l| l.contains("127.0.0.1:8080"))
            .unwrap()
            + 1;
        assert_eq!(err.line, Some(line), "{err}");
    }

    #[test]
    fn the_pin_can_never_be_in_the_file() {
        let text = EXAMPLE.replace("pin_file = ", "pin = ");
        let file = SourceFile::from_text(Path::new("c.toml"), &text);
        let err = Config::from_source(&file).unwrap_err();
        assert!(err.message.contains("pin"), "{err}");
    }
}
