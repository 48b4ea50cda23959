//! Labelled text tables (TSV, CSV) for `source = "file"`: one row per example, a text column
//! and a label column chosen by header name or index. Every malformed row is an error that
//! names file and line. TSV fields are taken verbatim (GLUE's SST-2 has bare quotes in text);
//! CSV follows RFC 4180 quoting within a line.

use std::path::Path;

use crate::config::{Column, Format};
use crate::error::{Error, Result};

/// One example as read: text, raw label, 1-based line number.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub text: String,
    pub label: String,
    pub line: usize,
}

pub fn format_of(path: &Path, format: Option<Format>) -> Result<Format> {
    if let Some(f) = format {
        return Ok(f);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("tsv") => Ok(Format::Tsv),
        Some(e) if e.eq_ignore_ascii_case("csv") => Ok(Format::Csv),
        _ => Err(Error::data(
            path,
            0,
            "cannot tell the format from the extension; set data.format = \"tsv\" or \"csv\"",
        )),
    }
}

pub fn read_table(
    path: &Path,
    format: Option<Format>,
    header: bool,
    text_column: &Column,
    label_column: &Column,
) -> Result<Vec<Row>> {
    let format = format_of(path, format)?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let split = |line_no: usize, line: &str| -> Result<Vec<String>> {
        match format {
            Format::Tsv => Ok(line.split('\t').map(str::to_string).collect()),
            Format::Csv => split_csv(line).map_err(|m| Error::data(path, line_no, m)),
        }
    };
    let names = if header {
        match lines.next() {
            Some((n, l)) => split(n, l)?,
            None => return Err(Error::data(path, 1, "empty file: expected a header line")),
        }
    } else {
        Vec::new()
    };
    let index = |col: &Column, key: &str| -> Result<usize> {
        match col {
            Column::Index(i) => Ok(*i),
            Column::Name(n) if header => {
                names.iter().position(|h| h.trim() == n).ok_or_else(|| {
                    Error::data(
                        path,
                        1,
                        format!("data.{key} = \"{n}\" is not a column; the header has {names:?}"),
                    )
                })
            }
            Column::Name(n) => Err(Error::data(
                path,
                1,
                format!("data.{key} = \"{n}\" names a column but header = false; give an index"),
            )),
        }
    };
    let ti = index(text_column, "text_column")?;
    let li = index(label_column, "label_column")?;
    let need = ti.max(li) + 1;
    let mut rows = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields = split(n, line)?;
        if fields.len() < need {
            return Err(Error::data(
                path,
                n,
                format!(
                    "expected at least {need} {} fields, found {}",
                    if format == Format::Tsv {
                        "tab-separated"
                    } else {
                        "comma-separated"
                    },
                    fields.len()
                ),
            ));
        }
        let label = fields[li].trim().to_string();
        if label.is_empty() {
            return Err(Error::data(path, n, "empty label"));
        }
        rows.push(Row {
            text: fields[ti].clone(),
            label,
            line: n,
        });
    }
    if rows.is_empty() {
        return Err(Error::data(path, 0, "no data rows"));
    }
    Ok(rows)
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
        let rows = read_table(
            &p,
            None,
            true,
            &Column::Name("sentence".into()),
            &Column::Name("label".into()),
        )
        .unwrap();
        assert_eq!(rows[0].text, "good \"film\"");
        assert_eq!(rows[1].line, 3);
        let p = dir.join("t.csv");
        std::fs::write(&p, "pos,\"nice, fun\"\nneg\n").unwrap();
        let err = read_table(&p, None, false, &Column::Index(1), &Column::Index(0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: expected at least 2 comma-separated fields, found 1",
                p.display()
            )
        );
    }
}
