//! Video runs through the real binary: a synthetic-video run trains with the CNN frame
//! encoder and batch norm (the encoder's gradients logged, running statistics saved,
//! input.json and no vocabulary in its folder), `eval` on a reloaded run scores what training
//! scored, `predict --text` is refused, and a resume continues it; mismatched encoders and bad
//! values are refused before anything is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rnnlab::checkpoint::{load_run, Weights};
use rnnlab::log::tensorboard::read_events;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rnnlab-video-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_exp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_run-exp"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn config(dir: &Path, extra_model: &str) -> PathBuf {
    let text = format!(
        "[experiment]\nname = \"v\"\nout_dir = {:?}\nthreads = 1\n\
         [data]\nsource = \"synthetic-video\"\nframes = 6\nheight = 12\nwidth = 12\nchannels = 3\n\
         num_classes = 2\nnum_train = 256\nnum_valid = 64\nnum_test = 64\n\
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
    let saved = candle_core::safetensors::load(run.join("last.safetensors"), &candle_core::Device::Cpu).unwrap();
    for k in ["encoder.1.running_mean", "encoder.1.running_var", "encoder.1.weight", "encoder.4.weight"] {
        assert!(saved.contains_key(k), "{k} not saved: {:?}", saved.keys().collect::<Vec<_>>());
    }
    let rm = saved["encoder.1.running_mean"].to_vec1::<f32>().unwrap();
    assert!(rm.iter().any(|&v| v != 0.0), "running mean never updated: {rm:?}");
    let input: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("input.json")).unwrap()).unwrap();
    assert_eq!(
        input,
        serde_json::json!({"kind": "frames", "channels": 3, "height": 12, "width": 12})
    );
    assert!(!run.join("vocab.json").exists(), "a video run has no vocabulary");
    // The encoder's parameters train and are logged like every other parameter.
    let mut tags = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(&run).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("events.out") {
            for ev in read_events(&p).unwrap() {
                for v in ev.summary.into_iter().flat_map(|s| s.value) {
                    tags.insert(v.tag);
                }
            }
        }
    }
    for t in ["grad_norm/encoder.0.weight", "grad_norm/encoder.1.weight", "grad_norm/encoder.4.bias", "weights/encoder.0.weight", "grad_flow/by_timestep"] {
        assert!(tags.contains(t), "missing {t}: {tags:?}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let loaded = load_run(&run, Weights::Best, &candle_core::Device::Cpu).unwrap();
    let names: Vec<&String> = loaded.model.params.iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| *n == "encoder.0.weight") && names.iter().any(|n| *n == "rnn.weight_ih_l0"), "{names:?}");
    // eval on the same data scores the best weights as training did.
    let e = run_exp(&["eval", run.to_str().unwrap(), "--data", cfg.to_str().unwrap()]);
    assert!(e.status.success(), "{}", stderr(&e));
    let out = String::from_utf8_lossy(&e.stdout).into_owned();
    let test_line: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["split"] == "test")
        .unwrap();
    assert_eq!(test_line["scores"]["acc"], summary["test_acc"], "{out}");
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
    assert!(stderr(&o).contains("model.frame_encoder") && stderr(&o).contains("frames need an encoder"), "{}", stderr(&o));
    assert!(!dir.join("results/v/run-001").exists());
    // The linear encoder (flatten + project) trains too.
    let cfg = config(&dir, "frame_encoder = \"linear\"\nembedding_dim = 16");
    let o = run_exp(&[cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (set, key) in [
        ("data.num_classes=5", "data.num_classes"),
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
