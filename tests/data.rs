//! The file source: real SST-2 from ../shared (skipped, saying so, where ../shared is absent),
//! string labels, CSV, a carved validation split, and malformed rows named by file:line.

use std::path::{Path, PathBuf};

use rnnlab::config::{Column, Data, Source};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rnnlab-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn file_cfg(train: &Path) -> Data {
    Data {
        source: Source::File,
        train: Some(train.to_path_buf()),
        ..Data::default()
    }
}

#[test]
fn sst2_from_shared_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/sst2");
    if !dir.join("train.tsv").exists() {
        // Straight to stderr: libtest hides eprintln! output of passing tests.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED sst2_from_shared_files: {} is absent (it exists in CI)",
            dir.display()
        );
        return;
    }
    let cfg = Data {
        valid: Some(dir.join("dev.tsv")),
        test: Some(dir.join("test.tsv")),
        ..file_cfg(&dir.join("train.tsv"))
    };
    let ds = rnnlab::data::load(&cfg, 0).unwrap();
    assert_eq!(ds.train.len(), 60_614);
    assert_eq!(ds.valid.len(), 6_735);
    assert_eq!(ds.test.as_ref().unwrap().len(), 872);
    assert_eq!(ds.classes, vec!["0", "1"]);
    assert_eq!(&ds.vocab.itos[..2], &["<pad>", "<unk>"]);
    // "it 's a charming and often affecting journey . " -> known words, label 1.
    let first = &ds.test.as_ref().unwrap().inputs[0];
    assert_eq!(first.len(), 9);
    assert_eq!(ds.vocab.itos[first[3] as usize], "charming");
    assert_eq!(ds.test.as_ref().unwrap().labels[0], 1);
}

#[test]
fn string_labels_csv_and_carved_validation() {
    let dir = temp_dir("csv");
    let path = dir.join("reviews.csv");
    let mut text = String::from("id,review,mood\n");
    for i in 0..100 {
        let mood = ["happy", "angry", "calm"][i % 3];
        text.push_str(&format!("{i},\"a {mood} review, number {i}\",{mood}\n"));
    }
    std::fs::write(&path, text).unwrap();
    let cfg = Data {
        text_column: Column::Name("review".into()),
        label_column: Column::Index(2),
        val_fraction: 0.2,
        ..file_cfg(&path)
    };
    let ds = rnnlab::data::load(&cfg, 5).unwrap();
    assert_eq!(ds.classes, vec!["angry", "calm", "happy"]);
    assert_eq!((ds.train.len(), ds.valid.len()), (80, 20));
    // Label ids follow the sorted names: "happy" rows carry id 2.
    let happy = ds.vocab.id("happy");
    for (seq, &l) in ds.train.inputs.iter().zip(&ds.train.labels) {
        assert_eq!(seq.contains(&happy), l == 2);
    }
    // Validation words unseen in train are <unk>, never new ids.
    assert!(ds
        .valid
        .inputs
        .iter()
        .flatten()
        .all(|&t| (t as usize) < ds.vocab.len()));
    // The carve-out is seeded.
    assert_eq!(rnnlab::data::load(&cfg, 5).unwrap().valid, ds.valid);
}

#[test]
fn malformed_rows_name_file_and_line() {
    let dir = temp_dir("bad");
    let path = dir.join("t.tsv");
    std::fs::write(&path, "sentence\tlabel\ngood\t1\nno label here\nbad\t0\n").unwrap();
    let err = rnnlab::data::load(&file_cfg(&path), 0).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: expected at least 2 tab-separated fields, found 1",
            path.display()
        )
    );
    assert!(err.is_bad_input());
    std::fs::write(&path, "sentence\tlabel\ngood\t1\nbad\t-1\n").unwrap();
    let err = rnnlab::data::load(&file_cfg(&path), 0).err().unwrap();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3: label -1", path.display())),
        "{err}"
    );
    let cfg = Data {
        text_column: Column::Name("text".into()),
        ..file_cfg(&path)
    };
    let err = rnnlab::data::load(&cfg, 0).err().unwrap();
    assert!(
        err.to_string()
            .contains("data.text_column = \"text\" is not a column"),
        "{err}"
    );
}
