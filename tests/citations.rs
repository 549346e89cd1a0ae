//! The map is true: every file of the repository that a comment or a document cites exists,
//! every `#anchor` cited in a Markdown document is made by one of its headings, and nothing
//! cites the notes kept outside the repository (a clone has only what is in it).
//!
//! Scanned: `src/`, `tests/`, `docs/`, `benches/`, `config/`, `policies/`, `hsm/`, `fuzz/`,
//! `systemd/`, `README.md` and `Cargo.toml`, every text file in them. A citation is:
//!
//! - a path that starts with one of the repository's top folders and ends with one of
//!   [`EXTENSIONS`] (`docs/design.md`, `src/x509/crl.rs`, `benches/ocsp-load.sh`), optionally
//!   followed by `#anchor`; it must not be glued to what comes before it, so that URLs
//!   (`https://host/src/a.rs`), absolute or user paths (`/etc/sceau/sceau.toml`,
//!   `$WORK/node-a.toml`, `~/x/docs/a.md`) and relative `include_str!` paths (`../../docs/…`) are
//!   not taken for citations;
//! - an upper-case Markdown name at the top of the repository (`README.md`);
//! - in a Markdown file, the target of a relative link `[text](target)`, resolved against the
//!   file's folder (`[x](invariants.md)` in `docs/`), and `[text](#anchor)` in the same file.
//!
//! Rust paths (`der::asn1`, `crate::va::crl`) have no extension and are never citations.
//! Uses std only.
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// What is scanned, from the repository's root.
const SCANNED: &[&str] = &[
    "src",
    "tests",
    "docs",
    "benches",
    "config",
    "policies",
    "hsm",
    "fuzz",
    "systemd",
    "README.md",
    "Cargo.toml",
];

/// Folders that hold build output or generated data, not text anyone wrote.
const SKIPPED_DIRS: &[&str] = &["target", "corpus", "artifacts", "coverage", ".git"];

/// The repository's top folders: a citation starts with one of them.
const TOP_DIRS: &[&str] = &[
    "src", "tests", "docs", "benches", "config", "policies", "hsm", "fuzz", "systemd",
];

/// The kinds of file a citation names.
const EXTENSIONS: &[&str] = &["md", "rs", "sh", "toml", "yaml", "yml", "py", "service"];

/// Names of notes that live outside the repository, and the way to reach them: a mention
/// points a reader at something their clone does not have. Built from parts so that this file
/// does not mention them itself.
fn outside_notes() -> Vec<String> {
    let mut names: Vec<String> = ["DESIGN", "PROFILES", "CONFORMANCE", "STYLE"]
        .iter()
        .map(|name| format!("{name}.md"))
        .collect();
    names.push(["STACK", "NOTES"].join("-"));
    names.push(format!("{}/shared", ".."));
    names.push(format!("/work/{}", "shared"));
    names
}

/// One citation found in a file.
#[derive(Debug, PartialEq, Eq)]
struct Citation {
    /// The cited path, relative to the repository's root.
    path: String,
    anchor: Option<String>,
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn is_anchor_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-')
}

fn has_extension(path: &str) -> bool {
    path.rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && EXTENSIONS.contains(&ext))
}

/// The anchor right after `rest` starts with `#`, if any.
fn anchor_at(rest: &str) -> Option<String> {
    let after = rest.strip_prefix('#')?;
    let anchor: String = after.chars().take_while(|c| is_anchor_char(*c)).collect();
    let anchor = anchor.trim_end_matches(['-', '_']).to_owned();
    (!anchor.is_empty()).then_some(anchor)
}

/// The repository paths cited on one line: top-folder paths and upper-case top-level
/// Markdown names.
fn cited_paths(line: &str) -> Vec<Citation> {
    let mut found = Vec::new();
    let mut start = 0;
    while start < line.len() {
        let rest = &line[start..];
        let Some(c) = rest.chars().next() else { break };
        let glued = line[..start]
            .chars()
            .next_back()
            .is_some_and(|p| is_path_char(p) || matches!(p, '$' | '}' | '~' | ':' | '@'));
        if glued || !c.is_ascii_alphabetic() {
            start += c.len_utf8();
            continue;
        }
        let token_len = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
        let token = rest[..token_len].trim_end_matches(['.', '-', '/']);
        let after = &rest[token.len()..];
        let top_folder = TOP_DIRS
            .iter()
            .any(|dir| token.strip_prefix(dir).is_some_and(|t| t.starts_with('/')));
        let top_markdown = !token.contains('/')
            && token.strip_suffix(".md").is_some_and(|stem| {
                stem.starts_with(|c: char| c.is_ascii_uppercase())
                    && stem.chars().all(|c| {
                        c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    })
            });
        if (top_folder || top_markdown) && has_extension(token) && !token.contains("..") {
            found.push(Citation {
                path: token.to_owned(),
                anchor: anchor_at(after),
            });
        }
        start += token_len.max(1);
    }
    found
}

/// The targets of relative Markdown links on one line, resolved against `dir` (the folder of
/// the file, relative to the root); `path` is empty for a link to an anchor of the same file.
fn markdown_links(line: &str, dir: &Path) -> Vec<Citation> {
    let mut found = Vec::new();
    for (at, _) in line.match_indices("](") {
        let rest = &line[at + 2..];
        let Some(end) = rest.find(')') else { continue };
        let target = rest[..end].trim();
        let target = target.split_whitespace().next().unwrap_or(""); // [x](file "title")
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = match target.split_once('#') {
            Some((file, anchor)) => (file, Some(anchor.to_owned())),
            None => (target, None),
        };
        let path = if file.is_empty() {
            String::new()
        } else {
            normalise(&dir.join(file))
        };
        found.push(Citation { path, anchor });
    }
    found
}

/// `docs/../README.md` -> `README.md`; a path that leaves the repository keeps its `..`.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                if parts.last().is_some_and(|p| p != "..") {
                    parts.pop();
                } else {
                    parts.push("..".into());
                }
            }
            std::path::Component::CurDir => {}
            other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
        }
    }
    parts.join("/")
}

/// The anchors GitHub makes for a Markdown file's headings: lower case, letters, digits,
/// spaces, hyphens and underscores kept, spaces made hyphens, repeats numbered `-1`, `-2`;
/// plus explicit `<a id="...">` / `<a name="...">`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut fenced = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        for key in ["<a id=\"", "<a name=\""] {
            for (at, _) in line.match_indices(key) {
                let rest = &line[at + key.len()..];
                if let Some(end) = rest.find('"') {
                    out.insert(rest[..end].to_owned());
                }
            }
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every text file under the scanned paths, relative to the root, sorted.
fn scanned_files() -> Vec<PathBuf> {
    fn walk(root: &Path, relative: &Path, out: &mut Vec<PathBuf>) {
        let path = root.join(relative);
        if path.is_file() {
            out.push(relative.to_owned());
            return;
        }
        let Ok(entries) = fs::read_dir(&path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if SKIPPED_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            walk(root, &relative.join(name), out);
        }
    }
    let mut out = Vec::new();
    for scanned in SCANNED {
        walk(&root(), Path::new(scanned), &mut out);
    }
    out.sort();
    out
}

#[test]
fn every_cited_file_and_anchor_exists_and_nothing_cites_notes_outside_the_repository() {
    let root = root();
    let notes = outside_notes();
    let mut anchor_cache: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut problems = Vec::new();
    let mut citations = 0;
    for file in scanned_files() {
        // Binary files (fixtures, keys in DER) are not text anyone cites from.
        let Ok(text) = fs::read_to_string(root.join(&file)) else {
            continue;
        };
        let shown = file.to_string_lossy().replace('\\', "/");
        let dir = file.parent().unwrap_or(Path::new("")).to_owned();
        let markdown = file.extension().is_some_and(|e| e == "md");
        for (index, line) in text.lines().enumerate() {
            let at = format!("{shown}:{}", index + 1);
            for note in &notes {
                if line.contains(note.as_str()) {
                    problems.push(format!(
                        "{at}: mentions {note}, which is not in the repository: cite a section of docs/design.md or another document of the repository"
                    ));
                }
            }
            let mut cited = cited_paths(line);
            if markdown {
                cited.extend(markdown_links(line, &dir));
            }
            for citation in cited {
                if notes.iter().any(|n| citation.path.ends_with(n.as_str())) {
                    continue; // reported above
                }
                citations += 1;
                let target = if citation.path.is_empty() {
                    shown.clone()
                } else {
                    citation.path.clone()
                };
                if !root.join(&target).is_file() {
                    problems.push(format!("{at}: cites {target}, which does not exist"));
                    continue;
                }
                let Some(anchor) = &citation.anchor else {
                    continue;
                };
                if !target.ends_with(".md") {
                    continue;
                }
                let known = anchor_cache.entry(target.clone()).or_insert_with(|| {
                    anchors(&fs::read_to_string(root.join(&target)).unwrap_or_default())
                });
                if !known.contains(anchor) {
                    problems.push(format!(
                        "{at}: cites {target}#{anchor}, but no heading of {target} makes that anchor"
                    ));
                }
            }
        }
    }
    assert!(
        citations > 100,
        "only {citations} citations found: is the scanner still finding them?"
    );
    assert!(
        problems.is_empty(),
        "{} citation(s) point nowhere:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_scanner_finds_citations_and_leaves_other_paths_alone() {
    let paths = |line: &str| -> Vec<String> {
        cited_paths(line)
            .into_iter()
            .map(|c| match c.anchor {
                Some(anchor) => format!("{}#{anchor}", c.path),
                None => c.path,
            })
            .collect()
    };
    assert_eq!(
        paths("/// RFC 5280 (docs/design.md#crl-and-arl): see src/x509/crl.rs."),
        ["docs/design.md#crl-and-arl", "src/x509/crl.rs"]
    );
    assert_eq!(
        paths("run `benches/ocsp-load.sh`, then tests/run.sh; README.md says"),
        ["benches/ocsp-load.sh", "tests/run.sh", "README.md"]
    );
    assert_eq!(
        paths("docs/design.md#pitfalls, 3"),
        ["docs/design.md#pitfalls"]
    );
    for elsewhere in [
        "https://github.com/o/r/blob/main/src/lib.rs",
        "/etc/sceau/sceau.toml and ~/x/docs/a.md",
        "\"$WORK/node-a.toml\" ${DIR}/config/sceau.toml",
        "include_str!(\"../../config/sceau.toml\")",
        "der::asn1::OctetString, crate::va::crl::MAX_AHEAD_SECONDS",
        "policies/*.toml and src/<module>.rs and tests/fixtures/csr",
        "x.toml name.md lower.md",
    ] {
        assert_eq!(paths(elsewhere), Vec::<String>::new(), "{elsewhere}");
    }
    let links = markdown_links(
        "[a](invariants.md) [b](../README.md#commands) [c](#floors) [d](https://x.org/y.md)",
        Path::new("docs"),
    );
    let links: Vec<(String, Option<String>)> =
        links.into_iter().map(|c| (c.path, c.anchor)).collect();
    assert_eq!(
        links,
        [
            ("docs/invariants.md".to_owned(), None),
            ("README.md".to_owned(), Some("commands".to_owned())),
            (String::new(), Some("floors".to_owned())),
        ]
    );
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    let made = anchors(
        "# sceau: design\n## Who uses it\n### CRL and ARL\n```\n# not a heading\n```\n\
         ## Floors\n## Floors\n#### `x509` and the rest\n<a id=\"kept\"></a>\n",
    );
    for anchor in [
        "sceau-design",
        "who-uses-it",
        "crl-and-arl",
        "floors",
        "floors-1",
        "x509-and-the-rest",
        "kept",
    ] {
        assert!(made.contains(anchor), "{anchor} not in {made:?}");
    }
    assert!(!made.contains("not-a-heading"));
}
