//! `[model]`: the cell, the stack, its initialisation, the readout and the frame encoder.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, Checked};

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
    /// torchvision's ResNet-18 / -34 / -50 with pretrained weights (`encoder_weights`):
    /// ImageNet-normalised RGB frames -> 512 / 512 / 2048 pooled features.
    Resnet18,
    Resnet34,
    Resnet50,
}

impl FrameEncoder {
    /// A pretrained ResNet (weights from `model.encoder_weights`).
    pub fn is_resnet(self) -> bool {
        matches!(
            self,
            FrameEncoder::Resnet18 | FrameEncoder::Resnet34 | FrameEncoder::Resnet50
        )
    }
}

/// The parts of a ResNet that `model.train_encoder_stages` may name.
pub const ENCODER_STAGES: [&str; 5] = ["conv1", "layer1", "layer2", "layer3", "layer4"];

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
    /// Video: "cnn" | "linear" | "none" (features only) | "resnet18" | "resnet34" |
    /// "resnet50" (pretrained, `encoder_weights`); absent = "cnn" for frames, "linear" for
    /// per-step features.
    pub frame_encoder: Option<FrameEncoder>,
    /// Video, cnn: output channels of each conv block, in order. Default [32, 64, 128, 128].
    pub conv_channels: Vec<usize>,
    /// Video, cnn: batch norm after each conv (running statistics saved with the weights).
    /// Default false.
    pub batch_norm: bool,
    /// Video, resnet*: the pretrained weights, a `.safetensors` state dict in torchvision's
    /// names (`conv1.weight`, `bn1.*`, `layer1.0.conv1.weight`, ...; `fc.*` ignored): a local
    /// path, or `hub:<owner>/<repo>`, a Hugging Face model repo resolved through the hub cache
    /// (`encoder_file`, `encoder_revision`; `HF_HUB_OFFLINE=1` respected).
    pub encoder_weights: Option<String>,
    /// hub: the file in the repo. Default "model.safetensors".
    pub encoder_file: String,
    /// hub: the branch, tag or commit. Default "main".
    pub encoder_revision: String,
    /// resnet*: no gradient for the encoder (its batch norm always uses the running
    /// statistics). A frozen encoder's features are computed once and cached. Default true.
    pub freeze_encoder: bool,
    /// resnet*: the stages that train ("conv1" (with bn1), "layer1" .. "layer4"), the rest
    /// frozen; empty = none when `freeze_encoder`, all otherwise. Default [].
    pub train_encoder_stages: Vec<String>,
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
            encoder_weights: None,
            encoder_file: "model.safetensors".into(),
            encoder_revision: "main".into(),
            freeze_encoder: true,
            train_encoder_stages: Vec::new(),
        }
    }
}

impl Model {
    /// The ResNet stages that get gradients (see `train_encoder_stages`).
    pub fn trained_stages(&self) -> Vec<String> {
        if !self.train_encoder_stages.is_empty() {
            self.train_encoder_stages.clone()
        } else if self.freeze_encoder {
            Vec::new()
        } else {
            ENCODER_STAGES.iter().map(|s| s.to_string()).collect()
        }
    }

    /// Sizes, dropout and the initialisation choices that fit the cell.
    /// (Negated comparisons on purpose: NaN fails them.)
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub(super) fn check(&self) -> Checked {
        let m = self;
        if m.conv_channels.is_empty() || m.conv_channels.contains(&0) {
            return bad(
                "model.conv_channels",
                "needs at least one conv width, each at least 1",
            );
        }
        let resnet = m.frame_encoder.is_some_and(FrameEncoder::is_resnet);
        if resnet && m.encoder_weights.is_none() {
            return bad(
                "model.encoder_weights",
                "a resnet encoder needs its pretrained weights: a .safetensors path in torchvision's names, or \"hub:<owner>/<repo>\" (see README, Video)",
            );
        }
        if !resnet && m.encoder_weights.is_some() {
            return bad(
                "model.encoder_weights",
                "is read by the resnet encoders only (model.frame_encoder = \"resnet18\" | \"resnet34\" | \"resnet50\")",
            );
        }
        if let Some(s) = m
            .train_encoder_stages
            .iter()
            .find(|s| !ENCODER_STAGES.contains(&s.as_str()))
        {
            return bad(
                "model.train_encoder_stages",
                format!("{s:?} is not a stage; the stages are {ENCODER_STAGES:?}"),
            );
        }
        if !resnet && !m.train_encoder_stages.is_empty() {
            return bad(
                "model.train_encoder_stages",
                "is read by the resnet encoders only",
            );
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
        Ok(())
    }
}
