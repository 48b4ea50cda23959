//! Records the git commit the binary is built from (`summary.json`'s `versions.git_commit`):
//! a run started from another directory (a Slurm task) must still name the code that ran.

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=RNNLAB_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit, a checkout); only paths that exist, since a missing
    // one would rerun this script on every build.
    for p in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
