//! Property tests: the config loader and the table readers never panic, whatever they are
//! given (arbitrary bytes, arbitrary TOML over the real keys with values of every type and
//! size, arbitrary `--set` lines); they return a config or an error with a message. Through the
//! binary, arbitrary config bytes exit 2 with a message.

use std::path::Path;

use proptest::prelude::*;
use rnnlab::config::{Column, Format};
use rnnlab::data::table::{read_table, Spec};
use rnnlab::Config;

const KEYS: &[(&str, &[&str])] = &[
    (
        "experiment",
        &["name", "seed", "device", "out_dir", "threads"],
    ),
    (
        "data",
        &[
            "source",
            "preset",
            "max_len",
            "num_train",
            "num_valid",
            "lag",
            "num_classes",
            "vocab_size",
            "train",
            "valid",
            "val_fraction",
            "format",
            "header",
            "text_column",
            "label_column",
            "class_names",
            "skip_bad_rows",
            "tokenizer",
            "min_freq",
            "max_vocab",
        ],
    ),
    (
        "model",
        &[
            "cell",
            "nonlinearity",
            "embedding_dim",
            "hidden_size",
            "num_layers",
            "bidirectional",
            "dropout",
            "readout",
            "forget_bias",
            "embeddings",
        ],
    ),
    (
        "train",
        &[
            "epochs",
            "class_weights",
            "batch_size",
            "optimizer",
            "lr",
            "weight_decay",
            "momentum",
            "nesterov",
            "betas",
            "eps",
            "clip_norm",
            "tbptt",
            "schedule",
            "warmup_steps",
            "patience",
            "monitor",
            "max_steps",
            "checkpoint_every_steps",
        ],
    ),
    (
        "log",
        &[
            "every_steps",
            "histograms_every_epochs",
            "grad_flow",
            "spectrum",
            "update_ratio",
            "progress",
        ],
    ),
    ("bogus", &["x"]),
];

fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        Just("18446744073709551615".to_string()),
        Just("-0".to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        any::<bool>().prop_map(|v| v.to_string()),
        "[a-z0-9\\-/. \\\\\"\u{e9}\u{0}]{0,12}".prop_map(|s| format!("{s:?}")),
        Just("\"lstm\"".to_string()),
        Just("\"synthetic-sentiment\"".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            (inner, "[a-z]{1,4}").prop_map(|(v, k)| format!("{{ {k} = {v} }}")),
        ]
    })
}

fn document() -> impl Strategy<Value = String> {
    let line = (
        0..KEYS.len(),
        any::<prop::sample::Index>(),
        value(),
        any::<u8>(),
    );
    prop::collection::vec(line, 0..10).prop_map(|lines| {
        let mut out = String::new();
        for (s, k, v, shape) in lines {
            let (section, keys) = KEYS[s];
            let key = keys[k.index(keys.len())];
            match shape % 4 {
                0 => out.push_str(&format!("[{section}]\n{key} = {v}\n")),
                1 => out.push_str(&format!("{section}.{key} = {v}\n")),
                2 => out.push_str(&format!("[{section}]\n{key} = {v}\n{key} = {v}\n")),
                _ => out.push_str(&format!("{key} = {v}\n")),
            }
        }
        out
    })
}

fn set_line() -> impl Strategy<Value = String> {
    (
        0..KEYS.len(),
        any::<prop::sample::Index>(),
        value(),
        any::<bool>(),
    )
        .prop_map(|(s, k, v, dotted)| {
            let (section, keys) = KEYS[s];
            let key = keys[k.index(keys.len())];
            if dotted {
                format!("{section}.{key}={v}")
            } else {
                format!("{key}{v}")
            }
        })
}

fn check(r: rnnlab::Result<Config>) {
    match r {
        Ok(c) => {
            // What loads saves and loads back as itself.
            let again = Config::from_toml(Path::new("saved.toml"), &c.to_toml(), &[]);
            assert_eq!(again.ok().as_ref(), Some(&c));
        }
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn config_loader_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check(Config::from_toml(Path::new("x.toml"), &String::from_utf8_lossy(&bytes), &[]));
    }

    #[test]
    fn config_loader_takes_any_toml(doc in document(), sets in prop::collection::vec(set_line(), 0..3)) {
        check(Config::from_toml(Path::new("x.toml"), &doc, &sets));
    }

    #[test]
    fn table_readers_take_any_bytes(
        bytes in prop::collection::vec(prop_oneof![
            any::<u8>(), Just(b'\t'), Just(b','), Just(b'"'), Just(b'\n'), Just(b'1'), Just(b'{'),
        ], 0..200),
        format in 0..4usize,
        header in any::<bool>(),
        skip in any::<bool>(),
    ) {
        let (format, ext) = [
            (Format::Tsv, "tsv"), (Format::Csv, "csv"), (Format::Jsonl, "jsonl"), (Format::Parquet, "parquet"),
        ][format];
        let dir = std::env::temp_dir().join(format!("rnnlab-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("t.{ext}"));
        std::fs::write(&path, &bytes).unwrap();
        let (text, label) = if format == Format::Jsonl || header {
            (Column::Name("sentence".into()), Column::Name("label".into()))
        } else {
            (Column::Index(0), Column::Index(1))
        };
        let spec = Spec {
            format: Some(format),
            header,
            text_column: &text,
            label_column: Some(&label),
            skip_bad_rows: skip,
        };
        match read_table(&path, spec) {
            Ok(t) => prop_assert!(!t.rows.is_empty()),
            Err(e) => prop_assert!(e.to_string().contains("t.")),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// The real binary: any config bytes that are not a valid config exit 2 with a message
    /// (and a valid one, under --dry-run, exits 0).
    #[test]
    fn the_binary_exits_2_with_a_message(doc in document()) {
        let dir = std::env::temp_dir().join(format!("rnnlab-prop-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, &doc).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_run-exp"))
            .arg(&path)
            .arg("--dry-run")
            .output()
            .unwrap();
        let ok = Config::from_toml(&path, &doc, &[]).is_ok();
        prop_assert_eq!(o.status.code(), Some(if ok { 0 } else { 2 }));
        if !ok {
            prop_assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: "));
        }
    }
}
