//! Optimizer update rules, clipping and LR schedules against PyTorch
//! (tests/fixtures/optim/optimizers.safetensors, made by make_optim_fixtures.py beside it), and
//! class-weighted cross-entropy (tests/fixtures/loss, made by make_loss_fixtures.py).

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rnnlab::config::{OptimizerKind, Schedule, Train};
use rnnlab::grads::Grads;
use rnnlab::model::Params;
use rnnlab::optim::{self, Optimizer};

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/optim/optimizers.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[track_caller]
fn close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d <= tol, "{what}: max abs diff {d:e}");
}

fn grads(f: &HashMap<String, Tensor>, k: usize) -> Grads {
    ["b", "w"]
        .iter()
        .map(|n| (n.to_string(), f[&format!("grad{k}.{n}")].clone()))
        .collect()
}

#[test]
fn update_rules_match_pytorch() {
    let f = fixture();
    let base = Train::default();
    let cases = [
        (
            "sgd",
            Train {
                optimizer: OptimizerKind::Sgd,
                lr: 0.1,
                ..base.clone()
            },
        ),
        (
            "sgd_momentum",
            Train {
                optimizer: OptimizerKind::Sgd,
                lr: 0.1,
                momentum: 0.9,
                ..base.clone()
            },
        ),
        (
            "sgd_nesterov_wd",
            Train {
                optimizer: OptimizerKind::Sgd,
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 0.01,
                ..base.clone()
            },
        ),
        (
            "adam_wd",
            Train {
                optimizer: OptimizerKind::Adam,
                lr: 0.01,
                betas: [0.8, 0.99],
                eps: 1e-6,
                weight_decay: 0.01,
                ..base.clone()
            },
        ),
        (
            "adamw",
            Train {
                optimizer: OptimizerKind::Adamw,
                lr: 0.01,
                weight_decay: 0.1,
                ..base.clone()
            },
        ),
        (
            "rmsprop",
            Train {
                optimizer: OptimizerKind::Rmsprop,
                lr: 0.01,
                ..base.clone()
            },
        ),
        (
            "rmsprop_momentum_wd",
            Train {
                optimizer: OptimizerKind::Rmsprop,
                lr: 0.01,
                alpha: 0.9,
                momentum: 0.5,
                weight_decay: 0.01,
                ..base.clone()
            },
        ),
    ];
    // Both implementations: the fused host loop (CPU default) and candle tensor ops.
    for ((name, cfg), host) in cases.iter().flat_map(|c| [(c, true), (c, false)]) {
        let mut params = Params::default();
        params.add("w", f["init.w"].clone()).unwrap();
        params.add("b", f["init.b"].clone()).unwrap();
        let mut opt = Optimizer::new(cfg);
        opt.host = host;
        for k in 0..4 {
            opt.step(&params, &grads(&f, k), cfg.lr).unwrap();
            for n in ["w", "b"] {
                let got = params.get(n).unwrap().as_tensor();
                close(
                    &format!("{name} step{k} {n}"),
                    got,
                    &f[&format!("{name}.step{k}.{n}")],
                    1e-6,
                );
            }
        }
    }
}

#[test]
fn clipping_matches_pytorch() {
    let f = fixture();
    let mut g = grads(&f, 0);
    optim::clip_value(&mut g, 0.05).unwrap();
    for (n, t) in &g {
        close(
            &format!("clip_value {n}"),
            t,
            &f[&format!("clip_value.{n}")],
            0.0,
        );
    }
    let mut g = grads(&f, 0);
    let (norm, clipped) = optim::clip_norm(&mut g, 0.3).unwrap();
    let want = f["clip_norm.norm"].to_vec1::<f32>().unwrap()[0];
    assert!(
        (norm as f32 - want).abs() < 1e-6 && clipped,
        "{norm} vs {want}"
    );
    for (n, t) in &g {
        close(
            &format!("clip_norm {n}"),
            t,
            &f[&format!("clip_norm.{n}")],
            1e-7,
        );
    }
}

#[test]
fn schedules_match_pytorch() {
    let f = fixture();
    let cosine = Train {
        lr: 0.1,
        schedule: Schedule::Cosine,
        min_lr: 0.001,
        ..Train::default()
    };
    for (s, want) in f["lr.cosine"]
        .to_vec1::<f64>()
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let got = optim::lr_at(&cosine, s, 0, 10);
        assert!(
            (got - want).abs() < 1e-12,
            "cosine step {s}: {got} vs {want}"
        );
    }
    let step = Train {
        lr: 0.1,
        schedule: Schedule::Step,
        step_every: 2,
        gamma: 0.5,
        ..Train::default()
    };
    for (e, want) in f["lr.step"]
        .to_vec1::<f64>()
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let got = optim::lr_at(&step, 123, e, 1000);
        assert!(
            (got - want).abs() < 1e-12,
            "step epoch {e}: {got} vs {want}"
        );
    }
    // Linear warmup reaches the peak at the end of warmup.
    let warm = Train {
        lr: 0.1,
        warmup_steps: 4,
        ..Train::default()
    };
    let lrs: Vec<f64> = (0..6).map(|s| optim::lr_at(&warm, s, 0, 100)).collect();
    for (got, want) in lrs.iter().zip([0.025, 0.05, 0.075, 0.1, 0.1, 0.1]) {
        assert!((got - want).abs() < 1e-15, "{lrs:?}");
    }
}

#[test]
fn class_weighted_cross_entropy_matches_pytorch() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/loss/weighted_ce.safetensors"
    );
    let f = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let logits = candle_core::Var::from_tensor(&f["logits"]).unwrap();
    let labels = f["labels"].to_dtype(candle_core::DType::U32).unwrap();
    let loss = rnnlab::eval::loss(logits.as_tensor(), &labels, Some(&f["weight"])).unwrap();
    close("loss", &loss.reshape(1).unwrap(), &f["loss"], 1e-6);
    let g = loss.backward().unwrap();
    close(
        "grad_logits",
        g.get(logits.as_tensor()).unwrap(),
        &f["grad_logits"],
        1e-6,
    );
    // Without weights it is the plain mean, as candle-nn's cross_entropy.
    let plain = rnnlab::eval::loss(logits.as_tensor(), &labels, None).unwrap();
    let ones = Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap();
    let uniform = rnnlab::eval::loss(logits.as_tensor(), &labels, Some(&ones)).unwrap();
    close("uniform weights", &plain, &uniform, 1e-6);
}
