//! Stopping on request: SIGINT (Ctrl-C) and SIGTERM (what Slurm sends before killing a job at
//! its time limit or on preemption) only raise a flag; the training loop finishes its step,
//! checkpoints, writes the summary with status `interrupted` and exits 130 / 143. A second
//! signal ends the process at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

/// The signal that asked the run to stop, if any.
#[derive(Clone, Default)]
pub struct Stop {
    signal: Arc<AtomicUsize>,
}

impl Stop {
    /// Catches SIGINT and SIGTERM from now on.
    pub fn install() -> std::io::Result<Stop> {
        let stop = Stop::default();
        let armed = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as the previous signal left it: the second
            // signal exits straight away (with the shell's code for death by that signal).
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&armed))?;
            signal_hook::flag::register_usize(sig, Arc::clone(&stop.signal), sig as usize)?;
            signal_hook::flag::register(sig, Arc::clone(&armed))?;
        }
        Ok(stop)
    }

    /// The signal number received, if one was.
    pub fn requested(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// The exit code for a run stopped by `signal`: 128 + its number (130 SIGINT, 143 SIGTERM).
    pub fn exit_code(signal: i32) -> u8 {
        (128 + signal).clamp(0, 255) as u8
    }
}

/// Test hook: `RNNLAB_TEST_CRASH=<point>:<step>` names one point of one step where the run
/// aborts (as `kill -9` would: no destructor runs) or signals itself, so the tests can crash a
/// run exactly there. Points: `step` (after a step's update and logging, with everything
/// written so far on disk), `sigterm` / `sigint` (the signal, after a step), `commit` (a
/// checkpoint fully written but not yet renamed into place), `committed` (renamed, the folder
/// not yet tidied). Unset, it costs one environment lookup per process.
pub fn test_hook(step: usize) -> Option<&'static str> {
    static HOOK: std::sync::OnceLock<Option<(String, usize)>> = std::sync::OnceLock::new();
    let hook = HOOK.get_or_init(|| {
        let v = std::env::var("RNNLAB_TEST_CRASH").ok()?;
        let (p, s) = v.split_once(':')?;
        Some((p.to_string(), s.parse().ok()?))
    });
    match hook {
        Some((p, s)) if *s == step => ["step", "sigterm", "sigint", "commit", "committed"]
            .into_iter()
            .find(|q| q == p),
        _ => None,
    }
}

/// Aborts here when the test hook names `point` at `step`.
pub fn crash_point(point: &str, step: usize) {
    if test_hook(step) == Some(point) {
        std::process::abort();
    }
}

/// Aborts here when the test hook names `point` at `step`, after `first` has put what was
/// written so far on disk (the worst case a kill leaves).
pub fn crash_point_after(
    point: &str,
    step: usize,
    first: impl FnOnce() -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    if test_hook(step) == Some(point) {
        first()?;
        std::process::abort();
    }
    Ok(())
}

/// Raises the signal the test hook names for `step`, if any.
pub fn signal_point(step: usize) {
    let sig = match test_hook(step) {
        Some("sigterm") => SIGTERM,
        Some("sigint") => SIGINT,
        _ => return,
    };
    let _ = signal_hook::low_level::raise(sig);
}
