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
mod tables;
use raw::RawConfig;

use crate::hsm::{HsmSettings, KeySpec};
use crate::x509::name::DistinguishedName;

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
    /// SHA-256 of the file as it was read: a ceremony's proposal names it, so that the
    /// configuration its operation reads (token, names, URLs, validity) is the one the officers
    /// approved.
    pub source_sha256: [u8; 32],
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
    /// Notices by webhook and e-mail (`[notices]`, src/notices); none: no notices.
    pub notices: Option<NoticesConfig>,
}

/// `[notices]`: where notices go and when they are due.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticesConfig {
    /// `http://` URLs that receive each notice as a JSON POST.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// An SMTP relay, `host:port` (plain SMTP, no authentication).
    #[serde(default)]
    pub smtp_relay: Option<String>,
    #[serde(default = "default_smtp_from")]
    pub smtp_from: String,
    #[serde(default)]
    pub smtp_to: Vec<String>,
    /// A request still pending after this many hours is notified again.
    #[serde(default = "default_still_waiting_hours")]
    pub still_waiting_hours: u64,
    /// Cards whose certificates end within these many days are notified, once a window.
    #[serde(default = "default_expiry_days")]
    pub expiry_days: Vec<u32>,
    /// How often pending requests and expiring cards are looked for (the audit log is read
    /// every second).
    #[serde(default = "default_scan_every_seconds")]
    pub scan_every_seconds: u32,
}

fn default_scan_every_seconds() -> u32 {
    60
}

fn default_smtp_from() -> String {
    "sceau@localhost".into()
}

fn default_still_waiting_hours() -> u64 {
    24
}

fn default_expiry_days() -> Vec<u32> {
    vec![90, 60, 30]
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
    /// The object store of status snapshots for new nodes (its own: only the publisher's
    /// snapshot task writes it, and a node that does not know snapshots never reads it).
    #[serde(default = "default_snapshot_bucket")]
    pub snapshot_bucket: String,
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

fn default_snapshot_bucket() -> String {
    "sceau-snapshots".into()
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
        let paths = Paths {
            file,
            base: file.base_dir(),
        };
        let (hsm, module_env) = tables::hsm(&paths, &raw.hsm)?;
        let (root, issuing, ocsp_responder) = tables::cas(file, &raw)?;
        let (ocsp, crl) = tables::ocsp_and_crl(file, &raw)?;
        Ok(Config {
            path: file.path().to_path_buf(),
            source_sha256: crate::x509::keys::sha256(file.text().as_bytes()),
            data_dir: paths.resolve(&raw.data_dir, "data_dir")?,
            publish_dir: paths.resolve(&raw.publish_dir, "publish_dir")?,
            policies_dir: paths.resolve(&raw.policies_dir, "policies_dir")?,
            hsm,
            module_env,
            keys: tables::keys(file, &raw.keys)?,
            root,
            issuing,
            ocsp_responder,
            urls: tables::urls(file, &raw.urls)?,
            listen: tables::listen(file, &raw.listen)?,
            ocsp,
            crl,
            ra: raw.ra.as_ref().map(|r| tables::ra(&paths, r)).transpose()?,
            nats: raw
                .nats
                .as_ref()
                .map(|n| tables::nats(file, n))
                .transpose()?,
            backup: raw
                .backup
                .as_ref()
                .map(|b| tables::backup(&paths, b))
                .transpose()?,
            notices: raw
                .notices
                .as_ref()
                .map(|n| tables::notices(file, n))
                .transpose()?,
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

/// Paths in the file resolve against its directory.
struct Paths<'a> {
    file: &'a SourceFile,
    base: PathBuf,
}

impl Paths<'_> {
    /// `value` resolved (see [`tables::resolve_path`]); an empty value is refused.
    fn resolve(&self, value: &Spanned<String>, key: &str) -> Result<PathBuf, LoadError> {
        if value.get_ref().trim().is_empty() {
            return Err(self.file.error(value.span(), key, "must not be empty"));
        }
        Ok(tables::resolve_path(&self.base, value.get_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::PinSource;

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

    /// The example configuration with `line` added to its `[hsm]` table.
    fn with_hsm_line(line: &str) -> Result<Config, LoadError> {
        let text = EXAMPLE.replacen(
            "token_label = \"sceau-dev\"",
            &format!("token_label = \"sceau-dev\"\n{line}"),
            1,
        );
        Config::from_source(&SourceFile::from_text(Path::new("c.toml"), &text))
    }

    /// The parameters a module reads in `C_Initialize` are passed as written, and an empty
    /// string is refused (a module would read "no configuration" where one was meant).
    #[test]
    fn module_parameters_are_kept_and_an_empty_string_is_refused() {
        let with = |value: &str| with_hsm_line(&format!("module_parameters = \"{value}\""));
        let config = with("configdir='sql:/x' flags=").unwrap();
        assert_eq!(
            config.hsm.module_parameters.as_deref(),
            Some("configdir='sql:/x' flags=")
        );
        let err = with("").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("hsm.module_parameters"), "{err}");
    }

    /// A token serial, when given, names one token: an empty one is refused by its key.
    #[test]
    fn an_empty_token_serial_is_refused_and_a_serial_is_kept() {
        let with = |value: &str| with_hsm_line(&format!("token_serial = \"{value}\""));
        let config = with("0123abcd").unwrap();
        assert_eq!(config.hsm.token_serial.as_deref(), Some("0123abcd"));
        let err = with("").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("hsm.token_serial"), "{err}");
    }

    /// `[notices]`: garbage is refused, naming its key; a good table is kept.
    #[test]
    fn notices_are_checked_key_by_key() {
        let load = |table: &str| {
            let text = format!("{EXAMPLE}\n[notices]\n{table}\n");
            let file = SourceFile::from_text(Path::new("c.toml"), &text);
            Config::from_source(&file)
        };
        for (table, key) in [
            ("", "notices"),
            (
                "webhooks = [\"https://hooks.example/x\"]",
                "notices.webhooks",
            ),
            ("webhooks = [\"not a url\"]", "notices.webhooks"),
            ("smtp_relay = \"127.0.0.1:25\"", "notices.smtp_to"),
            (
                "smtp_relay = \"127.0.0.1:25\"\nsmtp_to = [\"a@b\\r\\nRCPT TO:<x@y>\"]",
                "notices.smtp_to",
            ),
            (
                "webhooks = [\"http://127.0.0.1:9/\"]\nexpiry_days = [0]",
                "notices.expiry_days",
            ),
            (
                "webhooks = [\"http://127.0.0.1:9/\"]\nsmtp_from = \"a b@c\"",
                "notices.smtp_from",
            ),
            (
                "smtp_relay = \"localhost\"\nsmtp_to = [\"a@b\"]",
                "notices.smtp_relay",
            ),
            (
                "webhooks = [\"http://127.0.0.1:9/\"]\nstill_waiting_hours = 10000000",
                "notices.still_waiting_hours",
            ),
        ] {
            let err = load(table).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{table}: {err}");
        }
        // An unknown key is refused too (serde names it).
        let err = load("webhooks = [\"http://127.0.0.1:9/\"]\ncolour = 1").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let config = load("webhooks = [\"http://127.0.0.1:9/\"]").unwrap();
        let notices = config.notices.unwrap();
        assert_eq!(notices.expiry_days, [90, 60, 30]);
        assert_eq!(notices.still_waiting_hours, 24);
    }

    /// Each bucket name is checked, and a bad one is named by its own key.
    #[test]
    fn a_bad_bucket_name_names_its_key() {
        for key in ["status_bucket", "files_bucket", "snapshot_bucket"] {
            let text = format!(
                "{EXAMPLE}\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n{key} = \"a.b\"\n"
            );
            let file = SourceFile::from_text(Path::new("c.toml"), &text);
            let err = Config::from_source(&file).unwrap_err();
            assert_eq!(
                err.key.as_deref(),
                Some(format!("nats.{key}").as_str()),
                "{err}"
            );
            assert!(err.message.contains("\"a.b\""), "{err}");
        }
        let text = format!("{EXAMPLE}\n[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n");
        let config =
            Config::from_source(&SourceFile::from_text(Path::new("c.toml"), &text)).unwrap();
        assert!(config.nats.is_some());
    }

    /// `pin_split`: true alone; false, a string, or beside a PIN source refused, naming it.
    #[test]
    fn a_split_pin_has_no_other_source() {
        let load =
            |text: &str| Config::from_source(&SourceFile::from_text(Path::new("c.toml"), text));
        let split = EXAMPLE.replace("pin_file = \"../var/pin\"", "pin_split = true");
        assert_ne!(split, EXAMPLE);
        let config = load(&split).unwrap();
        assert!(matches!(config.hsm.pin, PinSource::Split(_)));
        for (text, expected) in [
            (
                EXAMPLE.replace("pin_file = \"../var/pin\"", "pin_split = false"),
                "pin_split",
            ),
            (
                EXAMPLE.replace("pin_file = \"../var/pin\"", "pin_split = \"yes\""),
                "pin_split",
            ),
            (
                EXAMPLE.replace("pin_file = ", "pin_split = true\npin_file = "),
                "remove pin_file",
            ),
        ] {
            let err = load(&text).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn the_pin_can_never_be_in_the_file() {
        let text = EXAMPLE.replace("pin_file = ", "pin = ");
        let file = SourceFile::from_text(Path::new("c.toml"), &text);
        let err = Config::from_source(&file).unwrap_err();
        assert!(err.message.contains("pin"), "{err}");
    }
}
