//! Datasets: the built-in synthetic tasks and labelled text tables, turned into token-id
//! sequences, labels, a vocabulary and class names. Everything a run needs to reload a model
//! (vocabulary, class names) comes from here and is saved with the run.

pub mod batch;
pub mod synthetic;
pub mod table;
pub mod text;

use std::collections::BTreeSet;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::config::{Data, Source};
use crate::error::{Error, Result};
use text::Vocab;

/// Token-id sequences and their class ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    pub inputs: Vec<Vec<u32>>,
    pub labels: Vec<u32>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn truncate(mut self, max_len: usize) -> Split {
        for s in &mut self.inputs {
            s.truncate(max_len);
        }
        self
    }
}

pub struct Dataset {
    pub train: Split,
    pub valid: Split,
    pub test: Option<Split>,
    pub vocab: Vocab,
    /// Class names by id (string labels in sorted order, or "0", "1", ...).
    pub classes: Vec<String>,
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
            }
        }
        Source::File => load_files(cfg, seed)?,
    };
    Ok(Dataset {
        train: ds.train.truncate(cfg.max_len),
        valid: ds.valid.truncate(cfg.max_len),
        test: ds.test.map(|s| s.truncate(cfg.max_len)),
        ..ds
    })
}

struct Tokenized {
    path: std::path::PathBuf,
    docs: Vec<Vec<String>>,
    labels: Vec<(String, usize)>,
}

fn read(cfg: &Data, path: &Path) -> Result<Tokenized> {
    let rows = table::read_table(
        path,
        cfg.format,
        cfg.header,
        &cfg.text_column,
        &cfg.label_column,
    )?;
    Ok(Tokenized {
        path: path.to_path_buf(),
        docs: rows
            .iter()
            .map(|r| text::tokenize(&r.text, cfg.lowercase))
            .collect(),
        labels: rows.into_iter().map(|r| (r.label, r.line)).collect(),
    })
}

fn load_files(cfg: &Data, seed: u64) -> Result<Dataset> {
    let train_path = cfg.train.as_deref().ok_or_else(|| Error::Config {
        location: "config".into(),
        key: "data.train".into(),
        msg: "source = \"file\" needs a train file".into(),
    })?;
    let mut train = read(cfg, train_path)?;
    let valid = match &cfg.valid {
        Some(p) => read(cfg, p)?,
        None => {
            // Seeded carve-out of val_fraction of train.
            let n = train.docs.len();
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x05ee_d5a1));
            let n_val = ((n as f64 * cfg.val_fraction).round() as usize).clamp(1, n - 1);
            let mut keep = vec![true; n];
            for &i in &idx[..n_val] {
                keep[i] = false;
            }
            let mut val = Tokenized {
                path: train.path.clone(),
                docs: Vec::new(),
                labels: Vec::new(),
            };
            let mut tr = Tokenized {
                path: train.path.clone(),
                docs: Vec::new(),
                labels: Vec::new(),
            };
            for (i, (d, l)) in train.docs.into_iter().zip(train.labels).enumerate() {
                let dst = if keep[i] { &mut tr } else { &mut val };
                dst.docs.push(d);
                dst.labels.push(l);
            }
            train = tr;
            val
        }
    };
    let test = cfg.test.as_deref().map(|p| read(cfg, p)).transpose()?;

    let vocab = Vocab::build(&train.docs, cfg.min_freq, cfg.max_vocab);
    let all = [Some(&train), Some(&valid), test.as_ref()];
    let classes = class_names(all.iter().flatten().copied())?;
    let encode = |t: &Tokenized| -> Split {
        Split {
            inputs: t
                .docs
                .iter()
                .map(|d| {
                    let ids = vocab.encode(d);
                    if ids.is_empty() {
                        vec![text::PAD]
                    } else {
                        ids
                    }
                })
                .collect(),
            labels: t
                .labels
                .iter()
                .map(|(l, _)| classes.iter().position(|c| c == l).unwrap_or(0) as u32)
                .collect(),
        }
    };
    Ok(Dataset {
        train: encode(&train),
        valid: encode(&valid),
        test: test.as_ref().map(encode),
        vocab,
        classes,
    })
}

/// Integer labels are class ids 0..=max; any other label set is mapped in sorted order.
fn class_names<'a>(splits: impl Iterator<Item = &'a Tokenized> + Clone) -> Result<Vec<String>> {
    let first = splits
        .clone()
        .next()
        .map(|s| s.path.clone())
        .unwrap_or_default();
    let all_int = splits
        .clone()
        .all(|s| s.labels.iter().all(|(l, _)| l.parse::<i64>().is_ok()));
    if all_int {
        let mut max = 0i64;
        for s in splits {
            for (l, line) in &s.labels {
                let v: i64 = l.parse().unwrap_or(-1);
                if v < 0 {
                    return Err(Error::data(
                        &s.path,
                        *line,
                        format!("label {l} is not a class id (integer labels must be >= 0; an unlabeled split?)"),
                    ));
                }
                max = max.max(v);
            }
        }
        if max == 0 {
            return Err(Error::data(
                &first,
                0,
                "every label is 0: need at least 2 classes",
            ));
        }
        Ok((0..=max).map(|c| c.to_string()).collect())
    } else {
        let set: BTreeSet<&str> = splits
            .flat_map(|s| s.labels.iter().map(|(l, _)| l.as_str()))
            .collect();
        if set.len() < 2 {
            return Err(Error::data(&first, 0, "need at least 2 distinct labels"));
        }
        Ok(set.into_iter().map(str::to_string).collect())
    }
}
