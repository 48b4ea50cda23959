//! The experiment config: plain serde data, strict (unknown keys are errors), one place for
//! defaults, then `validate()` for ranges. Loading goes defaults < file < overrides (`--set
//! a.b=v` and a sweep trial's axis values: one mechanism, typed TOML values at any dotted
//! depth), each override type-checked by deserializing again, and every error names file or
//! override, key, line, column.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub experiment: Experiment,
    pub data: Data,
    pub model: Model,
    pub train: Train,
    pub log: Log,
    /// Present in a sweep file: the rest of the file is the base config of every trial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    /// Run folders go to `<out_dir>/<name>/<run>/`. Default "run".
    pub name: String,
    /// Seeds parameter init, data generation, shuffling and dropout. Default 0.
    pub seed: u64,
    /// "cpu" | "cuda" | "cuda:N" | "auto". Default "cpu".
    pub device: String,
    /// Root of all run folders. Default "results".
    pub out_dir: PathBuf,
    /// CPU threads for candle's kernels; 0 = candle's default (RAYON_NUM_THREADS, else all
    /// cores). Small models often run faster on 1. Default 0.
    pub threads: usize,
}

impl Default for Experiment {
    fn default() -> Self {
        Experiment {
            name: "run".into(),
            seed: 0,
            device: "cpu".into(),
            out_dir: "results".into(),
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Built-in seeded sentences whose label needs word order.
    SyntheticSentiment,
    /// Class token, then `lag` distractors: the long-memory task.
    DelayedRecall,
    /// Seeded clips of a flashing, fading bar among distractors and noise, played forward or
    /// reversed: a class only the order of the frames shows.
    SyntheticVideo,
    /// safetensors or .npz files (`train`, `valid`, `test`) of `frames` [N,T,C,H,W] or `features`
    /// [N,T,D], with `labels` [N] and optional `lengths` [N].
    Tensors,
    /// Folders of frame images: `<split>/<class>/<clip>/<frames>` trees or
    /// `clip_dir num_frames label` list files (`train`, `valid`, `test`).
    Frames,
    /// Local tables (TSV, CSV, parquet, JSONL) named by `train`, `valid`, `test`.
    File,
    /// Parquet files of a Hugging Face dataset repo (`repo`, files `train`/`valid`/`test`),
    /// through hf-hub's cache.
    Hub,
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
    fn values(self, source: Source) -> Vec<(&'static str, toml::Value)> {
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
    /// "synthetic-sentiment" | "delayed-recall" | "file" | "hub". Default "synthetic-sentiment".
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
    /// Video sources: keep this many frames of each clip: in training one per equal segment
    /// from a seeded random offset (per batch), in evaluation the centred ones; absent = every
    /// frame. 1 gives the single-frame baseline.
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
    /// frames: where decoded clips are cached (uint8 files named by a hash of the frames they
    /// hold). Default `<experiment.out_dir>/.cache`.
    pub cache_dir: Option<PathBuf>,
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
            cache_dir: None,
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

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    Rnn,
    Lstm,
    Gru,
}

impl CellKind {
    /// Gates stacked in `weight_ih` / `weight_hh` (PyTorch order: LSTM i,f,g,o; GRU r,z,n).
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    Tanh,
    Relu,
}

/// `model.init_hh`: how W_hh starts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HhInit {
    #[default]
    Default,
    Orthogonal,
    Identity,
}

/// `model.init_gate_bias`: how the gate biases start.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum GateBiasInit {
    #[default]
    Default,
    Chrono,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Readout {
    /// Each sequence's last valid step (step 0 for the backward direction).
    Last,
    /// Mean over valid steps.
    Mean,
    /// Elementwise max over valid steps.
    Max,
}

/// How a video frame becomes the vector the recurrent stack reads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FrameEncoder {
    /// Conv 3x3 (padding 1) -> ReLU -> 2x2 max-pool per `conv_channels` width, then global
    /// average pooling: one vector of the last width per frame.
    Cnn,
    /// Flatten the frame and project it to `embedding_dim`.
    Linear,
    /// Per-step features go to the stack as they are (feature inputs only).
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Model {
    /// "rnn" | "lstm" | "gru". Default "lstm".
    pub cell: CellKind,
    /// rnn only (ignored by lstm and gru): "tanh" | "relu". Default "tanh".
    pub nonlinearity: Nonlinearity,
    /// Token embedding width (text) or projection width (real-valued features). Default 128.
    pub embedding_dim: usize,
    /// Hidden units per direction. Default 256.
    pub hidden_size: usize,
    /// Stacked recurrent layers. Default 1.
    pub num_layers: usize,
    /// Add a backward direction to every layer. Default false.
    pub bidirectional: bool,
    /// Dropout between layers and before the head, in [0, 1). Default 0.
    pub dropout: f64,
    /// "last" | "mean" | "max". Default "last".
    pub readout: Readout,
    /// lstm only (ignored by rnn and gru): initial forget-gate bias, added to `bias_ih`
    /// (PyTorch's init has none). Default 0.
    pub forget_bias: f64,
    /// Recurrent weights: "default" (PyTorch's uniform), "orthogonal" (each gate's hidden x
    /// hidden block of W_hh a random orthogonal matrix) or "identity" (each block the identity
    /// and every recurrent bias 0: IRNN, Le et al. 2015, meant for nonlinearity = "relu").
    /// Default "default".
    pub init_hh: HhInit,
    /// lstm, gru: "default" or "chrono" (Tallec & Ollivier 2018): lstm forget-gate bias
    /// log U[1, chrono_t_max - 1] and input-gate bias its negative; gru update-gate bias the
    /// same log U (z near 1 keeps the state); in bias_ih, with those slices of bias_hh 0.
    /// Default "default".
    pub init_gate_bias: GateBiasInit,
    /// chrono: the longest dependency the model should span, in steps (T_max). Default 100.
    pub chrono_t_max: f64,
    /// Text sources: pretrained word vectors, a GloVe / word2vec text file (`word v1 v2 ...`
    /// per line, an optional word2vec `count dim` first line); their width must equal
    /// `embedding_dim`. Vocabulary words not in the file keep their random init.
    pub embeddings: Option<PathBuf>,
    /// Keep the embedding table fixed during training. Default false.
    pub freeze_embeddings: bool,
    /// Video: "cnn" | "linear" | "none" (features only); absent = "cnn" for frames, "linear"
    /// for per-step features.
    pub frame_encoder: Option<FrameEncoder>,
    /// Video, cnn: output channels of each conv block, in order. Default [32, 64, 128, 128].
    pub conv_channels: Vec<usize>,
    /// Video, cnn: batch norm after each conv (running statistics saved with the weights).
    /// Default false.
    pub batch_norm: bool,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            cell: CellKind::Lstm,
            nonlinearity: Nonlinearity::Tanh,
            embedding_dim: 128,
            hidden_size: 256,
            num_layers: 1,
            bidirectional: false,
            dropout: 0.0,
            readout: Readout::Last,
            forget_bias: 0.0,
            init_hh: HhInit::Default,
            init_gate_bias: GateBiasInit::Default,
            chrono_t_max: 100.0,
            embeddings: None,
            freeze_embeddings: false,
            frame_encoder: None,
            conv_channels: vec![32, 64, 128, 128],
            batch_norm: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
    Rmsprop,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `step_every` epochs.
    Step,
    /// Cosine from `lr` down to `min_lr` over the whole run.
    Cosine,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    ValAcc,
    ValLoss,
}

impl Monitor {
    /// Its name in metrics.jsonl's epoch rows: "val_acc" or "val_loss".
    pub fn key(self) -> &'static str {
        match self {
            Monitor::ValAcc => "val_acc",
            Monitor::ValLoss => "val_loss",
        }
    }

    /// The other validation metric (the tie-breaker).
    pub fn other(self) -> Monitor {
        match self {
            Monitor::ValAcc => Monitor::ValLoss,
            Monitor::ValLoss => Monitor::ValAcc,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Train {
    /// Passes over the training split. Default 5.
    pub epochs: usize,
    /// Per-class loss weights (PyTorch's `CrossEntropyLoss(weight=...)`): "none",
    /// "balanced" (n_samples / (n_classes * count_c), from the training split), or a list
    /// with one weight per class. Default "none".
    pub class_weights: ClassWeights,
    /// Sequences per step. Default 64.
    pub batch_size: usize,
    /// "sgd" | "adam" | "adamw" | "rmsprop". Default "adam".
    pub optimizer: OptimizerKind,
    /// Peak learning rate, > 0. Default 1e-3.
    pub lr: f64,
    /// L2 penalty (sgd, adam, rmsprop) or decoupled decay (adamw). Default 0.
    pub weight_decay: f64,
    /// sgd / rmsprop momentum in [0, 1). Default 0.
    pub momentum: f64,
    /// sgd: Nesterov momentum (needs momentum > 0). Default false.
    pub nesterov: bool,
    /// adam / adamw: [beta1, beta2]. Default [0.9, 0.999].
    pub betas: [f64; 2],
    /// adam / adamw / rmsprop: denominator epsilon. Default 1e-8.
    pub eps: f64,
    /// rmsprop: smoothing constant. Default 0.99.
    pub alpha: f64,
    /// Clip the global L2 norm of all gradients to this (PyTorch clip_grad_norm_); absent = off.
    pub clip_norm: Option<f64>,
    /// Clamp every gradient element to [-v, v]; absent = off.
    pub clip_value: Option<f64>,
    /// Truncated BPTT window in steps: gradients flow through the last `tbptt` steps of each
    /// sequence only. 0 = full BPTT. Default 0.
    pub tbptt: usize,
    /// "constant" | "step" | "cosine". Default "constant".
    pub schedule: Schedule,
    /// Linear warmup from lr/warmup_steps to lr over this many steps. Default 0.
    pub warmup_steps: usize,
    /// step schedule: epochs between decays. Default 1.
    pub step_every: usize,
    /// step schedule: decay factor. Default 0.5.
    pub gamma: f64,
    /// cosine schedule: final learning rate. Default 0.
    pub min_lr: f64,
    /// Early stopping: epochs without improvement of `monitor` before stopping; absent = off.
    pub patience: Option<usize>,
    /// "val_acc" | "val_loss": the validation metric that picks the best epoch. Default "val_acc".
    pub monitor: Monitor,
    /// Stop when the training step count reaches this; absent = run all epochs.
    pub max_steps: Option<usize>,
    /// Also checkpoint every this many steps inside an epoch (for long epochs: a kill then
    /// loses at most this many steps); absent = at each epoch's end only.
    pub checkpoint_every_steps: Option<usize>,
}

impl Default for Train {
    fn default() -> Self {
        Train {
            epochs: 5,
            class_weights: ClassWeights::Rule(WeightRule::None),
            batch_size: 64,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: 0.0,
            momentum: 0.0,
            nesterov: false,
            betas: [0.9, 0.999],
            eps: 1e-8,
            alpha: 0.99,
            clip_norm: None,
            clip_value: None,
            tbptt: 0,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            step_every: 1,
            gamma: 0.5,
            min_lr: 0.0,
            patience: None,
            monitor: Monitor::ValAcc,
            max_steps: None,
            checkpoint_every_steps: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ClassWeights {
    Rule(WeightRule),
    Given(Vec<f64>),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WeightRule {
    None,
    Balanced,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Per-step scalars every this many steps. Default 10.
    pub every_steps: usize,
    /// Weight and gradient histograms every this many epochs; 0 = never. Default 1.
    pub histograms_every_epochs: usize,
    /// Per-timestep gradient norms ‖∂L/∂h_t‖ on logged steps. Default true.
    pub grad_flow: bool,
    /// Largest singular value of each W_hh on logged steps (power iteration). Default true.
    pub spectrum: bool,
    /// ‖Δw‖ / ‖w‖ of each parameter's update on logged steps (a copy of the weights before
    /// the step). Default true.
    pub update_ratio: bool,
    /// Progress bar on a terminal. Default true.
    pub progress: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            every_steps: 10,
            histograms_every_epochs: 1,
            grad_flow: true,
            spectrum: true,
            update_ratio: true,
            progress: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SweepMethod {
    /// Every combination of the axes' values.
    Grid,
    /// `trials` configurations sampled from the axes.
    Random,
    /// Random sampling plus asynchronous successive halving (ASHA) over epochs.
    Halving,
}

/// `[sweep]`: how one file becomes many trials (see `sweep.rs`). Axes are checked there,
/// against the base config, before anything runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sweep {
    /// "grid" | "random" | "halving". Default "grid".
    pub method: SweepMethod,
    /// Every configuration runs once per seed (each sets experiment.seed); empty = the base
    /// config's experiment.seed only. Default [].
    pub seeds: Vec<u64>,
    /// What "best" means: "val_acc" (max) or "val_loss" (min). Default "val_acc".
    pub metric: Monitor,
    /// random / halving: configurations to sample (each runs once per seed).
    pub trials: Option<usize>,
    /// Seeds the random / halving sampler. Default 0.
    pub seed: u64,
    /// Trials at once on this machine; absent = one per core, each trial on
    /// cores / jobs threads (measured best: see the README's jobs x threads table).
    pub jobs: Option<usize>,
    /// halving: epochs of rung 0; rung k trains to min_epochs * eta^k (at most
    /// train.epochs). Default 1.
    pub min_epochs: usize,
    /// halving: reduction factor; a trial goes on from a rung when its metric is in the top
    /// 1/eta of those recorded there. Default 3.
    pub eta: usize,
    /// A trial marked running by a process on another host whose heartbeat is older than
    /// this (seconds) is taken as dead and rerun. Default 600.
    pub stale_after_s: u64,
    /// Dotted config key -> a list of values, or a distribution (random / halving):
    /// `{ log_uniform = [lo, hi] }`, `{ uniform = [lo, hi] }`, `{ int_range = [lo, hi] }`
    /// (inclusive), `{ choice = [...] }`.
    pub axes: toml::Table,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            method: SweepMethod::Grid,
            seeds: Vec::new(),
            metric: Monitor::ValAcc,
            trials: None,
            seed: 0,
            jobs: None,
            min_epochs: 1,
            eta: 3,
            stale_after_s: 600,
            axes: toml::Table::new(),
        }
    }
}

/// One config change on top of the file: a typed value at a dotted key (`--set a.b=v`, or a
/// sweep trial's axis value), and what to call it in an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub key: String,
    pub value: toml::Value,
    /// Where it came from, e.g. `--set train.lr=3e-3` or `sweep.axes."train.lr" = 0.01`.
    pub origin: String,
}

impl Override {
    /// `--set key=value`: the value is TOML (`3e-3`, `true`, `"x"`, `[1, 2]`); a bare word is a
    /// string.
    pub fn parse_set(raw: &str) -> Result<Override> {
        let Some((k, v)) = raw.split_once('=') else {
            return Err(Error::Config {
                location: format!("--set {raw}"),
                key: raw.to_string(),
                msg: "expected key=value, e.g. --set train.lr=3e-3".into(),
            });
        };
        let (k, v) = (k.trim(), v.trim());
        Ok(Override {
            key: k.to_string(),
            value: parse_value(v),
            origin: format!("--set {k}={v}"),
        })
    }

    pub fn parse_sets(raw: &[String]) -> Result<Vec<Override>> {
        raw.iter().map(|s| Override::parse_set(s)).collect()
    }
}

/// Where each key's value came from, to point errors at it.
struct Origin<'a> {
    file: &'a Path,
    text: &'a str,
    overrides: &'a [Override],
}

impl Origin<'_> {
    fn locate(&self, key: &str) -> String {
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

impl Config {
    /// Reads `path`, applies `--set` overrides (`a.b=value`, value parsed as TOML, else taken as
    /// a string) and validates. Every error names the file or override, key, line and column.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::from_toml(path, &text, overrides)
    }

    pub fn from_toml(path: &Path, text: &str, overrides: &[String]) -> Result<Config> {
        Config::parse(path, text, &Override::parse_sets(overrides)?, true)
    }

    /// The file's text with typed overrides on top (a sweep trial: `--set`s, then its axis
    /// values).
    pub fn from_toml_with(path: &Path, text: &str, overrides: &[Override]) -> Result<Config> {
        Config::parse(path, text, overrides, true)
    }

    /// A config read only for its `[data]` tables (`run-exp eval`): no train split needed.
    pub fn load_for_scoring(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::parse(path, &text, &Override::parse_sets(overrides)?, false)
    }

    fn parse(path: &Path, text: &str, parsed: &[Override], training: bool) -> Result<Config> {
        let origin = Origin {
            file: path,
            text,
            overrides: parsed,
        };

        // The file alone first, so its errors carry the file's line and column.
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (location, key) = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    let key = key_at(text, span.start)
                        .or_else(|| key_written_at(text, span.clone()))
                        .unwrap_or_default();
                    (format!("{}:{line}:{col}", path.display()), key)
                }
                None => (path.display().to_string(), String::new()),
            };
            Error::Config {
                location,
                key,
                msg: e.message().trim().to_string(),
            }
        })?;

        // Then each override on top, deserializing again so it is checked the same way.
        let cfg = if parsed.is_empty() {
            cfg
        } else {
            let mut table = toml::Table::try_from(&cfg).map_err(|e| Error::Config {
                location: path.display().to_string(),
                key: String::new(),
                msg: e.to_string(),
            })?;
            let mut cfg = cfg;
            for o in parsed {
                let err = |msg: String| Error::Config {
                    location: o.origin.clone(),
                    key: o.key.clone(),
                    msg,
                };
                set_path(&mut table, &o.key, o.value.clone()).map_err(err)?;
                cfg = Config::deserialize(toml::Value::Table(table.clone()))
                    .map_err(|e| err(e.message().trim().to_string()))?;
            }
            cfg
        };
        let cfg = with_preset(cfg, text, parsed).map_err(|msg| Error::Config {
            location: origin.locate("data.preset"),
            key: "data.preset".into(),
            msg,
        })?;
        cfg.validate(training).map_err(|(key, msg)| Error::Config {
            location: origin.locate(&key),
            key,
            msg,
        })?;
        Ok(cfg)
    }

    /// Range and consistency checks serde cannot express. Returns the offending key.
    /// (Negated comparisons on purpose: NaN fails them.)
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn validate(&self, training: bool) -> std::result::Result<(), (String, String)> {
        fn bad(key: &str, msg: impl Into<String>) -> std::result::Result<(), (String, String)> {
            Err((key.to_string(), msg.into()))
        }
        let (e, d, m, t, l) = (
            &self.experiment,
            &self.data,
            &self.model,
            &self.train,
            &self.log,
        );
        if e.name.is_empty()
            || e.name.contains(['/', '\\'])
            || e.name.starts_with('.')
            || e.name.chars().any(char::is_control)
        {
            return bad(
                "experiment.name",
                "must be a non-empty folder name without '/', a leading '.' or control characters",
            );
        }
        if e.name.len() > MAX_NAME_BYTES {
            return bad(
                "experiment.name",
                format!(
                    "is {} bytes long; a folder name may have at most {MAX_NAME_BYTES}",
                    e.name.len()
                ),
            );
        }
        if e.out_dir.as_os_str().is_empty() {
            return bad("experiment.out_dir", "must not be empty");
        }
        if let Err(msg) = crate::device::DeviceSpec::parse(&e.device) {
            return bad("experiment.device", msg);
        }
        if d.max_len == 0 {
            return bad("data.max_len", "must be at least 1");
        }
        match d.source {
            Source::SyntheticSentiment | Source::DelayedRecall | Source::SyntheticVideo => {
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
            Source::File | Source::Hub | Source::Tensors | Source::Frames => {
                if d.source == Source::Hub && d.repo.is_none() {
                    return bad(
                        "data.repo",
                        "source = \"hub\" needs repo = \"owner/name\" (or preset = \"sst2\" | \"imdb\")",
                    );
                }
                if training && d.train.is_none() {
                    return bad(
                        "data.train",
                        match d.source {
                            Source::Hub => "source = \"hub\" needs train = \"path/in/repo.parquet\" (or a preset)",
                            Source::Tensors => "source = \"tensors\" needs train = \"path/to/train.safetensors\"",
                            Source::Frames => "source = \"frames\" needs train = a folder <class>/<clip>/<frames> or a list file",
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
        if d.source == Source::Frames {
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
        if m.conv_channels.is_empty() || m.conv_channels.contains(&0) {
            return bad(
                "model.conv_channels",
                "needs at least one conv width, each at least 1",
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
        if m.embedding_dim == 0 {
            return bad("model.embedding_dim", "must be at least 1");
        }
        if m.hidden_size == 0 {
            return bad("model.hidden_size", "must be at least 1");
        }
        if m.num_layers == 0 {
            return bad("model.num_layers", "must be at least 1");
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return bad("model.dropout", "must be in [0, 1)");
        }
        // nonlinearity (rnn) and forget_bias (lstm) are ignored by the other cells, so one
        // config can be swept over model.cell.
        if !m.forget_bias.is_finite() {
            return bad("model.forget_bias", "must be a finite number");
        }
        if m.init_gate_bias == GateBiasInit::Chrono {
            if m.cell == CellKind::Rnn {
                return bad(
                    "model.init_gate_bias",
                    "\"chrono\" sets gate biases; the rnn cell has no gates (lstm or gru)",
                );
            }
            if m.forget_bias != 0.0 {
                return bad(
                    "model.forget_bias",
                    "chrono initialisation sets the forget-gate bias itself: leave forget_bias out",
                );
            }
            if !(m.chrono_t_max >= 2.0 && m.chrono_t_max.is_finite()) {
                return bad("model.chrono_t_max", "must be at least 2 (steps)");
            }
        }
        if t.epochs == 0 {
            return bad("train.epochs", "must be at least 1");
        }
        if let ClassWeights::Given(w) = &t.class_weights {
            if w.is_empty() || !w.iter().all(|v| *v >= 0.0 && v.is_finite()) {
                return bad(
                    "train.class_weights",
                    "must be \"none\", \"balanced\" or a list of finite weights >= 0",
                );
            }
            if w.iter().all(|v| *v == 0.0) {
                return bad(
                    "train.class_weights",
                    "at least one weight must be > 0 (with every weight 0 the loss is 0/0)",
                );
            }
        }
        if t.batch_size == 0 {
            return bad("train.batch_size", "must be at least 1");
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad("train.lr", "must be > 0");
        }
        if !(t.weight_decay >= 0.0) {
            return bad("train.weight_decay", "must be >= 0");
        }
        if !(0.0..1.0).contains(&t.momentum) {
            return bad("train.momentum", "must be in [0, 1)");
        }
        if t.nesterov && (t.optimizer != OptimizerKind::Sgd || t.momentum == 0.0) {
            return bad(
                "train.nesterov",
                "needs optimizer = \"sgd\" and momentum > 0",
            );
        }
        if !t.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return bad("train.betas", "each beta must be in [0, 1)");
        }
        if !(t.eps > 0.0) {
            return bad("train.eps", "must be > 0");
        }
        if !(0.0..1.0).contains(&t.alpha) {
            return bad("train.alpha", "must be in [0, 1)");
        }
        if let Some(c) = t.clip_norm {
            if !(c > 0.0) {
                return bad("train.clip_norm", "must be > 0 (remove the key to disable)");
            }
        }
        if let Some(c) = t.clip_value {
            if !(c > 0.0) {
                return bad(
                    "train.clip_value",
                    "must be > 0 (remove the key to disable)",
                );
            }
        }
        if t.tbptt > 0 && m.bidirectional {
            return bad(
                "train.tbptt",
                "truncated BPTT needs bidirectional = false (the backward direction sees the future)",
            );
        }
        if t.step_every == 0 {
            return bad("train.step_every", "must be at least 1");
        }
        if !(t.gamma > 0.0) {
            return bad("train.gamma", "must be > 0");
        }
        if !(t.min_lr >= 0.0) {
            return bad("train.min_lr", "must be >= 0");
        }
        if t.patience == Some(0) {
            return bad(
                "train.patience",
                "must be at least 1 (remove the key to disable)",
            );
        }
        if t.max_steps == Some(0) {
            return bad("train.max_steps", "must be at least 1");
        }
        if t.checkpoint_every_steps == Some(0) {
            return bad(
                "train.checkpoint_every_steps",
                "must be at least 1 (remove the key to checkpoint at epoch ends only)",
            );
        }
        if l.every_steps == 0 {
            return bad("log.every_steps", "must be at least 1");
        }
        Ok(())
    }

    /// Relative file paths made absolute (against the working directory), so the run folder's
    /// config works from anywhere (a `--resume` from another directory, a cluster job).
    /// The data section as the loaders read it: `data.cache_dir` defaulted to
    /// `<experiment.out_dir>/.cache`.
    pub fn data_to_load(&self) -> Data {
        let mut d = self.data.clone();
        if d.cache_dir.is_none() {
            d.cache_dir = Some(self.experiment.out_dir.join(".cache"));
        }
        d
    }

    pub fn with_absolute_paths(mut self) -> Config {
        let abs = |p: &mut PathBuf| {
            if let Ok(a) = std::path::absolute(&*p) {
                *p = a;
            }
        };
        if matches!(
            self.data.source,
            Source::File | Source::Tensors | Source::Frames
        ) {
            for p in [
                &mut self.data.train,
                &mut self.data.valid,
                &mut self.data.test,
            ]
            .into_iter()
            .flatten()
            {
                abs(p);
            }
        }
        if let Some(p) = &mut self.model.embeddings {
            abs(p);
        }
        if let Some(p) = &mut self.data.cache_dir {
            abs(p);
        }
        abs(&mut self.experiment.out_dir);
        self
    }

    /// Keys whose value differs between `self` (what a resume asks for) and `saved` (what the
    /// checkpoint was trained with) and that a resume may not change: anything but
    /// [`RESUMABLE_KEYS`]. Both are compared with absolute paths.
    pub fn unsafe_resume_changes(&self, saved: &Config) -> Vec<(String, String, String)> {
        let flat = |c: &Config| {
            let mut out = std::collections::BTreeMap::new();
            if let Ok(t) = toml::Table::try_from(c.clone().with_absolute_paths()) {
                flatten("", &toml::Value::Table(t), &mut out);
            }
            out
        };
        let (new, old) = (flat(self), flat(saved));
        let keys: std::collections::BTreeSet<&String> = new.keys().chain(old.keys()).collect();
        keys.into_iter()
            .filter(|k| {
                !RESUMABLE_KEYS
                    .iter()
                    .any(|r| *k == r || (r.ends_with('.') && k.starts_with(r)))
            })
            .filter(|k| new.get(*k) != old.get(*k))
            .map(|k| {
                let show = |m: &std::collections::BTreeMap<String, String>| {
                    m.get(k).cloned().unwrap_or_else(|| "(unset)".into())
                };
                (k.clone(), show(&old), show(&new))
            })
            .collect()
    }

    /// The resolved config as TOML, as saved in the run folder.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not serialize: {e}\n"))
    }
}

/// The most classes `synthetic-video` has: the cyclic orders of four brightness levels
/// (data/video.rs builds them and checks that they are this many).
pub const SYNTHETIC_VIDEO_CLASSES: usize = 6;

/// Longest `experiment.name` (a folder name; file systems allow 255 bytes).
pub const MAX_NAME_BYTES: usize = 128;

/// What a resume may change: how long to train, when to stop and checkpoint, logging, and
/// where and how fast to compute. ("log." is the whole section.) Everything else (model,
/// data, optimizer, seed) would make the resumed run a different experiment.
pub const RESUMABLE_KEYS: &[&str] = &[
    "train.epochs",
    "train.max_steps",
    "train.patience",
    "train.checkpoint_every_steps",
    "experiment.threads",
    "experiment.device",
    "experiment.out_dir",
    "data.cache_dir",
    "log.",
];

/// Dotted keys of a TOML tree with their values as TOML text.
fn flatten(prefix: &str, v: &toml::Value, out: &mut std::collections::BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Fills the preset's data keys that neither the file nor `--set` gave.
fn with_preset(
    mut cfg: Config,
    text: &str,
    overrides: &[Override],
) -> std::result::Result<Config, String> {
    let Some(preset) = cfg.data.preset else {
        return Ok(cfg);
    };
    let in_file: Vec<String> = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("data").and_then(|d| d.as_table()).cloned())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();
    let given = |key: &str| {
        in_file.iter().any(|k| k == key)
            || overrides
                .iter()
                .any(|o| o.key.strip_prefix("data.") == Some(key))
    };
    let mut table = toml::Table::try_from(&cfg.data).map_err(|e| e.to_string())?;
    for (key, value) in preset.values(cfg.data.source) {
        if !given(key) {
            table.insert(key.to_string(), value);
        }
    }
    cfg.data = Data::deserialize(toml::Value::Table(table)).map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// `--set` values are TOML (`3e-3`, `true`, `"x"`, `[1, 2]`); a bare word is a string.
fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Sets `a.b.c = value` at any depth, making the tables on the way; deserializing afterwards
/// decides whether the key exists. The key is a TOML dotted key, so a part may be quoted:
/// `sweep.axes."train.lr"`.
fn set_path(
    table: &mut toml::Table,
    key: &str,
    value: toml::Value,
) -> std::result::Result<(), String> {
    let parts = key_parts(key)?;
    if parts.len() < 2 {
        return Err("keys are dotted paths, section first, e.g. train.lr".into());
    }
    let (last, path) = parts.split_last().unwrap_or((&parts[0], &[]));
    let mut t = table;
    for (i, part) in path.iter().enumerate() {
        let next = t
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match next {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("{} is not a table", parts[..=i].join("."))),
        };
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// The parts of a TOML dotted key (`a.b`, `a."b.c"`), as TOML itself reads them.
fn key_parts(key: &str) -> std::result::Result<Vec<String>, String> {
    let bad =
        || format!("\"{key}\" is not a dotted key (e.g. train.lr, or sweep.axes.\"train.lr\")");
    let doc: toml::Table = toml::from_str(&format!("{key} = 0")).map_err(|_| bad())?;
    let mut parts = Vec::new();
    let mut t = &doc;
    loop {
        let mut it = t.iter();
        let (k, v) = it.next().ok_or_else(bad)?;
        parts.push(k.clone());
        match v {
            toml::Value::Table(inner) => t = inner,
            _ => return Ok(parts),
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
fn key_written_at(text: &str, span: std::ops::Range<usize>) -> Option<String> {
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
fn key_at(text: &str, pos: usize) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, sets: &[&str]) -> Result<Config> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::from_toml(Path::new("x.toml"), text, &sets)
    }

    fn msg(r: Result<Config>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let c = load("[model]\ncell = \"gru\"\n", &[]).unwrap();
        assert_eq!(c.model.cell, CellKind::Gru);
        assert_eq!(c.train.lr, 1e-3);
        assert_eq!(c.data.max_len, 64);
    }

    #[test]
    fn inits_parse_and_chrono_needs_gates() {
        let c = load(
            "[model]\ncell = \"rnn\"\nnonlinearity = \"relu\"\ninit_hh = \"identity\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.model.init_hh, HhInit::Identity);
        let m = msg(load(
            "[model]\ncell = \"rnn\"\ninit_gate_bias = \"chrono\"\n",
            &[],
        ));
        assert!(
            m.contains("model.init_gate_bias") && m.contains("no gates"),
            "{m}"
        );
        let m = msg(load(
            "[model]\ninit_gate_bias = \"chrono\"\nforget_bias = 1.0\n",
            &[],
        ));
        assert!(m.contains("model.forget_bias"), "{m}");
        let m = msg(load(
            "[model]\ninit_gate_bias = \"chrono\"\nchrono_t_max = 1\n",
            &[],
        ));
        assert!(m.contains("model.chrono_t_max"), "{m}");
        let m = msg(load("[model]\ninit_hh = \"orthogonl\"\n", &[]));
        assert!(
            m.contains("model.init_hh") && m.contains("orthogonal"),
            "{m}"
        );
    }

    #[test]
    fn unknown_key_names_line_and_valid_keys() {
        let m = msg(load("[model]\ncell = \"lstm\"\nhiden_size = 3\n", &[]));
        assert!(m.starts_with("x.toml:3:1: model.hiden_size:"), "{m}");
        assert!(m.contains("hidden_size"), "{m}");
    }

    #[test]
    fn wrong_type_names_key() {
        let m = msg(load("[train]\nlr = \"fast\"\n", &[]));
        assert!(m.starts_with("x.toml:2:"), "{m}");
        assert!(m.contains("train.lr"), "{m}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let m = msg(load("[train]\nepochs = 2\nlr = -1.0\n", &[]));
        assert_eq!(m, "x.toml:3:1: train.lr: must be > 0");
        let m = msg(load("[model]\ncell = \"lstmm\"\n", &[]));
        assert!(m.contains("x.toml:2:8") && m.contains("model.cell"), "{m}");
    }

    #[test]
    fn overrides_are_checked_and_named() {
        let c = load("", &["model.cell=gru", "train.lr=3e-3"]).unwrap();
        assert_eq!(c.model.cell, CellKind::Gru);
        assert_eq!(c.train.lr, 3e-3);
        let m = msg(load("", &["model.hidden_size=0"]));
        assert_eq!(
            m,
            "--set model.hidden_size=0: model.hidden_size: must be at least 1"
        );
        let m = msg(load("", &["model.sise=3"]));
        assert!(
            m.starts_with("--set model.sise=3: model.sise: unknown field"),
            "{m}"
        );
        let m = msg(load("", &["train.lr=abc"]));
        assert!(m.starts_with("--set train.lr=abc"), "{m}");
    }
}
