//! Sweeps through the real `run-exp` binary: trials recorded with their statuses (a failing
//! and a diverging trial among completed ones), the results tables, a real `kill -9` of the
//! sweep process and of trial processes followed by a rerun that completes every trial exactly
//! once, two sweep processes on one folder, halving, and `train::run` twice in one process.

mod common;
use common::{assert_logged_once, records, run_exp_env, spawn, stderr, temp_dir, wait_for};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A small sweep file in `dir`: `axes` and `sweep` lines go under [sweep.axes] / [sweep].
fn sweep_file(dir: &Path, name: &str, sweep: &str, axes: &str, train: &str) -> PathBuf {
    let text = format!(
        "[experiment]\nname = \"{name}\"\nout_dir = {:?}\nthreads = 1\n\
         [data]\nnum_train = 640\nnum_valid = 128\nnum_test = 128\nmax_len = 24\n\
         [model]\nembedding_dim = 8\nhidden_size = 16\n\
         [train]\nbatch_size = 32\nlr = 1e-2\n{train}\n\
         [log]\nevery_steps = 5\nhistograms_every_epochs = 0\nprogress = false\n\
         [sweep]\n{sweep}\n[sweep.axes]\n{axes}\n",
        dir.join("results")
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn csv_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            // No field of ours holds a comma except error, which is last and quoted.
            let mut fields: Vec<String> = Vec::new();
            let mut rest = l;
            for i in 0..header.len() {
                if i + 1 == header.len() {
                    fields.push(rest.trim_matches('"').to_string());
                } else {
                    let (a, b) = rest.split_once(',').unwrap_or((rest, ""));
                    fields.push(a.trim_matches('"').to_string());
                    rest = b;
                }
            }
            header.iter().cloned().zip(fields).collect()
        })
        .collect()
}

#[test]
fn a_sweep_records_completed_failed_and_diverged_trials_and_summarizes_them() {
    let dir = temp_dir("statuses");
    // lr 1e30 diverges; a missing embeddings file fails in its trial process only.
    let file = sweep_file(
        &dir,
        "st",
        "seeds = [0, 1]\njobs = 2",
        "\"model.cell\" = [\"lstm\", \"gru\"]\n\"train.lr\" = [1e-2, 1e30]",
        "epochs = 2",
    );
    let dry = run_exp_env(&[file.to_str().unwrap(), "--dry-run"], &[]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let listing = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        listing.contains("8 trials (4 configurations x 2 seeds)"),
        "{listing}"
    );
    assert_eq!(listing.lines().count(), 9, "{listing}");
    assert!(!dir.join("results").exists(), "a dry run writes nothing");

    let o = run_exp_env(&[file.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = dir.join("results/st");
    let recs = records(&root);
    assert_eq!(recs.len(), 8);
    for r in recs.values() {
        let lr = r["overrides"]["train.lr"].as_f64().unwrap();
        let want = if lr > 1.0 { "diverged" } else { "completed" };
        assert_eq!(r["status"], want, "{r}");
        assert_eq!(r["attempts"], 1);
        assert!(r["started"].is_string() && r["ended"].is_string());
        if want == "completed" {
            assert_logged_once(&root.join(r["id"].as_str().unwrap()), 2);
        } else {
            assert!(
                r["error"].as_str().unwrap().contains("non-finite")
                    || r["error"].as_str().unwrap().contains("is NaN")
                    || r["error"].as_str().unwrap().contains("inf"),
                "{r}"
            );
        }
    }
    let rows = csv_rows(&root.join("summary.csv"));
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0]["status"], "completed", "best first");
    assert!(rows
        .iter()
        .all(|r| r.contains_key("model.cell") && r.contains_key("train.lr")));
    // The test scores papers report, as each trial's summary.json has them (no top-5 at 2
    // classes: an empty column).
    for r in rows.iter().filter(|r| r["status"] == "completed") {
        let s: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(&r["trial"]).join("summary.json")).unwrap(),
        )
        .unwrap();
        let csv: f64 = r["test_mean_class_acc"].parse().unwrap();
        assert!(
            (csv - s["test_mean_class_acc"].as_f64().unwrap()).abs() < 1e-9,
            "{r:?}"
        );
        assert_eq!(r["test_top5"], "", "{r:?}");
    }
    let by = csv_rows(&root.join("summary_by_config.csv"));
    assert_eq!(by.len(), 4);
    assert_eq!(by[0]["n"], "2");
    assert!(root.join("summary.parquet").is_file() && root.join("curves.png").is_file());
    let best = std::fs::read_to_string(root.join("best.toml")).unwrap();
    assert!(
        best.contains("lr = 0.01") && best.contains("name = \"st-best\""),
        "{best}"
    );
    // best.toml runs as is (dry run: it resolves).
    let b = run_exp_env(
        &[root.join("best.toml").to_str().unwrap(), "--dry-run"],
        &[],
    );
    assert!(b.status.success(), "{}", stderr(&b));
    // Rerunning a finished sweep runs nothing again.
    let again = run_exp_env(&[file.to_str().unwrap()], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("8 final already, 0 to run here"),
        "{}",
        stderr(&again)
    );
    assert!(records(&root).values().all(|r| r["attempts"] == 1));
    // An edited base config would mix two experiments in one folder: refused, naming the key.
    let edited = dir.join("edited.toml");
    std::fs::write(
        &edited,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("hidden_size = 16", "hidden_size = 24"),
    )
    .unwrap();
    let e = run_exp_env(&[edited.to_str().unwrap()], &[]);
    assert_eq!(e.status.code(), Some(2), "{}", stderr(&e));
    assert!(
        stderr(&e).contains("model.hidden_size") && stderr(&e).contains("base config changed"),
        "{}",
        stderr(&e)
    );
    // summarize reads the folder alone.
    let s = run_exp_env(&["summarize", root.to_str().unwrap()], &[]);
    assert!(s.status.success(), "{}", stderr(&s));
    assert!(String::from_utf8_lossy(&s.stdout).contains("best:"));
    // Which axes mattered: one row per axis, shares summing to 1, the same on every call.
    let said = String::from_utf8_lossy(&s.stdout).into_owned();
    assert!(said.contains("which axes mattered"), "{said}");
    let imp = csv_rows(&root.join("importance.csv"));
    let axes: BTreeSet<&str> = imp.iter().map(|r| r["axis"].as_str()).collect();
    assert_eq!(axes, BTreeSet::from(["model.cell", "train.lr"]));
    let total: f64 = imp
        .iter()
        .map(|r| r["importance"].parse::<f64>().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-9 || total == 0.0, "{imp:?}");
    for png in ["importance.png", "marginals.png", "parallel.png"] {
        assert!(root.join(png).is_file(), "{png}");
    }
    let first = std::fs::read(root.join("importance.csv")).unwrap();
    let s = run_exp_env(&["summarize", root.to_str().unwrap()], &[]);
    assert!(s.status.success(), "{}", stderr(&s));
    assert_eq!(std::fs::read(root.join("importance.csv")).unwrap(), first);
    // Accuracy against cost: parameters per trial in summary.csv, and the frontier.
    let rows = csv_rows(&root.join("summary.csv"));
    assert!(rows
        .iter()
        .filter(|r| r["status"] == "completed")
        .all(|r| r["parameters"].parse::<u64>().unwrap() > 0));
    for cost in ["time", "parameters"] {
        let s = run_exp_env(
            &["summarize", root.to_str().unwrap(), "--pareto", cost],
            &[],
        );
        assert!(s.status.success(), "{}", stderr(&s));
        let said = String::from_utf8_lossy(&s.stdout).into_owned();
        assert!(
            said.contains("the frontier:") && said.contains("of 2 configurations"),
            "{said}"
        );
    }
    assert!(root.join("pareto.png").is_file());

    // A failing trial (its embeddings file is missing: found when the trial loads its data)
    // is recorded with its error; the other trials complete, and the sweep exits 1.
    let vectors = dir.join("vectors.txt");
    std::fs::write(&vectors, "good 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8\n").unwrap();
    let file = sweep_file(
        &dir,
        "fail",
        "jobs = 2",
        &format!(
            "\"model.embeddings\" = [{:?}, {:?}]\n\"model.cell\" = [\"lstm\", \"gru\"]",
            vectors,
            dir.join("missing.txt")
        ),
        "epochs = 1",
    );
    let o = run_exp_env(&[file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("some trials failed"), "{}", stderr(&o));
    let recs = records(&dir.join("results/fail"));
    assert_eq!(recs.len(), 4);
    for r in recs.values() {
        let missing = r["overrides"]["model.embeddings"]
            .as_str()
            .unwrap()
            .ends_with("missing.txt");
        if missing {
            assert_eq!(r["status"], "failed", "{r}");
            assert!(r["error"].as_str().unwrap().contains("missing.txt"), "{r}");
        } else {
            assert_eq!(r["status"], "completed", "{r}");
        }
    }
    let rows = csv_rows(&dir.join("results/fail/summary.csv"));
    assert_eq!(rows.iter().filter(|r| r["status"] == "failed").count(), 2);
    assert!(rows
        .iter()
        .filter(|r| r["status"] == "failed")
        .all(|r| r["error"].contains("missing.txt")));
}

fn has_checkpoint(root: &Path) -> bool {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_dir(e.path().join("checkpoints"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        })
}

fn summaries(root: &Path) -> BTreeMap<String, (f64, f64, f64)> {
    records(root)
        .keys()
        .map(|id| {
            let s: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(root.join(id).join("summary.json")).unwrap(),
            )
            .unwrap();
            let f = |k: &str| s[k].as_f64().unwrap();
            (
                id.clone(),
                (f("best_val_acc"), f("best_val_loss"), f("test_acc")),
            )
        })
        .collect()
}

const KILL_AXES: &str = "\"model.cell\" = [\"lstm\", \"gru\"]";
const KILL_TRAIN: &str = "epochs = 3\ncheckpoint_every_steps = 10";

#[test]
fn kill_9_of_the_sweep_or_of_its_trials_then_a_rerun_completes_every_trial_exactly_once() {
    let dir = temp_dir("kill");
    let file = sweep_file(&dir, "k", "seeds = [0, 1]\njobs = 2", KILL_AXES, KILL_TRAIN);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("num_train = 640", "num_train = 3200");
    std::fs::write(&file, &text).unwrap();
    let root = dir.join("results/k");

    // kill -9 of the sweep process while trials train: they notice, checkpoint and stop as
    // pending (one SIGTERM each: a second would end them without a checkpoint).
    let mut driver = spawn(&[file.to_str().unwrap()], &[]);
    wait_for("a checkpoint", 120, || has_checkpoint(&root));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(driver.id() as i32, libc::SIGKILL) };
    let _ = driver.wait();
    wait_for("the trial processes to stop", 60, || {
        records(&root).values().all(|r| {
            r["status"] != "running" || !Path::new(&format!("/proc/{}", r["pid"])).exists()
        })
    });
    let recs = records(&root);
    assert!(recs.values().any(|r| r["status"] == "pending"), "{recs:?}");
    assert!(
        recs.values()
            .all(|r| r["status"] == "pending" || r["status"] == "completed"),
        "{recs:?}"
    );
    for r in recs
        .values()
        .filter(|r| r["status"] == "pending" && r["attempts"] == 1)
    {
        let log = std::fs::read_to_string(root.join(r["id"].as_str().unwrap()).join("trial.log"))
            .unwrap();
        assert!(log.contains("SIGTERM: checkpointed at step"), "{log}");
        // The sweep continues it: the log says so, not `--resume` of the trial's folder.
        assert!(
            log.contains(&format!(
                "continue with the sweep: run-exp {}",
                file.display()
            )) && !log.contains("--resume"),
            "{log}"
        );
    }

    // Trial processes killed outright (abort at step 250 of 300, like kill -9: no destructor runs):
    // recorded failed by the sweep, with how they died.
    let o = run_exp_env(
        &[file.to_str().unwrap()],
        &[("RNNLAB_TEST_CRASH", "step:250")],
    );
    let aborted: Vec<_> = records(&root)
        .into_values()
        .filter(|r| r["status"] == "failed")
        .collect();
    // Every trial was short of step 250 (stopped near its first checkpoint, or not started).
    assert_eq!(aborted.len(), 4, "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        aborted
            .iter()
            .all(|r| r["error"].as_str().unwrap().contains("aborted")),
        "{aborted:?}"
    );

    // The rerun finishes every trial, each logged exactly once, with the numbers of a sweep
    // that was never interrupted.
    let o = run_exp_env(&[file.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = records(&root);
    assert_eq!(recs.len(), 4);
    for r in recs.values() {
        assert_eq!(r["status"], "completed", "{r}");
        assert!(r["attempts"].as_u64().unwrap() >= 2, "{r}");
        assert_logged_once(&root.join(r["id"].as_str().unwrap()), 3);
    }
    let straight = sweep_file(&dir, "k", "seeds = [0, 1]\njobs = 2", KILL_AXES, KILL_TRAIN);
    std::fs::write(
        &straight,
        text.replace("name = \"k\"", "name = \"straight\""),
    )
    .unwrap();
    let o = run_exp_env(&[straight.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summaries(&root), summaries(&dir.join("results/straight")));
}

#[test]
fn two_sweep_processes_on_one_folder_never_run_a_trial_twice() {
    let dir = temp_dir("two");
    let file = sweep_file(
        &dir,
        "two",
        "seeds = [0, 1, 2]\njobs = 1",
        KILL_AXES,
        "epochs = 2",
    );
    let a = spawn(&[file.to_str().unwrap()], &[]);
    let b = spawn(&[file.to_str().unwrap()], &[]);
    for p in [a, b] {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let root = dir.join("results/two");
    let recs = records(&root);
    assert_eq!(recs.len(), 6);
    for r in recs.values() {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["attempts"], 1, "ran twice: {r}");
        assert_logged_once(&root.join(r["id"].as_str().unwrap()), 2);
    }
}

#[test]
fn halving_prunes_by_the_rung_rule_and_promoted_trials_resume() {
    let dir = temp_dir("halving");
    let file = sweep_file(
        &dir,
        "h",
        "method = \"halving\"\ntrials = 6\nseed = 3\nmin_epochs = 1\neta = 3\njobs = 1",
        "\"train.lr\" = { log_uniform = [1e-3, 3e-1] }\n\"model.cell\" = { choice = [\"rnn\", \"gru\"] }",
        "epochs = 3",
    );
    let o = run_exp_env(&[file.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = dir.join("results/h");
    // With one job the trials reach rung 0 in plan order: each decision is the rule applied
    // to the values recorded up to it.
    let plan =
        String::from_utf8_lossy(&run_exp_env(&[file.to_str().unwrap(), "--dry-run"], &[]).stdout)
            .into_owned();
    let order: Vec<String> = plan
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let recs = records(&root);
    let mut seen = Vec::new();
    let (mut pruned, mut completed) = (0, 0);
    for id in &order {
        let r = &recs[id];
        let rungs = r["rungs"].as_array().unwrap();
        assert_eq!(rungs[0]["epochs"], 1, "{r}");
        let v = rungs[0]["value"].as_f64().unwrap();
        seen.push(v);
        let promote = rnnlab::sweep::halving::promotable(v, &seen, 3, true);
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(id).join("summary.json")).unwrap(),
        )
        .unwrap();
        if promote {
            completed += 1;
            assert_eq!(r["status"], "completed", "{r}");
            assert_eq!(summary["epochs_done"], 3);
            // Continued from its rung-0 checkpoint, not from scratch.
            let log = std::fs::read_to_string(root.join(id).join("trial.log")).unwrap();
            assert!(
                log.contains("resuming") && log.contains("from step"),
                "{log}"
            );
            assert_logged_once(&root.join(id), 3);
        } else {
            pruned += 1;
            assert_eq!(r["status"], "pruned", "{r}");
            assert_eq!(summary["epochs_done"], 1);
            assert_logged_once(&root.join(id), 1);
        }
    }
    assert!(
        pruned > 0 && completed > 0,
        "pruned {pruned}, completed {completed}"
    );
}

/// Trials share no state when `train::run` runs twice (or more) in one process: the same
/// config gives the same weights before and after another config ran, and each run's
/// `experiment.threads` reaches the fused op.
#[test]
fn train_run_twice_in_one_process_shares_nothing() {
    use rnnlab::stop::Stop;
    use rnnlab::{prepare, train};
    let dir = temp_dir("twice");
    let cfg = |name: &str, cell: &str, threads: usize| {
        let text = format!(
            "[experiment]\nname = \"{name}\"\nout_dir = {:?}\nthreads = {threads}\n[data]\nnum_train = 640\nnum_valid = 64\nnum_test = 64\n[model]\ncell = \"{cell}\"\nembedding_dim = 8\nhidden_size = 96\n[train]\nepochs = 2\nbatch_size = 64\n[log]\nprogress = false\nhistograms_every_epochs = 0\n",
            dir.join("results")
        );
        rnnlab::Config::from_toml(Path::new("x.toml"), &text, &[]).unwrap()
    };
    let run = |c: rnnlab::Config| {
        let threads = c.experiment.threads;
        let prep = prepare::prepare(c).unwrap();
        assert_eq!(rnnlab::device::cpu_threads(), threads);
        let ready = rnnlab::run_folder::open_new(prep).unwrap();
        let s = train::run(ready, &Stop::default()).unwrap();
        std::fs::read(s.run_dir.join("last.safetensors")).unwrap()
    };
    let a1 = run(cfg("a", "lstm", 1));
    let b = run(cfg("b", "gru", 2));
    let a2 = run(cfg("a", "lstm", 1));
    assert_ne!(a1, b);
    assert_eq!(
        a1, a2,
        "the second run of the same config differs: state leaked between runs"
    );
}

fn json_at(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Files at the sweep's root and their bytes: what a refused rerun must leave as it was.
fn root_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// A rerun with a raised train.epochs continues every completed trial from its checkpoint to
/// the new budget (equal, bit for bit, to trials trained straight to it); a lowered budget or a
/// changed patience is refused (exit 2, the key named, nothing written); while trials of the
/// old budget wait to be continued, the tables show each trial's budget and leave them out of
/// the means.
#[test]
fn a_raised_budget_continues_trials_a_lowered_one_is_refused_and_budgets_never_mix() {
    let dir = temp_dir("budget");
    let axes = "\"model.cell\" = [\"rnn\", \"gru\"]";
    let file = sweep_file(&dir, "b", "seeds = [0]\njobs = 2", axes, "epochs = 1");
    let f = file.to_str().unwrap();
    let o = run_exp_env(&[f], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = dir.join("results/b");
    let ids: Vec<String> = records(&root).keys().cloned().collect();
    assert_eq!(ids.len(), 2);
    // Each trial's line shows its metric; the tables print as Markdown, not polars frames.
    assert!(
        stderr(&o).contains(" completed in ") && stderr(&o).contains("s, best val_acc 0."),
        "{}",
        stderr(&o)
    );
    let tables = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        tables
            .contains("| model.cell | epochs | n | best_val_acc mean | std | best_val_loss mean |")
            && tables.contains("| trial | status | model.cell | seed | epochs | epochs_done |")
            && !tables.contains("shape:")
            && !tables.contains("null"),
        "{tables}"
    );

    // Raised, but not run yet (a Slurm script written): both are listed to run, and the tables
    // keep their 1-epoch results out of the 2-epoch means.
    let o = run_exp_env(
        &[f, "--set", "train.epochs=2", "--slurm", "--no-submit"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let script = std::fs::read_to_string(root.join("sweep.sbatch")).unwrap();
    assert!(script.contains("--array=0-1"), "{script}");
    let o = run_exp_env(&["summarize", root.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("2 completed trial(s) trained to a smaller budget"),
        "{text}"
    );
    for row in csv_rows(&root.join("summary_by_config.csv")) {
        assert_eq!(row["n"], "0", "{row:?}");
    }
    for row in csv_rows(&root.join("summary.csv")) {
        assert_eq!(row["epochs"], "1", "{row:?}");
    }

    let o = run_exp_env(&[f, "--set", "train.epochs=2"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 trials, 0 final already, 2 to run here, 2 of them completed before and continued to the raised budget (train.epochs = 2)"),
        "{}",
        stderr(&o)
    );
    // The same two trials trained straight to 2 epochs in another sweep.
    let straight = sweep_file(&dir, "s", "seeds = [0]\njobs = 2", axes, "epochs = 2");
    let o = run_exp_env(&[straight.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for id in &ids {
        let run = root.join(id);
        let log = std::fs::read_to_string(run.join("trial.log")).unwrap();
        assert!(
            log.contains("it continues to train.epochs = 2") && log.contains("from step"),
            "{log}"
        );
        assert_logged_once(&run, 2);
        let a = json_at(&run.join("summary.json"));
        let b = json_at(&dir.join("results/s").join(id).join("summary.json"));
        assert_eq!(a["epochs_done"], 2);
        for k in ["best_val_loss", "best_val_acc", "test_acc", "steps"] {
            assert_eq!(a[k], b[k], "{id} {k}");
        }
        assert_eq!(json_at(&run.join("trial.json"))["budget"]["epochs"], 2);
    }
    for row in csv_rows(&root.join("summary_by_config.csv")) {
        assert_eq!(row["n"], "1", "{row:?}");
        assert_eq!(row["epochs"], "2", "{row:?}");
    }
    let again = run_exp_env(&[f, "--set", "train.epochs=2"], &[]);
    assert!(
        stderr(&again).contains("2 final already, 0 to run here"),
        "{}",
        stderr(&again)
    );

    // Lowered, or patience changed: refused before anything is written.
    let before = root_files(&root);
    for (set, key) in [
        ("train.epochs=1", "train.epochs = 2, the sweep now gives 1"),
        (
            "train.max_steps=3",
            "train.max_steps = (unset), the sweep now gives 3",
        ),
        (
            "train.patience=1",
            "train.patience = (unset), the sweep now gives 1",
        ),
    ] {
        let o = run_exp_env(&[f, "--set", "train.epochs=2", "--set", set], &[]);
        assert_eq!(o.status.code(), Some(2), "{set}: {}", stderr(&o));
        assert!(stderr(&o).contains(key), "{set}: {}", stderr(&o));
    }
    assert_eq!(root_files(&root), before);
}

/// An empty or corrupt trial.json does not block the sweep: summarize shows the trial failed
/// with the reason, and a rerun sets the record aside and runs the trial again (from its last
/// checkpoint).
#[test]
fn an_unreadable_trial_record_is_set_aside_and_the_trial_runs_again() {
    let dir = temp_dir("corrupt");
    let file = sweep_file(
        &dir,
        "c",
        "seeds = [0, 1]\njobs = 2",
        "\"model.cell\" = [\"gru\"]",
        "epochs = 1",
    );
    let f = file.to_str().unwrap();
    assert!(run_exp_env(&[f], &[]).status.success());
    let root = dir.join("results/c");
    let ids: Vec<String> = records(&root).keys().cloned().collect();
    let want = json_at(&root.join(&ids[0]).join("summary.json"));
    std::fs::write(root.join(&ids[0]).join("trial.json"), "").unwrap();
    std::fs::write(root.join(&ids[1]).join("trial.json"), "{\"id\": ").unwrap();
    let o = run_exp_env(&["summarize", root.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = csv_rows(&root.join("summary.csv"));
    assert!(
        rows.iter()
            .all(|r| r["status"] == "failed" && r["error"].contains("trial.json")),
        "{rows:?}"
    );
    let o = run_exp_env(&[f], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("it runs again (the record is set aside as trial.json.unreadable)"),
        "{}",
        stderr(&o)
    );
    for id in &ids {
        let run = root.join(id);
        assert!(run.join("trial.json.unreadable").is_file());
        assert_eq!(json_at(&run.join("trial.json"))["status"], "completed");
        assert_logged_once(&run, 1);
    }
    let again = json_at(&root.join(&ids[0]).join("summary.json"));
    assert_eq!(again["best_val_loss"], want["best_val_loss"]);
}

/// Halving with a raised train.epochs: completed trials go on from the rungs they passed, meet
/// the new rung at the old full budget (promoted or pruned there by the same rule), and the
/// promoted ones train to the new budget; pruned trials stay as they were.
#[test]
fn a_raised_budget_continues_a_halving_sweep_through_its_new_rung() {
    let dir = temp_dir("halving-raise");
    let file = sweep_file(
        &dir,
        "hr",
        "method = \"halving\"\ntrials = 6\nseed = 3\nmin_epochs = 1\neta = 3\njobs = 1",
        "\"train.lr\" = { log_uniform = [1e-3, 3e-1] }",
        "epochs = 3",
    );
    let f = file.to_str().unwrap();
    assert!(run_exp_env(&[f], &[]).status.success());
    let root = dir.join("results/hr");
    let before = records(&root);
    let o = run_exp_env(&[f, "--set", "train.epochs=9"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = records(&root);
    let (mut promoted, mut pruned_at_new_rung) = (0, 0);
    for (id, r) in &before {
        let now = &after[id];
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(id).join("summary.json")).unwrap(),
        )
        .unwrap();
        if r["status"] == "pruned" {
            assert_eq!(now["status"], "pruned");
            assert_eq!(summary["epochs_done"], 1);
            continue;
        }
        // Completed at 3 epochs: rung 1 (3 epochs) recorded now, then 9 epochs or pruned at 3.
        let rungs = now["rungs"].as_array().unwrap();
        assert_eq!(rungs.len(), 2, "{now}");
        assert_eq!(rungs[1]["epochs"], 3);
        match now["status"].as_str().unwrap() {
            "completed" => {
                promoted += 1;
                assert_eq!(summary["epochs_done"], 9);
                assert_logged_once(&root.join(id), 9);
            }
            "pruned" => {
                pruned_at_new_rung += 1;
                assert_eq!(summary["epochs_done"], 3);
                assert_logged_once(&root.join(id), 3);
            }
            s => panic!("{id}: {s}"),
        }
    }
    assert!(promoted >= 1, "{after:?}");
    let _ = pruned_at_new_rung;
}

/// A trial that a raised train.epochs would not change (it ended at train.max_steps) stays final
/// and still counts in the means: only trials that would train further wait for the raise.
#[test]
fn a_raised_budget_leaves_trials_that_ended_by_another_limit() {
    let dir = temp_dir("budget-steps");
    let file = sweep_file(
        &dir,
        "bs",
        "seeds = [0, 1]\njobs = 2",
        "\"model.cell\" = [\"gru\"]",
        "epochs = 3\nmax_steps = 5",
    );
    let f = file.to_str().unwrap();
    assert!(run_exp_env(&[f], &[]).status.success());
    let root = dir.join("results/bs");
    let o = run_exp_env(&[f, "--set", "train.epochs=4"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 trials, 2 final already, 0 to run here"),
        "{}",
        stderr(&o)
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!text.contains("smaller budget"), "{text}");
    for row in csv_rows(&root.join("summary_by_config.csv")) {
        assert_eq!(row["n"], "2", "{row:?}");
    }
}

/// A rebuild while a sweep runs (the binary's file unlinked, as cargo replaces it) does not
/// stop the sweep: the driver starts every trial from the binary it is running.
#[test]
fn a_sweep_goes_on_when_its_binary_is_replaced() {
    let dir = temp_dir("rebuilt");
    let file = sweep_file(
        &dir,
        "rb",
        "seeds = [0, 1, 2]\njobs = 1",
        KILL_AXES,
        "epochs = 2",
    );
    let exe = dir.join("run-exp-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_run-exp"), &exe).unwrap();
    let root = dir.join("results/rb");
    let driver = Command::new(&exe)
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the first trial to start", 60, || {
        root.is_dir() && !records(&root).is_empty()
    });
    std::fs::remove_file(&exe).unwrap();
    let o = driver.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recs = records(&root);
    assert_eq!(recs.len(), 6);
    assert!(
        recs.values().all(|r| r["status"] == "completed"),
        "{recs:?}"
    );
}

/// `--trial next` on a grid sweep: two slot processes at once run every trial, each once.
#[test]
fn two_next_slots_share_a_grid_sweep_each_trial_once() {
    let dir = temp_dir("slots");
    let file = sweep_file(&dir, "sl", "seeds = [0, 1]", KILL_AXES, "epochs = 2");
    let f = file.to_str().unwrap();
    let a = spawn(&[f, "--trial", "next"], &[]);
    let b = spawn(&[f, "--trial", "next"], &[]);
    for p in [a, b] {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let root = dir.join("results/sl");
    let recs = records(&root);
    assert_eq!(recs.len(), 4);
    for r in recs.values() {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["attempts"], 1, "ran twice: {r}");
        assert_logged_once(&root.join(r["id"].as_str().unwrap()), 2);
    }
}
