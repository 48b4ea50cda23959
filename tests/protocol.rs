//! The official UCF101 / HMDB51 splits (`data.protocol`) on fake trees written in the real
//! split files' formats (CRLF line ends as UCF101 ships them, HMDB51's trailing spaces).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{stderr, temp_dir};
use rnnlab::config::Protocol;
use rnnlab::data::protocol::{self, group};

const CLASSES: [&str; 3] = ["Brighten", "Darken", "Hold"];

/// A clip folder of four 8 x 8 grey frames whose brightness goes up, down or stays.
fn write_frames(dir: &Path, class: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..4u8 {
        let l = match class {
            0 => 40 + 50 * i,
            1 => 190 - 50 * i,
            _ => 110,
        };
        image::GrayImage::from_pixel(8, 8, image::Luma([l]))
            .save(dir.join(format!("{:05}.png", i + 1)))
            .unwrap();
    }
}

/// UCF101's layout: ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt (CRLF), and a frames
/// tree root/<Class>/v_<Class>_gNN_cMM/. Training groups g08-g13, test g01-g02, two clips each.
fn ucf101(dir: &Path) -> (PathBuf, PathBuf) {
    let (root, ann) = (dir.join("UCF-101"), dir.join("ucfTrainTestlist"));
    std::fs::create_dir_all(&ann).unwrap();
    let mut ind = String::new();
    let (mut train, mut test) = (String::new(), String::new());
    for (c, name) in CLASSES.iter().enumerate() {
        ind += &format!("{} {name}\r\n", c + 1);
        for g in [1, 2, 8, 9, 10, 11, 12, 13] {
            for clip in 1..=2 {
                let video = format!("{name}/v_{name}_g{g:02}_c{clip:02}.avi");
                write_frames(&root.join(&video).with_extension(""), c);
                if g <= 2 {
                    test += &format!("{video}\r\n");
                } else {
                    train += &format!("{video} {}\r\n", c + 1);
                }
            }
        }
    }
    std::fs::write(ann.join("classInd.txt"), ind).unwrap();
    std::fs::write(ann.join("trainlist01.txt"), train).unwrap();
    std::fs::write(ann.join("testlist01.txt"), test).unwrap();
    (root, ann)
}

/// Trains a small frames model from `config` ([data] keys given by `sets`).
fn run(dir: &Path, sets: &[String]) -> Output {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[experiment]\nname = \"video-frames\"\n[data]\nsource = \"frames\"\n[model]\nframe_encoder = \"cnn\"\n",
    )
    .unwrap();
    let mut a: Vec<String> = vec![config.display().to_string()];
    let base = [
        format!("experiment.out_dir={}", dir.join("results").display()),
        "data.height=8".into(),
        "data.width=8".into(),
        "data.channels=1".into(),
        "model.conv_channels=[4]".into(),
        "model.hidden_size=8".into(),
        "train.epochs=2".into(),
        "log.progress=false".into(),
    ];
    for s in base.iter().chain(sets) {
        a.push("--set".into());
        a.push(s.clone());
    }
    Command::new(env!("CARGO_BIN_EXE_run-exp"))
        .args(a)
        .output()
        .unwrap()
}

#[test]
fn ucf101_splits_validate_by_group_and_train_end_to_end() {
    let dir = temp_dir("ucf101");
    let (root, ann) = ucf101(&dir);
    let listed = protocol::read(Protocol::Ucf101, &ann, 1, 0.2, 7).unwrap();
    assert_eq!(listed.classes, CLASSES);
    assert_eq!(listed.test.len(), 3 * 2 * 2);
    assert_eq!(listed.train.len() + listed.valid.len(), 3 * 6 * 2);
    // No group on both sides; every class validated (one of its six groups: 0.2 * 6 rounded).
    let groups = |e: &[protocol::Entry]| -> BTreeSet<String> {
        e.iter().map(|e| group(&e.path).unwrap()).collect()
    };
    let (tg, vg) = (groups(&listed.train), groups(&listed.valid));
    assert!(tg.is_disjoint(&vg), "{vg:?} also in training");
    assert_eq!(vg.len(), 3);
    let labels: BTreeSet<u32> = listed.valid.iter().map(|e| e.label).collect();
    assert_eq!(labels.len(), 3);
    // The test list's labels come from the class folders.
    assert!(listed
        .test
        .iter()
        .all(|e| e.path.starts_with(CLASSES[e.label as usize])));

    let sets = [
        "data.protocol=\"ucf101\"".to_string(),
        format!("data.root={}", root.display()),
        format!("data.annotations={}", ann.display()),
        "data.val_fraction=0.2".into(),
    ];
    let o = run(&dir, &sets);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &stderr(&o);
    assert!(
        said.contains("ucf101 split 1: 30 training, 6 validation"),
        "{said}"
    );
    let run_dir = dir.join("results/video-frames/run-001");
    let classes: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("classes.json")).unwrap())
            .unwrap();
    assert_eq!(classes, CLASSES);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert!(summary["test_acc"].as_f64().is_some(), "{summary}");
}

#[test]
fn hmdb51_splits_read_roles_per_class() {
    let dir = temp_dir("hmdb51");
    let ann = dir.join("testTrainMulti_7030_splits");
    std::fs::create_dir_all(&ann).unwrap();
    for name in CLASSES {
        // Six videos: 1 train (x3), 2 test (x2), 0 unused; HMDB51's trailing space kept.
        let roles = ["1", "1", "2", "0", "1", "2"];
        let text: String = roles
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{name}_clip_{i}.avi {r} \n"))
            .collect();
        std::fs::write(ann.join(format!("{name}_test_split2.txt")), text).unwrap();
        std::fs::write(ann.join(format!("{name}_test_split1.txt")), "x.avi 1\n").unwrap();
    }
    let listed = protocol::read(Protocol::Hmdb51, &ann, 2, 0.34, 3).unwrap();
    assert_eq!(listed.classes, CLASSES);
    assert_eq!(listed.test.len(), 3 * 2);
    assert_eq!(listed.train.len(), 3 * 2);
    assert_eq!(listed.valid.len(), 3);
    assert!(listed.valid.iter().all(|v| !listed.train.contains(v)));
    let first = &listed.test[0];
    assert_eq!(first.path, Path::new("Brighten/Brighten_clip_2.avi"));
    assert_eq!(first.at.1, 3);
    // A role that is none of 0, 1, 2 names its file and line.
    std::fs::write(ann.join("Hold_test_split3.txt"), "a.avi 1\nb.avi 7\n").unwrap();
    std::fs::write(ann.join("Darken_test_split3.txt"), "c.avi 2\n").unwrap();
    let e = protocol::read(Protocol::Hmdb51, &ann, 3, 0.2, 3)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Hold_test_split3.txt:2") && e.contains("\"7\""),
        "{e}"
    );
}

#[test]
fn bad_protocol_configs_and_files_are_named() {
    let dir = temp_dir("protocol-bad");
    let (root, ann) = ucf101(&dir);
    let with = |extra: &[String]| -> Output {
        let mut sets = vec![
            "data.protocol=\"ucf101\"".to_string(),
            format!("data.root={}", root.display()),
            format!("data.annotations={}", ann.display()),
        ];
        sets.extend(extra.iter().cloned());
        run(&dir, &sets)
    };
    let refused = |o: &Output, want: &[&str]| {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
        for w in want {
            assert!(stderr(o).contains(w), "{w} not in {}", stderr(o));
        }
    };
    refused(
        &with(&["data.train=somewhere".into()]),
        &["data.train", "remove train"],
    );
    refused(
        &with(&["data.split=4".into()]),
        &["data.split", "1, 2 or 3"],
    );
    refused(
        &run(&dir, &[format!("data.root={}", root.display())]),
        &["data.root", "protocol"],
    );
    // Split 2's files are absent.
    refused(&with(&["data.split=2".into()]), &["trainlist02.txt"]);
    // A listed video without its frames folder.
    std::fs::remove_dir_all(root.join("Hold/v_Hold_g09_c01")).unwrap();
    refused(&with(&[]), &["trainlist01.txt:", "v_Hold_g09_c01"]);
    // An id that disagrees with the class folder.
    let list = ann.join("trainlist01.txt");
    let text = std::fs::read_to_string(&list)
        .unwrap()
        .replacen(" 1\r\n", " 2\r\n", 1);
    std::fs::write(&list, text).unwrap();
    refused(&with(&[]), &["trainlist01.txt:1", "id 1"]);
}

/// The shipped UCF101 config reads as written, and without the dataset beside it the run stops
/// with exit 2 (naming what is missing: ffmpeg, or the split files), writing nothing.
#[test]
fn the_shipped_ucf101_config_reads_and_names_what_is_missing() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/ucf101-resnet18.toml");
    let cfg = rnnlab::Config::load(&path, &[]).unwrap();
    assert_eq!(cfg.eval.clips, 10);
    assert_eq!(cfg.data.protocol, Some(rnnlab::config::Protocol::Ucf101));
    let dir = common::temp_dir("shipped");
    let out = format!("experiment.out_dir={}", dir.join("results").display());
    let o = common::run_exp(&[path.to_str().unwrap(), "--set", &out]);
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    let said = common::stderr(&o);
    assert!(
        said.contains("ffmpeg") || said.contains("ucfTrainTestlist"),
        "{said}"
    );
    assert!(!dir.join("results").exists());
}
