//! Labelled tables for `source = "file"` and `"hub"`: one row per example, a text column and a
//! label column chosen by name or index. TSV and CSV are read line by line here so that every
//! malformed row can be named by its line (TSV fields are taken verbatim, GLUE's SST-2 has bare
//! quotes in text; CSV follows RFC 4180 quoting within a line); JSONL is one JSON object per
//! line (serde_json); parquet is read with polars, and its rows are named by row number.
//! A malformed row is an error, or with `skip_bad_rows` skipped and counted.

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

fn delimited(path: &Path, format: Format, spec: &Spec) -> Result<Vec<Candidate>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let split = |line: &str| -> std::result::Result<Vec<String>, String> {
        match format {
            Format::Csv => split_csv(line),
            _ => Ok(line.split('\t').map(str::to_string).collect()),
        }
    };
    let names = if spec.header {
        match lines.next() {
            Some((n, l)) => split(l).map_err(|m| Error::data(path, n, m))?,
            None => return Err(Error::data(path, 1, "empty file: expected a header line")),
        }
    } else {
        Vec::new()
    };
    let names: Vec<&str> = names.iter().map(|n| n.trim()).collect();
    let ti = column_index(
        path,
        spec.text_column,
        "text_column",
        spec.header.then_some(&names),
    )?;
    let li = spec
        .label_column
        .map(|c| column_index(path, c, "label_column", spec.header.then_some(&names)))
        .transpose()?;
    let need = ti.max(li.unwrap_or(0)) + 1;
    let kind = if format == Format::Tsv {
        "tab-separated"
    } else {
        "comma-separated"
    };
    Ok(lines
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let fields = split(line).map_err(|m| (n, m))?;
            if fields.len() < need {
                return Err((
                    n,
                    format!(
                        "expected at least {need} {kind} fields, found {}",
                        fields.len()
                    ),
                ));
            }
            row(&fields[ti], li.map(|i| fields[i].trim().to_string()), n)
        })
        .collect())
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
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
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
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let n = i + 1;
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
                Some(serde_json::Value::Number(x)) if x.is_i64() => x.to_string(),
                Some(other) => {
                    return Err((
                        n,
                        format!("field \"{lf}\" is {other}, expected an integer or a string"),
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
        dt if dt.is_integer() => labels
            .cast(&DataType::Int64)
            .and_then(|s| s.i64().cloned())
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|l| l.map(|l| l.to_string()))
            .collect(),
        dt => {
            return Err(bad(format!(
                "label column \"{}\" holds {dt}, expected integers or strings",
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

fn split_csv(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == ',' {
            fields.push(std::mem::take(&mut cur));
            at_start = true;
        } else {
            cur.push(c);
            at_start = false;
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes() {
        assert_eq!(
            split_csv(r#"a,"b, ""c""",d"#).unwrap(),
            vec!["a", "b, \"c\"", "d"]
        );
        assert!(split_csv(r#"a,"b"#).is_err());
    }

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
                "{}:2: expected at least 2 comma-separated fields, found 1 (set data.skip_bad_rows = true to skip such rows)",
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
