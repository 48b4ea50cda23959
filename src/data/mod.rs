//! Datasets: the built-in synthetic tasks, labelled text tables and video clips, turned into
//! sequences (token ids, per-step features or frames), labels, class names and, for text, a
//! vocabulary. Everything a run needs to reload a model (what its input is, vocabulary, class
//! names) comes from here and is saved with the run.

pub mod batch;
pub mod clips;
pub mod decode;
pub mod frames;
pub mod labels;
pub mod listing;
pub mod protocol;
pub mod selection;
pub mod splits;
pub mod synthetic;
pub mod table;
pub mod tables;
pub mod tensors;
pub mod text;
pub mod vectors;
pub mod video;
pub mod videos;

use crate::config::{Data, Source};
use crate::error::Result;
pub use clips::Clips;
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

    /// The examples at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Split {
        let inputs = match &self.inputs {
            Inputs::Tokens(s) => Inputs::Tokens(idx.iter().map(|&i| s[i].clone()).collect()),
            Inputs::Features { dim, seqs } => Inputs::Features {
                dim: *dim,
                seqs: idx.iter().map(|&i| seqs[i].clone()).collect(),
            },
            Inputs::Frames { shape, clips } => Inputs::Frames {
                shape: *shape,
                clips: clips.subset(idx),
            },
        };
        Split {
            inputs,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

pub struct Dataset {
    pub train: Split,
    pub valid: Split,
    pub test: Option<Split>,
    /// The vocabulary of a token input (None for features and frames).
    pub vocab: Option<Vocab>,
    /// Class names by id (`data.class_names`, string labels in sorted order, or "0", "1", ...).
    pub classes: Vec<String>,
    /// What a user should know about how the data was read (carved validation, skipped rows,
    /// an unlabeled test split), printed at the start of a run.
    pub notes: Vec<String>,
    /// Inputs left out because they could not be read (`data.skip_bad`), as `path: why`.
    pub skipped: Vec<String>,
}

/// Builds the dataset a config asks for. `seed` makes generation and splits repeatable; video
/// test splits hold `test_views` views of each clip (`[eval] clips`, `selection::views`).
pub fn load(cfg: &Data, seed: u64, test_views: usize) -> Result<Dataset> {
    let ds = match cfg.source {
        Source::SyntheticSentiment => {
            let vocab = synthetic::sentiment_vocab();
            let parts = splits::generated(cfg, seed, |n, s| synthetic::sentiment(n, s, &vocab));
            Dataset {
                train: parts.train,
                valid: parts.valid,
                test: parts.test,
                vocab: Some(vocab),
                classes: vec!["negative".into(), "positive".into()],
                notes: Vec::new(),
                skipped: Vec::new(),
            }
        }
        Source::DelayedRecall => {
            let parts = splits::generated(cfg, seed, |n, s| {
                synthetic::delayed_recall(n, cfg.lag, cfg.num_classes, cfg.vocab_size, s)
            });
            Dataset {
                train: parts.train,
                valid: parts.valid,
                test: parts.test,
                vocab: Some(synthetic::recall_vocab(cfg.num_classes, cfg.vocab_size)),
                classes: (0..cfg.num_classes).map(|c| c.to_string()).collect(),
                notes: Vec::new(),
                skipped: Vec::new(),
            }
        }
        Source::TemporalOrder => {
            let parts = splits::generated(cfg, seed, |n, s| {
                synthetic::temporal_order(n, cfg.length, cfg.relevant, s)
            });
            Dataset {
                train: parts.train,
                valid: parts.valid,
                test: parts.test,
                vocab: Some(synthetic::order_vocab()),
                classes: synthetic::order_classes(cfg.relevant),
                notes: Vec::new(),
                skipped: Vec::new(),
            }
        }
        Source::SyntheticVideo => return video::synthetic_dataset(cfg, seed, test_views),
        Source::Tensors => return tensors::dataset(cfg, seed, test_views),
        Source::Frames | Source::Videos => return decode::dataset(cfg, seed, test_views),
        Source::File | Source::Hub => return tables::dataset(cfg, seed),
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

/// Examples per class id, for `classes` classes.
pub fn label_counts(labels: &[u32], classes: usize) -> Vec<usize> {
    let mut counts = vec![0usize; classes];
    for &y in labels {
        counts[y as usize] += 1;
    }
    counts
}
