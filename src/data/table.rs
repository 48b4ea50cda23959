//! Labelled tables for `source = "file"` and `"hub"`: one row per example, a text column and a
//! label column chosen by name or index. TSV and CSV are read with the `csv` crate (CSV with
//! RFC 4180 quoting, newlines inside quotes included; TSV fields verbatim, as GLUE's SST-2 has
//! bare quotes in text), which tells the line each record starts on, so every malformed row
//! (a field count unlike the header's, bytes that are not UTF-8) is named by its line; a UTF-8
//! byte-order mark is dropped. (polars' CSV reader, also a dependency, fails a whole file on a
//! ragged row naming no line, or with `truncate_ragged_lines` silently drops the extra fields,
//! pola-rs/polars#10585; its `ignore_errors` nulls values rather than skipping rows, #8843.) JSONL is one JSON object per line (serde_json); parquet is read with polars, and its
//! rows are named by row number. A malformed row is an error, or with `skip_bad_rows` skipped
//! and counted.

use std::path::{Path, PathBuf};

use crate::config::{Column, Format};
use crate::error::{Error, Result};

/// One example as read: text, raw label (integers as written, e.g. "1" or "-1"), and where it
/// came from (1-based line, or row for parquet).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub text: String,
    pub label: String,
    pub at: usize,
}

/// How to read a table.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub format: Option<Format>,
    pub header: bool,
    pub text_column: &'a Column,
    /// None: texts only (`predict --file` on a table); rows get an empty label.
    pub label_column: Option<&'a Column>,
    pub skip_bad_rows: bool,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    pub format: Format,
    pub rows: Vec<Row>,
    /// (line or row, reason) of each malformed row skipped under `skip_bad_rows`.
    pub skipped: Vec<(usize, String)>,
}

impl Table {
    /// The same file and format, no rows.
    pub fn clone_meta(&self) -> Table {
        Table {
            path: self.path.clone(),
            format: self.format,
            rows: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// An error about the row at `at` (a line, or a parquet row number).
    pub fn error(&self, at: usize, msg: impl Into<String>) -> Error {
        located(&self.path, self.format, at, msg.into())
    }
}

fn located(path: &Path, format: Format, at: usize, msg: String) -> Error {
    match format {
        Format::Parquet if at > 0 => Error::data(path, 0, format!("row {at}: {msg}")),
        _ => Error::data(path, at, msg),
    }
}

pub fn format_of(path: &Path, format: Option<Format>) -> Result<Format> {
    if let Some(f) = format {
        return Ok(f);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("tsv") => Ok(Format::Tsv),
        Some("csv") => Ok(Format::Csv),
        Some("parquet") => Ok(Format::Parquet),
        Some("jsonl") | Some("ndjson") => Ok(Format::Jsonl),
        _ => Err(Error::data(
            path,
            0,
            "cannot tell the format from the extension; set data.format = \"tsv\", \"csv\", \"parquet\" or \"jsonl\"",
        )),
    }
}

pub fn read_table(path: &Path, spec: Spec) -> Result<Table> {
    let format = format_of(path, spec.format)?;
    let mut table = Table {
        path: path.to_path_buf(),
        format,
        rows: Vec::new(),
        skipped: Vec::new(),
    };
    // Each candidate row: Ok(row) or Err((at, reason)) for a malformed one.
    let candidates = match format {
        Format::Tsv | Format::Csv => delimited(path, format, &spec)?,
        Format::Jsonl => jsonl(path, &spec)?,
        Format::Parquet => parquet(path, &spec)?,
    };
    for c in candidates {
        match c {
            Ok(row) => table.rows.push(row),
            Err((at, reason)) if spec.skip_bad_rows => table.skipped.push((at, reason)),
            Err((at, reason)) => {
                return Err(table.error(
                    at,
                    format!("{reason} (set data.skip_bad_rows = true to skip such rows)"),
                ))
            }
        }
    }
    if table.rows.is_empty() {
        return Err(Error::data(path, 0, "no data rows"));
    }
    Ok(table)
}

type Candidate = std::result::Result<Row, (usize, String)>;

fn row(text: &str, label: Option<String>, at: usize) -> Candidate {
    let labeled = label.is_some();
    let label = label.unwrap_or_default();
    if labeled && label.is_empty() {
        return Err((at, "empty label".into()));
    }
    Ok(Row {
        text: text.to_string(),
        label,
        at,
    })
}

/// The file's bytes without a UTF-8 byte-order mark.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    Ok(bytes)
}

/// A field as text, or why it is not UTF-8 (for the row's error).
fn utf8(field: &[u8], column: usize) -> std::result::Result<&str, String> {
    std::str::from_utf8(field).map_err(|e| {
        let at = e.valid_up_to();
        format!(
            "column {column} is not UTF-8 (byte 0x{:02X} at offset {at}; re-encode the file as UTF-8)",
            field[at]
        )
    })
}

fn delimited(path: &Path, format: Format, spec: &Spec) -> Result<Vec<Candidate>> {
    let bytes = read_bytes(path)?;
    let (sep, kind) = match format {
        Format::Tsv => (b'\t', "tab-separated"),
        _ => (b',', "comma-separated"),
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sep)
        .quoting(format == Format::Csv)
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes.as_slice());
    let mut records = reader.byte_records().map(|r| {
        r.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            Error::data(path, line, e.to_string())
        })
    });
    let mut names: Vec<String> = Vec::new();
    if spec.header {
        let Some(header) = records.next().transpose()? else {
            return Err(Error::data(path, 1, "empty file: expected a header line"));
        };
        let line = header.position().map_or(1, |p| p.line() as usize);
        for (i, f) in header.iter().enumerate() {
            names.push(
                utf8(f, i)
                    .map_err(|m| Error::data(path, line, format!("header: {m}")))?
                    .trim()
                    .to_string(),
            );
        }
    }
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let ti = column_index(
        path,
        spec.text_column,
        "text_column",
        spec.header.then_some(&name_refs),
    )?;
    let li = spec
        .label_column
        .map(|c| column_index(path, c, "label_column", spec.header.then_some(&name_refs)))
        .transpose()?;
    let need = ti.max(li.unwrap_or(0)) + 1;
    // Every row has the header's field count (without a header: the first row's).
    let mut width = spec.header.then_some(names.len());
    let what = if spec.header {
        "the header's"
    } else {
        "the first row's"
    };
    let mut out = Vec::new();
    for record in records {
        let record = record?;
        let n = record.position().map_or(0, |p| p.line() as usize);
        if record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let expected = *width.get_or_insert(record.len());
        let candidate = || -> Candidate {
            if record.len() != expected || record.len() < need {
                return Err((
                    n,
                    format!(
                        "expected {} {kind} fields ({what} count), found {}",
                        expected.max(need),
                        record.len()
                    ),
                ));
            }
            let text = utf8(&record[ti], ti).map_err(|m| (n, m))?;
            let label = li
                .map(|i| utf8(&record[i], i).map(|l| l.trim().to_string()))
                .transpose()
                .map_err(|m| (n, m))?;
            row(text, label, n)
        };
        out.push(candidate());
    }
    Ok(out)
}

/// A column's index: by number, or by name among `names` (None: the table has no names).
fn column_index(path: &Path, col: &Column, key: &str, names: Option<&Vec<&str>>) -> Result<usize> {
    match (col, names) {
        (Column::Index(i), _) => Ok(*i),
        (Column::Name(n), Some(names)) => names.iter().position(|h| h == n).ok_or_else(|| {
            Error::data(
                path,
                1,
                format!("data.{key} = \"{n}\" is not a column; the columns are {names:?}"),
            )
        }),
        (Column::Name(n), None) => Err(Error::data(
            path,
            1,
            format!("data.{key} = \"{n}\" names a column but header = false; give an index"),
        )),
    }
}

fn jsonl(path: &Path, spec: &Spec) -> Result<Vec<Candidate>> {
    let bytes = read_bytes(path)?;
    let field = |col: &Column, key: &str| -> Result<String> {
        match col {
            Column::Name(n) => Ok(n.clone()),
            Column::Index(_) => Err(Error::data(
                path,
                0,
                format!("data.{key}: JSONL fields are named; give the field name"),
            )),
        }
    };
    let tf = field(spec.text_column, "text_column")?;
    let lf = spec
        .label_column
        .map(|c| field(c, "label_column"))
        .transpose()?;
    Ok(bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| {
            let n = i + 1;
            let line = std::str::from_utf8(line).map_err(|e| {
                (
                    n,
                    format!(
                        "not UTF-8 (byte 0x{:02X} at offset {}; re-encode the file as UTF-8)",
                        line[e.valid_up_to()],
                        e.valid_up_to()
                    ),
                )
            })?;
            let obj: serde_json::Value =
                serde_json::from_str(line).map_err(|e| (n, format!("not JSON: {e}")))?;
            let text = match obj.get(&tf) {
                Some(serde_json::Value::String(t)) => t.as_str(),
                Some(other) => {
                    return Err((n, format!("field \"{tf}\" is {other}, expected a string")))
                }
                None => return Err((n, format!("no field \"{tf}\""))),
            };
            let Some(lf) = &lf else {
                return row(text, None, n);
            };
            let label = match obj.get(lf) {
                Some(serde_json::Value::String(l)) => l.trim().to_string(),
                Some(serde_json::Value::Number(x)) => x.to_string(),
                Some(other) => {
                    return Err((
                        n,
                        format!("field \"{lf}\" is {other}, expected a number or a string"),
                    ))
                }
                None => return Err((n, format!("no field \"{lf}\""))),
            };
            row(text, Some(label), n)
        })
        .collect())
}

fn parquet(path: &Path, spec: &Spec) -> Result<Vec<Candidate>> {
    use polars::prelude::{DataType, ParquetReader, SerReader};
    let bad = |msg: String| Error::data(path, 0, msg);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| bad(format!("not a readable parquet file: {e}")))?;
    let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
    let ti = column_index(path, spec.text_column, "text_column", Some(&names))?;
    let li = spec
        .label_column
        .map(|c| column_index(path, c, "label_column", Some(&names)))
        .transpose()?;
    let pick = |i: usize, key: &str| {
        df.columns()
            .get(i)
            .map(|c| c.as_materialized_series().clone())
            .ok_or_else(|| {
                bad(format!(
                    "data.{key} = {i}: the file has {} columns",
                    names.len()
                ))
            })
    };
    let texts = pick(ti, "text_column")?;
    let texts = texts.str().map_err(|_| {
        bad(format!(
            "text column \"{}\" holds {}, expected strings",
            names[ti],
            texts.dtype()
        ))
    })?;
    // Per row: None = texts only; Some(None) = a missing label.
    let Some(li) = li else {
        return Ok(texts
            .iter()
            .enumerate()
            .map(|(i, t)| match t {
                Some(t) => row(t, None, i + 1),
                None => Err((i + 1, "missing text".to_string())),
            })
            .collect());
    };
    let labels = pick(li, "label_column")?;
    let labels: Vec<Option<String>> = match labels.dtype() {
        DataType::String => labels
            .str()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|l| l.map(|l| l.trim().to_string()))
            .collect(),
        // Whole floats print as integers ("1"), so 1 and 1.0 are one class.
        dt if dt.is_primitive_numeric() => labels
            .cast(&DataType::Float64)
            .and_then(|s| s.f64().cloned())
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|l| l.map(|l| l.to_string()))
            .collect(),
        dt => {
            return Err(bad(format!(
                "label column \"{}\" holds {dt}, expected numbers or strings",
                names[li]
            )))
        }
    };
    Ok(texts
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (t, l))| match (t, l) {
            (Some(t), Some(l)) => row(t, Some(l), i + 1),
            (None, _) => Err((i + 1, "missing text".to_string())),
            (_, None) => Err((i + 1, "missing label".to_string())),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_by_name_and_index_and_reports_bad_rows() {
        let dir = std::env::temp_dir().join(format!("rnnlab-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.tsv");
        std::fs::write(&p, "sentence\tlabel\ngood \"film\"\t1\nbad\t0\n").unwrap();
        let (sentence, label) = (
            Column::Name("sentence".into()),
            Column::Name("label".into()),
        );
        let spec = Spec {
            format: None,
            header: true,
            text_column: &sentence,
            label_column: Some(&label),
            skip_bad_rows: false,
        };
        let rows = read_table(&p, spec).unwrap().rows;
        assert_eq!(rows[0].text, "good \"film\"");
        assert_eq!(rows[1].at, 3);
        let p = dir.join("t.csv");
        std::fs::write(&p, "pos,\"nice, fun\"\nneg\n").unwrap();
        let (one, zero) = (Column::Index(1), Column::Index(0));
        let spec = Spec {
            header: false,
            text_column: &one,
            label_column: Some(&zero),
            ..spec
        };
        let err = read_table(&p, spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: expected 2 comma-separated fields (the first row's count), found 1 (set data.skip_bad_rows = true to skip such rows)",
                p.display()
            )
        );
        let t = read_table(
            &p,
            Spec {
                skip_bad_rows: true,
                ..spec
            },
        )
        .unwrap();
        assert_eq!((t.rows.len(), t.skipped.len(), t.skipped[0].0), (1, 1, 2));
    }
}
