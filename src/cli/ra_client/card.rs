//! The operator's card, through its PKCS#11 module: logged in once for the session (the PIN
//! typed once, read from a file, or from the environment; never an argument), its two
//! certificates read from the card (or given as files) and each key found by its certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use der::Decode;
use x509_cert::Certificate;

use super::super::card::scheme_for;
use super::super::{CliError, Context, ContextAs, Failure};
use super::ClientOptions;
use crate::hsm::{Hsm, HsmError, HsmSettings, Pin, PinSlot, PinSource, SigningKey};
use crate::x509::sigalg::SignatureScheme;

/// What a certificate of the card is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Usage {
    /// keyUsage digitalSignature without nonRepudiation: the TLS client credential.
    Authentication,
    /// keyUsage nonRepudiation: what signs requests.
    Signature,
}

/// An open card: its certificates and keys, logged in.
pub(super) struct OperatorCard {
    pub(super) auth_der: Vec<u8>,
    pub(super) auth_key: SigningKey,
    pub(super) sign_certificate: Certificate,
    pub(super) sign_scheme: SignatureScheme,
    sign_key: SigningKey,
    /// Kept open for the session: the keys sign through it.
    _hsm: Hsm,
}

/// Logs in to the operator's card named by the options (the PIN asked once).
pub(super) fn open_token(options: &ClientOptions) -> Result<Hsm, CliError> {
    let token = options
        .token
        .clone()
        .ok_or_else(|| CliError::usage("the card: --token LABEL or SCEAU_CARD_TOKEN"))?;
    let pin = pin_source(options.pin_file.as_deref(), "SCEAU_CARD_PIN", &token)?;
    open_card(options, &token, pin)
}

/// Logs in to the card `token` in the same kind of reader (the module of the options).
fn open_card(options: &ClientOptions, token: &str, pin: PinSource) -> Result<Hsm, CliError> {
    let module = options
        .module
        .clone()
        .ok_or_else(|| CliError::usage("the card's module: --module PATH or SCEAU_CARD_MODULE"))?;
    let opened = Hsm::open(HsmSettings {
        module: module.clone(),
        token_label: token.to_owned(),
        token_serial: None,
        module_parameters: None,
        pin,
        sessions: 1,
        queue_capacity: 4,
    });
    match opened {
        // Said plainly: nothing retries here, and each wrong PIN brings the card closer to
        // locking.
        Err(HsmError::PinIncorrect { .. }) => Err(CliError::refused(format!(
            "the card {token:?} refused the PIN (each wrong PIN counts towards locking the card)"
        ))),
        Err(HsmError::PinLocked) => Err(CliError::refused(format!(
            "the card {token:?} is locked: its PIN was refused too many times"
        ))),
        other => other.context(|| format!("the card {token:?} (--module {})", module.display())),
    }
}

/// Where a card's PIN comes from: `pin_file`, else the environment variable `env`, else typed
/// at the terminal.
fn pin_source(pin_file: Option<&Path>, env: &str, token: &str) -> Result<PinSource, CliError> {
    if let Some(path) = pin_file {
        return Ok(PinSource::File(path.to_owned()));
    }
    if std::env::var_os(env).is_some() {
        return Ok(PinSource::Env(env.into()));
    }
    let typed = rpassword::prompt_password(format!("PIN of the card {token:?}: ")).map_err(|e| {
        CliError::usage(format!(
            "no PIN for the card {token:?}: no terminal to ask it on ({e}); give it in a file or in {env}"
        ))
    })?;
    let typed = zeroize::Zeroizing::new(typed);
    // An empty PIN (Enter pressed by mistake) would still count as a wrong one on the card.
    if typed.trim_end_matches(['\r', '\n']).is_empty() {
        return Err(CliError::usage(format!(
            "no PIN typed for the card {token:?}: nothing was sent to it"
        )));
    }
    let slot = Arc::new(PinSlot::default());
    slot.fill(Pin::from_secret(typed));
    Ok(PinSource::Typed(slot))
}

/// A holder's new card at the counter, in a second reader: it signs the handover receipt
/// with its signature key (the holder types its PIN, or `SCEAU_HOLDER_PIN` holds it).
pub(super) struct HolderCard {
    certificate: Certificate,
    scheme: SignatureScheme,
    key: SigningKey,
    _hsm: Hsm,
}

impl HolderCard {
    pub(super) fn open(options: &ClientOptions, token: &str) -> Result<Self, CliError> {
        let hsm = open_card(options, token, pin_source(None, "SCEAU_HOLDER_PIN", token)?)?;
        let on_card = hsm
            .certificates()
            .context(|| format!("reading the certificates of the card {token:?}"))?;
        let (_, certificate) = pick(&hsm, &on_card, None, Usage::Signature)?;
        let scheme = certificate_scheme(&certificate)?;
        let key = key_of(&hsm, &certificate, scheme, "signature")?;
        Ok(Self {
            certificate,
            scheme,
            key,
            _hsm: hsm,
        })
    }

    pub(super) fn sign(&self, content: &[u8]) -> Result<Vec<u8>, CliError> {
        crate::x509::cms::sign_attached(content, &self.certificate, self.scheme, |attributes| {
            self.key.sign(attributes)
        })
        .context_as(Failure::Unavailable, || {
            "signing with the holder's card".into()
        })
    }
}

impl OperatorCard {
    pub(super) fn open(options: &ClientOptions) -> Result<Self, CliError> {
        let hsm = open_token(options)?;
        let on_card = if options.auth_cert.is_none() || options.sign_cert.is_none() {
            hsm.certificates()
                .context(|| "reading the card's certificates".into())?
        } else {
            Vec::new()
        };
        let (auth_der, auth_certificate) = pick(
            &hsm,
            &on_card,
            options.auth_cert.as_ref(),
            Usage::Authentication,
        )?;
        let (_, sign_certificate) =
            pick(&hsm, &on_card, options.sign_cert.as_ref(), Usage::Signature)?;
        let auth_scheme = super::tls::tls_key_scheme(certificate_scheme(&auth_certificate)?);
        let sign_scheme = certificate_scheme(&sign_certificate)?;
        let auth_key = key_of(&hsm, &auth_certificate, auth_scheme, "authentication")?;
        let sign_key = key_of(&hsm, &sign_certificate, sign_scheme, "signature")?;
        Ok(Self {
            auth_der,
            auth_key,
            sign_certificate,
            sign_scheme,
            sign_key,
            _hsm: hsm,
        })
    }

    /// `content` signed by the card's signature key: an attached CMS SignedData, what the RA
    /// takes (as `openssl cms -sign -binary -nodetach -outform DER` makes it).
    pub(super) fn sign(&self, content: &[u8]) -> Result<Vec<u8>, CliError> {
        crate::x509::cms::sign_attached(
            content,
            &self.sign_certificate,
            self.sign_scheme,
            |attributes| self.sign_key.sign(attributes),
        )
        .context_as(Failure::Unavailable, || "signing with the card".into())
    }
}

fn certificate_scheme(certificate: &Certificate) -> Result<SignatureScheme, CliError> {
    scheme_for(certificate).ok_or_else(|| {
        CliError::data("a card certificate's key is neither P-256, P-384 nor RSA".to_owned())
    })
}

/// The key on the card whose public key is the certificate's.
fn key_of(
    hsm: &Hsm,
    certificate: &Certificate,
    scheme: SignatureScheme,
    what: &str,
) -> Result<SigningKey, CliError> {
    let spki = certificate.tbs_certificate().subject_public_key_info();
    let mut labels = hsm
        .labels_of_key(spki)
        .context(|| format!("the key of the card's {what} certificate"))?;
    let label = match labels.len() {
        1 => labels.remove(0),
        0 => {
            return Err(CliError::data(format!(
                "the key of the card's {what} certificate is not on the card (a certificate of another card?)"
            )));
        }
        _ => {
            return Err(CliError::data(format!(
                "the key of the card's {what} certificate is on the card {} times ({}): which one signs must not be a guess",
                labels.len(),
                labels.join(", ")
            )));
        }
    };
    hsm.signing_key(&label, scheme)
        .context(|| format!("the card's {what} key {label:?}"))
}

/// The certificate for `usage`: the file given, else the card's: not a CA's, valid now, its
/// key on the card (the most recent one when a renewal left both on the card).
fn pick(
    hsm: &Hsm,
    on_card: &[Vec<u8>],
    file: Option<&PathBuf>,
    usage: Usage,
) -> Result<(Vec<u8>, Certificate), CliError> {
    if let Some(path) = file {
        let what = || {
            format!(
                "--{} {}",
                match usage {
                    Usage::Authentication => "auth-cert",
                    Usage::Signature => "sign-cert",
                },
                path.display()
            )
        };
        let bytes = std::fs::read(path).context(what)?;
        let der = crate::x509::pem::decode_pem_or_der(&bytes, &["CERTIFICATE"])
            .context_as(Failure::Data, what)?;
        let certificate = Certificate::from_der(&der).context_as(Failure::Data, what)?;
        return Ok((der, certificate));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut found: Vec<(Vec<u8>, Certificate)> = on_card
        .iter()
        .filter_map(|der| Some((der.clone(), Certificate::from_der(der).ok()?)))
        .filter(|(_, certificate)| {
            let validity = certificate.tbs_certificate().validity();
            usage_of(certificate) == Some(usage)
                && !is_ca(certificate)
                && validity.not_before.to_unix_duration() <= now
                && now <= validity.not_after.to_unix_duration()
                && hsm
                    .labels_of_key(certificate.tbs_certificate().subject_public_key_info())
                    .is_ok_and(|labels| !labels.is_empty())
        })
        .collect();
    found.sort_by_key(|(_, c)| c.tbs_certificate().validity().not_before.to_unix_duration());
    found.pop().ok_or_else(|| {
        CliError::data(format!(
            "no valid {} certificate (keyUsage {}) whose key is on the card; give it with --{}",
            match usage {
                Usage::Authentication => "authentication",
                Usage::Signature => "signature",
            },
            match usage {
                Usage::Authentication => "digitalSignature",
                Usage::Signature => "nonRepudiation",
            },
            match usage {
                Usage::Authentication => "auth-cert",
                Usage::Signature => "sign-cert",
            },
        ))
    })
}

fn is_ca(certificate: &Certificate) -> bool {
    use x509_cert::ext::pkix::BasicConstraints;
    certificate
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS)
        .any(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).is_ok_and(|b| b.ca))
}

fn usage_of(certificate: &Certificate) -> Option<Usage> {
    use der::Decode;
    use x509_cert::ext::pkix::KeyUsage;
    let extensions = certificate.tbs_certificate().extensions()?;
    let key_usage = extensions
        .iter()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_KEY_USAGE)?;
    let key_usage = KeyUsage::from_der(key_usage.extn_value.as_bytes()).ok()?;
    if key_usage.non_repudiation() {
        Some(Usage::Signature)
    } else if key_usage.digital_signature() {
        Some(Usage::Authentication)
    } else {
        None
    }
}
