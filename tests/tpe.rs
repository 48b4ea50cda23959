//! TPE sweeps through the real `run-exp` binary: every configuration is what the sampler asks
//! for given the results recorded before it (pruned trials at their last rung), reproducible
//! from sweep.seed; a kill -9 of a two-job sweep, then a rerun by a driver and a `--trial next`
//! slot at once, runs every trial id once and as many trials as asked; a folder asked over
//! other axes is refused.

mod common;
use common::{assert_logged_once, records, run_exp_env, spawn, stderr, temp_dir, wait_for};

use std::path::{Path, PathBuf};

use rnnlab::sweep::tpe::{Recorded, Tpe};
use rnnlab::sweep::Axis;

fn sweep_file(dir: &Path, name: &str, data: &str, train: &str, sweep: &str) -> PathBuf {
    let text = format!(
        "[experiment]\nname = \"{name}\"\nout_dir = {:?}\nthreads = 1\n\
         [data]\n{data}\nnum_valid = 128\nnum_test = 128\nmax_len = 24\n\
         [model]\nembedding_dim = 8\nhidden_size = 16\n\
         [train]\nbatch_size = 32\nlr = 1e-2\n{train}\n\
         [log]\nevery_steps = 5\nhistograms_every_epochs = 0\nprogress = false\n\
         [sweep]\nmethod = \"tpe\"\n{sweep}\n[sweep.axes]\n\
         \"train.lr\" = {{ log_uniform = [1e-4, 1e-1] }}\n\
         \"model.hidden_size\" = {{ int_range = [4, 32] }}\n\
         \"model.cell\" = {{ choice = [\"rnn\", \"gru\", \"lstm\"] }}\n",
        dir.join("results")
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A record's axis values in the file's axis order (lr, hidden size, cell: toml sorts them).
fn values(r: &serde_json::Value) -> Vec<toml::Value> {
    ["model.cell", "model.hidden_size", "train.lr"]
        .iter()
        .map(|k| serde_json::from_value(r["overrides"][k].clone()).unwrap())
        .collect()
}

fn axes() -> Vec<Axis> {
    vec![
        Axis::Choice(vec!["rnn".into(), "gru".into(), "lstm".into()]),
        Axis::IntRange(4, 32),
        Axis::LogUniform(1e-4, 1e-1),
    ]
}

#[test]
fn each_configuration_is_the_samplers_ask_from_the_results_before_it_and_reproducible() {
    let dir = temp_dir("replay");
    let sweep = "trials = 14\nseed = 5\njobs = 1\nprune = \"halving\"\nmin_epochs = 1\neta = 3";
    let file = sweep_file(&dir, "a", "num_train = 640", "epochs = 3", sweep);
    let o = run_exp_env(&[file.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = dir.join("results/a");
    let recs = records(&root);
    let ids: Vec<&String> = recs.keys().collect();
    let want: Vec<String> = (0..14).map(|n| format!("t{n:04}")).collect();
    assert_eq!(ids, want.iter().collect::<Vec<_>>());
    // One job: when configuration n was asked, every earlier trial had ended. Its loss as the
    // sampler sees it: minus the best validation accuracy, a pruned trial's at its last rung.
    let mut history: Vec<Recorded> = Vec::new();
    let (mut pruned, mut completed) = (0, 0);
    for (n, id) in want.iter().enumerate() {
        let r = &recs[id];
        let asked = Tpe::default().ask(&axes(), &history, 5, n as u64);
        assert_eq!(values(r), asked, "{id}");
        let loss = match r["status"].as_str().unwrap() {
            "pruned" => {
                pruned += 1;
                -r["rungs"].as_array().unwrap().last().unwrap()["value"]
                    .as_f64()
                    .unwrap()
            }
            "completed" => {
                completed += 1;
                let s: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(root.join(id).join("summary.json")).unwrap(),
                )
                .unwrap();
                -s["best_val_acc"].as_f64().unwrap()
            }
            other => panic!("{id} {other}"),
        };
        history.push(Recorded {
            values: values(r),
            loss: Some(loss),
        });
    }
    assert!(
        pruned > 0 && completed > 0,
        "{pruned} pruned, {completed} completed"
    );
    // The same file into another folder asks the same configurations; another seed does not.
    let again = sweep_file(&dir, "b", "num_train = 640", "epochs = 3", sweep);
    let o = run_exp_env(&[again.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b = records(&dir.join("results/b"));
    let other = sweep_file(
        &dir,
        "c",
        "num_train = 640",
        "epochs = 3",
        &sweep.replace("seed = 5", "seed = 6"),
    );
    let o = run_exp_env(&[other.to_str().unwrap(), "--set", "sweep.trials=3"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = records(&dir.join("results/c"));
    for id in &want {
        assert_eq!(values(&recs[id]), values(&b[id]), "{id}");
    }
    assert_ne!(values(&recs["t0000"]), values(&c["t0000"]));
    // A folder asked over other axes belongs to another sweep: refused, naming both.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("\"model.hidden_size\" = { int_range = [4, 32] }\n", "");
    std::fs::write(&file, text).unwrap();
    let o = run_exp_env(&[file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("holds trial t0000 asked over the axes")
            && stderr(&o).contains("use another experiment.name"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn kill_9_of_a_two_job_tpe_sweep_then_two_slots_run_every_trial_once() {
    let dir = temp_dir("kill");
    let file = sweep_file(
        &dir,
        "k",
        "num_train = 3200",
        "epochs = 2\ncheckpoint_every_steps = 10",
        "trials = 6\nseed = 1\njobs = 2",
    );
    let root = dir.join("results/k");
    let mut driver = spawn(&[file.to_str().unwrap()], &[]);
    wait_for("a checkpoint", 120, || {
        records(&root).keys().any(|id| {
            root.join(id)
                .join("checkpoints")
                .read_dir()
                .is_ok_and(|mut d| d.next().is_some())
        })
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(driver.id() as i32, libc::SIGKILL) };
    let _ = driver.wait();
    wait_for("the trial processes to stop", 60, || {
        records(&root).values().all(|r| {
            r["status"] != "running" || !Path::new(&format!("/proc/{}", r["pid"])).exists()
        })
    });
    let before = records(&root);
    assert!(
        !before.is_empty() && before.len() < 6,
        "asked before the kill: {:?}",
        before.keys()
    );
    // Two slots at once on the folder: the driver again and a `--trial next` process.
    let a = spawn(&[file.to_str().unwrap()], &[]);
    let b = spawn(&[file.to_str().unwrap(), "--trial", "next"], &[]);
    for p in [a, b] {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let recs = records(&root);
    let ids: Vec<String> = recs.keys().cloned().collect();
    assert_eq!(ids, (0..6).map(|n| format!("t{n:04}")).collect::<Vec<_>>());
    for (id, r) in &recs {
        assert_eq!(r["status"], "completed", "{r}");
        // Run by one process each time: a trial that was killed mid-way has two attempts.
        let attempts = r["attempts"].as_u64().unwrap();
        assert!(
            attempts == 1 || (before.contains_key(id) && attempts == 2),
            "{r}"
        );
        assert_logged_once(&root.join(id), 2);
    }
    let summary = std::fs::read_to_string(root.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 7, "{summary}");
    // No configuration asked twice.
    let mut groups: Vec<&str> = recs
        .values()
        .map(|r| r["group"].as_str().unwrap())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    assert_eq!(groups.len(), 6);
}

/// A combination the config refuses (chrono gate biases on an rnn cell) is drawn again: the
/// three feasible configurations of a four-point space, each once.
#[test]
fn a_combination_the_config_refuses_is_drawn_again() {
    let dir = temp_dir("refused");
    let file = sweep_file(
        &dir,
        "r",
        "num_train = 320",
        "epochs = 1",
        "trials = 3\njobs = 1",
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let i = text.find("\"train.lr\"").unwrap();
    let text = format!(
        "{}\"model.cell\" = {{ choice = [\"rnn\", \"gru\"] }}\n\"model.init_gate_bias\" = {{ choice = [\"default\", \"chrono\"] }}\n",
        &text[..i]
    );
    std::fs::write(&file, text).unwrap();
    let o = run_exp_env(&[file.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut groups: Vec<String> = records(&dir.join("results/r"))
        .values()
        .map(|r| r["group"].as_str().unwrap().to_string())
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            "model.cell=\"gru\" model.init_gate_bias=\"chrono\"",
            "model.cell=\"gru\" model.init_gate_bias=\"default\"",
            "model.cell=\"rnn\" model.init_gate_bias=\"default\"",
        ]
    );
}
