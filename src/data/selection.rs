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
    match keep {
        Some(k) if k < t => (0..k).map(|i| ((2 * i + 1) * t) / (2 * k)).collect(),
        _ => (0..t).collect(),
    }
}

/// The frames split `which` keeps: training every frame (its batches pick theirs, at a random
/// offset: `batch::Augment`), validation and test `frames_per_clip`'s centred ones;
/// `shuffle_frames` permutes each split's clips with the split's own seed (`Which::seed`).
pub fn order(cfg: &Data, seed: u64, which: Which) -> FrameOrder {
    let keep = match which {
        Which::Train => None,
        Which::Valid | Which::Test => cfg.frames_per_clip,
    };
    FrameOrder::with(keep, cfg.shuffle_frames, which.seed(seed))
}

/// A split held in memory with the frames `order` keeps for split `which`.
pub fn select(split: Split, cfg: &Data, seed: u64, which: Which) -> Split {
    apply(split, order(cfg, seed, which))
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
    shuffle: Option<StdRng>,
}

impl FrameOrder {
    pub fn new(cfg: &Data, seed: u64) -> FrameOrder {
        FrameOrder::with(cfg.frames_per_clip, cfg.shuffle_frames, seed)
    }

    fn with(keep: Option<usize>, shuffle: bool, seed: u64) -> FrameOrder {
        FrameOrder {
            keep,
            shuffle: shuffle.then(|| StdRng::seed_from_u64(seed ^ 0x5eed_f4a3)),
        }
    }

    /// The next clip's frame indices, for a clip of `t` frames.
    pub fn next(&mut self, t: usize) -> Vec<usize> {
        let mut idx = chosen(t, self.keep);
        if let Some(rng) = &mut self.shuffle {
            idx.shuffle(rng);
        }
        idx
    }
}
