//! docs/ra-openapi.yaml against the code: every documented path and method is a route and every
//! route is documented; every documented signed body is accepted by the action its route
//! names; every problem type the RA listener can answer is documented, and nothing else is.
use super::*;

const OPENAPI: &str = include_str!("../../../docs/ra-openapi.yaml");

/// (method, path template, x-signed-example) of every documented operation.
fn operations() -> Vec<(Method, String, Option<String>)> {
    let mut operations = Vec::new();
    let mut path = None;
    for line in OPENAPI.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if !line.starts_with("  ") && !line.is_empty() {
            path = None;
        } else if let Some(path) = &path {
            match line.trim_end() {
                "    get:" => operations.push((Method::GET, path.clone(), None)),
                "    post:" => operations.push((Method::POST, path.clone(), None)),
                other => {
                    if let Some(example) = other.trim().strip_prefix("x-signed-example: ")
                        && let Some(last) = operations.last_mut()
                    {
                        last.2 = Some(example.to_owned());
                    }
                }
            }
        }
    }
    operations
}

/// A concrete path for a template: each `{param}` becomes `p-param`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match segment.strip_prefix('{') {
            Some(name) => format!("p-{}", name.trim_end_matches('}')),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let operations = operations();
    assert!(operations.len() >= 11, "{operations:?}");
    let mut kinds = std::collections::BTreeSet::new();
    for (method, template, example) in &operations {
        let path = concrete(template);
        let route = resolve(method, &path)
            .unwrap_or_else(|e| panic!("{method} {template} is documented but {e:?}"));
        let kind = match &route {
            Route::Me => "me",
            Route::Request(_) => "request",
            Route::Queue => "queue",
            Route::Expiring => "expiring",
            Route::Certificate(_) => "certificate",
            Route::Scheduled => "scheduled",
            Route::Bulk(_) => "bulk",
            Route::Card(_) => "card",
            Route::HolderCard => "holder-card",
            Route::HolderSigned(action) => {
                signed_example(method, template, example.as_deref(), *action);
                if *action == ActionKind::Renew {
                    "holder-renew"
                } else {
                    "holder-revoke"
                }
            }
            Route::Signed { action, target } => {
                // The object the URL names is the one the signed body must name.
                if template.contains('{') {
                    assert!(target.is_some_and(|t| t.starts_with("p-")), "{template}");
                }
                let example = signed_example(method, template, example.as_deref(), *action);
                let mut extended: serde_json::Value = serde_json::from_str(example).unwrap();
                extended["undocumented"] = serde_json::Value::Bool(true);
                assert!(
                    crate::ra::request::parse(
                        extended.to_string().as_bytes(),
                        Vec::new(),
                        example_time(),
                        300
                    )
                    .is_err(),
                    "{template}: a field the document does not name is refused"
                );
                action.name()
            }
        };
        assert!(kinds.insert(kind), "{kind} documented twice");
        let other = if *method == Method::GET {
            Method::POST
        } else {
            Method::GET
        };
        // The other method is not served there, unless documented too (the queue and the
        // submission share /ra/v1/requests).
        let both = operations
            .iter()
            .any(|(m, t, _)| *m == other && t == template);
        if !both {
            assert_eq!(resolve(&other, &path), Err(RouteError::MethodNotAllowed));
        }
    }
    // Every route of `resolve` is documented.
    let served = [
        "me",
        "request",
        "queue",
        "expiring",
        "certificate",
        "designate",
        "withdraw",
        "submit",
        "approve",
        "approve-batch",
        "reject",
        "renew",
        "revoke",
        "scheduled",
        "cancel-revocation",
        "bulk",
        "propose-bulk-revocation",
        "approve-bulk-revocation",
        "card",
        "deliver",
        "holder-card",
        "holder-renew",
        "holder-revoke",
    ];
    assert_eq!(
        kinds,
        served.into_iter().collect(),
        "documented routes differ from the served ones"
    );
    assert_eq!(
        resolve(&Method::GET, "/ra/v1/nothing"),
        Err(RouteError::NotFound)
    );
}

/// The problem types the RA listener answers with: every refusal, and the rules written in
/// the code that maps errors to problems (the literal after each `StatusCode::…` in
/// `problem_for`'s module, `read_body_within`, and the CA errors' and the token's problems).
fn answered_rules() -> std::collections::BTreeSet<String> {
    let mut rules: std::collections::BTreeSet<String> = crate::ra::Refusal::ALL
        .iter()
        .map(|r| r.rule().to_owned())
        .collect();
    let function = |source: &'static str, name: &str| -> &'static str {
        let start = source
            .find(&format!("fn {name}"))
            .unwrap_or_else(|| panic!("fn {name}"));
        let end = source[start..]
            .find("\n}\n")
            .map_or(source.len(), |e| start + e);
        &source[start..end]
    };
    let problems = include_str!("../problem.rs");
    let sources = [
        include_str!("mod.rs")
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default(),
        include_str!("tls.rs")
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default(),
        function(include_str!("../mod.rs"), "read_body_within"),
        function(problems, "from(error: &CaError)"),
        function(problems, "hsm_unavailable"),
    ];
    // The policy's rejections name their own type.
    if function(include_str!("../../policy/mod.rs"), "problem_rule").contains("\"policy-violation:")
    {
        rules.insert("policy-violation".to_owned());
    }
    for source in sources {
        for (at, _) in source.match_indices("StatusCode::") {
            let window: String = source[at..].chars().take(90).collect();
            let window = window.split("=>").next().unwrap_or_default();
            let window = window.split(')').next().unwrap_or_default();
            if let Some(literal) = window.split('"').nth(1) {
                let rule = literal.split(':').next().unwrap_or_default();
                if !rule.is_empty() && rule.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    rules.insert(rule.to_owned());
                }
            }
        }
    }
    rules
}

#[test]
fn the_documented_problem_types_are_the_answered_ones() {
    let documented: std::collections::BTreeSet<String> = OPENAPI
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- urn:sceau:problem:"))
        .map(str::to_owned)
        .collect();
    let answered = answered_rules();
    // The scan finds the rules written as literals (a sample, checked so that it cannot
    // silently find nothing).
    for sample in [
        "rate-limited",
        "body-timeout",
        "policy-violation",
        "hsm-unavailable",
    ] {
        assert!(
            answered.contains(sample),
            "{sample} not found: {answered:?}"
        );
    }
    let undocumented: Vec<_> = answered.difference(&documented).collect();
    let unanswered: Vec<_> = documented.difference(&answered).collect();
    assert!(
        undocumented.is_empty() && unanswered.is_empty(),
        "answered but not documented: {undocumented:?}; documented but never answered: {unanswered:?}"
    );
}

/// The documented signed body of an operation: present, accepted by the request parser, and
/// asking for the action its route names.
fn signed_example<'a>(
    method: &Method,
    template: &str,
    example: Option<&'a str>,
    action: ActionKind,
) -> &'a str {
    let example = example.unwrap_or_else(|| panic!("{method} {template}: no x-signed-example"));
    let parsed = crate::ra::request::parse(example.as_bytes(), Vec::new(), example_time(), 300)
        .unwrap_or_else(|e| panic!("{template}: {e}: {example}"));
    assert_eq!(parsed.action.kind(), action, "{template}");
    example
}

/// When the documented examples were signed (their time is checked against a window).
fn example_time() -> crate::x509::Timestamp {
    crate::x509::Timestamp::parse_rfc3339("2026-11-28T14:00:00Z").unwrap()
}
