//! Keys of the ceremonies: generated in the HSM under a label no key has used.

use crate::audit::AuditEvent;
use crate::ca::CaError;
use crate::config::KeyConfig;
use crate::hsm::{Hsm, SigningKey};
use crate::store::Store;
use crate::x509::{Timestamp, keys};

pub(super) fn generate(
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

/// The key a rollover or renewal will make: the kind `configured`, under a [`fresh_label`].
pub(super) fn fresh_key(
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
pub(super) fn free_label(
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
pub(super) fn label_taken(hsm: &Hsm, store: &Store, label: &str) -> Result<bool, CaError> {
    // A label the CA state names (a key destroyed as retired among them) is never given again:
    // the state finds keys by label.
    let named =
        crate::ca::load_state(store)?.is_some_and(|state| state.key_labels().contains(&label));
    Ok(named
        || hsm.has_key(label)?
        || crate::ca::ceremony_intent::orphan_key_labels(store)?
            .iter()
            .any(|orphan| orphan == label))
}

pub(super) fn fresh_label(
    hsm: &Hsm,
    store: &Store,
    base: &str,
    now: Timestamp,
) -> Result<String, CaError> {
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

pub(super) fn label_stamp(now: Timestamp) -> Result<String, CaError> {
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
