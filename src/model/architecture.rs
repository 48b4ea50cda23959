//! What a config builds, as sizes: the front end, the recurrent stack and the head, and from
//! them every parameter's name and shape in PyTorch's order. `Classifier::new` builds exactly
//! this (a test holds the two together); the memory estimate and `prepare` read it without
//! allocating anything, so an absurd size is refused before a byte of it exists.

use super::cell;
use super::resnet::Depth;
use crate::config::{CellKind, FrameEncoder, Model};
use crate::error::{Error, Result};

/// What each time step carries (a run folder's `input.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Input {
    /// Token ids below `vocab`.
    Tokens { vocab: usize },
    /// `dim` real values per step (precomputed frame features, signals).
    Features { dim: usize },
    /// Video frames.
    Frames {
        channels: usize,
        height: usize,
        width: usize,
    },
}

/// As messages name it: "tokens (a vocabulary of 82)", "frames of 3 x 64 x 64".
impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Tokens { vocab } => write!(f, "tokens (a vocabulary of {vocab})"),
            Input::Features { dim } => write!(f, "features of width {dim}"),
            Input::Frames {
                channels,
                height,
                width,
            } => write!(
                f,
                "frames of {channels} x {height} x {width} (channels x height x width)"
            ),
        }
    }
}

/// How each step's input becomes the stack's input.
#[derive(Debug, Clone, PartialEq)]
pub enum Front {
    /// Token ids looked up in `emb.weight` [vocab, dim].
    Embedding { vocab: usize, dim: usize },
    /// A linear map of each step's values (frames flattened): `proj.weight` [dim, input],
    /// `proj.bias` [dim].
    Dense { input: usize, dim: usize },
    /// Conv blocks (`encoder.<i>.*`) + global average pooling per frame.
    Cnn {
        channels: usize,
        /// The frames' height and width (the blocks' activations scale with them).
        frame: (usize, usize),
        widths: Vec<usize>,
        batch_norm: bool,
    },
    /// A pretrained ResNet (torchvision's, `encoder.<its names>`); only the parameters of the
    /// stages in `trains` are the classifier's, the rest stay in the weights file.
    ResNet {
        depth: Depth,
        /// The frames' height and width.
        frame: (usize, usize),
        trains: Vec<String>,
    },
    /// Features go to the stack as they are.
    Identity { dim: usize },
}

impl Front {
    /// The width of a step's vector as the stack receives it.
    pub fn output_size(&self) -> usize {
        match self {
            Front::Embedding { dim, .. } | Front::Dense { dim, .. } | Front::Identity { dim } => {
                *dim
            }
            Front::Cnn {
                channels, widths, ..
            } => widths.last().copied().unwrap_or(*channels),
            Front::ResNet { depth, .. } => depth.features(),
        }
    }
}

/// The classifier a config builds for an input and a number of classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    pub front: Front,
    pub cell: CellKind,
    pub hidden: usize,
    pub layers: usize,
    /// 2 when bidirectional.
    pub directions: usize,
    pub classes: usize,
}

impl Architecture {
    /// `model.frame_encoder` unset means "linear" for features and "cnn" for frames; a
    /// combination that cannot work is a config error naming the key.
    pub fn of(cfg: &Model, input: Input, classes: usize) -> Result<Architecture> {
        let refuse = |msg: &str| {
            Err(Error::Config {
                location: "config".into(),
                key: "model.frame_encoder".into(),
                msg: msg.into(),
            })
        };
        let encoder = cfg.frame_encoder.unwrap_or(match input {
            Input::Features { .. } => FrameEncoder::Linear,
            _ => FrameEncoder::Cnn,
        });
        let dim = cfg.embedding_dim;
        let front = match (input, encoder) {
            (Input::Tokens { vocab }, _) => Front::Embedding { vocab, dim },
            (Input::Features { dim }, FrameEncoder::None) => Front::Identity { dim },
            (Input::Features { dim: input }, FrameEncoder::Linear) => Front::Dense { input, dim },
            (Input::Features { .. }, FrameEncoder::Cnn) => {
                return refuse(
                    "\"cnn\" needs frames; per-step features take \"linear\" or \"none\"",
                )
            }
            (
                Input::Features { .. },
                FrameEncoder::Resnet18 | FrameEncoder::Resnet34 | FrameEncoder::Resnet50,
            ) => {
                return refuse(
                    "a resnet needs frames; per-step features take \"linear\" or \"none\"",
                )
            }
            (
                Input::Frames {
                    channels,
                    height,
                    width,
                },
                e @ (FrameEncoder::Resnet18 | FrameEncoder::Resnet34 | FrameEncoder::Resnet50),
            ) => {
                if channels != 3 {
                    return Err(Error::Config {
                        location: "config".into(),
                        key: "data.channels".into(),
                        msg: format!(
                            "a resnet takes RGB frames (3 channels); the data has {channels}"
                        ),
                    });
                }
                Front::ResNet {
                    depth: Depth::of(e),
                    frame: (height, width),
                    trains: cfg.trained_stages(),
                }
            }
            (
                Input::Frames {
                    channels,
                    height,
                    width,
                },
                FrameEncoder::Linear,
            ) => Front::Dense {
                input: channels * height * width,
                dim,
            },
            (
                Input::Frames {
                    channels,
                    height,
                    width,
                },
                FrameEncoder::Cnn,
            ) => Front::Cnn {
                channels,
                frame: (height, width),
                widths: cfg.conv_channels.clone(),
                batch_norm: cfg.batch_norm,
            },
            (Input::Frames { .. }, FrameEncoder::None) => {
                return refuse("frames need an encoder: \"cnn\" or \"linear\"")
            }
        };
        Ok(Architecture {
            front,
            cell: cfg.cell,
            hidden: cfg.hidden_size,
            layers: cfg.num_layers,
            directions: if cfg.bidirectional { 2 } else { 1 },
            classes,
        })
    }

    /// The stack's output width (what the head reads).
    pub fn output_size(&self) -> usize {
        self.hidden * self.directions
    }

    /// The input width of recurrent layer `layer`.
    pub fn layer_input(&self, layer: usize) -> usize {
        if layer == 0 {
            self.front.output_size()
        } else {
            self.output_size()
        }
    }

    /// Every trained parameter by name and shape, in PyTorch's order (batch norm's running
    /// statistics are buffers, not listed).
    pub fn parameters(&self) -> Vec<(String, Vec<usize>)> {
        let mut out: Vec<(String, Vec<usize>)> = Vec::new();
        match &self.front {
            Front::Embedding { vocab, dim } => out.push(("emb.weight".into(), vec![*vocab, *dim])),
            Front::Dense { input, dim } => {
                out.push(("proj.weight".into(), vec![*dim, *input]));
                out.push(("proj.bias".into(), vec![*dim]));
            }
            Front::Cnn {
                channels,
                widths,
                batch_norm,
                ..
            } => {
                let per_block = if *batch_norm { 4 } else { 3 };
                let mut c = *channels;
                for (k, &w) in widths.iter().enumerate() {
                    let i = per_block * k;
                    out.push((format!("encoder.{i}.weight"), vec![w, c, 3, 3]));
                    out.push((format!("encoder.{i}.bias"), vec![w]));
                    if *batch_norm {
                        let j = i + 1;
                        for p in ["weight", "bias"] {
                            out.push((format!("encoder.{j}.{p}"), vec![w]));
                        }
                    }
                    c = w;
                }
            }
            Front::ResNet { depth, trains, .. } => {
                out.extend(
                    depth
                        .trainable(trains)
                        .into_iter()
                        .map(|(n, s)| (format!("encoder.{n}"), s)),
                );
            }
            Front::Identity { .. } => {}
        }
        for l in 0..self.layers {
            for d in 0..self.directions {
                let suffix = cell::suffix(l, d);
                out.extend(cell::shapes(
                    "rnn.",
                    &suffix,
                    self.cell,
                    self.layer_input(l),
                    self.hidden,
                ));
            }
        }
        out.push(("head.weight".into(), vec![self.classes, self.output_size()]));
        out.push(("head.bias".into(), vec![self.classes]));
        out
    }

    /// How many numbers `parameters` holds (f64: absurd sizes must not overflow).
    pub fn numel(&self) -> f64 {
        self.parameters()
            .iter()
            .map(|(_, shape)| shape.iter().map(|&d| d as f64).product::<f64>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::config::{Config, Nonlinearity};
    use crate::model::classifier::Classifier;

    /// Built and described agree on every name and shape, whatever the config.
    #[test]
    fn the_built_classifier_has_exactly_the_described_parameters() {
        let inputs = [
            Input::Tokens { vocab: 11 },
            Input::Features { dim: 5 },
            Input::Frames {
                channels: 3,
                height: 8,
                width: 6,
            },
        ];
        let mut checked = 0;
        for input in inputs {
            for encoder in [
                None,
                Some(FrameEncoder::Linear),
                Some(FrameEncoder::Cnn),
                Some(FrameEncoder::None),
            ] {
                for (cell, bidirectional, layers, batch_norm) in [
                    (CellKind::Lstm, false, 1, false),
                    (CellKind::Gru, true, 2, true),
                    (CellKind::Rnn, true, 3, false),
                ] {
                    let mut cfg = Config::default().model;
                    cfg.cell = cell;
                    cfg.nonlinearity = Nonlinearity::Tanh;
                    cfg.bidirectional = bidirectional;
                    cfg.num_layers = layers;
                    cfg.batch_norm = batch_norm;
                    cfg.frame_encoder = encoder;
                    cfg.hidden_size = 7;
                    cfg.embedding_dim = 4;
                    cfg.conv_channels = vec![2, 3];
                    let Ok(arch) = Architecture::of(&cfg, input, 3) else {
                        assert!(Classifier::new(&cfg, input, 3, 0, &Device::Cpu).is_err());
                        continue;
                    };
                    let model = Classifier::new(&cfg, input, 3, 0, &Device::Cpu).unwrap();
                    let built: Vec<(String, Vec<usize>)> = model
                        .params
                        .iter()
                        .map(|(n, v)| (n.clone(), v.as_tensor().dims().to_vec()))
                        .collect();
                    let mut described = arch.parameters();
                    described.sort();
                    assert_eq!(built, described, "{input} {encoder:?} {cell:?}");
                    assert_eq!(model.params.numel() as f64, arch.numel());
                    checked += 1;
                }
            }
        }
        assert!(checked >= 18, "{checked}");
    }

    #[test]
    fn parameter_count_matches_the_pytorch_formula() {
        // nn.Embedding(100, 8) + nn.LSTM(8, 16) + nn.Linear(16, 2):
        // 800 + 4*16*(8+16) + 2*4*16 + 2*16 + 2 = 800 + 1536 + 128 + 34.
        let mut cfg = Config::default().model;
        cfg.embedding_dim = 8;
        cfg.hidden_size = 16;
        let tokens = Input::Tokens { vocab: 100 };
        assert_eq!(Architecture::of(&cfg, tokens, 2).unwrap().numel(), 2498.0);
        cfg.bidirectional = true;
        cfg.num_layers = 2;
        cfg.cell = CellKind::Gru;
        // Layer 0: 2 * (3*16*(8+16) + 2*48); layer 1: 2 * (3*16*(32+16) + 96); head 2*(32+1).
        assert_eq!(
            Architecture::of(&cfg, tokens, 2).unwrap().numel(),
            800.0 + 2.0 * (1152.0 + 96.0) + 2.0 * (2304.0 + 96.0) + 66.0
        );
    }
}
