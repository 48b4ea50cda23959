//! The text-table source (`source = "file"` or `"hub"`): a train table, validation given or
//! carved from it, an optional test table, read by `table` (TSV, CSV, parquet, JSONL; hub files
//! fetched by `hub` into its cache), tokenized, the vocabulary built on train, and labels mapped
//! to class ids. `load_for_run` reads other tables as a trained run sees text (`eval`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::splits::{self, Parts};
use super::table::{self, Spec, Table};
use super::text::{self, Vocab};
use super::{labels, Dataset, Inputs, Split};
use crate::config::{Data, Source};
use crate::error::{Error, Result};
use crate::hub;

/// A table's rows tokenized.
struct Tokenized {
    table: Table,
    docs: Vec<Vec<String>>,
}

impl Tokenized {
    fn labels(&self) -> impl Iterator<Item = &str> + '_ {
        self.table.rows.iter().map(|r| r.label.as_str())
    }

    /// Numeric labels all negative (the hub's -1 for an unlabeled test split).
    fn unlabeled(&self) -> bool {
        self.labels().all(|l| number(l).is_some_and(|v| v < 0.0))
    }
}

/// The local path of a split's file: as given (file) or through the hub cache (hub).
fn locate(cfg: &Data, file: &Path) -> Result<PathBuf> {
    match (cfg.source, cfg.repo.as_deref()) {
        (Source::Hub, Some(repo)) => hub::fetch(repo, &cfg.revision, file),
        _ => Ok(file.to_path_buf()),
    }
}

fn read(cfg: &Data, file: &Path) -> Result<Tokenized> {
    let path = locate(cfg, file)?;
    // Hub files are parquet whatever `format` says for local files.
    let format = match cfg.source {
        Source::Hub => None,
        _ => cfg.format,
    };
    let table = table::read_table(
        &path,
        Spec {
            format,
            header: cfg.header,
            text_column: &cfg.text_column,
            label_column: Some(&cfg.label_column),
            skip_bad_rows: cfg.skip_bad_rows,
        },
    )?;
    let docs = table
        .rows
        .iter()
        .map(|r| text::tokens(&r.text, cfg))
        .collect();
    Ok(Tokenized { table, docs })
}

impl Tokenized {
    /// The rows at `keep` and those at `moved` (`splits::carve`); rows skipped while reading
    /// stay with the first.
    fn split(self, keep: &[usize], moved: &[usize]) -> (Tokenized, Tokenized) {
        let pick = |idx: &[usize]| Tokenized {
            table: Table {
                rows: idx.iter().map(|&i| self.table.rows[i].clone()).collect(),
                ..self.table.clone_meta()
            },
            docs: idx.iter().map(|&i| self.docs[i].clone()).collect(),
        };
        let (mut kept, carved) = (pick(keep), pick(moved));
        kept.table.skipped = self.table.skipped;
        (kept, carved)
    }
}

/// The `file` / `hub` dataset.
pub fn dataset(cfg: &Data, seed: u64) -> Result<Dataset> {
    let mut notes = Vec::new();
    let Parts {
        train,
        valid,
        mut test,
    } = splits::read(
        cfg,
        seed,
        "row",
        |_, p| read(cfg, p),
        |t| t.docs.len(),
        Tokenized::split,
        &mut notes,
    )?;
    for (name, split) in [("train", &train), ("valid", &valid)] {
        if split.unlabeled() {
            return Err(split.table.error(
                0,
                format!("every {name} label is negative (an unlabeled split); {name} needs labels"),
            ));
        }
    }
    if test.as_ref().is_some_and(Tokenized::unlabeled) {
        notes.push(format!(
            "test: {} has no labels (every label is negative, as the hub's -1); test metrics are skipped",
            test.as_ref().map(|t| t.table.path.display().to_string()).unwrap_or_default()
        ));
        test = None;
    }
    for split in [Some(&train), Some(&valid), test.as_ref()]
        .into_iter()
        .flatten()
    {
        if !split.table.skipped.is_empty() {
            let (at, why) = &split.table.skipped[0];
            notes.push(format!(
                "{}: skipped {} malformed rows (first: {}: {why})",
                split.table.path.display(),
                split.table.skipped.len(),
                if split.table.format == crate::config::Format::Parquet {
                    format!("row {at}")
                } else {
                    format!("line {at}")
                }
            ));
        }
    }

    let vocab = Vocab::build(&train.docs, cfg.min_freq, cfg.max_vocab);
    let all: Vec<&Tokenized> = [Some(&train), Some(&valid), test.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let (classes, kind) = class_names(&all, cfg.class_names.as_deref())?;
    let encode = |t: &Tokenized| -> Split {
        Split {
            inputs: Inputs::Tokens(t.docs.iter().map(|d| vocab.encode_tokens(d, cfg)).collect()),
            labels: t.labels().map(|l| class_id(&classes, &kind, l)).collect(),
        }
    };
    let (train_split, valid_split) = (encode(&train), encode(&valid));
    let test_split = test.as_ref().map(encode);
    let row_of = |t: &Tokenized, i: usize| (t.table.path.clone(), t.table.rows[i].at);
    let (at_train, at_valid) = (|i| row_of(&train, i), |i| row_of(&valid, i));
    let at_test = |i| test.as_ref().map_or((PathBuf::new(), 0), |t| row_of(t, i));
    // Named classes (class_names, or string labels) are declared by the names.
    let declared = matches!(kind, Labels::Names) || cfg.class_names.is_some();
    labels::classes(
        labels::Labeled::new("train", &train_split.labels, &at_train),
        labels::Labeled::new("valid", &valid_split.labels, &at_valid),
        test_split
            .as_ref()
            .map(|t| labels::Labeled::new("test", &t.labels, &at_test)),
        declared.then_some(classes.as_slice()),
        cfg.valid.is_none().then_some(cfg.val_fraction),
        &mut notes,
    )?;
    Ok(Dataset {
        train: train_split,
        valid: valid_split,
        test: test_split,
        vocab: Some(vocab),
        classes,
        notes,
        skipped: Vec::new(),
    })
}

/// A label read as a number ("1", "1.0", "-1"), if it is one.
fn number(label: &str) -> Option<f64> {
    label.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// How raw labels map to class ids (checked by `class_names`).
enum Labels {
    /// Numeric labels are the ids ("1" and "1.0" are class 1).
    Ids,
    /// String labels, by position in the class names.
    Names,
}

fn class_id(classes: &[String], labels: &Labels, l: &str) -> u32 {
    match labels {
        Labels::Ids => number(l).unwrap_or(0.0) as u32,
        Labels::Names => classes.iter().position(|c| c == l).unwrap_or(0) as u32,
    }
}

/// Class names by id. Numeric labels are class ids 0..=max, whole numbers (named by `given`
/// when set); string labels are mapped in the order of `given`, else sorted.
fn class_names(splits: &[&Tokenized], given: Option<&[String]>) -> Result<(Vec<String>, Labels)> {
    let first = &splits[0].table;
    let all_numeric = splits
        .iter()
        .all(|s| s.labels().all(|l| number(l).is_some()));
    if all_numeric {
        let mut max = 0u32;
        for (k, s) in splits.iter().enumerate() {
            for r in &s.table.rows {
                let v = number(&r.label).unwrap_or(-1.0);
                if v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f64 {
                    return Err(s.table.error(
                        r.at,
                        format!(
                            "label {} is not a class id (numeric labels must be whole numbers >= 0)",
                            r.label
                        ),
                    ));
                }
                if let Some(names) = given {
                    if v as usize >= names.len() {
                        return Err(s.table.error(
                            r.at,
                            format!(
                                "label {v} has no name: data.class_names has {} names",
                                names.len()
                            ),
                        ));
                    }
                }
                if k == 0 {
                    max = max.max(v as u32);
                }
            }
        }
        if let Some(names) = given {
            return Ok((names.to_vec(), Labels::Ids));
        }
        Ok(((0..=max).map(|c| c.to_string()).collect(), Labels::Ids))
    } else {
        // The training labels are the classes: a label only another split has is refused.
        let set: BTreeSet<&str> = splits[0].labels().collect();
        if given.is_none() {
            for (s, name) in splits.iter().zip(["train", "valid", "test"]).skip(1) {
                if let Some(r) = s
                    .table
                    .rows
                    .iter()
                    .find(|r| !set.contains(r.label.as_str()))
                {
                    return Err(s.table.error(
                        r.at,
                        format!(
                            "{name} label \"{}\" has no training example (training labels: {set:?}); a model cannot learn a class it never sees: fix the labels, or declare the classes with data.class_names",
                            r.label
                        ),
                    ));
                }
            }
        }
        if let Some(names) = given {
            for s in splits {
                if let Some(r) = s.table.rows.iter().find(|r| !names.contains(&r.label)) {
                    return Err(s.table.error(
                        r.at,
                        format!("label \"{}\" is not in data.class_names {names:?}", r.label),
                    ));
                }
            }
            return Ok((names.to_vec(), Labels::Names));
        }
        if set.len() < 2 {
            return Err(first.error(0, "need at least 2 distinct labels"));
        }
        Ok((set.into_iter().map(str::to_string).collect(), Labels::Names))
    }
}

/// Splits by name ("train", "valid", "test").
pub type NamedSplits = Vec<(&'static str, Split)>;

/// The labeled splits `other` names (train, valid, test: whichever it gives), read as a trained
/// run sees text: the run's tokenizer, lowercase, max_len and truncation settings, its
/// vocabulary, and its class names (integer labels are ids below their count; string labels
/// must be among them). Returns the splits by name and notes (unlabeled splits skipped).
/// `origin` names where `other` came from, for its errors.
pub fn load_for_run(
    other: &Data,
    origin: &str,
    run: &Data,
    vocab: &Vocab,
    classes: &[String],
) -> Result<(NamedSplits, Vec<String>)> {
    let cfg = Data {
        tokenizer: run.tokenizer,
        lowercase: run.lowercase,
        max_len: run.max_len,
        truncation_side: run.truncation_side,
        ..other.clone()
    };
    if !matches!(cfg.source, Source::File | Source::Hub) {
        return Err(Error::Config {
            location: origin.into(),
            key: "data.source".into(),
            msg: "the run reads text: it is scored on a table, source = \"file\" or \"hub\"".into(),
        });
    }
    let (mut out, mut notes) = (Vec::new(), Vec::new());
    for (name, file) in [
        ("train", &cfg.train),
        ("valid", &cfg.valid),
        ("test", &cfg.test),
    ] {
        let Some(file) = file else { continue };
        let t = read(&cfg, file)?;
        if t.unlabeled() {
            notes.push(format!(
                "{name}: {} has no labels; skipped",
                t.table.path.display()
            ));
            continue;
        }
        let mut labels = Vec::with_capacity(t.table.rows.len());
        for r in &t.table.rows {
            let id = match number(&r.label) {
                Some(v) if v >= 0.0 && v.fract() == 0.0 && (v as usize) < classes.len() => v as u32,
                _ => match classes.iter().position(|c| *c == r.label) {
                    Some(i) => i as u32,
                    None => {
                        return Err(t.table.error(
                            r.at,
                            format!(
                                "label \"{}\" is not one of the run's classes {classes:?}",
                                r.label
                            ),
                        ))
                    }
                },
            };
            labels.push(id);
        }
        let inputs = Inputs::Tokens(
            t.docs
                .iter()
                .map(|d| vocab.encode_tokens(d, &cfg))
                .collect(),
        );
        out.push((name, Split { inputs, labels }));
    }
    if out.is_empty() {
        return Err(Error::Config {
            location: origin.into(),
            key: "data.test".into(),
            msg: "names no labeled split to score (give data.test, data.valid or data.train)"
                .into(),
        });
    }
    Ok((out, notes))
}
