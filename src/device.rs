//! `experiment.device`: parse the config string and open the candle device. candle 0.11's
//! `cuda_if_available` does not fall back to the CPU in a CUDA build, so "auto" tries
//! `new_cuda(0)` and falls back by hand.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::Device;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Auto,
}

impl DeviceSpec {
    pub fn parse(s: &str) -> std::result::Result<DeviceSpec, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "auto" => Ok(DeviceSpec::Auto),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!(
                    "unknown device \"{s}\"; expected \"cpu\", \"cuda\", \"cuda:N\" or \"auto\""
                )),
            },
        }
    }

    /// Opens the device. "auto" prints one line on stderr when it falls back to the CPU.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => open_cuda(n),
            DeviceSpec::Auto => match open_cuda(0) {
                Ok(d) => Ok(d),
                Err(e) => {
                    crate::say!("device = \"auto\": using the CPU ({e})");
                    Ok(Device::Cpu)
                }
            },
        }
    }
}

fn open_cuda(n: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Error::Device(format!(
            "cuda:{n} requested but this build has no CUDA support; \
             rebuild with `cargo build --release --features cuda` or set device = \"cpu\""
        )));
    }
    Device::new_cuda(n).map_err(|e| {
        // candle appends a backtrace to its errors when RUST_BACKTRACE is set: keep the cause.
        let cause = e.to_string();
        let cause = cause.lines().next().unwrap_or("unknown error").trim();
        Error::Device(format!("cuda:{n} is not usable: {cause}"))
    })
}

/// CPU threads for our own parallel loops and gemms: candle's count, read once. candle
/// recomputes it on every call (without RAYON_NUM_THREADS it reads the CPU list from /proc),
/// and the recurrence asks for every gemm of every step.
pub fn cpu_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = candle_core::utils::get_num_threads().max(1);
            THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// `experiment.threads`: sets the count for candle's kernels (RAYON_NUM_THREADS, read on each
/// of their calls) and for the fused op, from the next op on, so two runs in one process each
/// get their own; 0 keeps the current count.
pub fn set_cpu_threads(n: usize) {
    if n > 0 {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        THREADS.store(n, Ordering::Relaxed);
    }
}

static THREADS: AtomicUsize = AtomicUsize::new(0);
