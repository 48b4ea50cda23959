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

/// `[eval] clips = 3`: each test clip is scored by the mean of its three views' class
/// probabilities. With 12 frames and 4 per view, view v takes frames v, 3 + v, 6 + v, 9 + v
/// (segment s's frame floor((s + (v + 1/2) / 3) * 12 / 4) = 3s + v); the test computes each
/// view alone, averages by hand, and checks the run's test accuracy and `eval --set
/// eval.clips=3` against it.
#[test]
fn test_clips_are_scored_by_their_views_mean_probabilities() {
    use rnnlab::data::{Inputs, Split};
    let dir = temp_dir("views");
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/video-lstm.toml");
    let out = format!("experiment.out_dir={}", dir.display());
    let sets = [
        "data.frames=12",
        "data.frames_per_clip=4",
        "data.num_train=200",
        "data.num_valid=60",
        "data.num_test=50",
        "train.epochs=2",
        "log.progress=false",
    ];
    let mut args = vec![config.to_str().unwrap(), "--set", &out];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let o = run_exp(&[&args[..], &["--set", "eval.clips=3"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let run_dir = dir.join("video-lstm/run-001");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    let run = rnnlab::checkpoint::load_run(
        &run_dir,
        rnnlab::checkpoint::Weights::Best,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let seed = run.config.experiment.seed;
    // Every frame of each test clip, and the three views cut from them by hand.
    let mut every = run.config.data.clone();
    every.frames_per_clip = None;
    let full = rnnlab::data::load(&every, seed, 1).unwrap().test.unwrap();
    let Inputs::Frames { shape, clips } = &full.inputs else {
        panic!("frames expected")
    };
    let px = shape.pixels();
    let mut views = Vec::new();
    for i in 0..full.len() {
        let clip = clips.get(i).unwrap();
        assert_eq!(clip.len(), 12 * px);
        for v in 0..3 {
            let frames = (0..4).map(|seg| 3 * seg + v);
            views.push(
                frames
                    .flat_map(|f| clip[f * px..(f + 1) * px].to_vec())
                    .collect::<Vec<u8>>(),
            );
        }
    }
    let one_each = Split {
        labels: vec![0; views.len()],
        inputs: Inputs::Frames {
            shape: *shape,
            clips: views.into(),
        },
    };
    let cpu = candle_core::Device::Cpu;
    let alone = rnnlab::eval::view_probabilities(&run.model, &one_each, 32, &cpu, None).unwrap();
    let by_hand: Vec<Vec<f32>> = alone
        .chunks(3)
        .map(|three| {
            (0..three[0].len())
                .map(|k| (three[0][k] + three[1][k] + three[2][k]) / 3.0)
                .collect()
        })
        .collect();
    // The test split as the run loaded it: three views a clip, averaged.
    let test = rnnlab::data::load(&run.config.data, seed, 3)
        .unwrap()
        .test
        .unwrap();
    assert!((0..test.len()).all(|i| test.inputs.steps(i) == 12));
    let averaged = rnnlab::eval::view_probabilities(&run.model, &test, 32, &cpu, Some(4)).unwrap();
    for (a, b) in averaged.iter().zip(&by_hand) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} against {b:?}");
        }
    }
    let argmax = |p: &Vec<f32>| (p[1] > p[0]) as u32;
    let hits = by_hand
        .iter()
        .zip(&full.labels)
        .filter(|(p, &y)| argmax(p) == y)
        .count();
    let acc = hits as f64 / full.len() as f64;
    assert_eq!(s["test_acc"].as_f64().unwrap(), acc);
    // eval scores the test split the same way, and its validation split by one view.
    let o = run_exp(
        &[
            &[
                "eval",
                run_dir.to_str().unwrap(),
                "--data",
                config.to_str().unwrap(),
            ][..],
            &sets
                .iter()
                .take(5)
                .flat_map(|s| ["--set", s])
                .collect::<Vec<_>>()[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let test_line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["split"] == "test")
        .unwrap();
    assert_eq!(test_line["scores"]["acc"].as_f64().unwrap(), acc);
    assert!(stderr(&o).contains("3 views each"), "{}", stderr(&o));
}
