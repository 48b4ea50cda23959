//! Video runs through the real binary: a synthetic-video run trains with the CNN frame
//! encoder and batch norm (the encoder's gradients logged, running statistics saved,
//! input.json and no vocabulary in its folder), `eval` on a reloaded run scores what training
//! scored, `predict --text` is refused, and a resume continues it; mismatched encoders and bad
//! values are refused before anything is written.

mod common;
use common::{run_exp, stderr, temp_dir};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rnnlab::checkpoint::{load_run, Weights};
use rnnlab::log::tensorboard::read_events;

fn config(dir: &Path, extra_model: &str) -> PathBuf {
    let text = format!(
        "[experiment]\nname = \"v\"\nout_dir = {:?}\nthreads = 1\n\
         [data]\nsource = \"synthetic-video\"\nnum_classes = 2\nframes = 6\nheight = 12\nwidth = 12\nchannels = 3\n\
         num_train = 256\nnum_valid = 64\nnum_test = 64\n\
         [model]\ncell = \"gru\"\nhidden_size = 16\nconv_channels = [4, 8]\n{extra_model}\n\
         [train]\nepochs = 2\nbatch_size = 32\nlr = 3e-3\n[log]\nevery_steps = 2\nprogress = false\n",
        dir.join("results")
    );
    let path = dir.join("v.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_video_run_trains_reloads_scores_and_resumes() {
    let dir = temp_dir("run");
    let cfg = config(&dir, "batch_norm = true");
    let o = run_exp(&[cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = dir.join("results/v/run-001");
    // Batch norm's running statistics are saved with the weights (PyTorch's state_dict names).
    let saved =
        candle_core::safetensors::load(run.join("last.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    for k in [
        "encoder.1.running_mean",
        "encoder.1.running_var",
        "encoder.1.weight",
        "encoder.4.weight",
    ] {
        assert!(
            saved.contains_key(k),
            "{k} not saved: {:?}",
            saved.keys().collect::<Vec<_>>()
        );
    }
    let rm = saved["encoder.1.running_mean"].to_vec1::<f32>().unwrap();
    assert!(
        rm.iter().any(|&v| v != 0.0),
        "running mean never updated: {rm:?}"
    );
    let input: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("input.json")).unwrap()).unwrap();
    assert_eq!(
        input,
        serde_json::json!({"kind": "frames", "channels": 3, "height": 12, "width": 12})
    );
    assert!(
        !run.join("vocab.json").exists(),
        "a video run has no vocabulary"
    );
    // The encoder's parameters train and are logged like every other parameter.
    let mut tags = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(&run).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("events.out")
        {
            for ev in read_events(&p).unwrap() {
                for v in ev.summary.into_iter().flat_map(|s| s.value) {
                    tags.insert(v.tag);
                }
            }
        }
    }
    for t in [
        "grad_norm/encoder.0.weight",
        "grad_norm/encoder.1.weight",
        "grad_norm/encoder.4.bias",
        "weights/encoder.0.weight",
        "grad_flow/l0/by_timestep",
    ] {
        assert!(tags.contains(t), "missing {t}: {tags:?}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let loaded = load_run(&run, Weights::Best, &candle_core::Device::Cpu).unwrap();
    let names: Vec<&String> = loaded.model.params.iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().any(|n| *n == "encoder.0.weight")
            && names.iter().any(|n| *n == "rnn.weight_ih_l0"),
        "{names:?}"
    );
    // eval on the same data scores the best weights as training did.
    let e = run_exp(&[
        "eval",
        run.to_str().unwrap(),
        "--data",
        cfg.to_str().unwrap(),
    ]);
    assert!(e.status.success(), "{}", stderr(&e));
    let out = String::from_utf8_lossy(&e.stdout).into_owned();
    let test_line: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["split"] == "test")
        .unwrap();
    assert_eq!(test_line["scores"]["acc"], summary["test_acc"], "{out}");
    // Text data for a video run: refused naming the file and both inputs in words.
    let text_cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/lstm.toml");
    let e = run_exp(&["eval", run.to_str().unwrap(), "--data", text_cfg]);
    assert_eq!(e.status.code(), Some(2), "{}", stderr(&e));
    assert!(
        stderr(&e).contains(&format!(
            "--data {text_cfg}: data: gives tokens (a vocabulary of"
        )) && stderr(&e).contains("the run takes frames of 3 x 12 x 12")
            && !stderr(&e).contains("Tokens {"),
        "{}",
        stderr(&e)
    );
    // Text predictions are refused for a video run.
    let p = run_exp(&["predict", run.to_str().unwrap(), "--text", "hello"]);
    assert_eq!(p.status.code(), Some(2), "{}", stderr(&p));
    assert!(stderr(&p).contains("not text"), "{}", stderr(&p));
    // A resume continues the run for more epochs.
    let r = run_exp(&["--resume", run.to_str().unwrap(), "--set", "train.epochs=3"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let s2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s2["epochs_done"], 3);
}

#[test]
fn frame_encoders_and_inputs_that_do_not_fit_are_refused() {
    let dir = temp_dir("refuse");
    let cfg = config(&dir, "frame_encoder = \"none\"");
    let o = run_exp(&[cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("model.frame_encoder") && stderr(&o).contains("frames need an encoder"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("results/v/run-001").exists());
    // The linear encoder (flatten + project) trains too.
    let cfg = config(&dir, "frame_encoder = \"linear\"\nembedding_dim = 16");
    let o = run_exp(&[cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (set, key) in [
        ("data.channels=2", "data.channels"),
        ("data.frames=1", "data.frames"),
        ("model.conv_channels=[]", "model.conv_channels"),
        ("data.frames_per_clip=0", "data.frames_per_clip"),
    ] {
        let o = run_exp(&[cfg.to_str().unwrap(), "--set", set]);
        assert_eq!(o.status.code(), Some(2), "{set}: {}", stderr(&o));
        assert!(stderr(&o).contains(key), "{set}: {}", stderr(&o));
    }
}

/// Writes `tensors` as a safetensors file.
fn save(path: &Path, tensors: Vec<(&str, candle_core::Tensor)>) {
    let map: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

/// Sequences of `dim` features whose label is the sign of the first feature summed over the
/// valid steps (lengths vary).
fn features(n: usize, t: usize, dim: usize, seed: u64) -> Vec<(&'static str, candle_core::Tensor)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut x = vec![0f32; n * t * dim];
    let mut labels = Vec::new();
    let mut lengths = Vec::new();
    for i in 0..n {
        let len = rng.random_range(2..=t);
        let mut sum = 0f32;
        for s in 0..len {
            for d in 0..dim {
                let v: f32 = rng.random_range(-1.0..1.0);
                x[(i * t + s) * dim + d] = v;
                if d == 0 {
                    sum += v;
                }
            }
        }
        labels.push((sum > 0.0) as u32);
        lengths.push(len as u32);
    }
    let dev = candle_core::Device::Cpu;
    vec![
        (
            "features",
            candle_core::Tensor::from_vec(x, (n, t, dim), &dev).unwrap(),
        ),
        ("labels", candle_core::Tensor::new(labels, &dev).unwrap()),
        ("lengths", candle_core::Tensor::new(lengths, &dev).unwrap()),
    ]
}

#[test]
fn the_features_config_trains_from_safetensors_and_bad_files_are_named() {
    let dir = temp_dir("features");
    let (train, test) = (dir.join("train.safetensors"), dir.join("test.safetensors"));
    save(&train, features(1200, 10, 8, 1));
    save(&test, features(300, 10, 8, 2));
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/video-features.toml");
    let out = dir.join("results");
    let args = |extra: &[String]| -> Vec<String> {
        let mut a = vec![
            shipped.display().to_string(),
            "--set".into(),
            format!("data.train={}", train.display()),
            "--set".into(),
            format!("data.test={}", test.display()),
            "--set".into(),
            format!("experiment.out_dir={}", out.display()),
            "--set".into(),
            "train.lr=1e-2".into(),
            "--set".into(),
            "log.progress=false".into(),
        ];
        a.extend(extra.iter().cloned());
        a
    };
    let o = Command::new(env!("CARGO_BIN_EXE_run-exp"))
        .args(args(&[]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let run = out.join("video-features/run-001");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert!(s["test_acc"].as_f64().unwrap() > 0.9, "{s}");
    let input: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("input.json")).unwrap()).unwrap();
    assert_eq!(input, serde_json::json!({"kind": "features", "dim": 8}));

    // The same data as a NumPy .npz bundle (np.savez(path, features=..., labels=..., lengths=...)).
    let npz = dir.join("train.npz");
    let arrays = features(1200, 10, 8, 1);
    candle_core::Tensor::write_npz(
        &arrays.iter().map(|(k, v)| (*k, v)).collect::<Vec<_>>(),
        &npz,
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_run-exp"))
        .args(args(&[
            "--set".into(),
            format!("data.train={}", npz.display()),
            "--set".into(),
            "experiment.name=npz".into(),
        ]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s2: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("npz/run-001/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        s2["best_val_acc"], s["best_val_acc"],
        "npz and safetensors of the same data train alike"
    );

    // And as a folder of .npy files (np.save(f"{dir}/{name}.npy", array) for each).
    let npy = dir.join("train-npy");
    std::fs::create_dir_all(&npy).unwrap();
    for (name, t) in features(1200, 10, 8, 1) {
        t.write_npy(npy.join(format!("{name}.npy"))).unwrap();
    }
    let o = Command::new(env!("CARGO_BIN_EXE_run-exp"))
        .args(args(&[
            "--set".into(),
            format!("data.train={}", npy.display()),
            "--set".into(),
            "experiment.name=npy".into(),
        ]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s3: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("npy/run-001/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        s3["best_val_acc"], s["best_val_acc"],
        "npy folder trains alike"
    );
    // A folder without .npy files is named.
    let empty = dir.join("no-arrays");
    std::fs::create_dir_all(&empty).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_run-exp"))
        .args(args(&[
            "--set".into(),
            format!("data.train={}", empty.display()),
            "--set".into(),
            "experiment.name=empty".into(),
        ]))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no-arrays") && stderr(&o).contains("without .npy files"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("empty").exists());

    // Bad files: exit 2 naming the file and what is wrong, no run folder.
    let dev = candle_core::Device::Cpu;
    let t = |v: Vec<f32>, s: &[usize]| candle_core::Tensor::from_vec(v, s, &dev).unwrap();
    let labels = |n: usize| candle_core::Tensor::new(vec![0u32; n], &dev).unwrap();
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<(&str, candle_core::Tensor)>, &str)> = vec![
        (
            "rank",
            vec![
                ("features", t(vec![0.0; 24], &[4, 6])),
                ("labels", labels(4)),
            ],
            "expected [N, T, D]",
        ),
        (
            "count",
            vec![
                ("features", t(vec![0.0; 48], &[4, 3, 4])),
                ("labels", labels(5)),
            ],
            "holds 4 sequences but \"labels\" 5",
        ),
        (
            "dtype",
            vec![
                ("features", t(vec![0.0; 48], &[4, 3, 4])),
                ("labels", t(vec![0.0; 4], &[4])),
            ],
            "expected integers",
        ),
        (
            "nolabels",
            vec![("features", t(vec![0.0; 48], &[4, 3, 4]))],
            "no \"labels\"",
        ),
        (
            "lengths",
            vec![
                ("features", t(vec![0.0; 48], &[4, 3, 4])),
                ("labels", labels(4)),
                (
                    "lengths",
                    candle_core::Tensor::new(vec![1u32, 2, 9, 1], &dev).unwrap(),
                ),
            ],
            "lengths[2] = 9",
        ),
        (
            "frames-rank",
            vec![
                (
                    "frames",
                    candle_core::Tensor::zeros((4, 3, 8, 8), candle_core::DType::U8, &dev).unwrap(),
                ),
                ("labels", labels(4)),
            ],
            "expected [N, T, C, H, W]",
        ),
        (
            // One stray 7 among 0/1: not an 8-way head with six empty classes.
            "stray",
            vec![
                ("features", t(vec![0.0; 192], &[8, 3, 8])),
                (
                    "labels",
                    candle_core::Tensor::new(vec![0u32, 1, 0, 1, 0, 1, 0, 7], &dev).unwrap(),
                ),
            ],
            "class \"2\" has no training example (training labels, with counts: 0 (3), 1 (3), 7 (1))",
        ),
    ];
    for (name, tensors, want) in cases {
        let bad = dir.join(format!("{name}.safetensors"));
        save(&bad, tensors);
        let o = Command::new(env!("CARGO_BIN_EXE_run-exp"))
            .args(args(&[
                "--set".into(),
                format!("data.train={}", bad.display()),
                "--set".into(),
                "experiment.name=bad".into(),
            ]))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&bad.display().to_string()) && stderr(&o).contains(want),
            "{name}: {}",
            stderr(&o)
        );
        assert!(
            !out.join("bad").exists(),
            "{name}: a run folder was written"
        );
    }
}

#[test]
fn frames_from_safetensors_train_with_variable_lengths() {
    let dir = temp_dir("frames");
    let dev = candle_core::Device::Cpu;
    // 64 clips of up to 5 frames, 1 x 8 x 8, u8; label = whether the clip brightens.
    let (n, t, px) = (64, 5, 64);
    let mut v = vec![0u8; n * t * px];
    let mut labels = Vec::new();
    let mut lengths = Vec::new();
    for i in 0..n {
        let up = i % 2 == 0;
        let len = 3 + i % 3;
        for s in 0..len {
            let level = if up { 40 * s } else { 200 - 40 * s } as u8;
            v[(i * t + s) * px..(i * t + s + 1) * px].fill(level);
        }
        labels.push(up as u32);
        lengths.push(len as u32);
    }
    let file = dir.join("clips.safetensors");
    save(
        &file,
        vec![
            (
                "frames",
                candle_core::Tensor::from_vec(v, (n, t, 1, 8, 8), &dev).unwrap(),
            ),
            ("labels", candle_core::Tensor::new(labels, &dev).unwrap()),
            ("lengths", candle_core::Tensor::new(lengths, &dev).unwrap()),
        ],
    );
    let cfg = dir.join("f.toml");
    std::fs::write(&cfg, format!(
        "[experiment]\nname = \"f\"\nout_dir = {:?}\n[data]\nsource = \"tensors\"\ntrain = {:?}\n[model]\nconv_channels = [4]\nhidden_size = 8\n[train]\nepochs = 2\nbatch_size = 16\n[log]\nprogress = false\n",
        dir.join("results"), file
    )).unwrap();
    let o = run_exp(&[cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("carved from train"), "{}", stderr(&o));
    let input: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("results/f/run-001/input.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        input,
        serde_json::json!({"kind": "frames", "channels": 1, "height": 8, "width": 8})
    );
}

/// Writes a clip folder of `levels.len()` grey frames of `size`, PNG or JPEG.
fn write_clip(dir: &Path, levels: &[u8], size: u32, jpeg: bool) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, &l) in levels.iter().enumerate() {
        let img = image::GrayImage::from_pixel(size, size, image::Luma([l]));
        let ext = if jpeg { "jpg" } else { "png" };
        img.save(dir.join(format!("{:05}.{ext}", i + 1))).unwrap();
    }
}

#[test]
fn the_frames_config_trains_on_image_folders_predicts_clips_and_names_bad_folders() {
    let dir = temp_dir("folders");
    let root = dir.join("frames");
    for (split, n) in [("train", 24), ("test", 8)] {
        for i in 0..n {
            let up: Vec<u8> = (0..4).map(|s| (30 + 50 * s) as u8).collect();
            let down: Vec<u8> = up.iter().rev().copied().collect();
            write_clip(
                &root.join(split).join("brighten").join(format!("c{i:03}")),
                &up,
                10,
                i % 2 == 0,
            );
            write_clip(
                &root.join(split).join("darken").join(format!("c{i:03}")),
                &down,
                10,
                i % 3 == 0,
            );
        }
    }
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/video-frames.toml");
    let out = dir.join("results");
    let run = |extra: &[String]| -> Output {
        let mut a: Vec<String> = vec![shipped.display().to_string()];
        for s in [
            format!("data.train={}", root.join("train").display()),
            format!("data.test={}", root.join("test").display()),
            format!("experiment.out_dir={}", out.display()),
            "data.height=8".into(),
            "data.width=8".into(),
            "data.channels=1".into(),
            "model.conv_channels=[4]".into(),
            "model.hidden_size=8".into(),
            "train.epochs=2".into(),
            "log.progress=false".into(),
        ] {
            a.push("--set".into());
            a.push(s);
        }
        a.extend(extra.iter().cloned());
        Command::new(env!("CARGO_BIN_EXE_run-exp"))
            .args(a)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run_dir = out.join("video-frames/run-001");
    let classes: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("classes.json")).unwrap())
            .unwrap();
    assert_eq!(classes, ["brighten", "darken"]);
    // Each split was decoded once into a cache file (train, carved validation, test); a second
    // run reads them back, decodes nothing and trains alike; a re-written clip misses the cache.
    let cache = out.join(".cache");
    let cached = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "u8")
            .count()
    };
    assert_eq!(cached(), 3);
    let said = |o: &Output| {
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
    };
    assert!(said(&o).contains("decoded 64 clips"), "{}", said(&o));
    let again = run(&["--set".into(), "experiment.name=again".into()]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        said(&again).contains("64 clips (256 frames) read from the decoded cache"),
        "{}",
        said(&again)
    );
    let acc = |name: &str| -> serde_json::Value {
        let s: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(name).join("run-001/summary.json")).unwrap(),
        )
        .unwrap();
        s["test_acc"].clone()
    };
    assert_eq!(acc("video-frames"), acc("again"));
    write_clip(
        &root.join("test/darken/c007"),
        &[200, 10, 200, 10],
        10,
        false,
    );
    let edited = run(&["--set".into(), "experiment.name=edited".into()]);
    assert!(edited.status.success(), "{}", stderr(&edited));
    assert!(
        said(&edited).contains("decoded 16 clips"),
        "{}",
        said(&edited)
    );
    assert_eq!(cached(), 4);
    // predict --clip: one JSON line per clip folder, probabilities over the run's classes.
    let clip = root.join("test/darken/c001");
    let p = run_exp(&[
        "predict",
        run_dir.to_str().unwrap(),
        "--clip",
        clip.to_str().unwrap(),
    ]);
    assert!(p.status.success(), "{}", stderr(&p));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&p.stdout).trim()).unwrap();
    assert_eq!(line["clip"], clip.display().to_string());
    assert!(classes.iter().any(|c| *c == line["label"]));

    // The same clips through mmaction-style list files (`clip_dir num_frames label`, relative
    // to the list); a wrong frame count is named with its line.
    for split in ["train", "test"] {
        let mut list = String::from("# clip_dir num_frames label\n");
        for (label, class) in ["brighten", "darken"].iter().enumerate() {
            for i in 0..8 {
                list += &format!("{split}/{class}/c{i:03} 4 {label}\n");
            }
        }
        std::fs::write(root.join(format!("{split}.txt")), list).unwrap();
    }
    let o = run(&[
        "--set".into(),
        format!("data.train={}", root.join("train.txt").display()),
        "--set".into(),
        format!("data.test={}", root.join("test.txt").display()),
        "--set".into(),
        "experiment.name=listed".into(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(
        root.join("wrong.txt"),
        "train/darken/c000 4 1\ntrain/darken/c001 5 1\n",
    )
    .unwrap();
    let o = run(&[
        "--set".into(),
        format!("data.train={}", root.join("wrong.txt").display()),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("wrong.txt:2") && stderr(&o).contains("the list says 5"),
        "{}",
        stderr(&o)
    );
    // One class rule for every source: a stray label 7 among 0/1 is not an 8-way head; a label
    // only the test list has is named with its file, line and split; a carved validation split
    // without a class is refused. Nothing is written.
    let listing = |name: &str, lines: &[(&str, u32)]| -> String {
        let text: String = lines.iter().map(|(c, l)| format!("{c} 4 {l}\n")).collect();
        std::fs::write(root.join(name), text).unwrap();
        root.join(name).display().to_string()
    };
    let good: Vec<(&str, u32)> = (0..6)
        .map(|i| {
            (
                ["train/brighten/c000", "train/darken/c000"][i % 2],
                (i % 2) as u32,
            )
        })
        .collect();
    let mut stray = good.clone();
    stray.push(("train/darken/c001", 7));
    let mut with_test_only = good.clone();
    with_test_only.push(("train/darken/c001", 2));
    let carve_miss: Vec<(&str, u32)> = (0..12)
        .map(|i| ("train/brighten/c000", u32::from(i == 11)))
        .collect();
    let cases = [
        (
            listing("stray.txt", &stray),
            listing("v.txt", &good),
            "stray.txt: class \"2\" has no training example (training labels, with counts: 0 (3), 1 (3), 7 (1))".to_string(),
        ),
        (
            listing("t.txt", &good),
            listing("testonly.txt", &with_test_only),
            "testonly.txt:7: valid label 2 has no training example".to_string(),
        ),
        (
            listing("carve.txt", &carve_miss),
            String::new(),
            "carve.txt: the validation examples carved from train (val_fraction 0.1) hold no example of class \"1\" (1 in train)".to_string(),
        ),
    ];
    for (train, valid, want) in cases {
        let mut args = vec![
            "--set".into(),
            format!("data.train={train}"),
            "--set".into(),
            format!("data.test={train}"),
            "--set".into(),
            "experiment.name=labels".into(),
        ];
        if !valid.is_empty() {
            args.extend(["--set".into(), format!("data.valid={valid}")]);
        }
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(&want), "{want}\n{}", stderr(&o));
        assert!(!out.join("labels").exists());
    }

    // Bad folders: exit 2 naming the path, no run folder.
    let broken = dir.join("broken");
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Box<dyn Fn(&Path)>, &str)> = vec![
        (
            "no-frames",
            Box::new(|p: &Path| std::fs::create_dir_all(p.join("a/c1")).unwrap()),
            "holds no frames",
        ),
        (
            "empty-class",
            Box::new(|p: &Path| {
                write_clip(&p.join("a/c1"), &[1, 2], 8, false);
                std::fs::create_dir_all(p.join("b")).unwrap();
            }),
            "class folder holds no clips",
        ),
        (
            "sizes",
            Box::new(|p: &Path| {
                write_clip(&p.join("a/c1"), &[1, 2], 8, false);
                image::GrayImage::from_pixel(9, 8, image::Luma([3]))
                    .save(p.join("a/c1/00003.png"))
                    .unwrap();
                write_clip(&p.join("b/c1"), &[1, 2], 8, false);
            }),
            "in the same clip",
        ),
        (
            "truncated",
            Box::new(|p: &Path| {
                write_clip(&p.join("a/c1"), &[1, 2], 8, false);
                let f = p.join("a/c1/00002.png");
                let bytes = std::fs::read(&f).unwrap();
                std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
                write_clip(&p.join("b/c1"), &[1, 2], 8, false);
            }),
            "cannot decode",
        ),
    ];
    for (name, make, want) in cases {
        let split = broken.join(name);
        make(&split);
        let o = run(&[
            "--set".into(),
            format!("data.train={}", split.display()),
            "--set".into(),
            format!("data.valid={}", split.display()),
            "--set".into(),
            format!("data.test={}", split.display()),
            "--set".into(),
            "experiment.name=bad".into(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&split.display().to_string()) && stderr(&o).contains(want),
            "{name}: {}",
            stderr(&o)
        );
        assert!(
            !out.join("bad").exists(),
            "{name}: a run folder was written"
        );
    }
    // In a fresh output folder, a decode that fails leaves no empty <out_dir>/.cache behind.
    let fresh = dir.join("fresh");
    let o = run(&[
        "--set".into(),
        format!("data.train={}", broken.join("truncated").display()),
        "--set".into(),
        format!("data.valid={}", broken.join("truncated").display()),
        "--set".into(),
        format!("data.test={}", broken.join("truncated").display()),
        "--set".into(),
        format!("experiment.out_dir={}", fresh.display()),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!fresh.exists(), "{}", stderr(&o));
    // A decode that failed left no partial cache file behind: each file whole, and its index.
    for e in std::fs::read_dir(&cache).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            name.starts_with("frames-") && (name.ends_with(".u8") || name.ends_with(".json")),
            "{name}"
        );
    }
}

/// Augmentation draws from the epoch's seeded generator: a run killed mid-epoch and resumed
/// ends with the weights of a straight run, and differs from one without augmentation.
#[test]
fn augmented_runs_resume_exactly() {
    let dir = temp_dir("augment");
    let cfg = config(&dir, "batch_norm = true");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[train]\n", "[train]\ncheckpoint_every_steps = 2\n")
        .replace(
            "num_train = 256\n",
            "num_train = 256\naugment_shift = 2\naugment_flip = true\naugment_brightness = 0.3\n",
        );
    std::fs::write(&cfg, text).unwrap();
    let straight = run_exp(&[cfg.to_str().unwrap()]);
    assert!(straight.status.success(), "{}", stderr(&straight));
    let crashed = Command::new(env!("CARGO_BIN_EXE_run-exp"))
        .arg(&cfg)
        .env("RNNLAB_TEST_CRASH", "step:11")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let run2 = dir.join("results/v/run-002");
    let r = run_exp(&["--resume", run2.to_str().unwrap()]);
    assert!(r.status.success(), "{}", stderr(&r));
    let a = std::fs::read(dir.join("results/v/run-001/last.safetensors")).unwrap();
    let b = std::fs::read(run2.join("last.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed augmented run differs from the straight run"
    );
    let plain = run_exp(&[
        cfg.to_str().unwrap(),
        "--set",
        "data.augment_shift=0",
        "--set",
        "data.augment_flip=false",
        "--set",
        "data.augment_brightness=0.0",
    ]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let c = std::fs::read(dir.join("results/v/run-003/last.safetensors")).unwrap();
    assert!(a != c, "augmentation changed nothing");
}
