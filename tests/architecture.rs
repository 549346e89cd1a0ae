//! The floors of sceau, as an executable rule (issue 19).
//!
//! Every top-level module of `src/` stands on a floor. A module may use its own code and the
//! modules of lower floors; a module of the same floor only through an edge listed in
//! [`SIDEWAYS`]; never a module of a higher floor. [`FORBIDDEN`] narrows a floor further (the
//! entry points reach the state only through the service layer). Circles between top-level
//! modules are refused as well.
//!
//! The test reads every `.rs` file under `src/` (std only, no parser crate) and finds every
//! reference to `crate::x` (and `$crate::x`): in `use` declarations, grouped
//! (`use crate::{a, b::{c, d}}`) over any number of lines, and in paths written inline in code
//! (`crate::x::f()`, `crate::x::table!`), plus `super::` chains that climb to the crate root.
//! Comments (doc comments included) and string and character literals are not code and are
//! skipped. Test modules (`#[cfg(test)] mod tests`, `*_tests.rs`) count like any other code: a
//! test that needs a higher floor belongs to that floor. `lib.rs` and `main.rs` assemble the
//! crate and are exempt.
//!
//! An edge that breaks the rule today and cannot be removed yet is listed in
//! [`KNOWN_EXCEPTIONS`] with its reason; the test also fails when a listed edge no longer
//! occurs, so that the list only shrinks.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors, lowest first (a module's floor is its row's index).
const FLOORS: &[&[&str]] = &[
    // 0: pure formats (ASN.1, X.509, OCSP, CMS; no I/O, no keys), fail points and the test
    //    clock, durable file writes.
    &["x509", "failpoint", "durable"],
    // 1: generic mechanisms: the key-value store over RocksDB (tables, keys, a chain of bytes;
    //    no domain record) and the PKCS#11 HSM.
    &["store", "hsm"],
    // 2: the daemon's configuration; the audit log (its events chained through the store's hook).
    &["config", "audit"],
    // 3: certification policies (they read config's types; config never reads policy).
    &["policy"],
    // 4: the issuer state (CaState, stored CAs, a loaded Issuer, revoked entries): what both the
    //    CA and the VA need of a CA, so that va does not import ca.
    &["issuer"],
    // 5: the certification, validation and registration authorities (data flows ra -> ca; the
    //    VA reads what the CA wrote).
    &["ca", "va", "ra"],
    // 6: backups and restores of the whole store (every authority's tables); notices, derived
    //    from what the authorities recorded.
    &["backup", "notices"],
    // 7: the service layer, planned (issue 19): one function per action, "commit, then make it
    //    true everywhere" once, called by every entry point.
    &["service"],
    // 8: the entry points: parse, authorise, call the service, map the answer.
    &["http", "cli"],
];

/// Edges allowed between two modules of the same floor: `(from, to, why)`.
#[rustfmt::skip]
const SIDEWAYS: &[(&str, &str, &str)] = &[
    ("failpoint", "x509", "the pinned test clock (SCEAU_NOW) is a Timestamp"),
    ("ra", "ca", "data flows ra -> ca: the RA asks the CA to issue and revoke"),
    ("cli", "http", "`sceau serve` starts the listeners; the admin client speaks their API"),
];

/// Edges refused although the floors would allow them: `(from, to, why)`.
#[rustfmt::skip]
const FORBIDDEN: &[(&str, &str, &str)] = &[
    ("http", "store", "HTTP parses, authorises, calls the service and maps the answer"),
    ("http", "hsm", "HTTP parses, authorises, calls the service and maps the answer"),
    ("http", "cli", "the entry points share nothing but what is below them (the service)"),
    ("cli", "store", "the CLI, online and offline, sends the service typed requests"),
];

/// Edges against the rule that cannot be removed yet: `(from, to, why)`. The test fails when
/// one of them no longer occurs (delete it from this list then): the list only shrinks.
#[rustfmt::skip]
const KNOWN_EXCEPTIONS: &[(&str, &str, &str)] = &[
    ("cli", "store", "cli opens the store itself (open_store, the reader beside a running \
        daemon, the locked-store fallbacks, audit export reading the audit table, serve's \
        open_existing) and hands it to the service and the authorities; until src/service \
        opens what it serves"),
];

/// Files that assemble the crate rather than belong to a floor.
const EXEMPT: &[&str] = &["lib.rs", "main.rs"];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|modules| modules.contains(&module))
}

fn listed(list: &[(&str, &str, &str)], from: &str, to: &str) -> bool {
    list.iter().any(|(a, b, _)| *a == from && *b == to)
}

/// Why `from -> to` breaks the rule, or `None` when it is allowed.
fn verdict(from: &str, to: &str) -> Option<String> {
    if from == to {
        return None;
    }
    let (Some(f), Some(t)) = (floor_of(from), floor_of(to)) else {
        return Some(format!(
            "{from} -> {to}: a module not on any floor (declare it in FLOORS)"
        ));
    };
    if let Some((_, _, why)) = FORBIDDEN.iter().find(|(a, b, _)| *a == from && *b == to) {
        return Some(format!("{from} -> {to} is forbidden: {why}"));
    }
    if t > f {
        return Some(format!(
            "{from} (floor {f}) -> {to} (floor {t}): a lower floor reaches up"
        ));
    }
    if t == f && !listed(SIDEWAYS, from, to) {
        return Some(format!(
            "{from} -> {to}: both on floor {f}, and the edge is not in SIDEWAYS"
        ));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Reading the sources.

/// A reference to a top-level module found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reference {
    line: usize,
    module: String,
}

/// The text with comments and literals blanked (newlines kept, so offsets keep their line).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && (i == 0 || !ident(chars[i - 1]))
            && raw_string_start(&chars, i).is_some()
        {
            // r"..", r#".."#, br#".."#: ends at a quote followed by as many hashes.
            let (hashes, body) = raw_string_start(&chars, i).unwrap_or_default();
            for _ in i..body {
                out.push(' ');
            }
            i = body;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{7f}'.
            out.push_str("   ");
            i += 3;
            while i < chars.len() && chars[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            // Code, and lifetimes ('a), which are code too.
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Where the body of a raw string starting at `i` begins, and its number of hashes.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i + if chars[i] == 'b' { 2 } else { 1 };
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Reads an identifier at `i` (after spaces), returning it and the offset after it.
fn identifier(chars: &[char], mut i: usize) -> Option<(String, usize)> {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    let start = i;
    while chars.get(i).is_some_and(|c| is_ident(*c)) {
        i += 1;
    }
    (i > start).then(|| (chars[start..i].iter().collect(), i))
}

/// Skips spaces and `::` at `i`; `None` when something else follows.
fn path_separator(chars: &[char], mut i: usize) -> Option<usize> {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    (chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':')).then_some(i + 2)
}

/// The first segment of each path of a group `{a::b, c::{d, e}, self}` starting at `open`
/// (the brace): `(offset, segment)` for each.
fn group_heads(chars: &[char], open: usize) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '{' => {
                depth += 1;
                expect_head = depth == 1;
                i += 1;
            }
            '}' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    break;
                }
            }
            ',' => {
                expect_head = depth == 1;
                i += 1;
            }
            c if is_ident(c) && expect_head => {
                let (name, after) = identifier(chars, i).expect("an identifier");
                heads.push((i, name));
                expect_head = false;
                i = after;
            }
            _ => i += 1,
        }
    }
    heads
}

/// The modules a file at `module_path` (e.g. `["ca", "issue"]`) refers to through `crate::`
/// and `super::`, with the line of each reference.
fn references(text: &str, module_path: &[String]) -> Vec<Reference> {
    let code = code_only(text);
    let chars: Vec<char> = code.chars().collect();
    let line_of = |offset: usize| 1 + chars[..offset].iter().filter(|c| **c == '\n').count();
    let mut found = Vec::new();
    let mut push = |offset: usize, module: String| {
        if module != "self" && module != "super" && module != "crate" {
            found.push(Reference {
                line: line_of(offset),
                module,
            });
        }
    };
    // Inline modules (`mod tests { .. }`) open at a brace depth: `super` climbs them first.
    let mut inline: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == '}' {
            depth = depth.saturating_sub(1);
            while inline.last().is_some_and(|(d, _)| *d > depth) {
                inline.pop();
            }
            i += 1;
            continue;
        }
        if !is_ident(c) || (i > 0 && is_ident(chars[i - 1])) {
            i += 1;
            continue;
        }
        let (word, after) = identifier(&chars, i).expect("an identifier");
        if word == "mod"
            && let Some((name, after_name)) = identifier(&chars, after)
        {
            let mut j = after_name;
            while chars.get(j).is_some_and(|c| c.is_whitespace()) {
                j += 1;
            }
            if chars.get(j) == Some(&'{') {
                inline.push((depth + 1, name));
            }
            i = after_name;
            continue;
        }
        let start = i;
        let rest = match word.as_str() {
            "crate" => path_separator(&chars, after),
            "super" => {
                // Climb: each `super` leaves one module, inline ones first.
                let mut here: Vec<String> = module_path.to_vec();
                here.extend(inline.iter().map(|(_, name)| name.clone()));
                let mut j = after;
                here.pop();
                let mut last = Some(j);
                while let Some(next) = path_separator(&chars, j) {
                    match identifier(&chars, next) {
                        Some((w, a)) if w == "super" => {
                            here.pop();
                            j = a;
                            last = Some(j);
                        }
                        _ => {
                            last = Some(j);
                            break;
                        }
                    }
                }
                // Only a climb to the crate root names a top-level module.
                if here.is_empty() {
                    last.and_then(|j| path_separator(&chars, j))
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(j) = rest {
            let mut k = j;
            while chars.get(k).is_some_and(|c| c.is_whitespace()) {
                k += 1;
            }
            if chars.get(k) == Some(&'{') {
                for (offset, head) in group_heads(&chars, k) {
                    push(offset, head);
                }
            } else if let Some((head, _)) = identifier(&chars, k) {
                push(start, head);
            }
        }
        i = after;
    }
    found
}

/// Every `.rs` file under `dir`, except in a folder that is a crate of its own (its
/// `Cargo.toml` beside: `src/x509`, whose floor Cargo enforces; see
/// [`the_pure_formats_crate_needs_no_store_hsm_or_runtime`]).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if !path.join("Cargo.toml").exists() {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file relative to `src/`: `ca/issue.rs` -> `[ca, issue]`,
/// `ca/mod.rs` -> `[ca]`, `backup.rs` -> `[backup]`; `None` for an exempt file.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    if relative.components().count() == 1 && EXEMPT.iter().any(|e| relative == Path::new(e)) {
        return None;
    }
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.strip_suffix(".rs").unwrap_or(&last).to_owned();
    if stem != "mod" {
        parts.push(stem);
    }
    Some(parts)
}

/// Every edge between two different top-level modules: `(from, to)` -> where (`file:line`).
fn edges() -> BTreeMap<(String, String), Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "src/ should hold the crate's files");
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src/");
        let Some(path) = module_path(relative) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("a UTF-8 source file");
        let from = path[0].clone();
        for reference in references(&text, &path) {
            if reference.module != from {
                edges
                    .entry((from.clone(), reference.module))
                    .or_default()
                    .push(format!("src/{}:{}", relative.display(), reference.line));
            }
        }
    }
    edges
}

/// The top-level modules that stand in a circle (strongly connected components of more than
/// one module), each sorted.
fn circles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let reaches = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for (a, b) in edges {
                if *a == node && seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for node in &nodes {
        let circle: Vec<String> = nodes
            .iter()
            .filter(|other| reach[node].contains(**other) && reach[*other].contains(*node))
            .map(|n| (*n).clone())
            .collect();
        if circle.len() > 1 && !out.contains(&circle) {
            out.push(circle);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The rule.

#[test]
fn every_import_respects_the_floors() {
    let edges = edges();
    let mut broken = Vec::new();
    for ((from, to), places) in &edges {
        let Some(why) = verdict(from, to) else {
            continue;
        };
        if listed(KNOWN_EXCEPTIONS, from, to) {
            continue;
        }
        for place in places {
            broken.push(format!("{place}: {why}"));
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the floors (tests/architecture.rs):\n{}",
        broken.join("\n")
    );
}

#[test]
fn known_exceptions_still_occur_and_still_break_the_rule() {
    let edges = edges();
    let mut stale = Vec::new();
    for (from, to, why) in KNOWN_EXCEPTIONS {
        assert!(
            why.contains("until src/service"),
            "{from} -> {to}: say until when"
        );
        if verdict(from, to).is_none() {
            stale.push(format!(
                "{from} -> {to} is allowed by the floors: remove the exception"
            ));
        } else if !edges.contains_key(&(from.to_string(), to.to_string())) {
            stale.push(format!(
                "{from} -> {to} no longer occurs: remove it from KNOWN_EXCEPTIONS"
            ));
        }
    }
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

#[test]
fn no_circle_between_top_level_modules() {
    // Every edge, the known exceptions included: an exception never excuses a circle.
    let edges: BTreeSet<(String, String)> = edges().into_keys().collect();
    let found = circles(&edges);
    let described: Vec<String> = found
        .iter()
        .map(|circle| {
            let inside: Vec<String> = edges
                .iter()
                .filter(|(a, b)| circle.contains(a) && circle.contains(b))
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect();
            format!("{}: {}", circle.join(", "), inside.join(", "))
        })
        .collect();
    assert!(
        described.is_empty(),
        "circles between top-level modules:\n{}",
        described.join("\n")
    );
}

#[test]
fn every_module_of_src_is_on_a_floor_and_the_lists_name_declared_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut missing = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src/");
        if let Some(path) = module_path(relative)
            && floor_of(&path[0]).is_none()
        {
            missing.insert(path[0].clone());
        }
    }
    assert!(missing.is_empty(), "modules on no floor: {missing:?}");
    let mut seen = BTreeSet::new();
    for module in FLOORS.iter().copied().flatten() {
        assert!(seen.insert(*module), "{module} is on two floors");
    }
    for (from, to, _) in SIDEWAYS.iter().chain(FORBIDDEN).chain(KNOWN_EXCEPTIONS) {
        assert!(
            floor_of(from).is_some() && floor_of(to).is_some(),
            "{from} -> {to}"
        );
    }
    for (from, to, _) in SIDEWAYS {
        assert_eq!(
            floor_of(from),
            floor_of(to),
            "SIDEWAYS {from} -> {to}: same floor only"
        );
    }
}

/// `src/x509` (floor 0) is the crate `sceau-x509`: Cargo refuses any `use` of the daemon from
/// it (the daemon depends on it, a cycle cannot build). What remains to check is what it pulls
/// in: none of the store, the HSM, the runtime or the network, so that the formats build,
/// test and fuzz without them.
#[test]
fn the_pure_formats_crate_needs_no_store_hsm_or_runtime() {
    const HEAVY: &[&str] = &[
        "sceau",
        "rocksdb",
        "cryptoki",
        "tokio",
        "hyper",
        "async-nats",
        "rustls",
    ];
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/x509/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("src/x509/Cargo.toml");
    let mut section = String::new();
    let mut dependencies = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if section.contains("dependencies")
            && let Some((name, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            dependencies.push(name.trim().to_owned());
        }
    }
    assert!(
        dependencies.iter().any(|d| d == "der"),
        "the dependencies of src/x509/Cargo.toml were not read: {dependencies:?}"
    );
    let heavy: Vec<_> = dependencies
        .iter()
        .filter(|d| HEAVY.contains(&d.as_str()))
        .collect();
    assert!(heavy.is_empty(), "src/x509/Cargo.toml depends on {heavy:?}");
}

// ---------------------------------------------------------------------------------------------
// The reader, on tricky snippets.

/// What the reader finds in `text`, read as the file at `path`: "line module" pairs, joined.
fn modules(text: &str, path: &[&str]) -> String {
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    let found: Vec<String> = references(text, &path)
        .into_iter()
        .map(|r| format!("{} {}", r.line, r.module))
        .collect();
    found.join(", ")
}

#[test]
fn reader_finds_grouped_nested_and_multi_line_uses() {
    let text = "use crate::{\n    audit::AuditEvent,\n    ca::{self, revoke::{RevokedCertificate}},\n    store::*,\n};\nuse crate::x509::Timestamp;\n";
    assert_eq!(modules(text, &["va"]), "2 audit, 3 ca, 4 store, 6 x509");
    // A group of one with `self`, and spaces around the separators.
    assert_eq!(
        modules("use crate :: { self as root, hsm };", &["x"]),
        "1 hsm"
    );
}

#[test]
fn reader_finds_inline_paths_and_macros() {
    let text = "fn f() {\n    let s = crate::store::Store::open(p);\n    crate::store::table!(A, \"a\", String, ());\n    x.get::<crate::ra::Operators>(&k);\n}\nmacro_rules! m { () => { $crate::hsm::Hsm } }\n";
    assert_eq!(modules(text, &["backup"]), "2 store, 3 store, 4 ra, 6 hsm");
    // Not a path of this crate.
    assert!(modules("use my_crate::store; let x = krate::ca::f();", &["va"]).is_empty());
}

#[test]
fn reader_skips_comments_and_literals() {
    let text = r##"
// use crate::ca::Issuer;
/// See [`crate::backup`].
/* crate::cli /* nested crate::http */ still a comment crate::store */
let a = "crate::hsm::Hsm";
let b = r#"crate::ra "quoted" crate::va"#;
let c = '"'; let d = crate::audit::f(); let e = '\'';
fn g<'a>(x: &'a str) -> &'a str { crate::x509::h(x) }
"##;
    assert_eq!(modules(text, &["store"]), "7 audit, 8 x509");
}

#[test]
fn reader_counts_test_modules_and_climbs_super_to_the_crate_root() {
    // Test modules count: a test of store that needs audit is an edge store -> audit.
    let text = "pub fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::audit::AuditEvent;\n    use super::super::ca::X;\n}\n";
    // In src/store/mod.rs: `super` (from tests) is store, `super::super` is the crate root.
    assert_eq!(modules(text, &["store"]), "5 audit, 6 ca");
    // In src/store/schema.rs: `super::records` stays in store; `super::super::ca` leaves it.
    assert_eq!(
        modules(
            "use super::records::X;\nuse super::super::ca::Y;\n",
            &["store", "schema"]
        ),
        "2 ca"
    );
}

#[test]
fn the_rule_refuses_what_it_should() {
    assert!(verdict("store", "ra").is_some(), "a lower floor reaches up");
    assert!(verdict("va", "ca").is_some(), "same floor, not sideways");
    assert!(verdict("ra", "ca").is_none(), "listed sideways");
    assert!(verdict("http", "store").is_some(), "forbidden");
    assert!(verdict("backup", "store").is_none());
    assert!(verdict("store", "nowhere").is_some(), "undeclared");
    let edges: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(
        circles(&edges),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
}
