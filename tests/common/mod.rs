//! Helpers the integration tests share (each test file has `mod common;`): a fresh temporary
//! folder per test, running the `run-exp` binary, its stderr as text.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// An empty folder `rnnlab-<suite>-<name>-<pid>` under the system's temp dir, the suite being
/// the test file's name.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rnnlab-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the built `run-exp` with `args` and these environment variables set.
pub fn run_exp_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_run-exp"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

pub fn run_exp(args: &[&str]) -> Output {
    run_exp_env(args, &[])
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every trial record (`trial.json`) under a sweep folder, by id; none while it does not exist.
pub fn records(root: &std::path::Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(root).into_iter().flatten() {
        let r = e.unwrap().path().join("trial.json");
        if r.is_file() {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&r).unwrap()).unwrap();
            out.insert(v["id"].as_str().unwrap().to_string(), v);
        }
    }
    out
}

/// Starts `run-exp` with `args` and these environment variables, stderr piped.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_run-exp"));
    c.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Polls `done` every 20 ms, failing the test after `secs`.
pub fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Each trial's metrics rows: no (split, step) twice, epochs 1..=n once each.
pub fn assert_logged_once(run: &std::path::Path, epochs: u64) {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut ep = Vec::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let key = (
            v["split"].as_str().unwrap().to_string(),
            v["step"].as_u64().unwrap(),
        );
        assert!(
            seen.insert(key.clone()),
            "{}: {key:?} logged twice",
            run.display()
        );
        if v["split"] == "epoch" {
            ep.push(v["epoch"].as_u64().unwrap());
        }
    }
    assert_eq!(ep, (1..=epochs).collect::<Vec<_>>(), "{}", run.display());
}
