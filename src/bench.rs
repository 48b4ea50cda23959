//! `run-exp bench`: training and inference throughput on the workload of
//! ../shared/bench/torch_peer.py (token ids -> embedding -> 1-layer cell -> linear head on the
//! last step, cross-entropy, Adam, full BPTT), same flags, one JSON line per cell in the same
//! keys, plus where the time goes (forward, backward, optimizer) and peak memory. With
//! `--video`, the workload of ../shared/bench/torch_video_peer.py: clips in [0, 1] -> CNN frame
//! encoder (conv 3x3, [batch norm], ReLU, 2x2 max-pool per width, global average pool) ->
//! 1-layer cell -> head on the last step, with its flags and keys; with `--video --encoder
//! resnet18`, that of ../shared/bench/torch_resnet_peer.py (a ResNet under the cell).

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::config::{CellKind, Model, Train};
use crate::error::Result;
use crate::grads;
use crate::model::architecture::Input;
use crate::model::classifier::Classifier;
use crate::model::stack::RunOpts;
use crate::optim::Optimizer;

#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub cells: Vec<CellKind>,
    pub batch: usize,
    pub seq: usize,
    pub emb: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub classes: usize,
    pub steps: usize,
    pub warmup: usize,
    /// Truncated BPTT window in training (0: full BPTT), as the tbptt peer's `--tbptt`.
    pub tbptt: usize,
    /// Use the composed-ops reference implementation instead of the fused op.
    pub reference: bool,
    /// Time inference only (training throughput and phases come out null).
    pub infer_only: bool,
    /// The video workload instead of token ids.
    pub video: Option<VideoArgs>,
    /// With `video`: a pretrained ResNet frame encoder instead of the small CNN (the
    /// workload of ../shared/bench/torch_resnet_peer.py).
    pub encoder: Option<crate::config::FrameEncoder>,
}

#[derive(Debug, Clone)]
pub struct VideoArgs {
    pub frames: usize,
    pub size: usize,
    pub channels: usize,
    pub conv: Vec<usize>,
    pub bn: bool,
}

/// Seconds spent in each phase of the timed training steps.
#[derive(Default)]
struct Phases {
    forward: f64,
    backward: f64,
    optimizer: f64,
}

/// torch_resnet_peer.py's workload for one cell: clips [batch, frames, 3, size, size] ->
/// ImageNet normalisation -> ResNet (random weights, batch norm on running statistics) ->
/// cell -> head on the mean over steps, Adam. Its four figures (the encoder alone without
/// gradients; a training step with the encoder frozen; one that also trains layer4;
/// inference), and `cached_train_clips_per_s`: a training step from cached features, as a
/// frozen encoder's runs train (also at 32 clips a batch: `..._batch32`).
pub fn bench_encoder(
    args: &BenchArgs,
    encoder: crate::config::FrameEncoder,
    cell: CellKind,
    device: &Device,
) -> Result<serde_json::Value> {
    use crate::model::resnet::{random_state_dict, Depth};
    let v = args.video.clone().unwrap_or(VideoArgs {
        frames: 8,
        size: 112,
        channels: 3,
        conv: Vec::new(),
        bn: false,
    });
    let depth = Depth::of(encoder);
    // The weights go through a file, as a run's do.
    let file = std::env::temp_dir().join(format!(
        "rnnlab-bench-{}-{}.safetensors",
        depth.name(),
        std::process::id()
    ));
    crate::model::save_tensors(&random_state_dict(depth, 0)?, &file)?;
    let built = |stages: Vec<String>| {
        let cfg = Model {
            cell,
            hidden_size: args.hidden,
            readout: crate::config::Readout::Mean,
            frame_encoder: Some(encoder),
            encoder_weights: Some(file.display().to_string()),
            train_encoder_stages: stages,
            ..Model::default()
        };
        let input = Input::Frames {
            channels: 3,
            height: v.size,
            width: v.size,
        };
        Classifier::new(&cfg, input, args.classes, 0, device)
    };
    let frozen = built(Vec::new());
    let finetuned = built(vec!["layer4".into()]);
    let _ = std::fs::remove_file(&file);
    let (frozen, finetuned) = (frozen?, finetuned?);
    let mut rng = StdRng::seed_from_u64(0);
    let (b, t) = (args.batch, v.frames);
    let n = b * t * 3 * v.size * v.size;
    let px: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    let x = Tensor::from_vec(px, (b, t, 3, v.size, v.size), device)?;
    let labels: Vec<u32> = (0..b)
        .map(|_| rng.random_range(0..args.classes as u32))
        .collect();
    let y = Tensor::new(labels, device)?;
    let run = |no_grad: bool| RunOpts {
        no_grad,
        ..Default::default()
    };
    let timed_over = |(warmup, steps): (usize, usize), f: &mut dyn FnMut() -> Result<()>| {
        for _ in 0..warmup {
            f()?;
        }
        let t0 = Instant::now();
        for _ in 0..steps {
            f()?;
        }
        Ok::<f64, crate::error::Error>(t0.elapsed().as_secs_f64() / steps.max(1) as f64)
    };
    let timed = |f: &mut dyn FnMut() -> Result<()>| timed_over((args.warmup, args.steps), f);
    // A step from the cache takes milliseconds: timed over 20x the steps (at least 100), so
    // the figure is not one scheduler slice's.
    let cached_steps = (10 * args.warmup.max(1), (20 * args.steps).max(100));
    let features = frozen.forward(&x, run(true))?; // warms the allocator; shapes only
    drop(features);
    let mut feats = None;
    let encode_s = timed(&mut || {
        let f = frozen.encode(&x)?;
        device.synchronize()?;
        feats = Some(f);
        Ok(())
    })?;
    let feats = match feats {
        Some(f) => f,
        None => frozen.encode(&x)?,
    };
    let train = Train {
        lr: 1e-3,
        ..Train::default()
    };
    let phases = std::cell::RefCell::new(Phases::default());
    let step = |model: &Classifier, opt: &mut Optimizer, input: &Tensor| -> Result<()> {
        let t0 = Instant::now();
        let fwd = model.forward(input, run(false))?;
        let loss = candle_nn::loss::cross_entropy(&fwd.logits, &y)?;
        loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let store = loss.backward()?;
        let g = grads::collect(model, &fwd, &store)?;
        let t2 = Instant::now();
        opt.step(&model.params, &g, train.lr)?;
        device.synchronize()?;
        let mut p = phases.borrow_mut();
        p.forward += (t1 - t0).as_secs_f64();
        p.backward += (t2 - t1).as_secs_f64();
        p.optimizer += t2.elapsed().as_secs_f64();
        Ok(())
    };
    let mut opt = Optimizer::new(&train);
    let frozen_s = timed(&mut || step(&frozen, &mut opt, &x))?;
    let mut opt = Optimizer::new(&train);
    let cached_s = timed_over(cached_steps, &mut || step(&frozen, &mut opt, &feats))?;
    // The same from the cache at a training run's usual batch (32 clips: the features and
    // labels repeated), where per-step costs no longer dominate a small head.
    let reps = 32usize.div_ceil(b);
    let feats32 = Tensor::cat(&vec![feats.clone(); reps], 0)?;
    let y32 = Tensor::cat(&vec![y.clone(); reps], 0)?;
    let mut opt = Optimizer::new(&train);
    let cached32_s = timed_over(cached_steps, &mut || {
        let fwd = frozen.forward(&feats32, run(false))?;
        let loss = candle_nn::loss::cross_entropy(&fwd.logits, &y32)?;
        let store = loss.backward()?;
        let g = grads::collect(&frozen, &fwd, &store)?;
        opt.step(&frozen.params, &g, train.lr)
    })?;
    let infer_s = timed(&mut || {
        frozen
            .forward(&x, run(true))?
            .logits
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(())
    })?;
    let mut opt = Optimizer::new(&train);
    phases.replace(Phases::default());
    let finetune_s = timed(&mut || step(&finetuned, &mut opt, &x))?;
    let p = phases.take();
    let total = (p.forward + p.backward + p.optimizer).max(1e-12);
    let pct = |x: f64| (1000.0 * x / total).round() / 10.0;
    let r = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "peer": format!("rnnlab-{}", env!("CARGO_PKG_VERSION")),
        "arch": depth.name(),
        "cell": format!("{cell:?}").to_lowercase(),
        "batch": b, "frames": t, "size": v.size, "hidden": args.hidden, "classes": args.classes,
        "threads": crate::device::cpu_threads(),
        "encoder_frames_per_s": (((b * t) as f64 / encode_s) * 10.0).round() / 10.0,
        "frozen_train_clips_per_s": r(b as f64 / frozen_s),
        "finetune_train_clips_per_s": r(b as f64 / finetune_s),
        "infer_clips_per_s": r(b as f64 / infer_s),
        "cached_train_clips_per_s": r(b as f64 / cached_s),
        "cached_train_clips_per_s_batch32": r((reps * b) as f64 / cached32_s),
        "finetune_time_pct": json!({"forward": pct(p.forward), "backward": pct(p.backward), "optimizer": pct(p.optimizer)}),
        "peak_rss_mb": peak_rss_mb(),
        "device": format!("{device:?}"),
    }))
}

/// Runs one cell and returns its JSON line.
pub fn bench_cell(args: &BenchArgs, cell: CellKind, device: &Device) -> Result<serde_json::Value> {
    let mut cfg = Model {
        cell,
        embedding_dim: args.emb,
        hidden_size: args.hidden,
        ..Model::default()
    };
    let mut rng = StdRng::seed_from_u64(0);
    let (input, x) = match &args.video {
        None => {
            let ids: Vec<u32> = (0..args.batch * args.seq)
                .map(|_| rng.random_range(0..args.vocab as u32))
                .collect();
            (
                Input::Tokens { vocab: args.vocab },
                Tensor::from_vec(ids, (args.batch, args.seq), device)?,
            )
        }
        Some(v) => {
            cfg.conv_channels = v.conv.clone();
            cfg.batch_norm = v.bn;
            let n = args.batch * v.frames * v.channels * v.size * v.size;
            let px: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
            (
                Input::Frames {
                    channels: v.channels,
                    height: v.size,
                    width: v.size,
                },
                Tensor::from_vec(
                    px,
                    (args.batch, v.frames, v.channels, v.size, v.size),
                    device,
                )?,
            )
        }
    };
    let model = Classifier::new(&cfg, input, args.classes, 0, device)?;
    let labels: Vec<u32> = (0..args.batch)
        .map(|_| rng.random_range(0..args.classes as u32))
        .collect();
    let y = Tensor::new(labels, device)?;
    let train = Train {
        lr: 1e-3,
        ..Train::default()
    };
    let mut opt = Optimizer::new(&train);
    let run = |no_grad: bool| RunOpts {
        reference: args.reference,
        no_grad,
        tbptt: args.tbptt,
        ..Default::default()
    };
    let mut phases = Phases::default();
    let mut step = |phases: Option<&mut Phases>| -> Result<()> {
        let t0 = Instant::now();
        let fwd = model.forward(&x, run(false))?;
        let loss = candle_nn::loss::cross_entropy(&fwd.logits, &y)?;
        loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let store = loss.backward()?;
        let g = grads::collect(&model, &fwd, &store)?;
        let t2 = Instant::now();
        opt.step(&model.params, &g, train.lr)?;
        device.synchronize()?;
        if let Some(p) = phases {
            let t3 = Instant::now();
            p.forward += (t1 - t0).as_secs_f64();
            p.backward += (t2 - t1).as_secs_f64();
            p.optimizer += (t3 - t2).as_secs_f64();
        }
        Ok(())
    };
    let mut train_s = None;
    if !args.infer_only {
        for _ in 0..args.warmup {
            step(None)?;
        }
        let t = Instant::now();
        for _ in 0..args.steps {
            step(Some(&mut phases))?;
        }
        train_s = Some(t.elapsed().as_secs_f64());
    }
    let infer = |n: usize| -> Result<()> {
        for _ in 0..n {
            model
                .forward(&x, run(true))?
                .logits
                .to_dtype(candle_core::DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
        }
        Ok(())
    };
    infer(args.warmup)?;
    let t = Instant::now();
    infer(args.steps)?;
    let infer_s = t.elapsed().as_secs_f64();
    let samples = (args.batch * args.steps) as f64;
    let rate = |s: f64, per: f64| (samples * per / s * 100.0).round() / 100.0;
    if let Some(v) = &args.video {
        return Ok(json!({
            "peer": format!("rnnlab-{}", env!("CARGO_PKG_VERSION")),
            "cell": format!("{cell:?}").to_lowercase(),
            "batch": args.batch, "frames": v.frames, "size": v.size, "channels": v.channels,
            "conv": v.conv, "bn": v.bn, "hidden": args.hidden,
            "threads": crate::device::cpu_threads(),
            "train_clips_per_s": train_s.map(|s| rate(s, 1.0)),
            "infer_clips_per_s": rate(infer_s, 1.0),
            "train_frames_per_s": train_s.map(|s| rate(s, v.frames as f64)),
            "infer_frames_per_s": rate(infer_s, v.frames as f64),
            "train_time_pct": train_s.map(|s| {
                let pct = |x: f64| (1000.0 * x / s).round() / 10.0;
                json!({"forward": pct(phases.forward), "backward": pct(phases.backward), "optimizer": pct(phases.optimizer)})
            }),
            "peak_rss_mb": peak_rss_mb(),
            "device": format!("{device:?}"),
        }));
    }
    Ok(json!({
        "peer": format!("rnnlab-{}{}", env!("CARGO_PKG_VERSION"), if args.reference { "-reference" } else { "" }),
        "cell": format!("{cell:?}").to_lowercase(),
        "batch": args.batch, "seq": args.seq, "tbptt": args.tbptt, "emb": args.emb, "hidden": args.hidden,
        "threads": crate::device::cpu_threads(),
        "train_samples_per_s": train_s.map(|s| (samples / s * 10.0).round() / 10.0),
        "infer_samples_per_s": (samples / infer_s * 10.0).round() / 10.0,
        "train_time_pct": train_s.map(|s| {
            let pct = |x: f64| (1000.0 * x / s).round() / 10.0;
            json!({"forward": pct(phases.forward), "backward": pct(phases.backward), "optimizer": pct(phases.optimizer)})
        }),
        "peak_rss_mb": peak_rss_mb(),
        "device": format!("{device:?}"),
    }))
}

/// Peak resident memory of this process so far (VmHWM), in MiB; None off Linux.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}
