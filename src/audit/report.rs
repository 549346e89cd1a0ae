//! A readable report of the RA's activity over a verified audit bundle, per unit (the OUs of
//! the holder or of the operator concerned): designations and withdrawals, approvals and
//! rejections and who made them, refusals, bulk revocations. One self-contained HTML page.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::AuditEvent;
use super::bundle::VerifiedBundle;

/// Where a unit is not known from the bundle (an object made before the period).
const UNKNOWN_UNIT: &str = "(unit not in this period's log)";

/// The OUs of a subject as sceau writes it (`C=FR, O=..., OU=A, OU=B, GN=...`), joined.
fn unit_of_subject(subject: &str) -> String {
    let units: Vec<&str> = subject
        .split(", ")
        .filter_map(|part| part.strip_prefix("OU="))
        .collect();
    if units.is_empty() {
        "(no unit)".into()
    } else {
        units.join(" / ")
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line of the report: when, what, who, about what.
struct Line {
    time: String,
    what: &'static str,
    who: String,
    detail: String,
}

/// The report's HTML.
pub fn ra_activity(bundle: &VerifiedBundle) -> String {
    // What the period says of requests and operators, to put each decision in its unit.
    let mut request_unit: HashMap<&str, String> = HashMap::new();
    let mut operator_unit: HashMap<&str, String> = HashMap::new();
    for record in &bundle.records {
        match &record.event {
            AuditEvent::CardRequestSubmitted {
                request, subject, ..
            } => {
                request_unit.insert(request, unit_of_subject(subject));
            }
            AuditEvent::OperatorDesignated {
                operator, subject, ..
            } => {
                operator_unit.insert(operator, unit_of_subject(subject));
            }
            _ => {}
        }
    }
    let unit_of_request = |id: &str| {
        request_unit
            .get(id)
            .cloned()
            .unwrap_or_else(|| UNKNOWN_UNIT.into())
    };
    let unit_of_operator = |id: &str| {
        operator_unit
            .get(id)
            .cloned()
            .unwrap_or_else(|| UNKNOWN_UNIT.into())
    };
    let mut units: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for record in &bundle.records {
        let time = record.time.to_string();
        let (unit, line) = match &record.event {
            AuditEvent::OperatorDesignated {
                operator,
                subject,
                role,
                scope,
                designated_by,
                ..
            } => (
                unit_of_subject(subject),
                Line {
                    time,
                    what: "designation",
                    who: designated_by
                        .clone()
                        .unwrap_or_else(|| "CA host (bootstrap)".into()),
                    detail: format!("{operator} ({subject}) as {role}, scope {scope}"),
                },
            ),
            AuditEvent::OperatorWithdrawn {
                operator,
                by,
                cascade_from,
                reason,
                ..
            } => (
                unit_of_operator(operator),
                Line {
                    time,
                    what: "withdrawal",
                    who: by.clone(),
                    detail: format!(
                        "{operator}{}{}",
                        cascade_from
                            .as_ref()
                            .map(|c| format!(", with {c}"))
                            .unwrap_or_default(),
                        reason
                            .as_ref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                },
            ),
            AuditEvent::CardRequestSubmitted {
                request,
                operator,
                holder,
                subject,
                renewal,
                ..
            } => (
                unit_of_subject(subject),
                Line {
                    time,
                    what: if *renewal {
                        "renewal submitted"
                    } else {
                        "card submitted"
                    },
                    who: operator.clone(),
                    detail: format!("request {request}, holder {holder} ({subject})"),
                },
            ),
            AuditEvent::CardRequestApproved {
                request, operator, ..
            } => (
                unit_of_request(request),
                Line {
                    time,
                    what: "approval",
                    who: operator.clone(),
                    detail: format!("request {request}"),
                },
            ),
            AuditEvent::CardRequestRejected {
                request,
                operator,
                reason,
            } => (
                unit_of_request(request),
                Line {
                    time,
                    what: "rejection",
                    who: operator.clone(),
                    detail: format!("request {request}: {reason}"),
                },
            ),
            AuditEvent::RequestRefused {
                operator,
                action,
                rule,
                detail,
                ..
            } => (
                operator
                    .as_deref()
                    .map_or_else(|| UNKNOWN_UNIT.into(), unit_of_operator),
                Line {
                    time,
                    what: "refusal",
                    who: operator.clone().unwrap_or_else(|| "(no operator)".into()),
                    detail: format!("{action}: {rule} ({detail})"),
                },
            ),
            AuditEvent::BulkRevocationProposed {
                bulk,
                operator,
                query,
                count,
                reason,
                ..
            } => (
                query["units"]
                    .as_array()
                    .map(|u| {
                        u.iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(" / ")
                    })
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| unit_of_operator(operator)),
                Line {
                    time,
                    what: "bulk revocation proposed",
                    who: operator.clone(),
                    detail: format!("{bulk}: {count} certificates, {reason}, query {query}"),
                },
            ),
            AuditEvent::BulkRevocationApproved {
                bulk,
                operator,
                proposed_by,
                revoked,
                ..
            } => (
                unit_of_operator(proposed_by),
                Line {
                    time,
                    what: "bulk revocation approved",
                    who: operator.clone(),
                    detail: format!("{bulk} (proposed by {proposed_by}): {revoked} revoked"),
                },
            ),
            _ => continue,
        };
        *counts.entry(line.what).or_default() += 1;
        units.entry(unit).or_default().push(line);
    }
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>RA activity {from} to {to}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}\
         td,th{{border:1px solid #ccc;padding:4px;text-align:left;vertical-align:top}}th{{background:#eee}}</style></head><body>\n\
         <h1>Registration authority activity</h1>\n<p>From {from} to {to}: {entries} audit entries checked, \
         {checkpoints} signed checkpoints verified against the audit key.</p>\n",
        from = escape(&bundle.from.to_string()),
        to = escape(&bundle.to.to_string()),
        entries = bundle.entries,
        checkpoints = bundle.checkpoints,
    );
    html.push_str("<h2>Totals</h2>\n<table><tr><th>activity</th><th>count</th></tr>\n");
    for (what, count) in &counts {
        let _ = writeln!(html, "<tr><td>{}</td><td>{count}</td></tr>", escape(what));
    }
    html.push_str("</table>\n");
    for (unit, lines) in &units {
        let _ = writeln!(html, "<h2>{}</h2>", escape(unit));
        html.push_str("<table><tr><th>time</th><th>activity</th><th>by</th><th>what</th></tr>\n");
        for line in lines {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&line.time),
                escape(line.what),
                escape(&line.who),
                escape(&line.detail)
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_from_the_subject_and_text_is_escaped() {
        assert_eq!(
            unit_of_subject("C=FR, O=MJ, OU=0002 1, OU=DAP, GN=A, SN=B, CN=A B"),
            "0002 1 / DAP"
        );
        assert_eq!(unit_of_subject("C=FR, O=MJ, CN=A B"), "(no unit)");
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
