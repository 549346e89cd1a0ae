//! The RA's answers as a person reads them (`--json` prints them as they came).

use std::fmt::Write;

use serde_json::Value;

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// A request as it must be seen before approving it.
pub(super) fn request(view: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request       {}", text(&view["request"]));
    let _ = writeln!(out, "state         {}", text(&view["state"]));
    let kind = if view["renewal"] == true {
        "renewal of the card"
    } else {
        "new card"
    };
    let _ = writeln!(
        out,
        "holder        {} ({kind} {})",
        text(&view["holder"]),
        text(&view["card"])
    );
    let _ = writeln!(out, "subject       {}", text(&view["subject"]));
    let _ = writeln!(
        out,
        "policies      authentication {}, signature {}",
        text(&view["policies"]["authentication"]),
        text(&view["policies"]["signature"])
    );
    let _ = writeln!(
        out,
        "keys          authentication {}, signature {}",
        text(&view["key_types"]["authentication"]),
        text(&view["key_types"]["signature"])
    );
    let submitter = &view["submitter"];
    if view["self_service"] == true {
        let _ = writeln!(
            out,
            "submitted by  the holder, with the card (no face-to-face meeting), at {}",
            text(&view["submitted_at"])
        );
    } else {
        let _ = writeln!(
            out,
            "submitted by  {} {} ({}){} at {}",
            text(&submitter["role"]),
            text(&view["submitted_by"]),
            text(&submitter["subject"]),
            if submitter["active"] == false {
                ", since withdrawn"
            } else {
                ""
            },
            text(&view["submitted_at"])
        );
    }
    let previous = &view["previous_card"];
    if previous["outside_scope"] == true {
        let _ = writeln!(
            out,
            "previous card the holder id names a card outside your scope: check who this is"
        );
    } else if previous.is_object() {
        let _ = writeln!(
            out,
            "previous card {} ({}), until {}{}",
            text(&previous["card"]),
            text(&previous["subject"]),
            text(&previous["not_after"]),
            if previous["revoked"] == true {
                ", revoked"
            } else {
                ""
            }
        );
        let changes: Vec<&str> = view["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if changes.is_empty() {
            let _ = writeln!(out, "changes       none");
        }
        for change in changes {
            let _ = writeln!(out, "changes       {change}");
        }
    } else {
        let _ = writeln!(out, "previous card none: a first card");
    }
    if let Some(digest) = view["submission_sha256"].as_str() {
        let _ = writeln!(out, "submission    sha256 {digest}");
    }
    for usage in ["authentication", "signature"] {
        if let Some(serial) = view[usage]["serial"].as_str() {
            let _ = writeln!(out, "issued        {usage} certificate {serial}");
        }
    }
    if let Some(reason) = view["reason"].as_str() {
        let _ = writeln!(out, "reason        {reason}");
    }
    out.trim_end().to_owned()
}

/// Several requests, each as [`request`] shows it.
pub(super) fn requests(views: &Value) -> String {
    views
        .as_array()
        .into_iter()
        .flatten()
        .map(request)
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The queue: one line a request, then the count.
pub(super) fn queue(queue: &Value) -> String {
    let mut out = String::new();
    let requests = queue["requests"].as_array().cloned().unwrap_or_default();
    for view in &requests {
        let _ = writeln!(
            out,
            "{}  {}  {}  {}  by {} at {}",
            text(&view["request"]),
            if view["renewal"] == true {
                "renewal"
            } else {
                "new    "
            },
            text(&view["holder"]),
            text(&view["subject"]),
            text(&view["submitted_by"]),
            text(&view["submitted_at"]),
        );
    }
    let pending = queue["pending"].as_u64().unwrap_or(requests.len() as u64);
    let _ = write!(
        out,
        "{pending} request(s) wait for a decision in your scope"
    );
    if pending > requests.len() as u64 {
        let _ = write!(out, " ({} shown, the oldest)", requests.len());
    }
    out
}

/// An operator: who, which role, which scope.
pub(super) fn operator(view: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "operator  {}", text(&view["operator"]));
    let _ = writeln!(out, "role      {}", text(&view["role"]));
    let _ = writeln!(out, "holder    {}", text(&view["holder"]));
    let _ = writeln!(out, "subject   {}", text(&view["subject"]));
    let scope = &view["scope"];
    for (label, field) in [
        ("orgs", "organizations"),
        ("units", "units"),
        ("policies", "policies"),
    ] {
        let values: Vec<&str> = scope[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let shown = if values.is_empty() {
            "all".to_owned()
        } else {
            values.join(", ")
        };
        let _ = writeln!(out, "{label:<9} {shown}");
    }
    out.trim_end().to_owned()
}

/// A batch approval's outcome, a request a line.
pub(super) fn batch(summary: &Value) -> String {
    let mut out = String::new();
    for result in summary["requests"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "{}  {}",
            text(&result["request"]),
            text(&result["state"])
        );
        if let Some(card) = result["card"].as_str() {
            let _ = write!(out, "  card {card}");
        }
        if let Some(why) = result["why"].as_str() {
            let _ = write!(out, "  {why}");
        }
        out.push('\n');
    }
    let _ = write!(out, "{} of {} issued", summary["approved"], summary["of"]);
    out
}

/// Any other answer: its fields, one a line.
pub(super) fn generic(value: &Value) -> String {
    match value.as_object() {
        Some(object) => object
            .iter()
            .map(|(key, value)| match value {
                Value::String(s) => format!("{key:<14}{s}"),
                other => format!("{key:<14}{other}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        None => value.to_string(),
    }
}

/// A bulk revocation (or its dry run): the query, the count, the digest, then the list.
pub(super) fn bulk(view: &Value) -> String {
    let mut out = String::new();
    if view["dry_run"] == true {
        let _ = writeln!(out, "dry run       nothing recorded");
    } else {
        let _ = writeln!(out, "bulk          {}", text(&view["bulk"]));
        let _ = writeln!(out, "state         {}", text(&view["state"]));
        let _ = writeln!(
            out,
            "proposed by   {} at {}",
            text(&view["proposed_by"]),
            text(&view["proposed_at"])
        );
    }
    if let Some(reason) = view["reason"].as_str() {
        let _ = writeln!(out, "reason        {reason}");
    }
    if view["query"].is_object() {
        let _ = writeln!(out, "query         {}", view["query"]);
    }
    let _ = writeln!(out, "certificates  {}", view["count"]);
    if let Some(revoked) = view["revoked"].as_u64() {
        let _ = writeln!(out, "revoked       {revoked}");
    }
    let _ = writeln!(out, "list sha256   {}", text(&view["certificates_sha256"]));
    for certificate in view["certificates"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {}  {}  {}  {}  until {}",
            text(&certificate["serial"]),
            text(&certificate["policy"]),
            text(&certificate["holder"]),
            text(&certificate["subject"]),
            text(&certificate["not_after"]),
        );
    }
    out.trim_end().to_owned()
}
