//! Datasets: the built-in synthetic tasks, labelled text tables and video clips, turned into
//! sequences (token ids, per-step features or frames), labels, class names and, for text, a
//! vocabulary. Everything a run needs to reload a model (what its input is, vocabulary, class
//! names) comes from here and is saved with the run.

pub mod batch;
pub mod clips;
pub mod frames;
pub mod hub;
pub mod labels;
pub mod selection;
pub mod synthetic;
pub mod table;
pub mod tensors;
pub mod text;
pub mod vectors;
pub mod video;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::config::{Data, Source};
use crate::error::{Error, Result};
pub use clips::Clips;
use table::{Spec, Table};
use text::Vocab;

/// Sequences of one kind, one per example.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// Token ids.
    Tokens(Vec<Vec<u32>>),
    /// `dim` reals per step: each sequence is steps x dim values, step-major.
    Features { dim: usize, seqs: Vec<Vec<f32>> },
    /// Clips: each is frames x (channels x height x width) bytes (0..=255), frame-major, each
    /// frame channel-major (CHW, as PyTorch); in memory or in a cache file.
    Frames { shape: FrameShape, clips: Clips },
}

/// One video frame's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrameShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl FrameShape {
    pub fn pixels(&self) -> usize {
        self.channels * self.height * self.width
    }
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs::Tokens(Vec::new())
    }
}

impl Inputs {
    pub fn len(&self) -> usize {
        match self {
            Inputs::Tokens(s) => s.len(),
            Inputs::Features { seqs, .. } => seqs.len(),
            Inputs::Frames { clips, .. } => clips.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Steps (tokens, feature rows, frames) of example `i`.
    pub fn steps(&self, i: usize) -> usize {
        match self {
            Inputs::Tokens(s) => s[i].len(),
            Inputs::Features { dim, seqs } => seqs[i].len() / (*dim).max(1),
            Inputs::Frames { shape, clips } => clips.bytes(i) / shape.pixels().max(1),
        }
    }

    /// The token sequences (empty for other inputs).
    pub fn tokens(&self) -> &[Vec<u32>] {
        match self {
            Inputs::Tokens(s) => s,
            _ => &[],
        }
    }
}

/// Sequences and their class ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    pub inputs: Inputs,
    pub labels: Vec<u32>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The token sequences (empty for other inputs).
    pub fn tokens(&self) -> &[Vec<u32>] {
        self.inputs.tokens()
    }
}

pub struct Dataset {
    pub train: Split,
    pub valid: Split,
    pub test: Option<Split>,
    pub vocab: Vocab,
    /// Class names by id (`data.class_names`, string labels in sorted order, or "0", "1", ...).
    pub classes: Vec<String>,
    /// What a user should know about how the data was read (carved validation, skipped rows,
    /// an unlabeled test split), printed at the start of a run.
    pub notes: Vec<String>,
}

/// Builds the dataset a config asks for. `seed` makes generation and splits repeatable.
pub fn load(cfg: &Data, seed: u64) -> Result<Dataset> {
    let ds = match cfg.source {
        Source::SyntheticSentiment => {
            let vocab = synthetic::sentiment_vocab();
            // Distinct seeds per split so the splits are independent samples.
            Dataset {
                train: synthetic::sentiment(cfg.num_train, seed.wrapping_mul(3) + 1, &vocab),
                valid: synthetic::sentiment(cfg.num_valid, seed.wrapping_mul(3) + 2, &vocab),
                test: (cfg.num_test > 0)
                    .then(|| synthetic::sentiment(cfg.num_test, seed.wrapping_mul(3) + 3, &vocab)),
                vocab,
                classes: vec!["negative".into(), "positive".into()],
                notes: Vec::new(),
            }
        }
        Source::DelayedRecall => {
            let gen =
                |n, s| synthetic::delayed_recall(n, cfg.lag, cfg.num_classes, cfg.vocab_size, s);
            Dataset {
                train: gen(cfg.num_train, seed.wrapping_mul(3) + 1),
                valid: gen(cfg.num_valid, seed.wrapping_mul(3) + 2),
                test: (cfg.num_test > 0).then(|| gen(cfg.num_test, seed.wrapping_mul(3) + 3)),
                vocab: synthetic::recall_vocab(cfg.num_classes, cfg.vocab_size),
                classes: (0..cfg.num_classes).map(|c| c.to_string()).collect(),
                notes: Vec::new(),
            }
        }
        Source::SyntheticVideo => return video::synthetic_dataset(cfg, seed),
        Source::Tensors => return tensors::dataset(cfg, seed),
        Source::Frames => return frames::dataset(cfg, seed),
        Source::File | Source::Hub => return load_tables(cfg, seed),
    };
    let cut = |s: Split| Split {
        inputs: match s.inputs {
            Inputs::Tokens(seqs) => Inputs::Tokens(
                seqs.into_iter()
                    .map(|ids| text::truncate(ids, cfg.max_len, cfg.truncation_side))
                    .collect(),
            ),
            other => other,
        },
        labels: s.labels,
    };
    Ok(Dataset {
        train: cut(ds.train),
        valid: cut(ds.valid),
        test: ds.test.map(cut),
        ..ds
    })
}

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

/// Moves a seeded `fraction` of `train`'s rows into a new validation split.
fn carve(train: Tokenized, fraction: f64, seed: u64) -> (Tokenized, Tokenized) {
    let n = train.docs.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x05ee_d5a1));
    // At least one row each side (`load_tables` rejects n < 2).
    let n_val = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
    let mut keep = vec![true; n];
    for &i in &idx[..n_val] {
        keep[i] = false;
    }
    let empty = || Tokenized {
        table: train.table.clone_meta(),
        docs: Vec::new(),
    };
    let (mut tr, mut val) = (empty(), empty());
    for (i, (d, r)) in train.docs.into_iter().zip(train.table.rows).enumerate() {
        let dst = if keep[i] { &mut tr } else { &mut val };
        dst.docs.push(d);
        dst.table.rows.push(r);
    }
    tr.table.skipped = train.table.skipped;
    (tr, val)
}

fn load_tables(cfg: &Data, seed: u64) -> Result<Dataset> {
    let train_file = cfg.train.as_deref().ok_or_else(|| Error::Config {
        location: "config".into(),
        key: "data.train".into(),
        msg: "needs a train file".into(),
    })?;
    let mut notes = Vec::new();
    let train = read(cfg, train_file)?;
    let (train, valid) = match &cfg.valid {
        Some(p) => (train, read(cfg, p)?),
        None if train.docs.len() < 2 => {
            return Err(train.table.error(
                0,
                "one row cannot be split into train and validation (give data.valid)",
            ))
        }
        None => {
            let (tr, val) = carve(train, cfg.val_fraction, seed);
            notes.push(format!(
                "validation: {} rows carved from train (val_fraction {}, seed {seed})",
                val.docs.len(),
                cfg.val_fraction
            ));
            (tr, val)
        }
    };
    for (name, split) in [("train", &train), ("valid", &valid)] {
        if split.unlabeled() {
            return Err(split.table.error(
                0,
                format!("every {name} label is negative (an unlabeled split); {name} needs labels"),
            ));
        }
    }
    let mut test = cfg.test.as_deref().map(|p| read(cfg, p)).transpose()?;
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
        vocab,
        classes,
        notes,
    })
}

/// Examples per class id, for `classes` classes.
pub fn label_counts(labels: &[u32], classes: usize) -> Vec<usize> {
    let mut counts = vec![0usize; classes];
    for &y in labels {
        counts[y as usize] += 1;
    }
    counts
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
