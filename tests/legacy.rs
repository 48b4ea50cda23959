//! Folders made by an earlier version still read: tests/fixtures/before-519210e holds a run
//! folder and a sweep folder written by the code at commit 519210e (run.toml, sweep.toml
//! there; picture files dropped, they are redrawn from metrics.jsonl). `--resume`, `predict`,
//! `eval`, `summarize` and a rerun of the sweep must take them as they are.

mod common;
use common::{run_exp, stderr, temp_dir};

use std::path::{Path, PathBuf};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/before-519210e");

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A copy of the fixture's run folder (resuming writes into it).
fn old_run(dir: &Path) -> PathBuf {
    let run = dir.join("tiny/run-001");
    copy_tree(&Path::new(FIXTURE).join("run"), &run);
    run
}

#[test]
fn an_old_run_folder_predicts_evaluates_and_resumes() {
    let dir = temp_dir("old-run");
    let run = old_run(&dir);
    let before = json(&run.join("summary.json"));

    let o = run_exp(&[
        "predict",
        run.to_str().unwrap(),
        "--text",
        "the movie was good",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let p: f64 = ["negative", "positive"]
        .iter()
        .map(|c| line["probs"][c].as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-5, "{line}");
    // How much of each text the run could read: "zzz" is not in its vocabulary.
    let o = run_exp(&[
        "predict",
        run.to_str().unwrap(),
        "--text",
        "the zzz",
        "--text",
        "zzz qqq",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shares: Vec<f64> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["unknown_share"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(shares, [0.5, 1.0]);
    // An empty text is refused: there is nothing to classify.
    let o = run_exp(&[
        "predict",
        run.to_str().unwrap(),
        "--text",
        "good",
        "--text",
        " ",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("text 2: is empty"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    // eval on the run's own test split, written out as a table: the accuracy the run recorded.
    let config = rnnlab::Config::load(&run.join("config.toml"), &[]).unwrap();
    let data = rnnlab::data::load(&config.data, config.experiment.seed, 1).unwrap();
    let test = data.test.as_ref().unwrap();
    let mut rows = String::from("sentence\tlabel\n");
    for (seq, &y) in test.tokens().iter().zip(&test.labels) {
        let words: Vec<&str> = seq
            .iter()
            .map(|&t| data.vocab.as_ref().unwrap().itos[t as usize].as_str())
            .collect();
        rows.push_str(&format!("{}\t{y}\n", words.join(" ")));
    }
    let table = dir.join("test.tsv");
    std::fs::write(&table, rows).unwrap();
    let other = dir.join("other.toml");
    std::fs::write(
        &other,
        format!(
            "[data]\nsource = \"file\"\ntest = {:?}\n",
            table.to_str().unwrap()
        ),
    )
    .unwrap();
    let o = run_exp(&[
        "eval",
        run.to_str().unwrap(),
        "--data",
        other.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(line["examples"], 50);
    assert_eq!(line["unknown_share"], 0.0, "{line}");
    assert_eq!(line["scores"]["acc"], before["test_acc"], "{line}");

    // Resumed for one more epoch: it starts from the old checkpoint's step.
    let o = run_exp(&["--resume", run.to_str().unwrap(), "--set", "train.epochs=3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("from step 14 (epoch 3)"),
        "{}",
        stderr(&o)
    );
    let after = json(&run.join("summary.json"));
    assert_eq!(after["epochs_done"], 3);
    assert_eq!(after["steps"], 21);
    // A video config for this text run: refused naming the file, in words.
    let video = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/video-lstm.toml");
    let o = run_exp(&["eval", run.to_str().unwrap(), "--data", video]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("--data {video}: data.source: the run reads text")),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_old_sweep_folder_summarizes_and_reruns_as_final() {
    let dir = temp_dir("old-sweep");
    let root = dir.join("out/tiny-sweep");
    copy_tree(&Path::new(FIXTURE).join("sweep"), &root);
    let o = run_exp(&["summarize", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for id in ["982a5b40", "ffd2598c", "a7859e34", "ed66d0fa"] {
        assert!(out.contains(id), "{out}");
    }
    assert!(root.join("summary.csv").is_file());
    // A path that does not exist is said to be missing, not "not a sweep folder".
    let o = run_exp(&["summarize", dir.join("nowhere").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("nowhere: no such folder"),
        "{}",
        stderr(&o)
    );
    // The sweep file run again over the old folder: its 8-hex trial folders are its trials,
    // every one final, nothing trains.
    let file = dir.join("sweep.toml");
    std::fs::copy(Path::new(FIXTURE).join("sweep.toml"), &file).unwrap();
    let out_dir = format!("experiment.out_dir={:?}", dir.join("out").to_str().unwrap());
    let o = run_exp(&[file.to_str().unwrap(), "--set", &out_dir]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("4 trials, 4 final already, 0 to run here"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// summary.json is one type, written by the run and read back by resumes and sweeps: an old
/// file reads, and a run that never validated (its best validation loss infinite, written as
/// null) reads back with NaN, not an error.
#[test]
fn summary_json_reads_back_as_the_type_that_wrote_it() {
    use rnnlab::summary::{Status, Summary};
    let old = Summary::read(&Path::new(FIXTURE).join("run")).unwrap();
    let raw = json(&Path::new(FIXTURE).join("run/summary.json"));
    assert_eq!(old.status, Status::Completed);
    assert_eq!(old.epochs_done as u64, raw["epochs_done"].as_u64().unwrap());
    assert_eq!(old.steps as u64, raw["steps"].as_u64().unwrap());
    assert_eq!(old.best_val_loss, raw["best_val_loss"].as_f64().unwrap());
    assert_eq!(
        old.test_scores.as_ref().unwrap().acc,
        raw["test_acc"].as_f64().unwrap()
    );
    let dir = temp_dir("summary-type");
    let never = Summary {
        status: Status::Diverged,
        best_epoch: None,
        best_val_acc: f64::NEG_INFINITY,
        best_val_loss: f64::INFINITY,
        ..old
    };
    rnnlab::checkpoint::save_json(&dir.join("summary.json"), &never).unwrap();
    assert!(json(&dir.join("summary.json"))["best_val_loss"].is_null());
    let back = Summary::read(&dir).unwrap();
    assert_eq!(back.status, Status::Diverged);
    assert!(back.best_val_loss.is_nan() && back.best_epoch.is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
