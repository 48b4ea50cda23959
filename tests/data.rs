//! The file and hub sources: real SST-2 from ../shared (skipped, saying so, where ../shared is
//! absent), every table format giving the same dataset, headers, string labels and class names,
//! a carved validation split, malformed rows named by file:line (or skipped and counted), and the
//! hub path against a cache folder laid out as hf-hub lays it out.

mod common;
use common::temp_dir;

use std::path::{Path, PathBuf};

use polars::prelude::Column as PlColumn;
use rnnlab::config::{Column, Data, Source, TruncationSide};

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
    let ds = rnnlab::data::load(&cfg, 0, 1).unwrap();
    assert_eq!(ds.train.len(), 60_614);
    assert_eq!(ds.valid.len(), 6_735);
    assert_eq!(ds.test.as_ref().unwrap().len(), 872);
    assert_eq!(ds.classes, vec!["0", "1"]);
    assert_eq!(&ds.vocab.as_ref().unwrap().itos[..2], &["<pad>", "<unk>"]);
    // "it 's a charming and often affecting journey . " -> known words, label 1.
    let first = &ds.test.as_ref().unwrap().tokens()[0];
    assert_eq!(first.len(), 9);
    assert_eq!(
        ds.vocab.as_ref().unwrap().itos[first[3] as usize],
        "charming"
    );
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
    let ds = rnnlab::data::load(&cfg, 5, 1).unwrap();
    assert_eq!(ds.classes, vec!["angry", "calm", "happy"]);
    assert_eq!((ds.train.len(), ds.valid.len()), (80, 20));
    // Label ids follow the sorted names: "happy" rows carry id 2.
    let happy = ds.vocab.as_ref().unwrap().id("happy");
    for (seq, &l) in ds.train.tokens().iter().zip(&ds.train.labels) {
        assert_eq!(seq.contains(&happy), l == 2);
    }
    // Validation words unseen in train are <unk>, never new ids.
    assert!(ds
        .valid
        .tokens()
        .iter()
        .flatten()
        .all(|&t| (t as usize) < ds.vocab.as_ref().unwrap().len()));
    // The carve-out is seeded.
    assert_eq!(rnnlab::data::load(&cfg, 5, 1).unwrap().valid, ds.valid);
}

#[test]
fn malformed_rows_name_file_and_line() {
    let dir = temp_dir("bad");
    let path = dir.join("t.tsv");
    std::fs::write(&path, "sentence\tlabel\ngood\t1\nno label here\nbad\t0\n").unwrap();
    let err = rnnlab::data::load(&file_cfg(&path), 0, 1).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: expected 2 tab-separated fields (the header's count), found 1 (set data.skip_bad_rows = true to skip such rows)",
            path.display()
        )
    );
    assert!(err.is_bad_input());
    std::fs::write(&path, "sentence\tlabel\ngood\t1\nbad\t-1\nfine\t0\n").unwrap();
    let with_valid = Data {
        valid: Some(path.clone()),
        ..file_cfg(&path)
    };
    let err = rnnlab::data::load(&with_valid, 0, 1).err().unwrap();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3: label -1", path.display())),
        "{err}"
    );
    let cfg = Data {
        text_column: Column::Name("text".into()),
        ..file_cfg(&path)
    };
    let err = rnnlab::data::load(&cfg, 0, 1).err().unwrap();
    assert!(
        err.to_string()
            .contains("data.text_column = \"text\" is not a column"),
        "{err}"
    );
}

/// The same eight labelled texts in every format.
const ROWS: [(&str, &str); 8] = [
    ("a fine, warm film", "pos"),
    ("dull and \"long\"", "neg"),
    ("warm and fine", "pos"),
    ("long, dull, long", "neg"),
    ("fine acting", "pos"),
    ("a dull plot", "neg"),
    ("warm", "pos"),
    ("long", "neg"),
];

fn write_parquet(path: &Path, cols: Vec<polars::prelude::Column>) {
    use polars::prelude::*;
    let mut df = DataFrame::new_infer_height(cols).unwrap();
    let f = std::fs::File::create(path).unwrap();
    ParquetWriter::new(f).finish(&mut df).unwrap();
}

fn text_label_columns(rows: &[(&str, &str)]) -> Vec<polars::prelude::Column> {
    use polars::prelude::*;
    let texts: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let labels: Vec<&str> = rows.iter().map(|r| r.1).collect();
    vec![
        Column::new("text".into(), texts),
        Column::new("label".into(), labels),
    ]
}

#[test]
fn every_format_gives_the_same_dataset() {
    let dir = temp_dir("formats");
    let tsv = dir.join("t.tsv");
    let csv = dir.join("t.csv");
    let jsonl = dir.join("t.jsonl");
    let parquet = dir.join("t.parquet");
    let headless = dir.join("headless.tsv");
    let mut t = String::from("text\tlabel\n");
    let mut c = String::from("text,label\n");
    let mut j = String::new();
    let mut h = String::new();
    for (text, label) in ROWS {
        t.push_str(&format!("{text}\t{label}\n"));
        c.push_str(&format!("\"{}\",{label}\n", text.replace('"', "\"\"")));
        j.push_str(&format!(
            "{}\n",
            serde_json::json!({"label": label, "text": text})
        ));
        h.push_str(&format!("{label}\t{text}\n"));
    }
    std::fs::write(&tsv, t).unwrap();
    std::fs::write(&csv, c).unwrap();
    std::fs::write(&jsonl, j).unwrap();
    std::fs::write(&headless, h).unwrap();
    write_parquet(&parquet, text_label_columns(&ROWS));
    let cfg = |p: &Path| Data {
        valid: Some(p.to_path_buf()),
        text_column: Column::Name("text".into()),
        ..file_cfg(p)
    };
    let reference = rnnlab::data::load(&cfg(&tsv), 0, 1).unwrap();
    assert_eq!(reference.classes, vec!["neg", "pos"]);
    assert_eq!(reference.train.labels, vec![1, 0, 1, 0, 1, 0, 1, 0]);
    for p in [&csv, &jsonl, &parquet] {
        let ds = rnnlab::data::load(&cfg(p), 0, 1).unwrap();
        assert_eq!(ds.train, reference.train, "{}", p.display());
        assert_eq!(ds.vocab, reference.vocab, "{}", p.display());
        assert_eq!(ds.classes, reference.classes, "{}", p.display());
    }
    let no_header = Data {
        header: false,
        text_column: Column::Index(1),
        label_column: Column::Index(0),
        valid: Some(headless.clone()),
        ..file_cfg(&headless)
    };
    assert_eq!(
        rnnlab::data::load(&no_header, 0, 1).unwrap().train,
        reference.train
    );
    // Class names given: string labels follow their order (pos = 0 here).
    let named = Data {
        class_names: Some(vec!["pos".into(), "neg".into()]),
        ..cfg(&tsv)
    };
    let ds = rnnlab::data::load(&named, 0, 1).unwrap();
    assert_eq!(ds.train.labels, vec![0, 1, 0, 1, 0, 1, 0, 1]);
    // Truncation keeps the start or the end.
    let cut = |side| {
        let d = Data {
            max_len: 2,
            truncation_side: side,
            ..cfg(&tsv)
        };
        let ds = rnnlab::data::load(&d, 0, 1).unwrap();
        ds.train.tokens()[0]
            .iter()
            .map(|&i| ds.vocab.as_ref().unwrap().itos[i as usize].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(cut(TruncationSide::Right), vec!["a", "fine"]);
    assert_eq!(cut(TruncationSide::Left), vec!["warm", "film"]);
}

#[test]
fn malformed_rows_in_each_format_and_skip_bad_rows() {
    let dir = temp_dir("bad-formats");
    let jsonl = dir.join("t.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\": \"good\", \"label\": 1}\n{\"text\": \"bad\", \"label\": 0}\n{\"text\": \"oops\"\n{\"text\": 7, \"label\": 0}\n",
    )
    .unwrap();
    // Validated on the same rows (a carved split of two rows would miss a class).
    let cfg = Data {
        text_column: Column::Name("text".into()),
        valid: Some(jsonl.clone()),
        ..file_cfg(&jsonl)
    };
    let err = rnnlab::data::load(&cfg, 0, 1).err().unwrap().to_string();
    assert!(
        err.starts_with(&format!("{}:3: not JSON", jsonl.display())),
        "{err}"
    );
    let ds = rnnlab::data::load(
        &Data {
            skip_bad_rows: true,
            ..cfg.clone()
        },
        0,
        1,
    )
    .unwrap();
    assert_eq!(ds.train.len(), 2);
    let note = ds.notes.iter().find(|n| n.contains("skipped")).unwrap();
    assert!(
        note.contains("skipped 2 malformed rows (first: line 3: not JSON"),
        "{note}"
    );

    let parquet = dir.join("t.parquet");
    write_parquet(
        &parquet,
        vec![
            PlColumn::new(
                "text".into(),
                [Some("good"), Some("bad"), None, Some("fine")],
            ),
            PlColumn::new("label".into(), [Some(1i64), Some(0), Some(1), None]),
        ],
    );
    let cfg = Data {
        train: Some(parquet.clone()),
        ..cfg
    };
    let err = rnnlab::data::load(&cfg, 0, 1).err().unwrap().to_string();
    assert!(
        err.starts_with(&format!("{}: row 3: missing text", parquet.display())),
        "{err}"
    );
    let ds = rnnlab::data::load(
        &Data {
            skip_bad_rows: true,
            ..cfg
        },
        0,
        1,
    )
    .unwrap();
    assert_eq!(ds.train.len(), 2);
}

/// A cache folder as hf-hub lays one out: datasets--owner--name/{refs/main, snapshots/<rev>/…}.
fn hub_cache(root: &Path, repo: &str, files: Vec<(&str, Vec<polars::prelude::Column>)>) {
    let folder = root.join(format!("datasets--{}", repo.replace('/', "--")));
    let rev = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs/main"), rev).unwrap();
    for (name, cols) in files {
        let path = folder.join("snapshots").join(rev).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_parquet(&path, cols);
    }
}

#[test]
fn hub_source_reads_the_cache_and_skips_an_unlabeled_test_split() {
    let dir = temp_dir("hub");
    let unlabeled = vec![
        PlColumn::new("text".into(), ["warm", "dull"]),
        PlColumn::new("label".into(), [-1i64, -1]),
    ];
    hub_cache(
        &dir,
        "someone/tiny",
        vec![
            ("data/train.parquet", text_label_columns(&ROWS)),
            ("data/valid.parquet", text_label_columns(&ROWS[..4])),
            ("data/test.parquet", unlabeled),
        ],
    );
    // The process environment is shared by the tests in this file: only this test sets it.
    std::env::set_var("HF_HUB_CACHE", &dir);
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let cfg = Data {
        source: Source::Hub,
        repo: Some("someone/tiny".into()),
        train: Some("data/train.parquet".into()),
        valid: Some("data/valid.parquet".into()),
        test: Some("data/test.parquet".into()),
        text_column: Column::Name("text".into()),
        ..Data::default()
    };
    let ds = rnnlab::data::load(&cfg, 0, 1).unwrap();
    assert_eq!((ds.train.len(), ds.valid.len()), (8, 4));
    assert!(ds.test.is_none());
    assert!(
        ds.notes
            .iter()
            .any(|n| n.contains("test metrics are skipped")),
        "{:?}",
        ds.notes
    );
    // A file the cache does not hold: offline, a clear error naming the cache folder.
    let missing = Data {
        train: Some("data/other.parquet".into()),
        ..cfg
    };
    let err = rnnlab::data::load(&missing, 0, 1).err().unwrap();
    assert!(err.is_bad_input());
    let msg = err.to_string();
    assert!(
        msg.starts_with("hf://datasets/someone/tiny@main/data/other.parquet: not in the hub cache")
            && msg.contains("HF_HUB_OFFLINE=1"),
        "{msg}"
    );
}

/// Issue 11's malformed files, each read as what it is or refused at its line.
#[test]
fn malformed_files_are_read_as_written_or_refused_at_their_line() {
    let dir = temp_dir("malformed");
    let load = |name: &str, bytes: &[u8], tweak: &dyn Fn(Data) -> Data| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let valid = dir.join(format!("valid-{name}.tsv"));
        std::fs::write(&valid, b"sentence\tlabel\nok\t0\nfine\t1\n").unwrap();
        let cfg = Data {
            valid: Some(valid),
            ..file_cfg(&path)
        };
        (path.clone(), rnnlab::data::load(&tweak(cfg), 0, 1))
    };
    let same = |c: Data| c;
    let skip = |c: Data| Data {
        skip_bad_rows: true,
        ..c
    };

    // An extra tab: an error at its line (not a class named after the stray field) ...
    let rows = b"sentence\tlabel\ngood\t1\nbad\t0\tstray\nfine\t0\n";
    let (p, r) = load("extra.tsv", rows, &same);
    let e = r.err().unwrap().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:3: expected 2 tab-separated fields (the header's count), found 3",
            p.display()
        )),
        "{e}"
    );
    // ... or skipped and counted.
    let (_, r) = load("extra.tsv", rows, &skip);
    let ds = r.unwrap();
    assert_eq!(
        (ds.train.len(), ds.classes.clone()),
        (2, vec!["0".into(), "1".into()])
    );
    assert!(ds
        .notes
        .iter()
        .any(|n| n.contains("skipped 1 malformed rows (first: line 3")));

    // 0 / 1 / 0.0 / 1.0 are two classes, not four.
    let (_, r) = load(
        "float.tsv",
        b"sentence\tlabel\na\t0\nb\t1.0\nc\t0.0\nd\t1\n",
        &same,
    );
    let ds = r.unwrap();
    assert_eq!(ds.classes, vec!["0", "1"]);
    assert_eq!(ds.train.labels, vec![0, 1, 0, 1]);
    let (p, r) = load("half.tsv", b"sentence\tlabel\na\t0\nb\t0.5\n", &same);
    let e = r.err().unwrap().to_string();
    assert!(
        e.starts_with(&format!("{}:3: label 0.5 is not a class id", p.display())),
        "{e}"
    );

    // Every training label 1: class 0 has no example, an error; declared, a warning.
    let (p, r) = load("ones.tsv", b"sentence\tlabel\na\t1\nb\t1\n", &same);
    let e = r.err().unwrap().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: class \"0\" has no training example",
            p.display()
        )),
        "{e}"
    );
    let declared = |c: Data| Data {
        class_names: Some(vec!["neg".into(), "pos".into()]),
        ..c
    };
    let (_, r) = load("ones.tsv", b"sentence\tlabel\na\t1\nb\t1\n", &declared);
    let ds = r.unwrap();
    assert!(
        ds.notes
            .iter()
            .any(|n| n.starts_with("warning: class \"neg\"")),
        "{:?}",
        ds.notes
    );

    // A UTF-8 byte-order mark does not hide the first column's name.
    let (_, r) = load(
        "bom.tsv",
        b"\xEF\xBB\xBFsentence\tlabel\ngood\t1\nbad\t0\n",
        &same,
    );
    assert_eq!(r.unwrap().train.len(), 2);

    // A Latin-1 byte: an error at its line, skippable.
    let latin = b"sentence\tlabel\ngood\t1\ncaf\xe9 bad\t0\nbad\t0\n";
    let (p, r) = load("latin.tsv", latin, &same);
    let e = r.err().unwrap().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:3: column 0 is not UTF-8 (byte 0xE9",
            p.display()
        )),
        "{e}"
    );
    let (_, r) = load("latin.tsv", latin, &skip);
    assert_eq!(r.unwrap().train.len(), 2);

    // RFC 4180: a newline inside quotes is part of the text, and later lines keep their
    // numbers.
    let csv = b"sentence,label\n\"good,\nreally \"\"good\"\"\",1\nbad,0\nworse,0,extra\n";
    let (p, r) = load("quoted.csv", csv, &same);
    let e = r.err().unwrap().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:5: expected 2 comma-separated fields",
            p.display()
        )),
        "{e}"
    );
    let (_, r) = load("quoted.csv", csv, &skip);
    let ds = r.unwrap();
    assert_eq!(ds.train.len(), 2);
    assert_eq!(ds.train.labels, vec![1, 0]);
    // "good , really " good "" -> tokens good , really " good ": the newline was text.
    assert_eq!(ds.train.tokens()[0].len(), 6);
}

/// A carved validation split that misses a class is refused.
#[test]
fn carved_validation_must_hold_every_class() {
    let dir = temp_dir("carve-classes");
    let path = dir.join("t.tsv");
    let mut rows = String::from("sentence\tlabel\n");
    for i in 0..40 {
        rows.push_str(&format!("word{i}\t0\n"));
    }
    rows.push_str("rare\t1\nrarer\t1\n");
    std::fs::write(&path, rows).unwrap();
    // Whatever the seed: either validation holds class 1, or the load is refused (validation
    // without class 1, or train without it when both rows were carved).
    let mut refused = 0;
    for seed in 0..30 {
        let cfg = Data {
            val_fraction: 0.05,
            ..file_cfg(&path)
        };
        match rnnlab::data::load(&cfg, seed, 1) {
            Ok(ds) => assert!(ds.valid.labels.contains(&1), "seed {seed}"),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    (e.contains("hold no example of class \"1\"")
                        && e.contains("raise data.val_fraction"))
                        || e.contains("valid label \"1\" has no training example")
                        || e.contains("valid label 1 has no training example"),
                    "{e}"
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0);
}

/// The shipped temporal-order config (Hochreiter & Schmidhuber's experiment 6a) trains end to
/// end: an LSTM with chrono init reads the order of two symbols 40 steps apart among 100
/// distractors, well above the 0.25 of chance, and names its classes by the order.
#[test]
fn the_temporal_order_config_learns_the_order_of_distant_symbols() {
    let dir = temp_dir("order");
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/temporal-order-lstm.toml");
    let o = common::run_exp(&[
        config.to_str().unwrap(),
        "--set",
        &format!("experiment.out_dir={}", dir.display()),
        "--set",
        "data.num_train=3000",
        "--set",
        "data.num_valid=300",
        "--set",
        "data.num_test=300",
        "--set",
        "log.progress=false",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("temporal-order-lstm/run-001/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(s["classes"], serde_json::json!(["XX", "XY", "YX", "YY"]));
    let acc = s["test_acc"].as_f64().unwrap();
    assert!(acc > 0.9, "test accuracy {acc}");
}

/// Images from a `tensors` file as pixel sequences (`image_sequence = "pixels"`, permuted by
/// `permute_seed`): 8 x 8 images whose class is which half is lit train a GRU reading 64 pixel
/// steps to high accuracy; the run's input is 1 feature a step; permute_seed without pixels is
/// exit 2 naming the key.
#[test]
fn images_train_as_permuted_pixel_sequences() {
    use candle_core::{Device, Tensor};
    let dir = temp_dir("pixels");
    let write = |name: &str, n: usize, seed: u64| {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let (mut px, mut labels) = (Vec::new(), Vec::new());
        for i in 0..n {
            let class = (i % 2) as i64;
            for y in 0..8 {
                for _ in 0..8 {
                    let lit = (y < 4) == (class == 0);
                    let base: u8 = if lit { 180 } else { 40 };
                    px.push(base + rand::Rng::random_range(&mut rng, 0..60u8));
                }
            }
            labels.push(class);
        }
        let t = std::collections::HashMap::from([
            (
                "frames".to_string(),
                Tensor::from_vec(px, (n, 1, 1, 8, 8), &Device::Cpu).unwrap(),
            ),
            (
                "labels".to_string(),
                Tensor::from_vec(labels, n, &Device::Cpu).unwrap(),
            ),
        ]);
        let path = dir.join(format!("{name}.safetensors"));
        candle_core::safetensors::save(&t, &path).unwrap();
        path
    };
    let (train, test) = (write("train", 400, 1), write("test", 100, 2));
    let config = dir.join("pixels.toml");
    std::fs::write(
        &config,
        format!(
            "[experiment]\nout_dir = \"{}\"\nname = \"pixels\"\n[data]\nsource = \"tensors\"\ntrain = \"{}\"\ntest = \"{}\"\nimage_sequence = \"pixels\"\npermute_seed = 7\n[model]\nframe_encoder = \"none\"\ncell = \"gru\"\nhidden_size = 16\n[train]\nepochs = 4\nbatch_size = 16\nlr = 1e-2\n[log]\nprogress = false\n",
            dir.display(),
            train.display(),
            test.display()
        ),
    )
    .unwrap();
    let o = common::run_exp(&[config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let run = dir.join("pixels/run-001");
    let input = std::fs::read_to_string(run.join("input.json")).unwrap();
    assert!(
        input.contains("\"dim\":1") || input.contains("\"dim\": 1"),
        "{input}"
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let acc = s["test_acc"].as_f64().unwrap();
    assert!(acc > 0.9, "test accuracy {acc}");
    let o = common::run_exp(&[
        config.to_str().unwrap(),
        "--set",
        "data.image_sequence=\"rows\"",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("data.permute_seed"),
        "{}",
        common::stderr(&o)
    );
}

/// The shipped sequential-digits config reads as written (pixels, one feature a step, chrono
/// over 784 steps), and without the images its comment says how to make, the run stops with
/// exit 2 naming the missing file, writing nothing.
#[test]
fn the_shipped_pixel_digits_config_reads_and_names_its_missing_data() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/pixel-digits-lstm.toml");
    let cfg = rnnlab::Config::load(&path, &[]).unwrap();
    assert_eq!(
        cfg.data.image_sequence,
        Some(rnnlab::config::ImageSequence::Pixels)
    );
    assert_eq!(cfg.model.chrono_t_max, 784.0);
    let dir = temp_dir("pixel-digits");
    let missing = dir.join("nothing-here.safetensors");
    let o = common::run_exp(&[
        path.to_str().unwrap(),
        "--set",
        &format!("experiment.out_dir={:?}", dir.join("results")),
        "--set",
        &format!("data.train={missing:?}"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("nothing-here.safetensors"),
        "{}",
        common::stderr(&o)
    );
    assert!(!dir.join("results").exists());
}
