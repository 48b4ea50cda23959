//! `run-exp features CONFIG [--shard i/n | --slurm --shards N]`: a frozen encoder's features
//! as a `tensors` dataset.

use std::path::PathBuf;
use std::process::ExitCode;

use rnnlab::Config;

use crate::{emit, fail, SlurmCli, BAD_INPUT};

#[derive(clap::Args)]
pub struct FeaturesCli {
    /// The experiment config (a resnet frame encoder, frozen).
    config: PathBuf,
    /// Override a config key (repeatable), as for training.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Compute only shard I of N (I from 0): one Slurm array task's part. The tensors files
    /// are written by a run without --shard, which computes whatever is still missing.
    #[arg(long, value_name = "I/N", conflicts_with = "slurm")]
    shard: Option<String>,
    /// Where the tensors dataset goes. Default <out_dir>/<experiment.name>/features.
    #[arg(long)]
    out: Option<PathBuf>,
    /// With --slurm: the number of shards (array tasks).
    #[arg(long, requires = "slurm", default_value_t = 8)]
    shards: usize,
    #[command(flatten)]
    slurm: SlurmCli,
}

pub fn features(a: FeaturesCli) -> ExitCode {
    let config = match Config::load(&a.config, &a.set) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let out = a.out.clone().unwrap_or_else(|| {
        config
            .experiment
            .out_dir
            .join(&config.experiment.name)
            .join("features")
    });
    if a.slurm.slurm {
        if a.shards == 0 {
            rnnlab::say!("error: --shards must be at least 1");
            return ExitCode::from(BAD_INPUT);
        }
        return match rnnlab::features::submit(
            &a.config,
            &a.set,
            &config,
            a.shards,
            &out,
            &a.slurm.options(),
        ) {
            Ok((script, id)) => {
                match id {
                    Some(id) => {
                        rnnlab::say!(
                            "submitted job array {id}: {} shards ({})",
                            a.shards,
                            script.display()
                        );
                        if let Err(code) = emit(id) {
                            return code;
                        }
                    }
                    None => rnnlab::say!("wrote {} (not submitted)", script.display()),
                }
                rnnlab::say!(
                    "when the array is done: run-exp features {} (writes the tensors files; computes any shard that failed)",
                    a.config.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let shard = match a
        .shard
        .as_deref()
        .map(rnnlab::features::parse_shard)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match rnnlab::features::extract(&config, shard, &out) {
        Ok(done) => {
            let what = match shard {
                Some((i, n)) => format!("shard {i}/{n}"),
                None => "all splits".into(),
            };
            rnnlab::say!(
                "{what}: {} of {} chunks computed now, {} were cached",
                done.computed,
                done.chunks,
                done.chunks - done.computed
            );
            for (split, path) in &done.files {
                if let Err(code) = emit(format!("{split}\t{}", path.display())) {
                    return code;
                }
            }
            if !done.files.is_empty() {
                rnnlab::say!(
                    "train heads on them: [data] source = \"tensors\", train/valid/test = these files; [model] frame_encoder = \"none\" (or \"linear\")"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
