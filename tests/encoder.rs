//! Pretrained ResNet frame encoders through the real binary, with random weights in
//! torchvision's names (what `torch.save(resnet18().state_dict())` converted to safetensors
//! holds, `fc.*` and `num_batches_tracked` included): a frozen resnet18 trains a GRU head on a
//! folder tree of 32x32 RGB clips from cached features, a second run computes nothing, the run
//! predicts on a clip folder and refuses changed weights; layer4 fine-tunes with only the
//! trained stages in the checkpoints; bad weight files name their keys; `hub:` weights come
//! through the hub cache offline; `run-exp features` computes shards, resumes a killed
//! extraction and writes a tensors dataset that trains a head with its class names.

mod common;
use common::{run_exp, run_exp_env, stderr, temp_dir};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::{DType, Device, Tensor};
use rnnlab::model::resnet::Depth;

/// A resnet18 state dict with random weights, with what torchvision's also holds (`fc.*`,
/// `num_batches_tracked`), which loading ignores.
fn random_weights(seed: u64) -> HashMap<String, Tensor> {
    let mut map = rnnlab::model::resnet::random_state_dict(Depth::R18, seed).unwrap();
    map.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 512), DType::F32, &Device::Cpu).unwrap(),
    );
    map.insert(
        "fc.bias".into(),
        Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap(),
    );
    map.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::new(0i64, &Device::Cpu).unwrap(),
    );
    map
}

fn save(map: &HashMap<String, Tensor>, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    candle_core::safetensors::save(map, path).unwrap();
}

/// A clip folder of 4 RGB frames of 32x32 whose brightness rises (or falls) frame by frame.
fn write_clip(dir: &Path, rising: bool, seed: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..4u32 {
        let level = if rising { 40 + 50 * f } else { 190 - 50 * f };
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let n = ((x * 7 + y * 13 + seed * 31 + f) % 17) as u8;
            image::Rgb([level as u8 + n, level as u8, (level as u8) / 2 + n])
        });
        img.save(dir.join(format!("{:05}.png", f + 1))).unwrap();
    }
}

fn frames_tree(root: &Path) {
    for (split, n) in [("train", 16), ("test", 4)] {
        for i in 0..n {
            write_clip(
                &root.join(split).join("brighten").join(format!("c{i:02}")),
                true,
                i,
            );
            write_clip(
                &root.join(split).join("darken").join(format!("c{i:02}")),
                false,
                i,
            );
        }
    }
}

fn config(dir: &Path, weights: &str, extra_model: &str) -> PathBuf {
    let text = format!(
        "[experiment]\nname = \"r\"\nout_dir = {:?}\nthreads = 1\n\
         [data]\nsource = \"frames\"\ntrain = {:?}\ntest = {:?}\nheight = 32\nwidth = 32\nchannels = 3\nval_fraction = 0.25\n\
         [model]\ncell = \"gru\"\nhidden_size = 8\nframe_encoder = \"resnet18\"\nencoder_weights = {weights:?}\n{extra_model}\n\
         [train]\nepochs = 3\nbatch_size = 8\nlr = 1e-2\n[log]\nevery_steps = 2\nprogress = false\n",
        dir.join("results"),
        dir.join("frames/train"),
        dir.join("frames/test"),
    );
    let path = dir.join("r.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn said(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn a_frozen_resnet_trains_a_head_on_cached_features_predicts_and_refuses_changed_weights() {
    let dir = temp_dir("frozen");
    frames_tree(&dir.join("frames"));
    let weights = dir.join("resnet18.safetensors");
    save(&random_weights(0), &weights);
    let cfg = config(&dir, &weights.display().to_string(), "");
    let o = run_exp(&[cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", said(&o));
    assert!(said(&o).contains("frozen resnet18"), "{}", said(&o));
    let run = dir.join("results/r/run-001");
    let s = summary(&run);
    assert_eq!(s["status"], "completed");
    assert!(s["test_acc"].as_f64().is_some(), "{s}");
    // The encoder's weights are named, hashed, and not copied into the checkpoints.
    let enc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("encoder.json")).unwrap()).unwrap();
    assert_eq!(enc["encoder"], "resnet18");
    assert_eq!(enc["file"], weights.display().to_string());
    let best = candle_core::safetensors::load(run.join("best.safetensors"), &Device::Cpu).unwrap();
    assert!(
        best.keys().all(|k| !k.starts_with("encoder.")),
        "{:?}",
        best.keys()
    );
    assert!(
        std::fs::metadata(run.join("best.safetensors"))
            .unwrap()
            .len()
            < 100_000
    );
    // Features cached per split (train, carved valid, test); a second run computes none.
    let cache = dir.join("results/.cache");
    let feature_dirs = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("features-"))
        .count();
    assert_eq!(feature_dirs, 3);
    let again = run_exp(&[cfg.to_str().unwrap(), "--set", "experiment.name=again"]);
    assert!(again.status.success(), "{}", said(&again));
    assert!(
        said(&again).contains("(0 of 3 chunks computed now)"),
        "{}",
        said(&again)
    );
    assert_eq!(
        summary(&dir.join("results/again/run-001"))["test_acc"],
        s["test_acc"]
    );
    // predict on a clip folder runs the encoder on its frames.
    let clip = dir.join("frames/test/darken/c01");
    let p = run_exp(&[
        "predict",
        run.to_str().unwrap(),
        "--clip",
        clip.to_str().unwrap(),
    ]);
    assert!(p.status.success(), "{}", said(&p));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&p.stdout).lines().next().unwrap()).unwrap();
    assert!(
        line["probs"].is_object() || line["probs"].is_array(),
        "{line}"
    );
    // The same file with other bytes: the run no longer describes a model; exit 2 says why.
    save(&random_weights(1), &weights);
    let p = run_exp(&[
        "predict",
        run.to_str().unwrap(),
        "--clip",
        clip.to_str().unwrap(),
    ]);
    assert_eq!(p.status.code(), Some(2), "{}", said(&p));
    assert!(stderr(&p).contains("other bytes"), "{}", stderr(&p));
    let r = run_exp(&["--resume", run.to_str().unwrap(), "--set", "train.epochs=4"]);
    assert_eq!(r.status.code(), Some(2), "{}", said(&r));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fine_tuning_trains_the_named_stages_and_checkpoints_only_them() {
    let dir = temp_dir("finetune");
    frames_tree(&dir.join("frames"));
    let weights = dir.join("resnet18.safetensors");
    let init = random_weights(0);
    save(&init, &weights);
    let cfg = config(
        &dir,
        &weights.display().to_string(),
        "train_encoder_stages = [\"layer4\"]",
    );
    let o = run_exp(&[cfg.to_str().unwrap(), "--set", "train.epochs=1"]);
    assert!(o.status.success(), "{}", said(&o));
    assert!(!said(&o).contains("frozen resnet18"), "{}", said(&o));
    let run = dir.join("results/r/run-001");
    let last = candle_core::safetensors::load(run.join("last.safetensors"), &Device::Cpu).unwrap();
    let encoder: Vec<&String> = last.keys().filter(|k| k.starts_with("encoder.")).collect();
    // layer4: 2 blocks x 2 convs (weight, bn weight, bn bias) + a downsample's 3.
    assert_eq!(encoder.len(), 15, "{encoder:?}");
    assert!(encoder.iter().all(|k| k.starts_with("encoder.layer4.")));
    let moved = (&last["encoder.layer4.1.conv2.weight"] - &init["layer4.1.conv2.weight"])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 0.0, "layer4 did not train");
    // freeze_encoder = false trains every stage.
    let o = run_exp(&[
        cfg.to_str().unwrap(),
        "--set",
        "train.epochs=1",
        "--set",
        "model.train_encoder_stages=[]",
        "--set",
        "model.freeze_encoder=false",
        "--set",
        "experiment.name=all",
    ]);
    assert!(o.status.success(), "{}", said(&o));
    let last = candle_core::safetensors::load(
        dir.join("results/all/run-001/last.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(last.contains_key("encoder.conv1.weight"));
    assert!(last.contains_key("encoder.layer1.0.bn2.bias"));
    assert!(!last.keys().any(|k| k.contains("running_")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_weights_and_settings_are_refused_naming_what_and_where() {
    let dir = temp_dir("bad");
    frames_tree(&dir.join("frames"));
    let weights = dir.join("w.safetensors");
    let refused = |weights: &str, extra: &str, sets: &[&str], want: &[&str]| {
        let cfg = config(&dir, weights, extra);
        let mut args = vec![cfg.to_str().unwrap().to_string()];
        for s in sets {
            args.push("--set".into());
            args.push(s.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run_exp(&args);
        assert_eq!(o.status.code(), Some(2), "{}", said(&o));
        for w in want {
            assert!(stderr(&o).contains(w), "{w:?} not in {}", stderr(&o));
        }
        assert!(!dir.join("results/r").exists(), "a run folder was left");
    };
    let w = weights.display().to_string();
    let mut m = random_weights(0);
    m.remove("layer1.0.conv1.weight");
    save(&m, &weights);
    refused(
        &w,
        "",
        &[],
        &["w.safetensors", "missing weights", "layer1.0.conv1.weight"],
    );
    let mut m = random_weights(0);
    m.insert(
        "layer2.0.conv1.weight".into(),
        Tensor::zeros((128, 64, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    save(&m, &weights);
    refused(
        &w,
        "",
        &[],
        &["mis-shaped", "layer2.0.conv1.weight is [128, 64, 1, 1]"],
    );
    let mut m = random_weights(0);
    m.insert(
        "layer5.0.conv1.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    save(&m, &weights);
    refused(
        &w,
        "",
        &[],
        &["unexpected weights", "layer5.0.conv1.weight"],
    );
    save(&random_weights(0), &weights);
    refused(
        "/nonexistent/w.safetensors",
        "",
        &[],
        &["/nonexistent/w.safetensors"],
    );
    refused(&w, "", &["data.channels=1"], &["data.channels", "RGB"]);
    refused(
        &w,
        "train_encoder_stages = [\"layer9\"]",
        &[],
        &["model.train_encoder_stages", "layer9"],
    );
    let cfg = config(&dir, &w, "");
    let o = run_exp(&[
        cfg.to_str().unwrap(),
        "--set",
        "model.frame_encoder=\"cnn\"",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    assert!(
        stderr(&o).contains("model.encoder_weights"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hub_weights_resolve_through_the_cache_offline() {
    let dir = temp_dir("hub");
    frames_tree(&dir.join("frames"));
    // hf-hub's layout: models--owner--name/refs/<revision> holds a commit, and
    // snapshots/<commit>/<file> the file.
    let hub = dir.join("hub");
    let repo = hub.join("models--rnnlab--resnet18-test");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    save(
        &random_weights(0),
        &repo.join("snapshots/0123abcd/model.safetensors"),
    );
    let env = [
        ("HF_HUB_CACHE", hub.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let cfg = config(&dir, "hub:rnnlab/resnet18-test", "");
    let o = run_exp_env(&[cfg.to_str().unwrap(), "--set", "train.epochs=1"], &env);
    assert!(o.status.success(), "{}", said(&o));
    let enc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("results/r/run-001/encoder.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(enc["weights"], "hub:rnnlab/resnet18-test");
    assert!(enc["file"]
        .as_str()
        .unwrap()
        .ends_with("snapshots/0123abcd/model.safetensors"));
    let absent = config(&dir, "hub:rnnlab/absent", "");
    let o = run_exp_env(
        &[absent.to_str().unwrap(), "--set", "experiment.name=x"],
        &env,
    );
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    assert!(stderr(&o).contains("HF_HUB_OFFLINE"), "{}", stderr(&o));
    assert!(stderr(&o).contains("rnnlab/absent"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn features_are_computed_in_shards_resume_and_train_heads_as_a_tensors_dataset() {
    let dir = temp_dir("features");
    let weights = dir.join("w.safetensors");
    save(&random_weights(0), &weights);
    // 160 + 40 + 40 synthetic clips: 3 + 1 + 1 chunks of 64.
    let text = format!(
        "[experiment]\nname = \"f\"\nout_dir = {:?}\nthreads = 1\n\
         [data]\nsource = \"synthetic-video\"\nnum_classes = 2\nframes = 4\nheight = 32\nwidth = 32\nchannels = 3\n\
         num_train = 160\nnum_valid = 40\nnum_test = 40\n\
         [model]\ncell = \"gru\"\nhidden_size = 8\nframe_encoder = \"resnet18\"\nencoder_weights = {:?}\n\
         [train]\nepochs = 2\nbatch_size = 16\n[log]\nprogress = false\n",
        dir.join("results"),
        weights.display().to_string()
    );
    let cfg = dir.join("f.toml");
    std::fs::write(&cfg, text).unwrap();
    let c = cfg.to_str().unwrap();
    let o = run_exp(&["features", c, "--shard", "0/2"]);
    assert!(o.status.success(), "{}", said(&o));
    assert!(
        said(&o).contains("shard 0/2: 2 of 2 chunks computed now"),
        "{}",
        said(&o)
    );
    let o = run_exp(&["features", c, "--shard", "1/2"]);
    assert!(
        said(&o).contains("shard 1/2: 3 of 3 chunks computed now"),
        "{}",
        said(&o)
    );
    // A killed extraction: one chunk file missing (and a temporary file left behind).
    let chunks: Vec<PathBuf> = std::fs::read_dir(dir.join("results/.cache"))
        .unwrap()
        .flatten()
        .flat_map(|d| {
            std::fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
        })
        .collect();
    assert_eq!(chunks.len(), 5, "{chunks:?}");
    std::fs::remove_file(&chunks[0]).unwrap();
    let o = run_exp(&["features", c]);
    assert!(o.status.success(), "{}", said(&o));
    assert!(
        said(&o).contains("all splits: 1 of 5 chunks computed now, 4 were cached"),
        "{}",
        said(&o)
    );
    let out = dir.join("results/f/features");
    for split in ["train", "valid", "test"] {
        let t =
            candle_core::safetensors::load(out.join(format!("{split}.safetensors")), &Device::Cpu)
                .unwrap();
        let n = if split == "train" { 160 } else { 40 };
        assert_eq!(t["features"].dims(), &[n, 4, 512]);
        assert_eq!(t["labels"].dims(), &[n]);
    }
    // The files train a head (class names from their metadata), as a frozen encoder in the
    // loop would: the same features.
    let head = format!(
        "[experiment]\nname = \"head\"\nout_dir = {:?}\nthreads = 1\n\
         [data]\nsource = \"tensors\"\ntrain = {:?}\nvalid = {:?}\ntest = {:?}\n\
         [model]\ncell = \"gru\"\nhidden_size = 8\nframe_encoder = \"none\"\n\
         [train]\nepochs = 2\nbatch_size = 16\n[log]\nprogress = false\n",
        dir.join("results"),
        out.join("train.safetensors"),
        out.join("valid.safetensors"),
        out.join("test.safetensors"),
    );
    std::fs::write(dir.join("head.toml"), head).unwrap();
    let o = run_exp(&[dir.join("head.toml").to_str().unwrap()]);
    assert!(o.status.success(), "{}", said(&o));
    let classes = std::fs::read_to_string(dir.join("results/head/run-001/classes.json")).unwrap();
    let classes: Vec<String> = serde_json::from_str(&classes).unwrap();
    assert_eq!(classes, ["forward", "reversed"]);
    // Training from the config itself reads the same cached chunks: nothing computed.
    let o = run_exp(&[c]);
    assert!(o.status.success(), "{}", said(&o));
    assert!(
        said(&o).contains("(0 of 5 chunks computed now)"),
        "{}",
        said(&o)
    );
    // Not a frozen resnet: nothing to extract.
    let o = run_exp(&[
        "features",
        c,
        "--set",
        "model.train_encoder_stages=[\"layer4\"]",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    let o = run_exp(&["features", c, "--shard", "2/2"]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
