//! `sceau audit export --bundle` (on the CA host) and `sceau audit verify --bundle` (anywhere,
//! offline): the auditor's bundle of a period (src/audit/bundle.rs) and its RA report.

use std::path::Path;

use super::{CliError, Context, ContextAs, Failure, open_store_for_reading, read_anchor};
use crate::audit::bundle::{self, Bundle};
use crate::config::Config;
use crate::x509::Timestamp;

fn time(flag: &str, text: Option<&str>) -> Result<Timestamp, CliError> {
    let text = text.ok_or_else(|| CliError::usage(format!("{flag} TIME is needed")))?;
    Timestamp::parse_rfc3339(text).context_as(Failure::Usage, || format!("{flag} {text:?}"))
}

/// Records the export of the period in the log (a checkpoint signed after it), then writes
/// the bundle.
pub(super) fn export(
    config: &Config,
    out: &Path,
    (from, to): (Option<&str>, Option<&str>),
) -> Result<(), CliError> {
    let from = time("--from", from)?;
    let now = Timestamp::now();
    // A period cannot end later than what the log can hold now.
    let to = time("--to", to)?.min(now);
    if to < from {
        return Err(CliError::usage("--to is before --from"));
    }
    super::actions::audit_bundle_mark(config, from, to)?;
    let mut made = attempt(config, (from, to), now)?;
    if made.is_none() {
        // Another entry slipped in before the checkpoint: sign one more.
        super::actions::audit_checkpoint(config)?;
        made = attempt(config, (from, to), now)?;
    }
    let bundle = made.ok_or_else(|| {
        CliError::unavailable("no signed checkpoint follows the export's record: run `sceau audit checkpoint`, then export again")
    })?;
    let json = serde_json::to_vec_pretty(&bundle)?;
    std::fs::write(out, json).context(|| format!("--bundle {}", out.display()))?;
    println!(
        "{}: entries {}..={} ({}), from {} to {}",
        out.display(),
        bundle.first,
        bundle.first + bundle.entries.len() as u64 - 1,
        bundle.entries.len(),
        bundle.from,
        bundle.to
    );
    Ok(())
}

fn attempt(
    config: &Config,
    period: (Timestamp, Timestamp),
    now: Timestamp,
) -> Result<Option<Bundle>, CliError> {
    let (_scratch, store) = open_store_for_reading(config)?;
    let key = crate::audit::checkpoint::anchor_pem(&store)
        .context_as(Failure::Data, || "the audit key".into())?
        .ok_or_else(|| CliError::data("no audit key yet: no checkpoint was ever signed"))?;
    let entries = store
        .audit_entries()?
        .collect::<Result<Vec<_>, _>>()
        .context(|| "reading the audit log".into())?;
    bundle::build(&entries, period, key, now).context_as(Failure::Data, || "the audit log".into())
}

/// Checks a bundle against the anchor; writes the RA report when asked.
pub(super) fn verify(bundle: &Path, anchor: &Path, report: Option<&Path>) -> Result<(), CliError> {
    let anchor = read_anchor(anchor)?;
    let bytes = std::fs::read(bundle).context(|| format!("--bundle {}", bundle.display()))?;
    let parsed: Bundle = serde_json::from_slice(&bytes).context_as(Failure::Data, || {
        format!("--bundle {}: not an audit bundle", bundle.display())
    })?;
    let verified = bundle::verify(&parsed, &anchor)
        .context_as(Failure::Data, || format!("--bundle {}", bundle.display()))?;
    println!(
        "audit bundle verified: {} entries, {} signed checkpoints, {} entries from {} to {}",
        verified.entries,
        verified.checkpoints,
        verified.records.len(),
        verified.from,
        verified.to
    );
    if let Some(path) = report {
        std::fs::write(path, crate::audit::report::ra_activity(&verified))
            .context(|| format!("--report {}", path.display()))?;
        println!("RA activity report: {}", path.display());
    }
    Ok(())
}
