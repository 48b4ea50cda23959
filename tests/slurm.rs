//! Under a real Slurm (one node on 127.0.0.1, brought up by ../shared/scripts/start-local-
//! slurm.sh): a job sent SIGTERM, as Slurm does before a time limit or on preemption, ends
//! `interrupted` with exit 143 and a checkpoint at the step it stopped on; a second job resumes
//! it and ends with the weights of a straight run. A sweep submitted with --slurm runs as a job
//! array and `run-exp summarize` gathers it. Needs root and ../shared (both in CI); elsewhere
//! each test says plainly that it was skipped and why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Brings the local Slurm up once per test binary; Err(why) where it cannot run here.
fn slurm_up() -> Result<(), String> {
    static UP: std::sync::Mutex<Option<Result<(), String>>> = std::sync::Mutex::new(None);
    let mut up = UP.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = up.as_ref() {
        return r.clone();
    }
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/scripts/start-local-slurm.sh");
    let r = if !script.exists() {
        Err(format!("{} is absent (it exists in CI)", script.display()))
    } else if sh("id -u") != "0" {
        Err("Slurm's daemons need root (CI runs as root)".to_string())
    } else {
        let o = Command::new("bash").arg(&script).output().unwrap();
        assert!(
            o.status.success(),
            "start-local-slurm.sh: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(())
    };
    *up = Some(r.clone());
    r
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Waits until job `id` has left the queue; returns its `scontrol show job` line.
fn wait_job(id: &str) -> String {
    let t0 = Instant::now();
    while !sh(&format!("squeue -h -j {id} -o %i")).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "job {id} still queued"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    sh(&format!("scontrol -o show job {id}"))
}

fn config(dir: &Path, out: &str) -> PathBuf {
    let text = format!(
        "[experiment]\nname = \"tiny\"\nseed = 2\nout_dir = {:?}\n\
         [data]\nnum_train = 12800\nnum_valid = 200\nnum_test = 200\n\
         [model]\nembedding_dim = 8\nhidden_size = 64\ndropout = 0.2\n\
         [train]\nepochs = 2\nbatch_size = 32\nlr = 1e-2\n[log]\nevery_steps = 2\nprogress = false\n",
        dir.join(out)
    );
    let path = dir.join(format!("{out}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run_dir(out: &Path) -> PathBuf {
    std::fs::read_dir(out.join("tiny"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// A fresh folder with a small sweep file `<name>.toml` (2 epochs of 640 samples, one thread a
/// trial) ending in `sweep` (its `[sweep]` tables); results under `<folder>/results/<name>`.
fn small_sweep(name: &str, sweep: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("rnnlab-slurm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "[experiment]\nname = \"{name}\"\nout_dir = {:?}\nthreads = 1\n[data]\nnum_train = 640\nnum_valid = 64\nnum_test = 64\n\
             [model]\nembedding_dim = 8\nhidden_size = 16\n[train]\nepochs = 2\n[log]\nprogress = false\n{sweep}",
            dir.join("results")
        ),
    )
    .unwrap();
    (dir, file)
}

/// Submits a sweep file with --slurm, waits for its array and summarizes its folder; returns
/// the script it wrote.
fn submit_and_summarize(file: &Path, root: &Path) -> String {
    let bin = env!("CARGO_BIN_EXE_run-exp");
    let o = Command::new(bin)
        .arg(file)
        .args(["--slurm", "--cpus-per-task", "1", "--time", "5:00"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let script = std::fs::read_to_string(root.join("sweep.sbatch")).unwrap();
    let wait = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/scripts/wait-array.sh");
    let w = Command::new("bash").arg(&wait).arg(&job).output().unwrap();
    assert!(
        w.status.success(),
        "array {job}: {}",
        String::from_utf8_lossy(&w.stderr)
    );
    let s = Command::new(bin)
        .args(["summarize", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    script
}

/// A resubmission of a finished sweep submits nothing.
fn assert_nothing_to_submit(file: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_run-exp"))
        .arg(file)
        .arg("--slurm")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to submit"));
}

#[test]
fn slurm_sigterm_then_resume_equals_a_straight_run() {
    if let Err(why) = slurm_up() {
        return skip("slurm_sigterm_then_resume_equals_a_straight_run", &why);
    }
    let dir = std::env::temp_dir().join(format!("rnnlab-slurm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_run-exp");

    let straight = config(&dir, "straight");
    let o = Command::new(bin).arg(&straight).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let cfg = config(&dir, "job");
    let job = sh(&format!(
        "sbatch --parsable --output={} --wrap 'exec {bin} {}'",
        dir.join("job1.out").display(),
        cfg.display()
    ));
    // Once the first rows are on disk, Slurm's SIGTERM to every process of the job.
    let t0 = Instant::now();
    loop {
        let rows = std::fs::read_dir(dir.join("job").join("tiny"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("metrics.jsonl")).ok())
            .map_or(0, |t| t.lines().count());
        if rows >= 40 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "job {job} wrote no rows"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sh(&format!("scancel --signal=TERM --full {job}"));
    let info = wait_job(&job);
    assert!(info.contains("ExitCode=143:0"), "{info}");
    let run = run_dir(&dir.join("job"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "interrupted", "{summary}");
    let stopped = summary["steps"].as_u64().unwrap();
    let ckpt = rnnlab::checkpoint::newest(&run).unwrap().unwrap();
    assert_eq!(ckpt.state.step as u64, stopped);

    // The requeued work: a second job resumes the run folder.
    let job = sh(&format!(
        "sbatch --parsable --output={} --wrap 'exec {bin} --resume {}'",
        dir.join("job2.out").display(),
        run.display()
    ));
    let info = wait_job(&job);
    assert!(info.contains("JobState=COMPLETED"), "{info}");
    let a = std::fs::read(run_dir(&dir.join("straight")).join("last.safetensors")).unwrap();
    let b = std::fs::read(run.join("last.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed after SIGTERM at step {stopped}: weights differ"
    );
}

#[test]
fn a_sweep_submitted_with_slurm_runs_as_an_array_and_summarizes() {
    if let Err(why) = slurm_up() {
        return skip(
            "a_sweep_submitted_with_slurm_runs_as_an_array_and_summarizes",
            &why,
        );
    }
    let (dir, file) = small_sweep(
        "arr",
        "[sweep]\nseeds = [0, 1, 2]\n[sweep.axes]\n\"model.cell\" = [\"gru\"]\n",
    );
    let root = dir.join("results/arr");
    let script = submit_and_summarize(&file, &root);
    assert!(
        script.contains("#SBATCH --array=0-2") && script.contains("--trial"),
        "{script}"
    );
    let csv = std::fs::read_to_string(root.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert_eq!(
        csv.lines()
            .skip(1)
            .filter(|l| l.contains(",completed,"))
            .count(),
        3,
        "{csv}"
    );
    // Resubmitting a finished sweep submits nothing.
    assert_nothing_to_submit(&file);
}

/// A TPE sweep on Slurm: `sweep.jobs` array tasks, each a slot running `--trial next`, ask
/// and run the configurations between them through the sweep folder until `trials` are done.
#[test]
fn a_tpe_sweep_on_slurm_runs_its_trials_in_slots_each_once() {
    if let Err(why) = slurm_up() {
        return skip(
            "a_tpe_sweep_on_slurm_runs_its_trials_in_slots_each_once",
            &why,
        );
    }
    let (dir, file) = small_sweep(
        "tpe",
        "[sweep]\nmethod = \"tpe\"\ntrials = 5\njobs = 2\n[sweep.axes]\n\"train.lr\" = { log_uniform = [1e-3, 1e-1] }\n",
    );
    let root = dir.join("results/tpe");
    let script = submit_and_summarize(&file, &root);
    assert!(
        script.contains("#SBATCH --array=0-1") && script.contains("--trial next"),
        "{script}"
    );
    for n in 0..5 {
        let id = format!("t{n:04}");
        let rec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(&id).join("trial.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(rec["status"], "completed", "{rec}");
        assert_eq!(rec["attempts"], 1, "{rec}");
    }
    assert!(!root.join("t0005").exists());
    let csv = std::fs::read_to_string(root.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert_nothing_to_submit(&file);
}

#[test]
fn features_submitted_with_slurm_run_as_shards_and_a_rerun_computes_nothing() {
    let name = "features_submitted_with_slurm_run_as_shards_and_a_rerun_computes_nothing";
    if let Err(why) = slurm_up() {
        return skip(name, &why);
    }
    let dir = std::env::temp_dir().join(format!("rnnlab-slurm-features-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_run-exp");
    let weights = dir.join("w.safetensors");
    let w = rnnlab::model::resnet::random_state_dict(rnnlab::model::resnet::Depth::R18, 0).unwrap();
    candle_core::safetensors::save(&w, &weights).unwrap();
    let file = dir.join("f.toml");
    std::fs::write(
        &file,
        format!(
            "[experiment]\nname = \"f\"\nout_dir = {:?}\n\
             [data]\nsource = \"synthetic-video\"\nnum_classes = 2\nframes = 4\nheight = 32\nwidth = 32\nchannels = 3\n\
             num_train = 160\nnum_valid = 40\nnum_test = 40\n\
             [model]\nhidden_size = 8\nframe_encoder = \"resnet18\"\nencoder_weights = {:?}\n[log]\nprogress = false\n",
            dir.join("results"),
            weights.display().to_string()
        ),
    )
    .unwrap();
    let o = Command::new(bin)
        .arg("features")
        .arg(&file)
        .args([
            "--slurm",
            "--shards",
            "3",
            "--cpus-per-task",
            "1",
            "--time",
            "5:00",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let script = std::fs::read_to_string(dir.join("results/f/features/features.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-2")
            && script.contains("--shard \"$SLURM_ARRAY_TASK_ID/3\""),
        "{script}"
    );
    let wait = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/scripts/wait-array.sh");
    let w = Command::new("bash").arg(&wait).arg(&job).output().unwrap();
    assert!(
        w.status.success(),
        "array {job}: {}",
        String::from_utf8_lossy(&w.stderr)
    );
    // The shards computed every chunk: writing the dataset computes none.
    let o = Command::new(bin)
        .arg("features")
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("all splits: 0 of 5 chunks computed now"),
        "{said}"
    );
    assert!(dir.join("results/f/features/train.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}
