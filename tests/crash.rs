//! The run folder under attack, through the real binary: a resume that may not go ahead
//! changes nothing; divergence of any kind is recorded and its weights refused; a crash at any
//! chosen point (abort = kill -9, inside a checkpoint commit, SIGTERM, SIGINT) then `--resume`
//! ends with the straight run's weights, metrics rows and TensorBoard curves, nothing twice;
//! a second process cannot take a held run folder; absurd sizes and bad paths exit 2 before
//! anything is written.

mod common;
use common::{run_exp, run_exp_env, stderr, temp_dir};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rnnlab::checkpoint;
use rnnlab::log::tensorboard::read_events;

/// 3 epochs of 25 steps, dropout on (the generator's position must survive a resume), a
/// checkpoint every 7 steps inside epochs.
const TINY: &str = r#"
[experiment]
name = "tiny"
seed = 5

[data]
source = "synthetic-sentiment"
num_train = 800
num_valid = 100
num_test = 100

[model]
cell = "lstm"
embedding_dim = 8
hidden_size = 16
dropout = 0.2

[train]
epochs = 3
batch_size = 32
lr = 1e-2
clip_norm = 1.0
checkpoint_every_steps = 7

[log]
every_steps = 2
"#;

fn config(dir: &Path, out: &str) -> PathBuf {
    let text = TINY.replace(
        "[experiment]",
        &format!("[experiment]\nout_dir = {:?}", dir.join(out)),
    );
    let path = dir.join(format!("{out}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run_dir(out: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(out.join("tiny"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join(checkpoint::SUMMARY)).unwrap()).unwrap()
}

/// Every file under `dir` with its bytes, but the lock file (which names its last holder).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != checkpoint::LOCK {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// metrics.jsonl: every line parses; (split, step) never repeats. Returns the rows by key.
fn metrics(run: &Path) -> BTreeMap<(String, u64), serde_json::Value> {
    let text = std::fs::read_to_string(run.join(checkpoint::METRICS)).unwrap();
    let mut rows = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("metrics.jsonl line {}: {e}: {line}", i + 1));
        let key = (
            v["split"].as_str().unwrap().to_string(),
            v["step"].as_u64().unwrap(),
        );
        assert!(!rows.contains_key(&key), "duplicate metrics row {key:?}");
        rows.insert(key, v);
    }
    rows
}

/// The points of a scalar tag as TensorBoard's event loader keeps them: files in name order,
/// and a SessionLog START at step s drops every point at s or later read before it.
fn tb_curve(run: &Path, tag: &str) -> Vec<(i64, f32)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    files.sort();
    let mut points: Vec<(i64, f32)> = Vec::new();
    for f in files {
        // A process killed mid-record leaves a torn tail; TensorBoard stops reading there.
        let events = read_events(&f).unwrap_or_else(|_| Vec::new());
        for ev in events {
            if ev.session_log.as_ref().is_some_and(|s| s.status == 1) {
                points.retain(|(s, _)| *s < ev.step);
            }
            for v in ev.summary.iter().flat_map(|s| &s.value) {
                if v.tag == tag {
                    points.push((ev.step, v.simple_value.unwrap()));
                }
            }
        }
    }
    points
}

fn straight_run(dir: &Path) -> PathBuf {
    let cfg = config(dir, "straight");
    let o = run_exp(&[cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    run_dir(&dir.join("straight"))
}

/// A run crashed by `crash` (RNNLAB_TEST_CRASH), then resumed, must end where the straight
/// run ends: same final and best weights, same metrics rows, one TensorBoard curve.
/// `resume_from`: the step the newest checkpoint must hold after the crash (None: the crash
/// came before the first, and the resume starts the run over in its folder).
fn crash_then_resume(
    dir: &Path,
    straight: &Path,
    name: &str,
    crash: &str,
    want_code: Option<i32>,
    resume_from: Option<usize>,
) {
    let cfg = config(dir, name);
    let o = run_exp_env(&[cfg.to_str().unwrap()], &[("RNNLAB_TEST_CRASH", crash)]);
    assert_eq!(o.status.code(), want_code, "{crash}: {}", stderr(&o));
    let run = run_dir(&dir.join(name));
    let ckpt = checkpoint::newest(&run).unwrap();
    assert_eq!(
        ckpt.map(|c| c.state.step),
        resume_from,
        "{crash}: resume point"
    );
    let o = run_exp(&["--resume", run.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{crash}: {}", stderr(&o));
    for f in [checkpoint::LAST, checkpoint::BEST] {
        assert!(
            std::fs::read(run.join(f)).unwrap() == std::fs::read(straight.join(f)).unwrap(),
            "{crash}: {f} differs from the straight run's"
        );
    }
    let (a, b) = (metrics(straight), metrics(&run));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{crash}: metrics rows"
    );
    for (k, row) in &a {
        for field in ["loss", "val_acc", "val_loss", "train_loss", "grad_norm"] {
            assert_eq!(row[field], b[k][field], "{crash}: {k:?} {field}");
        }
    }
    let (ta, tb) = (
        tb_curve(straight, "train/loss"),
        tb_curve(&run, "train/loss"),
    );
    assert_eq!(ta, tb, "{crash}: TensorBoard train/loss");
    assert_eq!(
        tb_curve(straight, "val/acc"),
        tb_curve(&run, "val/acc"),
        "{crash}: val/acc"
    );
    let s = summary(&run);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["test_acc"], summary(straight)["test_acc"]);
}

#[test]
fn crashes_at_chosen_points_then_resume_equal_a_straight_run() {
    let dir = temp_dir("kill");
    let straight = straight_run(&dir);
    // Checkpoints fall at steps 7, 14, 21, 25 (epoch end), 28, 35, 42, 49, 50 (epoch end), ...
    // kill -9 mid-epoch, 5 steps after a mid-epoch checkpoint (rows and events beyond it on
    // disk).
    crash_then_resume(
        &dir,
        &straight,
        "abort-mid-epoch",
        "step:40",
        None,
        Some(35),
    );
    // kill -9 inside a commit: the checkpoint at step 50 (an epoch end) written, not renamed.
    crash_then_resume(
        &dir,
        &straight,
        "abort-in-commit",
        "commit:50",
        None,
        Some(49),
    );
    // ... and renamed, with the folder's links and older checkpoints not yet tidied.
    crash_then_resume(
        &dir,
        &straight,
        "abort-after-commit",
        "committed:21",
        None,
        Some(21),
    );
    // SIGTERM (Slurm's warning) and SIGINT between two checkpoints: exit 143 / 130,
    // checkpointed at that very step.
    crash_then_resume(
        &dir,
        &straight,
        "sigterm",
        "sigterm:30",
        Some(143),
        Some(30),
    );
    crash_then_resume(&dir, &straight, "sigint", "sigint:3", Some(130), Some(3));
    // kill -9 before the first checkpoint (the first commit aborted): the resume starts over
    // in the same folder, its metrics and events cut back to nothing.
    crash_then_resume(
        &dir,
        &straight,
        "abort-first-commit",
        "commit:7",
        None,
        None,
    );
    crash_then_resume(&dir, &straight, "abort-before-any", "step:5", None, None);
}

#[test]
fn sigterm_writes_an_interrupted_summary_and_a_mid_epoch_checkpoint() {
    let dir = temp_dir("sigterm");
    let cfg = config(&dir, "out");
    let o = run_exp_env(
        &[cfg.to_str().unwrap()],
        &[("RNNLAB_TEST_CRASH", "sigterm:30")],
    );
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    let run = run_dir(&dir.join("out"));
    let s = summary(&run);
    assert_eq!(s["status"], "interrupted");
    assert_eq!(s["steps"], 30);
    assert!(s["reason"].as_str().unwrap().contains("SIGTERM"), "{s}");
    let ckpt = checkpoint::newest(&run).unwrap().unwrap();
    // Epoch 2 of 25-step epochs: 5 batches in.
    assert_eq!(
        (
            ckpt.state.step,
            ckpt.state.epochs_done,
            ckpt.state.batches_done
        ),
        (30, 1, 5)
    );
    // Only the newest checkpoint is kept, and no temporary file is left.
    let names: Vec<String> = std::fs::read_dir(run.join(checkpoint::CHECKPOINTS))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(!snapshot(&run)
        .keys()
        .any(|p| p.to_string_lossy().ends_with(".tmp")));
    // A resumed process that dies leaves no stale summary claiming the earlier state.
    let r = run.to_str().unwrap();
    let o = run_exp_env(&["--resume", r], &[("RNNLAB_TEST_CRASH", "step:40")]);
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    assert!(!run.join(checkpoint::SUMMARY).exists());
    // The summary's time covers every process.
    let first = s["elapsed_s"].as_f64().unwrap();
    let o = run_exp(&["--resume", r]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(summary(&run)["elapsed_s"].as_f64().unwrap() > first);
}

#[test]
fn a_resume_that_may_not_go_ahead_exits_2_and_changes_nothing() {
    let dir = temp_dir("resume-rules");
    let cfg = config(&dir, "out");
    let o = run_exp(&[cfg.to_str().unwrap(), "--set", "train.epochs=1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let run = run_dir(&dir.join("out"));
    let before = snapshot(&run);
    let r = run.to_str().unwrap();
    for (set, key) in [
        ("model.hidden_size=8", "model.hidden_size"),
        ("model.cell=gru", "model.cell"),
        ("experiment.seed=1", "experiment.seed"),
        ("data.num_train=400", "data.num_train"),
        ("train.lr=0.5", "train.lr"),
    ] {
        let o = run_exp(&["--resume", r, "--set", set]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{set}: {err}");
        assert!(
            err.contains(&format!("--set {set}: {key}: cannot change when resuming")),
            "{set}: {err}"
        );
        assert!(snapshot(&run) == before, "{set}: the failed resume wrote");
    }
    // A folder that is not a run: refused, and left without a lock file.
    let o = run_exp(&["--resume", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not a run folder"), "{}", stderr(&o));
    assert!(!dir.join(checkpoint::LOCK).exists());
    // Safe changes go ahead and the run stays usable.
    let o = run_exp(&[
        "--resume",
        r,
        "--set",
        "train.epochs=2",
        "--set",
        "log.every_steps=5",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(summary(&run)["epochs_done"], 2);
    let o = run_exp(&["predict", r, "--text", "a fine film"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn relative_data_paths_are_recorded_resolved() {
    let dir = temp_dir("relative");
    let mut rows = String::from("sentence\tlabel\n");
    for i in 0..120 {
        let (w, y) = if i % 2 == 0 { ("good", 1) } else { ("bad", 0) };
        rows.push_str(&format!("a {w} film {}\t{y}\n", i % 5));
    }
    std::fs::write(dir.join("t.tsv"), rows).unwrap();
    std::fs::write(
        dir.join("rel.toml"),
        "[experiment]\nname = \"tiny\"\nout_dir = \"out\"\n[data]\nsource = \"file\"\ntrain = \"t.tsv\"\n\
         [model]\nembedding_dim = 4\nhidden_size = 8\n[train]\nepochs = 1\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_run-exp"))
        .arg("rel.toml")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let run = run_dir(&dir.join("out"));
    let saved = std::fs::read_to_string(run.join(checkpoint::CONFIG)).unwrap();
    assert!(
        saved.contains(&format!("{:?}", dir.join("t.tsv").to_str().unwrap())),
        "{saved}"
    );
    // From another directory, by an absolute run path.
    let o = Command::new(env!("CARGO_BIN_EXE_run-exp"))
        .args(["--resume", run.to_str().unwrap(), "--set", "train.epochs=2"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_held_run_folder_refuses_a_second_process_naming_the_holder() {
    let dir = temp_dir("lock");
    let cfg = config(&dir, "out");
    let o = run_exp(&[cfg.to_str().unwrap(), "--set", "train.epochs=1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let run = run_dir(&dir.join("out"));
    let held = checkpoint::RunDir::open(&run).unwrap();
    let before = snapshot(&run);
    let o = run_exp(&["--resume", run.to_str().unwrap(), "--set", "train.epochs=2"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("in use by another run-exp")
            && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(snapshot(&run) == before);
    drop(held);
    let o = run_exp(&["--resume", run.to_str().unwrap(), "--set", "train.epochs=2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn divergence_of_any_kind_exits_3_keeps_finite_weights_and_predict_refuses_non_finite() {
    let dir = temp_dir("diverge");
    let cfg = config(&dir, "out");
    // The issue's case: SGD at lr 1e6, no clipping, one epoch.
    let o = run_exp(&[
        cfg.to_str().unwrap(),
        "--set",
        "train.optimizer=sgd",
        "--set",
        "train.lr=1e6",
        "--set",
        "train.clip_norm=1e30",
        "--set",
        "train.epochs=1",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let run = run_dir(&dir.join("out"));
    let s = summary(&run);
    assert_eq!(s["status"], "diverged");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        ["loss", "gradient norm", "validation loss", "parameter"]
            .iter()
            .any(|w| reason.contains(w)),
        "{reason}"
    );
    // Whatever was committed holds finite weights only.
    if let Some(ckpt) = checkpoint::newest(&run).unwrap() {
        let t = candle_core::safetensors::load(ckpt.model(), &candle_core::Device::Cpu).unwrap();
        for (name, v) in t {
            let v: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
            assert!(v.iter().all(|x| x.is_finite()), "{name}");
        }
    }
    // A diverged run is not resumed: exit 2 and why.
    let o = run_exp(&["--resume", run.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("diverged"), "{}", stderr(&o));

    // predict / eval on weights with an infinity: an error naming the parameter.
    let cfg = config(&dir, "ok");
    let o = run_exp(&[cfg.to_str().unwrap(), "--set", "train.epochs=1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let run = run_dir(&dir.join("ok"));
    let ckpt = checkpoint::newest(&run).unwrap().unwrap();
    let best = ckpt.best().unwrap();
    let mut t = candle_core::safetensors::load(&best, &candle_core::Device::Cpu).unwrap();
    let w = t.get("head.bias").unwrap().to_vec1::<f32>().unwrap();
    let bad: Vec<f32> = w.iter().map(|_| f32::INFINITY).collect();
    t.insert(
        "head.bias".into(),
        candle_core::Tensor::new(bad, &candle_core::Device::Cpu).unwrap(),
    );
    // Replace the file (not write through the hard links the run folder shares).
    std::fs::remove_file(&best).unwrap();
    candle_core::safetensors::save(&t, &best).unwrap();
    let o = run_exp(&["predict", run.to_str().unwrap(), "--text", "good"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("head.bias") && err.contains("NaN or infinite"),
        "{err}"
    );
}

#[test]
fn absurd_sizes_are_refused_before_anything_is_written() {
    let dir = temp_dir("sizes");
    let cfg = config(&dir, "out");
    for (set, key) in [
        ("model.hidden_size=10000000", "model.hidden_size"),
        ("data.num_train=1000000000000", "data.num_train"),
        ("train.batch_size=100000000", "train.batch_size"),
    ] {
        let o = run_exp(&[cfg.to_str().unwrap(), "--set", set]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{set}: {err}");
        assert!(
            err.contains("needs an estimated") && err.contains(&format!("lower {key}")),
            "{set}: {err}"
        );
        assert!(!dir.join("out").exists(), "{set}: wrote results");
    }
}

#[test]
fn bad_paths_names_and_values_exit_2() {
    let dir = temp_dir("exit2");
    let cfg = config(&dir, "out");
    let c = cfg.to_str().unwrap();
    std::fs::write(dir.join("a-file"), "x").unwrap();
    let under_file = format!(
        "experiment.out_dir={:?}",
        dir.join("a-file/sub").to_str().unwrap()
    );
    let long = format!("experiment.name={}", "n".repeat(300));
    for (set, want) in [
        (under_file.as_str(), "a-file"),
        (long.as_str(), "experiment.name: is 300 bytes long"),
        (
            "experiment.name=\"a\\u0000b\"",
            "experiment.name: must be a non-empty folder name",
        ),
        (
            "train.class_weights=[0, 0]",
            "train.class_weights: at least one weight must be > 0",
        ),
        ("data.max_vocab=0", "data.max_vocab: must be at least 1"),
    ] {
        let o = run_exp(&[c, "--set", set]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{set}: {err}");
        assert!(err.contains(want), "{set}: {err}");
    }
    // A duplicate key names itself.
    std::fs::write(
        dir.join("dup.toml"),
        "[train]\nlr = 0.1\nepochs = 2\nlr = 0.2\n",
    )
    .unwrap();
    let o = run_exp(&[dir.join("dup.toml").to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("dup.toml:4:1: train.lr:"), "{err}");
    assert!(!dir.join("out").exists());
}

/// A write that fails for want of space (here a file-size limit, EFBIG, which needs no root)
/// names the file.
#[test]
fn a_failed_write_names_the_file() {
    let dir = temp_dir("full");
    let cfg = config(&dir, "out");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 16; trap '' XFSZ; exec {} {} --set model.hidden_size=64",
            env!("CARGO_BIN_EXE_run-exp"),
            cfg.display()
        ))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(".safetensors") || err.contains("metrics.jsonl") || err.contains("events.out"),
        "{err}"
    );
    assert!(
        err.contains("too large") || err.contains("No space"),
        "{err}"
    );
}

/// Real signals from outside at moments the test does not choose (once a few metrics rows
/// are on disk): `kill -9` and `kill -TERM`, then `--resume`, end where the straight run ends.
#[test]
fn real_kills_at_unchosen_moments_then_resume_equal_a_straight_run() {
    let dir = temp_dir("real-kill");
    let longer = |out: &str| {
        let cfg = config(&dir, out);
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("num_train = 800", "num_train = 6400")
            .replace("hidden_size = 16", "hidden_size = 64");
        std::fs::write(&cfg, text).unwrap();
        cfg
    };
    let cfg = longer("straight");
    let o = run_exp(&[cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let straight = run_dir(&dir.join("straight"));
    for (name, signal, code) in [("kill9", "-KILL", None), ("term", "-TERM", Some(143))] {
        let cfg = longer(name);
        let mut child = Command::new(env!("CARGO_BIN_EXE_run-exp"))
            .arg(&cfg)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for the first epoch's rows, then signal.
        let t0 = std::time::Instant::now();
        loop {
            let rows = std::fs::read_dir(dir.join(name).join("tiny"))
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("metrics.jsonl")).ok())
                .map_or(0, |t| t.lines().count());
            if rows >= 60 || t0.elapsed().as_secs() > 60 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let pid = child.id().to_string();
        let _ = Command::new("kill").args([signal, &pid]).status();
        let status = child.wait().unwrap();
        let run = run_dir(&dir.join(name));
        // (The signal lands about step 120 of the run's 600.)
        assert_eq!(status.code(), code, "{name}");
        let o = run_exp(&["--resume", run.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        assert!(
            std::fs::read(run.join(checkpoint::LAST)).unwrap()
                == std::fs::read(straight.join(checkpoint::LAST)).unwrap(),
            "{name}: final weights differ from the straight run's"
        );
        assert_eq!(
            metrics(&run).keys().collect::<Vec<_>>(),
            metrics(&straight).keys().collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(
            tb_curve(&run, "train/loss"),
            tb_curve(&straight, "train/loss"),
            "{name}"
        );
    }
}
