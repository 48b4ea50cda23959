//! Where a key is written in a config file (`file:line:col`), for errors that point at it:
//! by key, by the byte offset a TOML error reports, or under the overrides that set it last.

use std::path::Path;

use super::Override;

/// Where each key's value came from, to point errors at it.
pub(super) struct Origin<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) overrides: &'a [Override],
}

impl Origin<'_> {
    pub(super) fn locate(&self, key: &str) -> String {
        if let Some(o) = self.overrides.iter().rev().find(|o| o.key == key) {
            return o.origin.clone();
        }
        match key_span(self.text, key) {
            Some(pos) => {
                let (line, col) = line_col(self.text, pos);
                format!("{}:{line}:{col}", self.file.display())
            }
            None => format!("{} (default)", self.file.display()),
        }
    }
}

/// 1-based line and column of byte offset `pos`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let before = &text[..pos.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// Byte offset of `section.key` in the document (its key, or the section header).
fn key_span(text: &str, dotted: &str) -> Option<usize> {
    key_span_parts(text, &dotted.split('.').collect::<Vec<_>>())
}

/// `file:line:col` of the key at `parts` (keys that may hold dots, e.g. ["sweep", "axes",
/// "train.lr"]), or of the deepest table on the way that exists.
pub fn locate_parts(file: &Path, text: &str, parts: &[&str]) -> String {
    match key_span_parts(text, parts) {
        Some(pos) => {
            let (line, col) = line_col(text, pos);
            format!("{}:{line}:{col}", file.display())
        }
        None => file.display().to_string(),
    }
}

fn key_span_parts(text: &str, parts: &[&str]) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut pos = None;
    for &part in parts {
        let Some((k, v)) = table.get_key_value(part) else {
            break;
        };
        pos = Some(k.span().start);
        match v.get_ref().as_table() {
            Some(t) => table = t,
            None => break,
        }
    }
    pos
}

/// The key as written at `span`, under the table header above it: for errors where the
/// document does not parse as a table (a duplicate key), so `key_at` cannot walk it.
pub(super) fn key_written_at(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    let written = text.get(span.clone())?.trim().trim_matches(['"', '\'']);
    if written.is_empty() || written.contains(['\n', '=']) {
        return None;
    }
    // A key in a table header (`[model.x]`): the header up to it is the whole key.
    let line_start = text.get(..span.start)?.rfind('\n').map_or(0, |i| i + 1);
    let in_header = text.get(line_start..span.start)?.trim_start();
    if in_header.starts_with('[') {
        let key: String = format!("{in_header}{written}")
            .trim_start_matches(['[', ' '])
            .split('.')
            .map(|p| p.trim().trim_matches(['"', '\'']))
            .collect::<Vec<_>>()
            .join(".");
        return Some(key);
    }
    let header = text.get(..span.start)?.lines().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .map(|h| h.trim_matches(['[', ' ']).to_string())
    });
    Some(match header {
        Some(h) if !h.is_empty() => format!("{h}.{written}"),
        _ => written.to_string(),
    })
}

/// The dotted key whose key or value covers byte offset `pos` (for serde errors).
pub(super) fn key_at(text: &str, pos: usize) -> Option<String> {
    fn find(table: &toml::de::DeTable, pos: usize, path: &mut Vec<String>) -> bool {
        let covers = |s: std::ops::Range<usize>| s.start <= pos && pos < s.end.max(s.start + 1);
        for (k, v) in table.iter() {
            path.push(k.get_ref().to_string());
            if let Some(t) = v.get_ref().as_table() {
                if find(t, pos, path) {
                    return true;
                }
            } else if covers(k.span()) || covers(v.span()) {
                return true;
            }
            path.pop();
        }
        false
    }
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find(doc.get_ref(), pos, &mut path).then(|| path.join("."))
}

/// `text` (a whole config) without the `[data]` keys `keep` refuses: each one's line, value
/// and all, cut out by its span, so the rest reads exactly as written.
pub(super) fn without_data_keys(text: &str, keep: impl Fn(&str) -> bool) -> String {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return text.to_string();
    };
    let data = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == "data")
        .and_then(|(_, v)| v.get_ref().as_table());
    let Some(data) = data else {
        return text.to_string();
    };
    let mut cuts: Vec<std::ops::Range<usize>> = data
        .iter()
        .filter(|(k, _)| !keep(k.get_ref()))
        .map(|(k, v)| {
            let start = text[..k.span().start].rfind('\n').map_or(0, |i| i + 1);
            let end = v.span().end;
            let end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
            start..end
        })
        .collect();
    cuts.sort_by_key(|r| r.start);
    let (mut out, mut at) = (String::with_capacity(text.len()), 0);
    for cut in cuts {
        if cut.start >= at {
            out.push_str(&text[at..cut.start]);
            at = cut.end;
        }
    }
    out.push_str(&text[at..]);
    out
}
