//! `[data]`: where the sequences come from (`source`) and how they are read, split,
//! tokenized, sampled and augmented.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, Checked, SYNTHETIC_VIDEO_CLASSES};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Built-in seeded sentences whose label needs word order.
    SyntheticSentiment,
    /// Class token, then `lag` distractors: the long-memory task.
    DelayedRecall,
    /// Hochreiter & Schmidhuber's temporal-order problem (1997, experiment 6): distractors,
    /// and 2 or 3 relevant symbols X / Y far apart whose order is the class.
    TemporalOrder,
    /// Seeded clips of a flashing, fading bar among distractors and noise, played forward or
    /// reversed: a class only the order of the frames shows.
    SyntheticVideo,
    /// safetensors or .npz files (`train`, `valid`, `test`) of `frames` [N,T,C,H,W] or `features`
    /// [N,T,D], with `labels` [N] and optional `lengths` [N].
    Tensors,
    /// Folders of frame images: `<split>/<class>/<clip>/<frames>` trees or
    /// `clip_dir num_frames label` list files (`train`, `valid`, `test`).
    Frames,
    /// Video files (.mp4, .avi, .mkv, .webm) decoded by the `ffmpeg` program:
    /// `<split>/<class>/<video>` trees or `path label` list files, or a `protocol`.
    Videos,
    /// Local tables (TSV, CSV, parquet, JSONL) named by `train`, `valid`, `test`.
    File,
    /// Parquet files of a Hugging Face dataset repo (`repo`, files `train`/`valid`/`test`),
    /// through hf-hub's cache.
    Hub,
}

/// Keys every file source reads: the split files, the carve, the class names.
const FILES: &[&str] = &["train", "valid", "test", "val_fraction", "class_names"];
/// Keys of a generated source: examples per split.
const GENERATED: &[&str] = &["num_train", "num_valid", "num_test"];
/// Keys of a token input: how long a sequence may be and which end is cut.
const TOKENS: &[&str] = &["max_len", "truncation_side"];
/// Keys of a text table: tokenizer, vocabulary, columns, bad rows, presets.
const TABLES: &[&str] = &[
    "preset",
    "text_column",
    "label_column",
    "skip_bad_rows",
    "tokenizer",
    "lowercase",
    "min_freq",
    "max_vocab",
];
/// Keys of a video source: which frames each clip keeps, and training's augmentation.
const VIDEO: &[&str] = &[
    "frames_per_clip",
    "shuffle_frames",
    "augment_shift",
    "augment_flip",
    "augment_brightness",
    "cache_dir",
];

/// Keys of a dataset read through its official split files.
const PROTOCOL: &[&str] = &["protocol", "split", "root", "annotations"];

/// A dataset's official train/test splits (`data.protocol`), read from the files it ships.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `ucfTrainTestlist/`: classInd.txt, trainlist0N.txt, testlist0N.txt; validation by group.
    Ucf101,
    /// `testTrainMulti_7030_splits/`: <class>_test_splitN.txt; validation at random per class.
    Hmdb51,
}

impl Source {
    /// As a config writes it (`"synthetic-video"`).
    pub fn name(self) -> &'static str {
        match self {
            Source::SyntheticSentiment => "synthetic-sentiment",
            Source::DelayedRecall => "delayed-recall",
            Source::TemporalOrder => "temporal-order",
            Source::SyntheticVideo => "synthetic-video",
            Source::Tensors => "tensors",
            Source::Frames => "frames",
            Source::Videos => "videos",
            Source::File => "file",
            Source::Hub => "hub",
        }
    }

    /// The `[data]` keys this source reads besides `source`: a config that sets another is
    /// refused, naming these.
    pub fn keys(self) -> Vec<&'static str> {
        let own: &[&[&str]] = match self {
            Source::SyntheticSentiment => &[GENERATED, TOKENS],
            Source::DelayedRecall => &[GENERATED, TOKENS, &["lag", "num_classes", "vocab_size"]],
            Source::TemporalOrder => &[GENERATED, TOKENS, &["length", "relevant"]],
            Source::SyntheticVideo => &[
                GENERATED,
                VIDEO,
                &[
                    "num_classes",
                    "frames",
                    "height",
                    "width",
                    "channels",
                    "noise",
                ],
            ],
            Source::Tensors => &[FILES, VIDEO, &["image_sequence", "permute_seed"]],
            Source::Frames => &[FILES, VIDEO, PROTOCOL, &["height", "width", "channels"]],
            Source::Videos => &[
                FILES,
                VIDEO,
                PROTOCOL,
                &["height", "width", "channels", "fps", "skip_bad"],
            ],
            Source::File => &[FILES, TOKENS, TABLES, &["format", "header"]],
            Source::Hub => &[FILES, TOKENS, TABLES, &["repo", "revision"]],
        };
        own.concat()
    }

    /// Whether sequences are token ids that `max_len` cuts.
    pub fn reads_tokens(self) -> bool {
        self.keys().contains(&"max_len")
    }
}

/// The first of `given` (`[data]` keys a config sets, with their values; `max_size` is
/// `max_vocab`'s alias) that `source` does not read and that holds other than its default (run
/// folders written before this rule hold every key of every source at its default), with the
/// message that refuses it.
pub(super) fn not_read_by(
    source: Source,
    given: &[(String, toml::Value)],
) -> Option<(String, String)> {
    let keys = source.keys();
    let defaults = toml::Table::try_from(Data::default()).unwrap_or_default();
    given
        .iter()
        .find(|(k, v)| {
            let k = if k == "max_size" {
                "max_vocab"
            } else {
                k.as_str()
            };
            k != "source" && !keys.contains(&k) && defaults.get(k) != Some(v)
        })
        .map(|(k, _)| {
            (
                format!("data.{k}"),
                format!(
                    "is not read by source = \"{}\"; its keys are: source, {}",
                    source.name(),
                    keys.join(", ")
                ),
            )
        })
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Tsv,
    Csv,
    Parquet,
    Jsonl,
}

/// Named datasets: they fill in repo, files, columns and class names (keys given in the
/// config or by `--set` win).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// stanfordnlp/sst2: `sentence`, `label`; train / validation / test (test is unlabeled).
    Sst2,
    /// stanfordnlp/imdb: `text`, `label`; train / test (validation carved from train).
    Imdb,
}

impl Preset {
    /// (data key, value) pairs; the hub file keys apply only to source = "hub".
    pub(super) fn values(self, source: Source) -> Vec<(&'static str, toml::Value)> {
        let s = |v: &str| toml::Value::String(v.into());
        let names = |a: &str, b: &str| toml::Value::Array(vec![s(a), s(b)]);
        let (repo, files, text, classes) = match self {
            Preset::Sst2 => (
                "stanfordnlp/sst2",
                vec![
                    ("train", "data/train-00000-of-00001.parquet"),
                    ("valid", "data/validation-00000-of-00001.parquet"),
                    ("test", "data/test-00000-of-00001.parquet"),
                ],
                "sentence",
                names("negative", "positive"),
            ),
            Preset::Imdb => (
                "stanfordnlp/imdb",
                vec![
                    ("train", "plain_text/train-00000-of-00001.parquet"),
                    ("test", "plain_text/test-00000-of-00001.parquet"),
                ],
                "text",
                names("neg", "pos"),
            ),
        };
        let mut out = vec![
            ("text_column", s(text)),
            ("label_column", s("label")),
            ("class_names", classes),
        ];
        if source == Source::Hub {
            out.push(("repo", s(repo)));
            out.extend(files.into_iter().map(|(k, v)| (k, s(v))));
        }
        out
    }
}

/// An image read as a sequence (`data.image_sequence`): sequential MNIST and its kin.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImageSequence {
    /// One step per row of pixels (28 steps of 28 at 28 x 28; channels side by side).
    Rows,
    /// One step per pixel, row after row (784 steps at 28 x 28), its channels the features.
    Pixels,
}

/// Where `max_len` cuts a longer sequence (the names of Hugging Face tokenizers).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TruncationSide {
    /// Keep the first `max_len` tokens.
    Right,
    /// Keep the last `max_len` tokens.
    Left,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// Words (letters, digits, apostrophes) and single punctuation marks.
    Word,
    /// One token per character, spaces included.
    Char,
}

/// A table column, by header name or by 0-based index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Column {
    Index(usize),
    Name(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Data {
    /// "synthetic-sentiment" | "delayed-recall" | "temporal-order" | "synthetic-video" | "tensors" | "frames" |
    /// "videos" | "file" | "hub". Default "synthetic-sentiment". Each reads its own keys
    /// (`Source::keys`); a key another source reads is refused.
    pub source: Source,
    /// file, hub: "sst2" | "imdb" fills in repo, files, columns and class names.
    pub preset: Option<Preset>,
    /// hub: dataset repo id, e.g. "stanfordnlp/sst2".
    pub repo: Option<String>,
    /// hub: branch, tag or commit. Default "main".
    pub revision: String,
    /// Sequences longer than this are cut to `max_len` tokens. Default 64.
    pub max_len: usize,
    /// "right" keeps the first `max_len` tokens, "left" the last. Default "right".
    pub truncation_side: TruncationSide,
    /// Synthetic sources: number of generated train / valid / test sequences.
    /// Defaults 8000 / 1000 / 1000.
    pub num_train: usize,
    pub num_valid: usize,
    pub num_test: usize,
    /// delayed-recall: distractor steps between the class token and the end. Default 20.
    pub lag: usize,
    /// temporal-order: the shortest sequence; each is `length` to `length + length / 10`
    /// steps (100 to 110 in the paper). Default 100.
    pub length: usize,
    /// temporal-order: relevant symbols, 2 (4 classes, experiment 6a) or 3 (8 classes, 6b).
    /// Default 2.
    pub relevant: usize,
    /// delayed-recall: number of classes (class tokens); synthetic-video: 2 to 6 (cyclic
    /// orders of the bar's brightness levels). Default 4.
    pub num_classes: usize,
    /// delayed-recall: vocabulary size including `<pad>`, class and distractor tokens. Default 16.
    pub vocab_size: usize,
    /// synthetic-video: frames per clip. Default 16.
    pub frames: usize,
    /// synthetic-video: frame height and width in pixels. Defaults 32, 32.
    pub height: usize,
    pub width: usize,
    /// synthetic-video: colour channels (1 grey, 3 RGB). Default 1.
    pub channels: usize,
    /// synthetic-video: standard deviation of the per-pixel noise, in [0, 1] units. Default 0.1.
    pub noise: f64,
    /// Video sources: keep this many frames of each clip: in training one per equal segment,
    /// each at its own seeded random offset (per batch), in evaluation the centred ones;
    /// absent = every frame. 1 gives the single-frame baseline.
    pub frames_per_clip: Option<usize>,
    /// Video sources: permute the frames inside each clip (seeded): the order-blind ablation.
    /// Default false.
    pub shuffle_frames: bool,
    /// Video, training batches only (seeded, one draw per clip, every frame alike): shift the
    /// frame by up to this many pixels each way (zero fill: a random crop of the zero-padded
    /// frame). Default 0.
    pub augment_shift: usize,
    /// Video, training: mirror clips left-right with probability 1/2. Off by default: it swaps
    /// left and right, which may be the class.
    pub augment_flip: bool,
    /// Video, training: scale each clip's brightness by a factor drawn from [1 - b, 1 + b].
    /// Default 0.
    pub augment_brightness: f64,
    /// videos: decode this many frames per second of video (ffmpeg's fps filter); absent =
    /// `frames_per_clip` frames spread evenly over each whole video (every frame without it).
    pub fps: Option<f64>,
    /// videos: skip (and count, in the run's notes and summary.json) a file ffmpeg cannot
    /// decode or that holds no frames, instead of stopping there. Default false.
    pub skip_bad: bool,
    /// tensors: read each example's single frame as a sequence, "rows" (a step per row) or
    /// "pixels" (a step per pixel: sequential MNIST, Le et al. 2015); absent = frames.
    pub image_sequence: Option<ImageSequence>,
    /// tensors, image_sequence = "pixels": visit the pixels in one fixed random order drawn
    /// from this seed, the same for every image and split (permuted MNIST).
    pub permute_seed: Option<u64>,
    /// Video: where decoded clips (frames) and a frozen encoder's features are cached (files
    /// named by a hash of what they hold). Default `<experiment.out_dir>/.cache`.
    pub cache_dir: Option<PathBuf>,
    /// frames, videos: "ucf101" | "hmdb51": train and test from the dataset's official split
    /// files (`annotations`), the clips under `root` by the dataset's names (the videos, or a
    /// frames tree: each video's frames in a folder named as the video without its extension); validation carved
    /// from train (`val_fraction`; UCF101 by whole groups). Replaces train / valid / test.
    pub protocol: Option<Protocol>,
    /// protocol: which official split, 1 to 3. Default 1.
    pub split: usize,
    /// protocol: the dataset's folder (`<class>/<video>`).
    pub root: Option<PathBuf>,
    /// protocol: the folder of its split files (UCF101's ucfTrainTestlist, HMDB51's
    /// testTrainMulti_7030_splits).
    pub annotations: Option<PathBuf>,
    /// file: training table (required); hub: its path inside the repo.
    pub train: Option<PathBuf>,
    /// file, hub: validation table; absent = carve `val_fraction` of train.
    pub valid: Option<PathBuf>,
    /// file, hub: test table (optional; a split whose labels are all -1 is unlabeled and
    /// skipped with a notice).
    pub test: Option<PathBuf>,
    /// Fraction of train held out (seeded) for validation when `valid` is absent. Default 0.1.
    pub val_fraction: f64,
    /// file: "tsv" | "csv" | "parquet" | "jsonl"; absent = from the file extension.
    pub format: Option<Format>,
    /// file (tsv, csv): first line is a header. Default true.
    pub header: bool,
    /// Text column (field for JSONL), by name or 0-based index. Default "sentence".
    pub text_column: Column,
    /// Label column (integers or strings), by name or index. Default "label".
    pub label_column: Column,
    /// Names for integer class ids 0, 1, ... (shown by predict and in metrics); absent =
    /// "0", "1", ... String labels name themselves.
    pub class_names: Option<Vec<String>>,
    /// Skip (and count) malformed rows instead of stopping at the first. Default false.
    pub skip_bad_rows: bool,
    /// "word" | "char". Default "word".
    pub tokenizer: Tokenizer,
    /// Lowercase text before tokenizing. Default true.
    pub lowercase: bool,
    /// Tokens seen fewer times in train become `<unk>`. Default 1.
    pub min_freq: usize,
    /// Keep at most this many tokens (most frequent first); absent = all. Also `max_size`.
    #[serde(alias = "max_size")]
    pub max_vocab: Option<usize>,
}

impl Default for Data {
    fn default() -> Self {
        Data {
            source: Source::SyntheticSentiment,
            preset: None,
            repo: None,
            revision: "main".into(),
            max_len: 64,
            truncation_side: TruncationSide::Right,
            num_train: 8000,
            num_valid: 1000,
            num_test: 1000,
            lag: 20,
            length: 100,
            relevant: 2,
            num_classes: 4,
            vocab_size: 16,
            frames: 16,
            height: 32,
            width: 32,
            channels: 1,
            noise: 0.1,
            frames_per_clip: None,
            shuffle_frames: false,
            augment_shift: 0,
            augment_flip: false,
            augment_brightness: 0.0,
            fps: None,
            skip_bad: false,
            image_sequence: None,
            permute_seed: None,
            cache_dir: None,
            protocol: None,
            split: 1,
            root: None,
            annotations: None,
            train: None,
            valid: None,
            test: None,
            val_fraction: 0.1,
            format: None,
            header: true,
            text_column: Column::Name("sentence".into()),
            label_column: Column::Name("label".into()),
            class_names: None,
            skip_bad_rows: false,
            tokenizer: Tokenizer::Word,
            lowercase: true,
            min_freq: 1,
            max_vocab: None,
        }
    }
}

impl Data {
    /// What each source needs, and the ranges of the shared keys. `training`: a train split is required.
    /// (Negated comparisons on purpose: NaN fails them.)
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub(super) fn check(&self, training: bool) -> Checked {
        let d = self;
        if d.max_len == 0 {
            return bad("data.max_len", "must be at least 1");
        }
        match d.source {
            Source::SyntheticSentiment
            | Source::DelayedRecall
            | Source::TemporalOrder
            | Source::SyntheticVideo => {
                if d.num_train == 0 {
                    return bad("data.num_train", "must be at least 1");
                }
                if d.num_valid == 0 {
                    return bad(
                        "data.num_valid",
                        "must be at least 1 (validation picks the best epoch)",
                    );
                }
            }
            Source::File | Source::Hub | Source::Tensors | Source::Frames | Source::Videos => {
                if d.source == Source::Hub && d.repo.is_none() {
                    return bad(
                        "data.repo",
                        "source = \"hub\" needs repo = \"owner/name\" (or preset = \"sst2\" | \"imdb\")",
                    );
                }
                if let Some(p) = d.protocol {
                    let name = format!("{p:?}").to_lowercase();
                    for (key, given) in
                        [("train", &d.train), ("valid", &d.valid), ("test", &d.test)]
                    {
                        if given.is_some() {
                            return bad(
                                &format!("data.{key}"),
                                format!("protocol = \"{name}\" reads the splits from its split files: remove {key}"),
                            );
                        }
                    }
                    if d.root.is_none() {
                        return bad("data.root", format!("protocol = \"{name}\" needs root = the dataset's folder (<class>/<video>)"));
                    }
                    if d.annotations.is_none() {
                        return bad("data.annotations", format!("protocol = \"{name}\" needs annotations = the folder of its split files"));
                    }
                    if !(1..=3).contains(&d.split) {
                        return bad("data.split", "must be 1, 2 or 3 (the official splits)");
                    }
                } else if d.root.is_some() || d.annotations.is_some() || d.split != 1 {
                    let key = if d.root.is_some() {
                        "root"
                    } else if d.annotations.is_some() {
                        "annotations"
                    } else {
                        "split"
                    };
                    return bad(
                        &format!("data.{key}"),
                        "is read only with protocol = \"ucf101\" | \"hmdb51\"",
                    );
                }
                if training && d.train.is_none() && d.protocol.is_none() {
                    return bad(
                        "data.train",
                        match d.source {
                            Source::Hub => "source = \"hub\" needs train = \"path/in/repo.parquet\" (or a preset)",
                            Source::Tensors => "source = \"tensors\" needs train = \"path/to/train.safetensors\"",
                            Source::Frames => "source = \"frames\" needs train = a folder <class>/<clip>/<frames> or a list file",
                            Source::Videos => "source = \"videos\" needs train = a folder <class>/<video> or a list file of `path label` lines (or a protocol)",
                            _ => "source = \"file\" needs train = \"path/to/train.tsv\"",
                        },
                    );
                }
                if !(d.val_fraction > 0.0 && d.val_fraction < 1.0) {
                    return bad(
                        "data.val_fraction",
                        "must be in (0, 1) (the share of train held out when no valid file is given)",
                    );
                }
            }
        }
        if d.source == Source::TemporalOrder {
            if !(2..=3).contains(&d.relevant) {
                return bad(
                    "data.relevant",
                    "must be 2 (4 classes: experiment 6a) or 3 (8 classes: 6b)",
                );
            }
            if d.length < 20 {
                return bad(
                    "data.length",
                    "must be at least 20 (the relevant symbols sit at set fractions of it)",
                );
            }
            let longest = d.length.saturating_add(d.length / 10);
            if longest > d.max_len {
                return bad(
                    "data.max_len",
                    format!(
                        "temporal-order sequences have up to length + length / 10 = {longest} steps; max_len must hold them"
                    ),
                );
            }
        }
        if d.source == Source::DelayedRecall {
            if d.num_classes < 2 {
                return bad("data.num_classes", "must be at least 2");
            }
            if d.vocab_size < d.num_classes.saturating_add(2) {
                return bad(
                    "data.vocab_size",
                    format!(
                        "must be at least num_classes + 2 = {} (pad, classes, one distractor)",
                        d.num_classes.saturating_add(2)
                    ),
                );
            }
            if d.lag.saturating_add(1) > d.max_len {
                return bad(
                    "data.max_len",
                    format!(
                        "delayed-recall sequences have lag + 1 = {} steps; max_len must hold them",
                        d.lag.saturating_add(1)
                    ),
                );
            }
        }
        if d.permute_seed.is_some() && d.image_sequence != Some(ImageSequence::Pixels) {
            return bad(
                "data.permute_seed",
                "permutes the pixels of image_sequence = \"pixels\": set that too",
            );
        }
        if d.image_sequence.is_some() && (d.frames_per_clip.is_some() || d.shuffle_frames) {
            return bad(
                "data.image_sequence",
                "reads one image per example as a sequence: frames_per_clip and shuffle_frames pick frames of clips",
            );
        }
        if let Some(fps) = d.fps {
            if !(fps > 0.0 && fps <= 1000.0) {
                return bad("data.fps", "must be in (0, 1000] frames per second");
            }
        }
        if matches!(d.source, Source::Frames | Source::Videos) {
            if d.height < 1 || d.width < 1 {
                return bad("data.height", "must be at least 1");
            }
            if !(d.channels == 1 || d.channels == 3) {
                return bad("data.channels", "must be 1 (grey) or 3 (RGB)");
            }
        }
        if d.source == Source::SyntheticVideo {
            if d.frames < 2 {
                return bad("data.frames", "must be at least 2 (order needs two frames)");
            }
            if d.height < 8 || d.width < 8 {
                return bad("data.height", "frames must be at least 8 x 8 pixels");
            }
            if !(d.channels == 1 || d.channels == 3) {
                return bad("data.channels", "must be 1 (grey) or 3 (RGB)");
            }
            if !(0.0..=1.0).contains(&d.noise) {
                return bad("data.noise", "must be in [0, 1]");
            }
            if !(2..=SYNTHETIC_VIDEO_CLASSES).contains(&d.num_classes) {
                return bad(
                    "data.num_classes",
                    "synthetic-video has 2 to 6 classes (the cyclic orders of four brightness levels)",
                );
            }
        }
        if !(0.0..1.0).contains(&d.augment_brightness) {
            return bad("data.augment_brightness", "must be in [0, 1)");
        }
        if d.augment_shift > 0 && d.augment_shift * 2 >= d.height.min(d.width) {
            return bad(
                "data.augment_shift",
                "must be below half the frame's height and width",
            );
        }
        if d.frames_per_clip == Some(0) {
            return bad(
                "data.frames_per_clip",
                "must be at least 1 (remove the key to keep every frame)",
            );
        }
        if d.max_vocab == Some(0) {
            return bad(
                "data.max_vocab",
                "must be at least 1 (remove the key to keep every token)",
            );
        }
        if d.min_freq == 0 {
            return bad("data.min_freq", "must be at least 1");
        }
        if let Some(names) = &d.class_names {
            let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
            if names.len() < 2 || distinct.len() != names.len() {
                return bad("data.class_names", "needs at least 2 distinct names");
            }
        }
        Ok(())
    }
}
