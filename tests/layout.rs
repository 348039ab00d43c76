//! The source layout rules of the crate, checked on the source itself:
//!
//! - `src/child/` (the spawner thread and everything between `clone3` and `execve`) imports
//!   nothing of the rest of the crate: it reads only what the host prepared;
//! - the top-level modules have no import cycle, except the configuration types that a
//!   profile is made of and that name the profile's own small types (listed below);
//! - every `unsafe fn` of the child side is under `unsafe_op_in_unsafe_fn` and every
//!   `unsafe` block has a SAFETY note (the crate-level lints `src/lib.rs` must keep).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests`.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate modules (first path segment after `crate::`) that `code` names.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `crate::{a, b}` groups name several modules.
        if name.is_empty() && after.starts_with('{') {
            let end = after.find('}').unwrap_or(after.len());
            for part in after[1..end].split(',') {
                let m: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !m.is_empty() {
                    out.insert(m);
                }
            }
        } else if !name.is_empty() {
            out.insert(name);
        }
        rest = after;
    }
    out
}

/// The top-level module a file belongs to (`src/child/init.rs` -> `child`).
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if first == "bin" || first == "init" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_string())
}

#[test]
fn the_child_tree_imports_nothing_outside_itself() {
    let mut files = Vec::new();
    rust_files(&src().join("child"), &mut files);
    assert!(files.len() >= 10, "src/child has {} files", files.len());
    let mut bad = Vec::new();
    for f in &files {
        for m in crate_refs(&code(f)) {
            if m != "child" {
                bad.push(format!("{}: crate::{m}", f.display()));
            }
        }
        let c = code(f);
        for needle in ["super::super", "sandbox_runner::"] {
            if c.contains(needle) {
                bad.push(format!("{}: {needle}", f.display()));
            }
        }
    }
    assert!(bad.is_empty(), "the child tree reaches out: {bad:#?}");
}

/// Cycles that are allowed: a profile is made of the configuration types of the mechanisms
/// (`[landlock]`, `[rlimits]`), which reuse the profile's path and size types.
const ALLOWED_CYCLES: [(&str, &str); 2] = [("landlock", "profile"), ("profile", "rlimit")];

#[test]
fn top_level_modules_have_no_import_cycle() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(top) = top_module(f) else { continue };
        let refs = crate_refs(&code(f));
        let e = edges.entry(top.clone()).or_default();
        e.extend(refs.into_iter().filter(|m| *m != top));
    }
    assert!(edges["sandbox"].contains("child"), "the scan sees imports");
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(x) = stack.pop() {
            for y in edges.get(&x).into_iter().flatten() {
                if seen.insert(y.clone()) {
                    stack.push(y.clone());
                }
            }
        }
        seen
    };
    let mut cycles = Vec::new();
    for (a, deps) in &edges {
        for b in deps {
            if a < b && reach(b).contains(a) {
                let pair = (a.as_str(), b.as_str());
                if !ALLOWED_CYCLES.contains(&pair) {
                    cycles.push(format!("{a} <-> {b}"));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
}

#[test]
fn the_crate_keeps_its_unsafe_lints() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    for lint in [
        "#![deny(unsafe_op_in_unsafe_fn)]",
        "#![deny(clippy::undocumented_unsafe_blocks)]",
    ] {
        assert!(lib.contains(lint), "src/lib.rs lost {lint}");
    }
}
