//! Which frames each clip keeps: `data.frames_per_clip` (evenly spaced, centred frames) and
//! `data.shuffle_frames` (a seeded permutation per clip), one rule for every video source
//! (frame folders, tensors of frames or of per-frame features, synthetic video). Training
//! splits keep every frame; batches pick theirs, one per segment at its own random offset
//! (`batch::Augment`).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::splits::Which;
use super::{Clips, Inputs, Split};
use crate::config::Data;

/// The frame indices `frames_per_clip` keeps of `t` (evenly spaced, centred), or all.
pub fn chosen(t: usize, keep: Option<usize>) -> Vec<usize> {
    views(t, keep, 1)
}

/// `n` views of `keep` frames each of a clip of `t`, view after view: view `v` takes frame
/// floor((i + (v + 1/2) / n) * t / keep) of each equal segment `i`, so the views are the
/// centred frames shifted evenly through the segments (`n = 1`: exactly the centred ones,
/// [`chosen`]). A clip of `t <= keep` frames is one view of all its frames.
pub fn views(t: usize, keep: Option<usize>, n: usize) -> Vec<usize> {
    let n = n.max(1);
    match keep {
        Some(k) if k < t => (0..n)
            .flat_map(|v| (0..k).map(move |i| ((2 * i * n + 2 * v + 1) * t) / (2 * n * k)))
            .collect(),
        _ => (0..t).collect(),
    }
}

/// The frames split `which` keeps: training every frame (its batches pick theirs, at a random
/// offset: `batch::Augment`), validation `frames_per_clip`'s centred ones, test `test_views`
/// views of them (`[eval] clips`: [`views`], scored by averaging); `shuffle_frames` permutes
/// each view with the split's own seed (`Which::seed`).
pub fn order(cfg: &Data, seed: u64, which: Which, test_views: usize) -> FrameOrder {
    let (keep, views) = match which {
        Which::Train => (None, 1),
        Which::Valid => (cfg.frames_per_clip, 1),
        Which::Test => (cfg.frames_per_clip, test_views),
    };
    FrameOrder {
        views,
        ..FrameOrder::with(keep, cfg.shuffle_frames, which.seed(seed))
    }
}

/// A split held in memory with the frames `order` keeps for split `which`.
pub fn select(split: Split, cfg: &Data, seed: u64, which: Which, test_views: usize) -> Split {
    apply(split, order(cfg, seed, which, test_views))
}

/// `data.frames_per_clip` (evenly spaced, centred frames) and `data.shuffle_frames` (a
/// permutation per clip seeded by `seed`) applied to a split of clips.
pub fn select_frames(split: Split, cfg: &Data, seed: u64) -> Split {
    apply(split, FrameOrder::new(cfg, seed))
}

fn apply(split: Split, mut order: FrameOrder) -> Split {
    if let Inputs::Features { dim, seqs } = split.inputs {
        let seqs = seqs
            .into_iter()
            .map(|s| {
                order
                    .next(s.len() / dim.max(1))
                    .iter()
                    .flat_map(|&i| s[i * dim..(i + 1) * dim].iter().copied())
                    .collect()
            })
            .collect();
        return Split {
            inputs: Inputs::Features { dim, seqs },
            labels: split.labels,
        };
    }
    let Inputs::Frames {
        shape,
        clips: Clips::Memory(clips),
    } = split.inputs
    else {
        return split;
    };
    let px = shape.pixels();
    let clips: Vec<Vec<u8>> = clips
        .into_iter()
        .map(|clip| {
            order
                .next(clip.len() / px.max(1))
                .iter()
                .flat_map(|&i| clip[i * px..(i + 1) * px].iter().copied())
                .collect()
        })
        .collect();
    Split {
        inputs: Inputs::Frames {
            shape,
            clips: clips.into(),
        },
        labels: split.labels,
    }
}

/// The frames each clip of a split keeps, in the order it keeps them: `frames_per_clip`'s
/// centred ones (or all), permuted with `shuffle_frames` by a generator seeded per split and
/// drawn clip after clip.
pub struct FrameOrder {
    keep: Option<usize>,
    /// Views of `keep` frames per clip ([`views`]).
    views: usize,
    shuffle: Option<StdRng>,
    /// The shuffle's seed (for cache keys).
    seed: Option<u64>,
}

impl FrameOrder {
    pub fn new(cfg: &Data, seed: u64) -> FrameOrder {
        FrameOrder::with(cfg.frames_per_clip, cfg.shuffle_frames, seed)
    }

    fn with(keep: Option<usize>, shuffle: bool, seed: u64) -> FrameOrder {
        let seed = shuffle.then_some(seed ^ 0x5eed_f4a3);
        FrameOrder {
            keep,
            views: 1,
            shuffle: seed.map(StdRng::seed_from_u64),
            seed,
        }
    }

    /// Every frame, in order: for splits whose frames were chosen when they were listed.
    pub fn every() -> FrameOrder {
        FrameOrder::with(None, false, 0)
    }

    /// Evenly spaced `keep` frames for training too (video files decoded without `data.fps`:
    /// the cache holds the frames every batch takes).
    pub fn keeping(self, keep: Option<usize>) -> FrameOrder {
        FrameOrder { keep, ..self }
    }

    /// What decides the frames it keeps, as bytes for a cache key.
    pub fn fingerprint(&self) -> [u64; 3] {
        [
            self.keep.map_or(0, |k| k as u64 + 1),
            self.views as u64,
            self.seed.map_or(0, |s| s.wrapping_add(1)),
        ]
    }

    /// The next clip's frame indices, for a clip of `t` frames; with shuffling, each view is
    /// permuted on its own.
    pub fn next(&mut self, t: usize) -> Vec<usize> {
        let mut idx = views(t, self.keep, self.views);
        if let Some(rng) = &mut self.shuffle {
            let per_view = self.keep.unwrap_or(t).max(1);
            for view in idx.chunks_mut(per_view) {
                view.shuffle(rng);
            }
        }
        idx
    }
}
