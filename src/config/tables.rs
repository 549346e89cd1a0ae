//! Each table of the configuration file, validated on its own: what it may hold, and the error
//! (file, line, key) when it does not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use super::raw::{
    RawBackup, RawCa, RawConfig, RawHsm, RawKey, RawKeys, RawListen, RawRa, RawSubject, RawUrls,
};
use super::{
    BackupConfig, CaConfig, CrlConfig, KeyConfig, KeysConfig, ListenConfig, LoadError, NatsConfig,
    OcspConfig, Paths, PublishedUrls, RaConfig, ResponderConfig, SourceFile, is_siren_unit,
};
use crate::hsm::{HsmSettings, KeySpec, PinSource};
use crate::x509::name::{Attribute, DistinguishedName};

/// `[hsm]`: the module, the token, the PIN's source (never the PIN), the module's environment.
pub(super) fn hsm(
    paths: &Paths<'_>,
    hsm: &RawHsm,
) -> Result<(HsmSettings, BTreeMap<String, String>), LoadError> {
    let file = paths.file;
    let split = match &hsm.pin_split {
        Some(flag) if !*flag.get_ref() => {
            return Err(file.error(
                flag.span(),
                "hsm.pin_split",
                "write pin_split = true, or leave it out",
            ));
        }
        flag => flag.is_some(),
    };
    let pin = match (&hsm.pin_file, &hsm.pin_env, &hsm.pin_credential) {
        (None, None, None) if split => {
            PinSource::Split(std::sync::Arc::new(crate::hsm::PinSlot::default()))
        }
        _ if split => {
            return Err(file.file_error(
                Some("hsm"),
                "pin_split = true: the PIN is in no file and no variable; remove pin_file, pin_env and pin_credential",
            ));
        }
        (Some(path), None, None) => PinSource::File(paths.resolve(path, "hsm.pin_file")?),
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
                "the PIN source is missing: set pin_file, pin_env or pin_credential (never the PIN itself), or pin_split = true once the officers hold it",
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
    if let Some(serial) = &hsm.token_serial {
        non_empty(file, serial, "hsm.token_serial")?;
    }
    let mut module_env = BTreeMap::new();
    for (name, value) in &hsm.module_env {
        let resolved = if value.get_ref().starts_with("./") || value.get_ref().starts_with("../") {
            resolve_path(&paths.base, value.get_ref())
                .display()
                .to_string()
        } else {
            value.get_ref().clone()
        };
        module_env.insert(name.clone(), resolved);
    }
    if let Some(parameters) = &hsm.module_parameters
        && (parameters.get_ref().is_empty()
            || parameters.get_ref().contains('\0')
            || parameters.get_ref().len() > 4096)
    {
        return Err(file.error(
            parameters.span(),
            "hsm.module_parameters",
            "1 to 4096 characters, no NUL",
        ));
    }
    let hsm_settings = HsmSettings {
        module: paths.resolve(&hsm.module, "hsm.module")?,
        token_label: hsm.token_label.get_ref().clone(),
        token_serial: hsm.token_serial.as_ref().map(|s| s.get_ref().clone()),
        module_parameters: hsm.module_parameters.as_ref().map(|p| p.get_ref().clone()),
        pin,
        sessions: *hsm.sessions.get_ref(),
        queue_capacity: *hsm.queue.get_ref(),
    };

    Ok((hsm_settings, module_env))
}

/// `[keys]`: four distinct labels, algorithms each key may have.
pub(super) fn keys(file: &SourceFile, raw: &RawKeys) -> Result<KeysConfig, LoadError> {
    let key = |raw: &RawKey, name: &str| -> Result<KeyConfig, LoadError> {
        non_empty(file, &raw.label, &format!("keys.{name}.label"))?;
        Ok(KeyConfig {
            label: raw.label.get_ref().clone(),
            algorithm: *raw.algorithm.get_ref(),
        })
    };
    let keys = KeysConfig {
        root: key(&raw.root, "root")?,
        issuing: key(&raw.issuing, "issuing")?,
        ocsp: key(&raw.ocsp, "ocsp")?,
        audit: match &raw.audit {
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
        rsa_pss: raw.rsa_pss,
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
            raw.ocsp.algorithm.span(),
            "keys.ocsp.algorithm",
            "the OCSP signer is p256, p384 or rsa3072",
        ));
    }

    Ok(keys)
}

/// `[root]`, `[issuing]` and `[ocsp_responder]`.
pub(super) fn cas(
    file: &SourceFile,
    raw: &RawConfig,
) -> Result<(CaConfig, CaConfig, ResponderConfig), LoadError> {
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

    Ok((root, issuing, ocsp_responder))
}

/// `[urls]`: what certificates and CRLs point to.
pub(super) fn urls(file: &SourceFile, u: &RawUrls) -> Result<PublishedUrls, LoadError> {
    Ok(PublishedUrls {
        crl: url(file, &u.crl, "urls.crl", &["http"])?,
        arl: url(file, &u.arl, "urls.arl", &["http"])?,
        ocsp: url(file, &u.ocsp, "urls.ocsp", &["http"])?,
        ca_issuers: url(file, &u.ca_issuers, "urls.ca_issuers", &["http"])?,
        root_ca_issuers: url(file, &u.root_ca_issuers, "urls.root_ca_issuers", &["http"])?,
        cps: url(file, &u.cps, "urls.cps", &["http", "https"])?,
    })
}

/// `[listen]`.
pub(super) fn listen(file: &SourceFile, raw: &RawListen) -> Result<ListenConfig, LoadError> {
    let address = |value: &Spanned<String>, key: &str| -> Result<SocketAddr, LoadError> {
        value
            .get_ref()
            .parse()
            .map_err(|_| file.error(value.span(), key, "not an address such as 127.0.0.1:8080"))
    };
    Ok(ListenConfig {
        va: address(&raw.va, "listen.va")?,
        ra: address(&raw.ra, "listen.ra")?,
        admin: address(&raw.admin, "listen.admin")?,
    })
}

/// `[ocsp]` and `[crl]`: how long what is signed lives, and how often it is signed.
pub(super) fn ocsp_and_crl(
    file: &SourceFile,
    raw: &RawConfig,
) -> Result<(OcspConfig, CrlConfig), LoadError> {
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

    Ok((ocsp, crl))
}

/// `[ra]`.
pub(super) fn ra(paths: &Paths<'_>, r: &RawRa) -> Result<RaConfig, LoadError> {
    let file = paths.file;

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
    Ok(RaConfig {
        tls_certificate: paths.resolve(&r.tls_certificate, "ra.tls_certificate")?,
        tls_private_key: paths.resolve(&r.tls_private_key, "ra.tls_private_key")?,
        time_window_seconds: *r.time_window_seconds.get_ref(),
        requests_per_minute: *r.requests_per_minute.get_ref(),
        burst: *r.burst.get_ref(),
        authentication_policy: r.authentication_policy.get_ref().clone(),
        signature_policy: r.signature_policy.get_ref().clone(),
    })
}

/// `[notices]`: somewhere to send them; webhooks `http://`; a relay needs recipients.
pub(super) fn notices(
    file: &SourceFile,
    spanned: &Spanned<super::NoticesConfig>,
) -> Result<super::NoticesConfig, LoadError> {
    let notices = spanned.get_ref();
    if notices.webhooks.is_empty() && notices.smtp_relay.is_none() {
        return Err(file.error(
            spanned.span(),
            "notices",
            "name webhooks or an smtp_relay (or remove the table)",
        ));
    }
    for url in &notices.webhooks {
        let parsed: Result<hyper::Uri, _> = url.parse();
        if !parsed.is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some()) {
            return Err(file.error(
                spanned.span(),
                "notices.webhooks",
                format!("{url:?}: an http:// URL"),
            ));
        }
    }
    if notices.smtp_relay.is_some() && notices.smtp_to.is_empty() {
        return Err(file.error(
            spanned.span(),
            "notices.smtp_to",
            "name at least one recipient for the relay",
        ));
    }
    let mail_address = |address: &str| {
        address.contains('@')
            && address
                .chars()
                .all(|c| c.is_ascii_graphic() && !"<>\"(),;:[]\\".contains(c))
    };
    for (key, address) in notices
        .smtp_to
        .iter()
        .map(|a| ("notices.smtp_to", a))
        .chain([("notices.smtp_from", &notices.smtp_from)])
    {
        if !mail_address(address) {
            return Err(file.error(
                spanned.span(),
                key,
                format!("{address:?}: not a mail address"),
            ));
        }
    }
    if let Some(relay) = &notices.smtp_relay
        && relay
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(file.error(
            spanned.span(),
            "notices.smtp_relay",
            format!("{relay:?}: host:port"),
        ));
    }
    if notices.still_waiting_hours > 24 * 365 {
        return Err(file.error(
            spanned.span(),
            "notices.still_waiting_hours",
            "at most a year (8760)",
        ));
    }
    if notices.expiry_days.iter().any(|d| *d == 0 || *d > 1100) {
        return Err(file.error(spanned.span(), "notices.expiry_days", "1 to 1100 days"));
    }
    Ok(notices.clone())
}

/// `[nats]`: at least one server, 1 to 5 replicas, bucket names NATS accepts.
pub(super) fn nats(
    file: &SourceFile,
    spanned: &Spanned<NatsConfig>,
) -> Result<NatsConfig, LoadError> {
    let nats = spanned.get_ref();
    if nats.servers.is_empty() {
        return Err(file.error(spanned.span(), "nats.servers", "name at least one server"));
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
    for (key, name) in [
        ("nats.status_bucket", &nats.status_bucket),
        ("nats.files_bucket", &nats.files_bucket),
        ("nats.snapshot_bucket", &nats.snapshot_bucket),
    ] {
        if !bucket_name(name) {
            return Err(file.error(
                spanned.span(),
                key,
                format!("{name:?}: bucket names are letters, digits, - and _"),
            ));
        }
    }
    Ok(nats.clone())
}

/// `[backup]`.
pub(super) fn backup(paths: &Paths<'_>, b: &RawBackup) -> Result<BackupConfig, LoadError> {
    let file = paths.file;

    if !(1..=24 * 31).contains(b.every_hours.get_ref()) {
        return Err(file.error(b.every_hours.span(), "backup.every_hours", "1 to 744"));
    }
    if *b.keep.get_ref() == 0 {
        return Err(file.error(b.keep.span(), "backup.keep", "at least 1"));
    }
    Ok(BackupConfig {
        dir: paths.resolve(&b.dir, "backup.dir")?,
        every_hours: *b.every_hours.get_ref(),
        keep: *b.keep.get_ref(),
    })
}

/// `value` if absolute, else `base/value`, with `.` and `..` resolved lexically (so that
/// messages show `var/data`, not `config/../var/data`).
pub(super) fn resolve_path(base: &Path, value: &str) -> PathBuf {
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
