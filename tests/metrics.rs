//! The scores video papers report, end to end: top-5 accuracy (from 6 classes on) and mean
//! class accuracy in metrics.jsonl, summary.json and `eval`.

mod common;

use std::path::PathBuf;

use common::{run_exp, stderr, temp_dir};

#[test]
fn six_classes_report_top5_and_mean_class_accuracy() {
    let dir = temp_dir("top5");
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/video-lstm.toml");
    let out = format!("experiment.out_dir={}", dir.display());
    let run = |classes: &str, name: &str| {
        let o = run_exp(&[
            config.to_str().unwrap(),
            "--set",
            &out,
            "--set",
            &format!("experiment.name={name}"),
            "--set",
            &format!("data.num_classes={classes}"),
            "--set",
            "data.num_train=120",
            "--set",
            "data.num_valid=60",
            "--set",
            "data.num_test=60",
            "--set",
            "train.epochs=1",
            "--set",
            "log.progress=false",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let run_dir = dir.join(name).join("run-001");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
                .unwrap();
        (run_dir, summary)
    };
    let (run_dir, s) = run("6", "six");
    let (acc, top5) = (
        s["test_acc"].as_f64().unwrap(),
        s["test_top5"].as_f64().unwrap(),
    );
    assert!(top5 >= acc && top5 <= 1.0, "top-5 {top5} below top-1 {acc}");
    let scores = &s["test_scores"];
    let recall: Vec<f64> = serde_json::from_value(scores["recall"].clone()).unwrap();
    let support: Vec<usize> = serde_json::from_value(scores["support"].clone()).unwrap();
    let present: Vec<f64> = recall
        .iter()
        .zip(&support)
        .filter(|(_, &n)| n > 0)
        .map(|(r, _)| *r)
        .collect();
    let mean = present.iter().sum::<f64>() / present.len() as f64;
    let reported = s["test_mean_class_acc"].as_f64().unwrap();
    assert!((reported - mean).abs() < 1e-12, "{reported} against {mean}");
    let rows = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let epoch: serde_json::Value = rows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["split"] == "epoch")
        .unwrap();
    assert!(epoch["val_top5"].as_f64().is_some() && epoch["val_mean_class_acc"].as_f64().is_some());
    // eval prints them too.
    let o = run_exp(&[
        "eval",
        run_dir.to_str().unwrap(),
        "--data",
        config.to_str().unwrap(),
        "--set",
        "data.num_classes=6",
        "--set",
        "data.num_valid=60",
        "--set",
        "data.num_test=60",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("top-5") && stderr(&o).contains("mean class acc"),
        "{}",
        stderr(&o)
    );
    // Two classes: top-5 would always be 1, and is not reported.
    let (_, s) = run("2", "two");
    assert!(s.get("test_top5").is_none() && s["test_mean_class_acc"].as_f64().is_some());
}
