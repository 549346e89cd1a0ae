//! `GET /metrics` of the administration listener: the Prometheus text exposition of the
//! daemon's counters (OCSP, CRLs, the HSM, the audit chain, the engine publisher, the RA), one
//! function per family.

use std::sync::atomic::{AtomicU64, Ordering};

use super::admin::AdminService;
use super::ra::RaMetrics;
use crate::va::Metrics as VaMetrics;
use crate::va::publish::PublisherMetrics;

/// The exposition text.
pub fn render(admin: &AdminService) -> String {
    let mut out = Exposition::default();
    let m = &admin.va.metrics;
    let expiring = admin.expiring.get();
    out.metric(
        "sceau_certificates_expiring",
        "gauge",
        "Unrevoked certificates whose notAfter falls within the next N days (counted every minute)",
        &[
            ("{within_days=\"30\"}", expiring[0]),
            ("{within_days=\"60\"}", expiring[1]),
            ("{within_days=\"90\"}", expiring[2]),
        ],
    );
    ocsp(&mut out, m, admin.va.responder.entries());
    if let Some(publisher) = &admin.publisher {
        engine_publisher(&mut out, publisher, admin.va.now());
    }
    audit_chain(&mut out, admin);
    hsm_and_crls(&mut out, admin);
    out.metric(
        "sceau_certificates_issued_total",
        "counter",
        "certificates issued through the daemon (their OCSP responses signed)",
        &[("", get(&m.issued))],
    );
    if let Some(ra) = &admin.ra_metrics {
        registration_authority(&mut out, ra);
    }
    ocsp_latency(&mut out, m);
    out.text
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// One metric family: its help, its type and its samples (`labels`, value).
    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
        self.text
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            self.text.push_str(&format!("{name}{labels} {value}\n"));
        }
    }
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn ocsp(out: &mut Exposition, m: &VaMetrics, entries: u64) {
    out.metric(
        "sceau_ocsp_requests_total",
        "counter",
        "OCSP requests by method",
        &[
            ("{method=\"get\"}", m.ocsp_get.get()),
            ("{method=\"post\"}", m.ocsp_post.get()),
        ],
    );
    out.metric(
        "sceau_ocsp_responses_total",
        "counter",
        "OCSP answers by kind",
        &[
            ("{kind=\"presigned\"}", m.ocsp_presigned.get()),
            ("{kind=\"live\"}", m.ocsp_live.get()),
            ("{kind=\"not_modified\"}", m.ocsp_not_modified.get()),
            ("{kind=\"malformed_request\"}", m.ocsp_malformed.get()),
            ("{kind=\"unauthorized\"}", m.ocsp_unauthorized.get()),
            ("{kind=\"try_later\"}", m.ocsp_try_later.get()),
        ],
    );
    out.metric(
        "sceau_ocsp_signatures_total",
        "counter",
        "OCSP responses signed",
        &[
            ("{kind=\"ahead\"}", get(&m.presigned)),
            ("{kind=\"live\"}", get(&m.live_signed)),
        ],
    );
    for (name, kind, help, value) in [
        (
            "sceau_ocsp_live_refused_total",
            "counter",
            "live signatures refused past the bound",
            get(&m.live_refused),
        ),
        (
            "sceau_ocsp_certificates",
            "gauge",
            "certificates with responses in memory",
            entries,
        ),
    ] {
        out.metric(name, kind, help, &[("", value)]);
    }
}

fn engine_publisher(
    out: &mut Exposition,
    publisher: &PublisherMetrics,
    now: crate::x509::Timestamp,
) {
    for (name, kind, help, value) in [
        (
            "sceau_outbox_depth",
            "gauge",
            "changes waiting to be published to responder nodes (up to one batch)",
            get(&publisher.depth),
        ),
        (
            "sceau_publication_lag_seconds",
            "gauge",
            "how long the oldest waiting change has waited",
            publisher.lag_seconds(now),
        ),
        (
            "sceau_published_total",
            "counter",
            "changes published to the engine",
            get(&publisher.published),
        ),
        (
            "sceau_engine_connected",
            "gauge",
            "1 while the publisher is connected to the engine",
            get(&publisher.connected),
        ),
        (
            "sceau_publisher_full_publications_total",
            "counter",
            "full publications of every status (new, re-created or short bucket; sceau publish --all)",
            get(&publisher.full_publications),
        ),
        (
            "sceau_publisher_last_full_publication_ms",
            "gauge",
            "how long the last full publication took",
            get(&publisher.last_full_publication_ms),
        ),
        (
            "sceau_publisher_snapshots_total",
            "counter",
            "status snapshots written for new responder nodes",
            get(&publisher.snapshots),
        ),
        (
            "sceau_publisher_last_snapshot_ms",
            "gauge",
            "how long writing the last status snapshot took",
            get(&publisher.last_snapshot_ms),
        ),
    ] {
        out.metric(name, kind, help, &[("", value)]);
    }
}

fn audit_chain(out: &mut Exposition, admin: &AdminService) {
    let m = &admin.va.metrics;
    for (name, kind, help, value) in [
        (
            "sceau_audit_chain_broken",
            "gauge",
            "1 when the last check found the audit chain broken (no checkpoint vouches for it)",
            u64::from(admin.audit_watch.broken().is_some()),
        ),
        (
            "sceau_audit_last_checkpoint",
            "gauge",
            "the audit entry the last checkpoint signed by this process vouches for",
            admin.audit_watch.last_signed().map_or(0, |h| h.seq),
        ),
        (
            "sceau_revocations_total",
            "counter",
            "revocations processed",
            get(&m.revocations),
        ),
    ] {
        out.metric(name, kind, help, &[("", value)]);
    }
}

fn hsm_and_crls(out: &mut Exposition, admin: &AdminService) {
    let hsm = admin.service.token_status().unwrap_or_default();
    for (name, kind, help, value) in [
        (
            "sceau_hsm_available",
            "gauge",
            "1 when the HSM answers",
            u64::from(hsm.available),
        ),
        (
            "sceau_hsm_queue_depth",
            "gauge",
            "signing jobs waiting for a session",
            hsm.queue_depth as u64,
        ),
        (
            "sceau_hsm_errors_total",
            "counter",
            "HSM session or device errors",
            hsm.errors,
        ),
        (
            "sceau_hsm_reconnects_total",
            "counter",
            "HSM reconnections",
            hsm.reconnects,
        ),
    ] {
        out.metric(name, kind, help, &[("", value)]);
    }
    let now = admin.va.now().unix_seconds();
    let crls = admin.va.crls.all_latest();
    let numbers: Vec<(String, u64)> = crls
        .iter()
        .map(|c| (format!("{{crl=\"{}\"}}", c.name), c.number))
        .collect();
    let ages: Vec<(String, u64)> = crls
        .iter()
        .map(|c| {
            (
                format!("{{crl=\"{}\"}}", c.name),
                now.saturating_sub(c.this_update.unix_seconds()),
            )
        })
        .collect();
    out.metric(
        "sceau_crl_number",
        "gauge",
        "number of the last CRL published",
        &as_refs(&numbers),
    );
    out.metric(
        "sceau_crl_age_seconds",
        "gauge",
        "age of the last CRL published",
        &as_refs(&ages),
    );
}

fn registration_authority(out: &mut Exposition, ra: &RaMetrics) {
    for (name, kind, help, value) in [
        (
            "sceau_ra_requests_total",
            "counter",
            "requests on the registration authority listener",
            get(&ra.requests),
        ),
        (
            "sceau_ra_refused_total",
            "counter",
            "RA requests answered with an error status",
            get(&ra.refused),
        ),
        (
            "sceau_ra_rate_limited_total",
            "counter",
            "RA requests refused by an operator's rate limit (429)",
            get(&ra.rate_limited),
        ),
    ] {
        out.metric(name, kind, help, &[("", value)]);
    }
}

fn ocsp_latency(out: &mut Exposition, m: &VaMetrics) {
    let (buckets, sum_us) = m.latency.snapshot();
    out.text
        .push_str("# HELP sceau_ocsp_request_duration_seconds OCSP request durations\n");
    out.text
        .push_str("# TYPE sceau_ocsp_request_duration_seconds histogram\n");
    for (bound, count) in crate::va::LATENCY_BUCKETS_US.iter().zip(&buckets) {
        out.text.push_str(&format!(
            "sceau_ocsp_request_duration_seconds_bucket{{le=\"{}\"}} {count}\n",
            *bound as f64 / 1e6
        ));
    }
    let total = buckets.last().copied().unwrap_or(0);
    out.text.push_str(&format!(
        "sceau_ocsp_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n\
         sceau_ocsp_request_duration_seconds_sum {}\n\
         sceau_ocsp_request_duration_seconds_count {total}\n",
        sum_us as f64 / 1e6
    ));
}
fn as_refs(samples: &[(String, u64)]) -> Vec<(&str, u64)> {
    samples
        .iter()
        .map(|(labels, value)| (labels.as_str(), *value))
        .collect()
}
