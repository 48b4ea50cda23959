//! How the fused op divides its work between threads: batch-row chunks or hidden-unit runs,
//! the buffers its workers share (each writing only its own rows × units), the pool its
//! scratch buffers come from, and the per-step barrier of workers that split the units.

/// A buffer several forward workers write at once, each only at its own rows × units, and
/// read across workers only after a `StepBarrier`.
#[derive(Clone, Copy)]
pub(super) struct Shared<'a> {
    ptr: *mut f32,
    pub(super) len: usize,
    _buf: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: workers touch disjoint parts between barriers (see `Shared::part`).
unsafe impl Send for Shared<'_> {}
unsafe impl Sync for Shared<'_> {}

impl<'a> Shared<'a> {
    pub(super) fn new(buf: &'a mut [f32]) -> Shared<'a> {
        Shared {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _buf: std::marker::PhantomData,
        }
    }

    /// Room for `n` floats in `buf` (emptied), not zeroed: the workers write every element,
    /// and only then does the caller `set_len(n)`.
    pub(super) fn uninit(buf: &'a mut Vec<f32>, n: usize) -> Shared<'a> {
        buf.clear();
        buf.reserve_exact(n);
        Shared {
            ptr: buf.as_mut_ptr(),
            len: n,
            _buf: std::marker::PhantomData,
        }
    }

    /// `n` floats from `start` to write.
    /// SAFETY: no other thread reads or writes them until the next barrier.
    pub(super) unsafe fn part(&self, start: usize, n: usize) -> &'a mut [f32] {
        assert!(start + n <= self.len, "recurrence: shared buffer overrun");
        std::slice::from_raw_parts_mut(self.ptr.add(start), n)
    }

    /// `n` floats from `start` to read.
    /// SAFETY: no thread writes them until the next barrier.
    pub(super) unsafe fn read(&self, start: usize, n: usize) -> &'a [f32] {
        assert!(start + n <= self.len, "recurrence: shared buffer overrun");
        std::slice::from_raw_parts(self.ptr.add(start), n)
    }
}

/// Scratch buffers kept between op calls. glibc maps every allocation of 32 MiB or more
/// afresh and unmaps it when freed, so such a buffer comes back as new pages to fault in: at
/// hidden 512, seq 256 that was 16k page faults per LSTM inference call and 14% of its CPU
/// time in the kernel. Smaller buffers glibc recycles itself (pooling them too made training
/// at the benchmark's first shape ~2% slower: the memory held here is memory malloc can't
/// hand to candle).
static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
/// Buffers kept at most (the largest ones), and the smallest worth keeping (32 MiB).
const POOL_KEEP: usize = 8;
const POOL_MIN_FLOATS: usize = 1 << 23;

/// An empty buffer with room for `n` floats: the smallest pooled one that fits, else new.
pub(super) fn take(n: usize) -> Vec<f32> {
    if n >= POOL_MIN_FLOATS {
        if let Ok(mut pool) = POOL.lock() {
            let fit = (0..pool.len())
                .filter(|&i| pool[i].capacity() >= n)
                .min_by_key(|&i| pool[i].capacity());
            if let Some(i) = fit {
                return pool.swap_remove(i);
            }
        }
    }
    Vec::with_capacity(n)
}

/// Gives a scratch buffer back to the pool (dropping the smallest when it is full).
pub(super) fn recycle(mut v: Vec<f32>) {
    if v.capacity() < POOL_MIN_FLOATS {
        return;
    }
    v.clear();
    if let Ok(mut pool) = POOL.lock() {
        pool.push(v);
        if pool.len() > POOL_KEEP {
            if let Some(i) = (0..pool.len()).min_by_key(|&i| pool[i].capacity()) {
                pool.swap_remove(i);
            }
        }
    }
}

/// The per-step rendezvous of workers that split the hidden units: a generation counter,
/// spun on briefly (a step takes tens of microseconds), then waited on with yields so an
/// oversubscribed machine is not burnt. A worker that panics poisons it, so the others
/// stop instead of waiting forever.
pub(super) struct StepBarrier {
    workers: usize,
    /// Spins before yielding.
    spins: u32,
    arrived: std::sync::atomic::AtomicUsize,
    generation: std::sync::atomic::AtomicUsize,
    poisoned: std::sync::atomic::AtomicBool,
}

impl StepBarrier {
    pub(super) fn new(workers: usize) -> StepBarrier {
        StepBarrier::spinning(workers, 20_000)
    }

    /// A barrier that yields after `spins` spins: for the one meeting per call, where the
    /// worker just spawned may still be queued on the waiting thread's core (spinning there
    /// only delays it).
    pub(super) fn spinning(workers: usize, spins: u32) -> StepBarrier {
        StepBarrier {
            workers,
            spins,
            arrived: 0.into(),
            generation: 0.into(),
            poisoned: false.into(),
        }
    }

    pub(super) fn wait(&self) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
        let gen = self.generation.load(Acquire);
        if self.arrived.fetch_add(1, AcqRel) + 1 == self.workers {
            self.arrived.store(0, Relaxed);
            self.generation.store(gen + 1, Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Acquire) == gen {
            if self.poisoned.load(Relaxed) {
                panic!("recurrence: another worker failed");
            }
            if spins < self.spins {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Poisons the barrier if its worker unwinds.
pub(super) struct PoisonOnPanic<'a>(pub(super) Option<&'a StepBarrier>);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if let (Some(b), true) = (self.0, std::thread::panicking()) {
            b.poisoned.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// W_hh larger than this stays out of one core's L2 (2 MB on this machine, and the step's h
/// and gates need room too): the forward then splits the hidden units between threads, each
/// keeping its share of W_hh resident, instead of splitting the batch.
pub(super) const UNIT_SPLIT_BYTES: usize = 1 << 20;

/// Hidden units split into one run per thread, on multiples of 16 where the size allows.
/// Returns (first unit, units) pairs.
pub(super) fn unit_chunks(h: usize, threads: usize) -> Vec<(usize, usize)> {
    let threads = threads.min(h).max(1);
    let edge = |i: usize| {
        let e = h * i / threads;
        if i == threads || h < 16 * threads {
            e
        } else {
            (e + 8) / 16 * 16
        }
    };
    (0..threads)
        .map(|i| (edge(i), edge(i + 1) - edge(i)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// The rows of a gate-major matrix ([gates * h, width]) for units u0..u0+hk of each gate
/// (the matrix itself when that is all of them).
pub(super) fn gate_rows(
    m: &[f32],
    width: usize,
    h: usize,
    gates: usize,
    u0: usize,
    hk: usize,
) -> std::borrow::Cow<'_, [f32]> {
    if u0 == 0 && hk == h {
        return m.into();
    }
    let mut rows = Vec::with_capacity(gates * hk * width);
    for q in 0..gates {
        rows.extend_from_slice(&m[(q * h + u0) * width..][..hk * width]);
    }
    rows.into()
}

/// Batch rows split into one contiguous chunk per thread: each chunk runs the whole sequence
/// on its own core with no synchronisation per step (the grain that suits few cores).
/// Returns (first row, rows) pairs.
pub(super) fn row_chunks(b: usize) -> Vec<(usize, usize)> {
    const MIN_ROWS: usize = 8;
    let threads = crate::device::cpu_threads().min(b / MIN_ROWS).max(1);
    let base = b / threads;
    let extra = b % threads;
    let mut r0 = 0;
    (0..threads)
        .map(|i| {
            let nb = base + usize::from(i < extra);
            let c = (r0, nb);
            r0 += nb;
            c
        })
        .collect()
}
