//! Numerics against PyTorch: every case in tests/fixtures/torch_parity (copied from
//! ../shared/fixtures/torch_parity, made by make_fixtures.py there) must match to 1e-5:
//! outputs, final states, variable-length final states, and the gradients of the fixture's
//! loss w.r.t. the input and every parameter; and a whole classifier through 3 Adam steps
//! with gradient clipping.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rnnlab::config::{CellKind, Model, Nonlinearity, OptimizerKind, Readout, Train};
use rnnlab::grads;
use rnnlab::model::architecture::Input;
use rnnlab::model::classifier::Classifier;
use rnnlab::model::stack::{RunOpts, Stack};
use rnnlab::model::Params;
use rnnlab::optim::{self, Optimizer};

const TOL: f32 = 1e-5;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch_parity")
        .join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap()
}

#[track_caller]
fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_close_to(what, ours, theirs, TOL);
}

/// `assert_close` with the tolerance scaled by the largest magnitude in `theirs` (at least 1):
/// for sums over whole batches of pixels, where float rounding grows with the values.
#[track_caller]
fn assert_close_scaled(what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_close_to(what, ours, theirs, TOL * max_abs(theirs).max(1.0));
}

/// The largest magnitude in `t`.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A fixture file `name` of the folder `tests/fixtures/<folder>`, and its entry in the
/// folder's index.json.
fn fixture_case(folder: &str, name: &str) -> (HashMap<String, Tensor>, serde_json::Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(folder);
    let f = candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
        .unwrap();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    (f, index[name].clone())
}

#[track_caller]
fn assert_close_to(what: &str, ours: &Tensor, theirs: &Tensor, tol: f32) {
    assert_eq!(ours.dims(), theirs.dims(), "{what}: shape");
    let a = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = theirs
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max abs diff {worst:e} > {tol:e}");
}

/// Both implementations: the fused CPU op (the default) and the composed-ops reference.
fn case(
    name: &str,
    kind: CellKind,
    nonlinearity: Nonlinearity,
    layers: usize,
    bidirectional: bool,
) {
    for reference in [false, true] {
        case_with(name, kind, nonlinearity, layers, bidirectional, reference);
    }
}

fn case_with(
    fixture_name: &str,
    kind: CellKind,
    nonlinearity: Nonlinearity,
    layers: usize,
    bidirectional: bool,
    reference: bool,
) {
    let f = fixture(fixture_name);
    let name = format!(
        "{fixture_name} ({})",
        if reference { "reference" } else { "fused" }
    );
    let x = &f["x"];
    let (_, _, input) = x.dims3().unwrap();
    let hidden = f["h_n"].dim(2).unwrap();
    let mut params = Params::default();
    let mut rng = StdRng::seed_from_u64(0);
    let stack = Stack::new(
        &mut params,
        &mut rng,
        "",
        kind,
        nonlinearity,
        input,
        hidden,
        layers,
        bidirectional,
        0.0,
        &rnnlab::model::cell::Init::default(),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        params.len(),
        f.keys().filter(|k| k.starts_with("param.")).count(),
        "{name}: parameter count"
    );
    for (pname, var) in params.iter() {
        var.set(&f[&format!("param.{pname}")]).unwrap();
    }

    // Full-length run: outputs, final states and gradients.
    let xv = Var::from_tensor(x).unwrap();
    let out = stack
        .forward(
            xv.as_tensor(),
            RunOpts {
                reference,
                ..Default::default()
            },
        )
        .unwrap();
    let seq = out.out.as_ref().expect("per-step output");
    assert_close(&format!("{name} out"), seq, &f["out"]);
    assert_close(&format!("{name} h_n"), &out.h_n, &f["h_n"]);
    let mut loss = ((seq * &f["proj_out"]).unwrap().sum_all().unwrap()
        + (&out.h_n * &f["proj_h_n"]).unwrap().sum_all().unwrap())
    .unwrap();
    if let Some(c_n) = &out.c_n {
        assert_close(&format!("{name} c_n"), c_n, &f["c_n"]);
        loss = (loss + (c_n * &f["proj_c_n"]).unwrap().sum_all().unwrap()).unwrap();
    }
    assert_close(
        &format!("{name} loss"),
        &loss.reshape(1).unwrap(),
        &f["loss"],
    );
    let store = loss.backward().unwrap();
    assert_close(
        &format!("{name} grad.x"),
        store.get(xv.as_tensor()).unwrap(),
        &f["grad.x"],
    );
    for (pname, var) in params.iter() {
        let g = store.get(var.as_tensor()).unwrap();
        assert_close(
            &format!("{name} grad.{pname}"),
            g,
            &f[&format!("grad.{pname}")],
        );
    }

    // Variable lengths: final state at each sequence's own last valid step.
    let lengths: Vec<usize> = f["lengths"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|l| l as usize)
        .collect();
    let out = stack
        .forward(
            x,
            RunOpts {
                lengths: Some(&lengths),
                reference,
                ..Default::default()
            },
        )
        .unwrap();
    assert_close(&format!("{name} h_n_varlen"), &out.h_n, &f["h_n_varlen"]);
}

#[test]
fn rnn_tanh() {
    case("rnn_tanh", CellKind::Rnn, Nonlinearity::Tanh, 1, false);
}

#[test]
fn rnn_relu() {
    case("rnn_relu", CellKind::Rnn, Nonlinearity::Relu, 1, false);
}

#[test]
fn lstm() {
    case("lstm", CellKind::Lstm, Nonlinearity::Tanh, 1, false);
}

#[test]
fn gru() {
    case("gru", CellKind::Gru, Nonlinearity::Tanh, 1, false);
}

#[test]
fn lstm_2layer_bidir() {
    case(
        "lstm_2layer_bidir",
        CellKind::Lstm,
        Nonlinearity::Tanh,
        2,
        true,
    );
}

#[test]
fn gru_2layer_bidir() {
    case(
        "gru_2layer_bidir",
        CellKind::Gru,
        Nonlinearity::Tanh,
        2,
        true,
    );
}

/// Embedding(11, 4) -> LSTM(4, 6) -> Linear(6, 3) on the last step, cross-entropy, 3 steps of
/// Adam (lr 1e-2) with clip_grad_norm_(0.5): logits, loss, pre-clip norm, clipped grads and
/// final weights, step by step.
#[test]
fn classifier_adam_clip() {
    let f = fixture("classifier_adam_clip");
    let model_cfg = Model {
        cell: CellKind::Lstm,
        embedding_dim: 4,
        hidden_size: 6,
        readout: Readout::Last,
        ..Model::default()
    };
    let model =
        Classifier::new(&model_cfg, Input::Tokens { vocab: 11 }, 3, 0, &Device::Cpu).unwrap();
    for (name, var) in model.params.iter() {
        var.set(&f[&format!("init.{name}")]).unwrap();
    }
    let ids = f["ids"].to_dtype(DType::U32).unwrap();
    let labels = f["labels"].to_dtype(DType::U32).unwrap();
    let train = Train {
        optimizer: OptimizerKind::Adam,
        lr: 1e-2,
        clip_norm: Some(0.5),
        ..Train::default()
    };
    let mut opt = Optimizer::new(&train);
    for step in 0..3 {
        let fwd = model.forward(&ids, RunOpts::default()).unwrap();
        assert_close(
            &format!("step{step}.logits"),
            &fwd.logits,
            &f[&format!("step{step}.logits")],
        );
        let loss = candle_nn::loss::cross_entropy(&fwd.logits, &labels).unwrap();
        assert_close(
            &format!("step{step}.loss"),
            &loss.reshape(1).unwrap(),
            &f[&format!("step{step}.loss")],
        );
        let store = loss.backward().unwrap();
        let mut g = grads::collect(&model, &fwd, &store).unwrap();
        let (norm, clipped) = optim::clip_norm(&mut g, 0.5).unwrap();
        let want = f[&format!("step{step}.grad_norm_before_clip")]
            .to_vec1::<f32>()
            .unwrap()[0];
        assert!(
            (norm as f32 - want).abs() <= TOL,
            "step{step} norm {norm} vs {want}"
        );
        assert_eq!(clipped, norm > 0.5);
        if step == 0 {
            for (name, grad) in &g {
                assert_close(
                    &format!("step0.clipped_grad.{name}"),
                    grad,
                    &f[&format!("step0.clipped_grad.{name}")],
                );
            }
        }
        opt.step(&model.params, &g, 1e-2).unwrap();
    }
    for (name, var) in model.params.iter() {
        assert_close(
            &format!("final.{name}"),
            var.as_tensor(),
            &f[&format!("final.{name}")],
        );
    }
}

/// The CNN frame encoder against PyTorch (tests/fixtures/torch_conv, made by
/// make_conv_fixtures.py there): features and every parameter's gradient, for the fused op and
/// the composed reference; batch norm in training (and the running statistics it leaves) and
/// in evaluation; odd sizes, a grey single-row input whose blocks are not pooled.
fn conv_case(name: &str) {
    let (f, meta) = fixture_case("torch_conv", name);
    let widths: Vec<usize> = meta["widths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap() as usize)
        .collect();
    let batch_norm = meta["batch_norm"].as_bool().unwrap();
    let training = meta["mode"] == "train";
    let (n, c, h, w) = f["x"].dims4().unwrap();
    let theirs: HashMap<String, Tensor> = f
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("param.")?.to_string(), v.clone())))
        .collect();
    let tmp = std::env::temp_dir().join(format!("rnnlab-parity-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let file = tmp.join("params.safetensors");
    candle_core::safetensors::save(&theirs, &file).unwrap();
    for reference in [false, true] {
        let what = format!("{name} ({})", if reference { "reference" } else { "fused" });
        let mut params = Params::default();
        let mut rng = StdRng::seed_from_u64(0);
        let enc = rnnlab::model::encoder::FrameEncoder::new(
            &mut params,
            &mut rng,
            c,
            &widths,
            batch_norm,
            &Device::Cpu,
        )
        .unwrap();
        params.load(&file).unwrap();
        let x = f["x"].reshape((1, n, c, h, w)).unwrap();
        let feat = enc
            .forward(&x, training, false, reference)
            .unwrap()
            .reshape((n, ()))
            .unwrap();
        assert_close(&format!("{what} features"), &feat, &f["feat"]);
        let loss = (&feat * &f["proj"]).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (pname, var) in params.iter() {
            let g = grads.get(var.as_tensor()).expect("gradient");
            assert_close_scaled(
                &format!("{what} grad {pname}"),
                g,
                &f[&format!("grad.{pname}")],
            );
        }
        if batch_norm && training {
            let saved = tmp.join("after.safetensors");
            params.save(&saved).unwrap();
            let after = candle_core::safetensors::load(&saved, &Device::Cpu).unwrap();
            for (k, v) in f.iter().filter(|(k, _)| k.starts_with("after.")) {
                let buf = &after[&k["after.".len()..]];
                assert_close(&format!("{what} {k}"), buf, v);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn conv_plain() {
    conv_case("conv_plain");
}

#[test]
fn conv_bn_train() {
    conv_case("conv_bn_train");
}

#[test]
fn conv_bn_eval() {
    conv_case("conv_bn_eval");
}

#[test]
fn conv_grey_single_row() {
    conv_case("conv_grey_single_row");
}

/// A CNN + LSTM clip classifier trained 20 steps against PyTorch (tests/fixtures/video_steps,
/// made by make_video_steps.py there): PyTorch's initial weights loaded, the same 20 batches,
/// cross-entropy, clip_grad_norm_(0.5), Adam(2e-3). Each step's loss and pre-clip gradient
/// norm, and every weight (and batch norm's running statistics) after step 20, within 1e-4
/// of the tensor's scale; for the fused CPU ops and the composed reference alike. With batch
/// norm, a convolution's bias gets only rounding for a gradient, which Adam turns into a random
/// walk of up to lr a step on either side: those biases are not compared, and the running
/// means are compared less the average of the biases each step used (make_video_steps.py).
fn video_steps(name: &str) {
    let (f, meta) = fixture_case("video_steps", name);
    let num = |k: &str| meta[k].as_u64().unwrap() as usize;
    let widths: Vec<usize> = serde_json::from_value(meta["widths"].clone()).unwrap();
    let model_cfg = Model {
        frame_encoder: Some(rnnlab::config::FrameEncoder::Cnn),
        conv_channels: widths,
        batch_norm: meta["batch_norm"].as_bool().unwrap(),
        cell: CellKind::Lstm,
        hidden_size: num("hidden"),
        readout: match meta["readout"].as_str().unwrap() {
            "mean" => Readout::Mean,
            _ => Readout::Last,
        },
        ..Model::default()
    };
    let (lr, clip) = (
        meta["lr"].as_f64().unwrap(),
        meta["clip_norm"].as_f64().unwrap(),
    );
    let input = Input::Frames {
        channels: 1,
        height: num("size"),
        width: num("size"),
    };
    let tmp = std::env::temp_dir().join(format!("rnnlab-steps-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let init: HashMap<String, Tensor> = f
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("init.")?.to_string(), v.clone())))
        .collect();
    candle_core::safetensors::save(&init, tmp.join("init.safetensors")).unwrap();
    for reference in [false, true] {
        let path = if reference { "reference" } else { "fused" };
        let model = Classifier::new(&model_cfg, input, num("classes"), 0, &Device::Cpu).unwrap();
        model.params.load(&tmp.join("init.safetensors")).unwrap();
        let train = Train {
            optimizer: OptimizerKind::Adam,
            lr,
            clip_norm: Some(clip),
            ..Train::default()
        };
        let mut opt = Optimizer::new(&train);
        let mut rng = rnnlab::EpochRng::seed_from_u64(0);
        let (losses, norms) = (
            f["loss"].to_vec1::<f32>().unwrap(),
            f["grad_norm"].to_vec1::<f32>().unwrap(),
        );
        // Batch norm j follows convolution j - 1: the average of that bias, step by step.
        let bns: Vec<usize> = f
            .keys()
            .filter_map(|k| {
                k.strip_prefix("centred.encoder.")?
                    .strip_suffix(".running_mean")?
                    .parse()
                    .ok()
            })
            .collect();
        let bias = |j: usize| {
            let name = format!("encoder.{}.bias", j - 1);
            model.params.get(&name).unwrap().as_tensor().clone()
        };
        let mut bias_avg: HashMap<usize, Tensor> = bns
            .iter()
            .map(|&j| (j, bias(j).zeros_like().unwrap()))
            .collect();
        for step in 0..num("steps") {
            for &j in &bns {
                let avg = ((&bias_avg[&j] * 0.9).unwrap() + (bias(j) * 0.1).unwrap()).unwrap();
                bias_avg.insert(j, avg);
            }
            let x = f["x"].get(step).unwrap();
            let y = f["y"].get(step).unwrap().to_dtype(DType::U32).unwrap();
            let fwd = model
                .forward(
                    &x,
                    RunOpts {
                        dropout_rng: Some(&mut rng),
                        reference,
                        ..Default::default()
                    },
                )
                .unwrap();
            let loss = rnnlab::eval::loss(&fwd.logits, &y, None).unwrap();
            let l = loss.to_scalar::<f32>().unwrap();
            assert!(
                (l - losses[step]).abs() <= 1e-4 * losses[step].abs(),
                "{name} ({path}) step {} loss {l} vs {}",
                step + 1,
                losses[step]
            );
            let store = loss.backward().unwrap();
            let mut g = grads::collect(&model, &fwd, &store).unwrap();
            let (norm, _) = optim::clip_norm(&mut g, clip).unwrap();
            assert!(
                (norm as f32 - norms[step]).abs() <= 1e-4 * norms[step],
                "{name} ({path}) step {} gradient norm {norm} vs {}",
                step + 1,
                norms[step]
            );
            opt.step(&model.params, &g, lr).unwrap();
        }
        let saved = tmp.join(format!("{path}.safetensors"));
        model.params.save(&saved).unwrap();
        let ours = candle_core::safetensors::load(&saved, &Device::Cpu).unwrap();
        let mut compared = 0;
        for (k, theirs) in f.iter().filter(|(k, _)| k.starts_with("final.")) {
            let key = &k["final.".len()..];
            let (ours, theirs) = match key.strip_suffix(".running_mean") {
                Some(j) if !bns.is_empty() => {
                    let j: usize = j["encoder.".len()..].parse().unwrap();
                    let centred = (&ours[key] - &bias_avg[&j]).unwrap();
                    (centred, f[&format!("centred.{key}")].clone())
                }
                _ => (ours[key].clone(), theirs.clone()),
            };
            compared += 1;
            let before_norm = bns.iter().any(|j| key == format!("encoder.{}.bias", j - 1));
            if before_norm {
                continue;
            }
            let tol = 1e-4 * max_abs(&theirs).max(1e-3);
            assert_close_to(&format!("{name} ({path}) {key}"), &ours, &theirs, tol);
        }
        assert_eq!(compared, ours.len(), "{name}: every weight read");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn video_steps_cnn_lstm_mean() {
    video_steps("cnn_lstm_mean");
}

#[test]
fn video_steps_cnn_bn_lstm_mean() {
    video_steps("cnn_bn_lstm_mean");
}

#[test]
fn video_steps_cnn_lstm_last() {
    video_steps("cnn_lstm_last");
}

/// The CNN + LSTM classifier of experiments/video-dynamics draws every parameter as PyTorch's
/// defaults do: U(-b, b) with b = 1/sqrt(fan_in) for Conv2d (fan_in = in_channels * 9) and
/// Linear (fan_in = in_features) weights and biases, b = 1/sqrt(hidden_size) for the LSTM.
/// Over 20 seeds, each parameter's largest magnitude is within 2% below b (never above) and its
/// standard deviation within 5% of b / sqrt(3), the uniform's.
#[test]
fn cnn_lstm_init_follows_pytorchs_rule() {
    let cfg = Model {
        frame_encoder: Some(rnnlab::config::FrameEncoder::Cnn),
        conv_channels: vec![16, 32, 64],
        cell: CellKind::Lstm,
        hidden_size: 64,
        readout: Readout::Mean,
        ..Model::default()
    };
    let input = Input::Frames {
        channels: 1,
        height: 24,
        width: 24,
    };
    let bound = |name: &str| -> f64 {
        match name {
            n if n.starts_with("encoder.0.") => 1.0 / 9f64.sqrt(),
            n if n.starts_with("encoder.3.") => 1.0 / (16.0 * 9.0f64).sqrt(),
            n if n.starts_with("encoder.6.") => 1.0 / (32.0 * 9.0f64).sqrt(),
            _ => 1.0 / 64f64.sqrt(),
        }
    };
    let mut values: HashMap<String, Vec<f32>> = HashMap::new();
    for seed in 0..20 {
        let m = Classifier::new(&cfg, input, 10, seed, &Device::Cpu).unwrap();
        for (name, v) in m.params.iter() {
            let t = v
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            values.entry(name.clone()).or_default().extend(t);
        }
    }
    assert_eq!(values.len(), 12, "{:?}", values.keys());
    for (name, v) in &values {
        let b = bound(name);
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let sd =
            (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!(
            max <= b && max > 0.98 * b,
            "{name}: largest {max} against {b}"
        );
        let want = b / 3f64.sqrt();
        assert!(
            (sd - want).abs() < 0.05 * want,
            "{name}: sd {sd} against {want}"
        );
    }
}
