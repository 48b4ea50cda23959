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
