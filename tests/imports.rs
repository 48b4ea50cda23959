//! The import graph of src/ (read from `crate::` and `super::` paths, test modules left out):
//! config/ imports nothing from data/ or model/, and no two files import each other, directly
//! or through others (`KNOWN_LOOPS` lists any loop tolerated while it is being removed: none
//! today). A file's edge to its own folder's mod.rs does not count (types a mod.rs defines for
//! its children).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Loops tolerated, each as its modules (a loop may shrink or go, never grow): none since
/// frame selection moved to data/selection.rs.
const KNOWN_LOOPS: &[&[&str]] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() != "bin" {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` -> "a::b", `src/a/mod.rs` -> "a", `src/lib.rs` -> "".
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The paths a file names after `crate::` and `super::`, each as segments from the crate root,
/// brace groups expanded (`use crate::{a::B, c}`).
fn paths(text: &str, module: &str) -> Vec<Vec<String>> {
    let body = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        let mut rest = body;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for p in expand(rest) {
                let mut full = base.clone();
                full.extend(p);
                out.push(full);
            }
        }
    }
    out
}

fn parent(module: &str) -> Vec<String> {
    let mut parts: Vec<String> = module.split("::").map(String::from).collect();
    parts.pop();
    parts.retain(|p| !p.is_empty());
    parts
}

/// The paths at the start of `s`: `a::b::C` or `{a::b, c::{d, e}}`.
fn expand(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut end = inner.len();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let mut out = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        let group = &inner[..end];
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(expand(&group[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.extend(expand(&group[start..]));
        return out;
    }
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let n = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if n == 0 {
            break;
        }
        segs.push(rest[..n].to_string());
        rest = &rest[n..];
        if let Some(r) = rest.strip_prefix("::") {
            if r.starts_with('{') {
                return expand(r)
                    .into_iter()
                    .map(|p| segs.iter().cloned().chain(p).collect())
                    .collect();
            }
            rest = r;
        } else {
            break;
        }
    }
    if segs.is_empty() {
        Vec::new()
    } else {
        vec![segs]
    }
}

/// The module a path lands in: its longest prefix that is a module.
fn target(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut g = BTreeMap::new();
    for f in &files {
        let m = module_of(&src, f);
        if m.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let own_folder = parent(&m).join("::");
        let deps: BTreeSet<String> = paths(&text, &m)
            .iter()
            .filter_map(|p| target(p, &modules))
            .filter(|t| *t != m && !t.is_empty() && *t != own_folder)
            .collect();
        g.insert(m, deps);
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn loops(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.g.contains_key(w) {
                continue;
            }
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn config_imports_nothing_from_data_or_model() {
    let g = graph();
    // config/ is a folder of files, one per section: none of them may.
    let files: Vec<&String> = g
        .keys()
        .filter(|k| *k == "config" || k.starts_with("config::"))
        .collect();
    assert!(files.len() > 1, "{files:?}");
    let bad: Vec<(&String, &String)> = files
        .iter()
        .flat_map(|f| g[*f].iter().map(move |d| (*f, d)))
        .filter(|(_, d)| d.starts_with("data") || d.starts_with("model"))
        .collect();
    assert!(bad.is_empty(), "config imports {bad:?}");
}

#[test]
fn no_import_loop_appears_or_grows() {
    let g = graph();
    let known: Vec<BTreeSet<String>> = KNOWN_LOOPS
        .iter()
        .map(|l| l.iter().map(|m| m.to_string()).collect())
        .collect();
    let new: Vec<BTreeSet<String>> = loops(&g)
        .into_iter()
        .filter(|l| !known.iter().any(|k| l.is_subset(k)))
        .collect();
    let edges = |l: &BTreeSet<String>| -> Vec<String> {
        l.iter()
            .flat_map(|a| {
                g[a].iter()
                    .filter(|b| l.contains(*b))
                    .map(move |b| format!("{a} -> {b}"))
            })
            .collect()
    };
    assert!(
        new.is_empty(),
        "import loops between files: {:?}",
        new.iter().map(edges).collect::<Vec<_>>()
    );
}

#[test]
fn the_parser_reads_brace_groups_and_super_paths() {
    let p = paths(
        "use crate::{checkpoint, config::{Config, Data}};\nuse super::record::Record;\nlet x = crate::data::video::MAX;\n",
        "sweep::driver",
    );
    let flat: Vec<String> = p.iter().map(|s| s.join("::")).collect();
    assert_eq!(
        flat,
        [
            "checkpoint",
            "config::Config",
            "config::Data",
            "data::video::MAX",
            "sweep::record::Record"
        ]
    );
}
