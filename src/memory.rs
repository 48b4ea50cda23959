//! What a run will need in memory, estimated from its config (and, once loaded, its data's
//! vocabulary and longest sequence) before anything is allocated or written, checked against
//! what the machine has available. A config that cannot fit is refused with the estimate and
//! the key to change, instead of an abort halfway through writing a run folder.

use crate::config::{CellKind, Config, OptimizerKind, Source};
use crate::error::{Error, Result};
use crate::model::architecture::{Architecture, Front};

const F32: f64 = 4.0;
const GIB: f64 = (1u64 << 30) as f64;

/// One part of the estimate: bytes, what it is, and the config key that sizes it most.
#[derive(Debug, Clone)]
pub struct Part {
    pub bytes: f64,
    pub what: String,
    pub key: &'static str,
}

/// The model's share: parameters (the architecture's own list of shapes), their gradients,
/// the optimizer's moments, and one batch's saved activations (the fused op keeps gate
/// activations, states, the input projection and, in backward, their gradients, for every step
/// of every layer and direction).
/// `fused`: the CNN runs as the fused CPU op (see `frame_encoder_part`).
pub fn model_parts(cfg: &Config, arch: &Architecture, longest: usize, fused: bool) -> Vec<Part> {
    let n = arch.numel();
    let moments = match cfg.train.optimizer {
        OptimizerKind::Adam | OptimizerKind::Adamw => 2.0,
        OptimizerKind::Rmsprop => 1.0 + (cfg.train.momentum > 0.0) as u8 as f64,
        OptimizerKind::Sgd => (cfg.train.momentum > 0.0) as u8 as f64,
    };
    let h = arch.hidden as f64;
    let dirs = arch.directions as f64;
    let gates = arch.cell.gates() as f64;
    let state = if arch.cell == CellKind::Lstm {
        2.0
    } else {
        1.0
    };
    // Token sources cut sequences at max_len; frames and features keep theirs.
    let steps = if cfg.data.source.reads_tokens() {
        longest.min(cfg.data.max_len)
    } else {
        longest
    }
    .max(1);
    // Truncated BPTT keeps the recurrent activations of each row's window only (the steps
    // before it run without a graph); the input rows are kept whole.
    let window = match cfg.train.tbptt {
        k if k > 0 && arch.directions == 1 => steps.min(k),
        _ => steps,
    };
    let batch = cfg.train.batch_size as f64;
    let recurrent: f64 = (0..arch.layers)
        .map(|l| {
            let input = if l == 0 { 0 } else { arch.layer_input(l) };
            dirs * (3.0 * gates * h + (state + 2.0) * h + input as f64)
        })
        .sum();
    let inputs = arch.layer_input(0) as f64 + arch.front.output_size() as f64;
    let activations = batch * (window as f64 * recurrent + steps as f64 * inputs);
    // The embedding table or the recurrent weights, whichever holds most parameters.
    let param_key = match arch.front {
        Front::Embedding { vocab, dim } if (vocab * dim) as f64 > n / 2.0 => "data.max_vocab",
        _ => "model.hidden_size",
    };
    let mut parts = vec![
        Part {
            bytes: n * F32 * (2.0 + moments),
            what: format!(
                "{} parameters with gradients and {} optimizer moments",
                fmt_count(n),
                moments
            ),
            key: param_key,
        },
        Part {
            bytes: activations * F32,
            what: if window < steps {
                format!(
                    "activations of one batch ({} x {steps} steps, {window} of them backpropagated)",
                    cfg.train.batch_size
                )
            } else {
                format!(
                    "activations of one batch ({} x {steps} steps)",
                    cfg.train.batch_size
                )
            },
            key: "train.batch_size",
        },
    ];
    if let Front::Cnn { widths, frame, .. } = &arch.front {
        parts.push(frame_encoder_part(cfg, widths, *frame, longest, fused));
    }
    if let Front::ResNet {
        depth,
        frame,
        trains,
    } = &arch.front
    {
        // Stages that train keep every activation for backward (the estimate keeps the whole
        // network's, an upper bound); a frozen encoder's features are counted where they are
        // cached (`prepare`).
        if !trains.is_empty() {
            let frames = cfg.train.batch_size as f64 * longest.max(1) as f64;
            parts.push(Part {
                bytes: frames * depth.activations(frame.0, frame.1) as f64 * F32 * 2.0,
                what: format!(
                    "{} activations of one batch ({} clips x {longest} frames of {} x {}), kept for backward",
                    depth.name(),
                    cfg.train.batch_size,
                    frame.0,
                    frame.1
                ),
                key: "train.batch_size",
            });
        }
    }
    parts
}

/// The built-in sources' generated sequences (known before generating them).
pub fn synthetic_data_part(cfg: &Config) -> Option<Part> {
    let d = &cfg.data;
    let seqs = d.num_train as f64 + d.num_valid as f64 + d.num_test as f64;
    if d.source == Source::SyntheticVideo {
        // Training keeps every frame (frames_per_clip picks per batch).
        let frames = d.frames as f64;
        let px = (d.channels * d.height * d.width) as f64;
        return Some(Part {
            bytes: seqs * (frames * px + 24.0 + 16.0 + 4.0),
            what: format!("{} generated clips of {frames} frames", fmt_count(seqs)),
            key: "data.num_train",
        });
    }
    let tokens = match d.source {
        Source::SyntheticSentiment => 17,
        Source::DelayedRecall => d.lag.saturating_add(1),
        Source::TemporalOrder => d.length.saturating_add(d.length / 10),
        Source::File
        | Source::Hub
        | Source::SyntheticVideo
        | Source::Tensors
        | Source::Frames
        | Source::Videos => return None,
    }
    .min(d.max_len) as f64;
    // Ids, a Vec header and allocator overhead per sequence, and the label.
    Some(Part {
        bytes: seqs * (tokens * 4.0 + 24.0 + 16.0 + 4.0),
        what: format!("{} generated sequences", fmt_count(seqs)),
        key: "data.num_train",
    })
}

/// Bytes this process may still allocate: MemAvailable, capped by a cgroup v2 limit.
pub fn available() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let mut avail = kib * 1024.0;
    let cg = |f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
    };
    if let (Some(max), Some(cur)) = (cg("memory.max"), cg("memory.current")) {
        avail = avail.min((max - cur).max(0.0));
    }
    Some(avail)
}

/// Refuses (a config error naming the key to change) when `parts` exceed `available` bytes.
pub fn check(parts: &[Part], available: Option<f64>) -> Result<()> {
    let Some(avail) = available else {
        return Ok(());
    };
    let total: f64 = parts.iter().map(|p| p.bytes).sum();
    if total <= avail {
        return Ok(());
    }
    let Some(worst) = parts.iter().max_by(|a, b| a.bytes.total_cmp(&b.bytes)) else {
        return Ok(());
    };
    let detail = parts
        .iter()
        .map(|p| format!("{} for {}", fmt_bytes(p.bytes), p.what))
        .collect::<Vec<_>>()
        .join(" + ");
    Err(Error::Config {
        location: "memory check".into(),
        key: worst.key.into(),
        msg: format!(
            "this run needs an estimated {} ({detail}) but the machine has {} available; lower {}",
            fmt_bytes(total),
            fmt_bytes(avail),
            worst.key
        ),
    })
}

fn fmt_bytes(b: f64) -> String {
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / (1u64 << 20) as f64)
    }
}

fn fmt_count(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.1e}", n)
    } else {
        format!("{}", n as u64)
    }
}

/// The CNN frame encoder's activations for one batch of clips, from each conv block's output
/// (before pooling) per frame. The fused CPU op (`fused`) keeps it once plus the pooled copy,
/// and in backward one gradient of a block's input at a time: ~1.6 times (measured: 405 MiB
/// peak RSS for 16 clips x 16 frames x 3 x 64 x 64 through conv 32-64-128-128, estimated
/// 389 MiB). Composed candle ops keep it about 8 times over (the conv output, bias, batch norm
/// and ReLU results, the pooled copy, their gradients, and candle's conv temporaries: 2.0 GiB
/// peak there, estimated 1.9 GiB).
fn frame_encoder_part(
    cfg: &Config,
    widths: &[usize],
    (height, width): (usize, usize),
    frames: usize,
    fused: bool,
) -> Part {
    let (mut h, mut w) = (height as f64, width as f64);
    let mut per_frame = 0.0;
    for &c in widths {
        per_frame += c as f64 * h * w;
        if h >= 2.0 && w >= 2.0 {
            h = (h / 2.0).floor();
            w = (w / 2.0).floor();
        }
    }
    let copies = if fused { 1.6 } else { 8.0 };
    let n = cfg.train.batch_size as f64 * frames as f64;
    Part {
        bytes: copies * per_frame * n * F32,
        what: format!(
            "CNN activations of one batch ({} clips x {frames} frames of {height} x {width})",
            cfg.train.batch_size
        ),
        key: "train.batch_size",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::architecture::Input;

    #[test]
    fn refuses_what_cannot_fit_and_names_the_key() {
        let mut cfg = Config::default();
        cfg.model.hidden_size = 10_000_000;
        let tokens = Input::Tokens { vocab: 100 };
        let arch = Architecture::of(&cfg.model, tokens, 2).unwrap();
        let parts = model_parts(&cfg, &arch, 20, true);
        let e = check(&parts, Some(8.0 * GIB)).unwrap_err().to_string();
        assert!(e.contains("model.hidden_size") && e.contains("GiB"), "{e}");
        let cfg = Config::default();
        let arch = Architecture::of(&cfg.model, tokens, 2).unwrap();
        assert!(check(&model_parts(&cfg, &arch, 20, true), Some(8.0 * GIB)).is_ok());
    }

    #[test]
    fn features_size_the_first_layer_by_their_width_not_the_embedding() {
        let mut cfg = Config::default();
        cfg.model.frame_encoder = Some(crate::config::FrameEncoder::None);
        let narrow = Architecture::of(&cfg.model, Input::Features { dim: 4 }, 2).unwrap();
        let wide = Architecture::of(&cfg.model, Input::Features { dim: 4000 }, 2).unwrap();
        let bytes = |a: &Architecture| model_parts(&cfg, a, 50, true)[1].bytes;
        // The first layer's input row per step, 3,996 floats wider (the embedding width
        // would have made them equal).
        let rows = (cfg.train.batch_size * 50.min(cfg.data.max_len)) as f64;
        assert!(bytes(&wide) - bytes(&narrow) >= 3996.0 * F32 * rows);
    }

    /// Truncated BPTT: the recurrent activations follow the window, the input rows the
    /// sequence; a 100,000-step batch that full BPTT could not hold fits with k = 128.
    #[test]
    fn truncated_bptt_sizes_the_recurrent_activations_by_the_window() {
        let mut cfg = Config::default();
        cfg.data.source = crate::config::Source::File;
        cfg.data.max_len = 100_000;
        cfg.train.batch_size = 32;
        cfg.model.embedding_dim = 64;
        let arch = Architecture::of(&cfg.model, Input::Tokens { vocab: 1000 }, 4).unwrap();
        let full = model_parts(&cfg, &arch, 100_000, true)[1].bytes;
        cfg.train.tbptt = 128;
        let cut = &model_parts(&cfg, &arch, 100_000, true)[1];
        assert!(
            cut.what.contains("128 of them backpropagated"),
            "{}",
            cut.what
        );
        // Inputs: 32 x 100,000 x (64 + 64) floats; the window: 32 x 128 rows of the cell's.
        let inputs = 32.0 * 100_000.0 * 128.0 * F32;
        assert!(
            cut.bytes >= inputs && cut.bytes < inputs * 1.1,
            "{}",
            cut.bytes
        );
        assert!(full > 10.0 * cut.bytes);
        assert!(check(std::slice::from_ref(cut), Some(8.0 * GIB)).is_ok());
        assert!(check(
            &model_parts(
                &Config {
                    train: crate::config::Train {
                        tbptt: 0,
                        ..cfg.train.clone()
                    },
                    ..cfg.clone()
                },
                &arch,
                100_000,
                true
            )[1..2],
            Some(8.0 * GIB)
        )
        .is_err());
    }
}
