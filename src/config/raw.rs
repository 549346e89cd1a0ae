//! The configuration file as TOML gives it: every value with its place in the file, so that an error can name the line (checked and turned into [`super::Config`] there).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{CrlConfig, NatsConfig, OcspConfig};
use crate::hsm::KeySpec;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) data_dir: Spanned<String>,
    pub(super) publish_dir: Spanned<String>,
    pub(super) policies_dir: Spanned<String>,
    pub(super) hsm: RawHsm,
    pub(super) keys: RawKeys,
    pub(super) root: RawCa,
    pub(super) issuing: RawCa,
    pub(super) ocsp_responder: RawResponder,
    pub(super) urls: RawUrls,
    pub(super) listen: RawListen,
    #[serde(default = "spanned_default")]
    pub(super) ocsp: Spanned<OcspConfig>,
    #[serde(default = "spanned_default")]
    pub(super) crl: Spanned<CrlConfig>,
    #[serde(default)]
    pub(super) ra: Option<RawRa>,
    #[serde(default)]
    pub(super) nats: Option<Spanned<NatsConfig>>,
    #[serde(default)]
    pub(super) backup: Option<RawBackup>,
    #[serde(default)]
    pub(super) notices: Option<Spanned<super::NoticesConfig>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRa {
    pub(super) tls_certificate: Spanned<String>,
    pub(super) tls_private_key: Spanned<String>,
    #[serde(default = "default_window")]
    pub(super) time_window_seconds: Spanned<u64>,
    #[serde(default = "default_rate")]
    pub(super) requests_per_minute: Spanned<u32>,
    #[serde(default = "default_burst")]
    pub(super) burst: Spanned<u32>,
    #[serde(default = "default_auth_policy")]
    pub(super) authentication_policy: Spanned<String>,
    #[serde(default = "default_sign_policy")]
    pub(super) signature_policy: Spanned<String>,
}

pub(super) fn default_window() -> Spanned<u64> {
    Spanned::new(0..0, 300)
}

pub(super) fn default_rate() -> Spanned<u32> {
    Spanned::new(0..0, 120)
}

pub(super) fn default_burst() -> Spanned<u32> {
    Spanned::new(0..0, 30)
}

pub(super) fn default_auth_policy() -> Spanned<String> {
    Spanned::new(0..0, "justice-auth".into())
}

pub(super) fn default_sign_policy() -> Spanned<String> {
    Spanned::new(0..0, "justice-sign".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHsm {
    pub(super) module: Spanned<String>,
    pub(super) token_label: Spanned<String>,
    pub(super) token_serial: Option<Spanned<String>>,
    pub(super) pin_file: Option<Spanned<String>>,
    pub(super) pin_env: Option<Spanned<String>>,
    pub(super) pin_credential: Option<Spanned<String>>,
    /// `pin_split = true`: the PIN is split among the security officers (`sceau unseal`).
    pub(super) pin_split: Option<Spanned<bool>>,
    #[serde(default = "default_sessions")]
    pub(super) sessions: Spanned<usize>,
    #[serde(default = "default_queue")]
    pub(super) queue: Spanned<usize>,
    #[serde(default)]
    pub(super) module_env: BTreeMap<String, Spanned<String>>,
    pub(super) module_parameters: Option<Spanned<String>>,
}

/// A table left out of the file: its defaults, pointing at the start of the file.
pub(super) fn spanned_default<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

pub(super) fn default_sessions() -> Spanned<usize> {
    Spanned::new(0..0, 2)
}

pub(super) fn default_queue() -> Spanned<usize> {
    Spanned::new(0..0, 1024)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeys {
    pub(super) root: RawKey,
    pub(super) issuing: RawKey,
    pub(super) ocsp: RawKey,
    #[serde(default)]
    pub(super) audit: Option<RawKey>,
    #[serde(default)]
    pub(super) rsa_pss: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) label: Spanned<String>,
    pub(super) algorithm: Spanned<KeySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCa {
    pub(super) name: Spanned<String>,
    pub(super) subject: RawSubject,
    pub(super) validity_years: Spanned<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResponder {
    pub(super) subject: RawSubject,
    #[serde(default = "default_responder_days")]
    pub(super) validity_days: Spanned<u32>,
}

pub(super) fn default_responder_days() -> Spanned<u32> {
    Spanned::new(0..0, 30)
}

/// A CA subject (RGS A4 VII.1): C, O, OU "0002 <SIREN>", optional organizationIdentifier, CN.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubject {
    #[serde(rename = "C")]
    pub(super) country: Spanned<String>,
    #[serde(rename = "O")]
    pub(super) organization: Spanned<String>,
    #[serde(rename = "OU")]
    pub(super) organizational_unit: Spanned<String>,
    #[serde(rename = "organizationIdentifier", default)]
    pub(super) organization_identifier: Option<Spanned<String>>,
    #[serde(rename = "CN")]
    pub(super) common_name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUrls {
    pub(super) crl: Spanned<String>,
    pub(super) arl: Spanned<String>,
    pub(super) ocsp: Spanned<String>,
    pub(super) ca_issuers: Spanned<String>,
    pub(super) root_ca_issuers: Spanned<String>,
    pub(super) cps: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) va: Spanned<String>,
    pub(super) ra: Spanned<String>,
    pub(super) admin: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    pub(super) dir: Spanned<String>,
    #[serde(default = "default_backup_hours")]
    pub(super) every_hours: Spanned<u64>,
    #[serde(default = "default_backup_keep")]
    pub(super) keep: Spanned<usize>,
}

pub(super) fn default_backup_hours() -> Spanned<u64> {
    Spanned::new(0..0, 24)
}

pub(super) fn default_backup_keep() -> Spanned<usize> {
    Spanned::new(0..0, 7)
}
