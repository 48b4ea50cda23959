//! Which frames each clip keeps: `data.frames_per_clip` (evenly spaced, centred frames) and
//! `data.shuffle_frames` (a seeded permutation per clip), one rule for every video source
//! (frame folders, tensors, synthetic video). Training splits keep every frame; batches pick
//! theirs at a random offset (`batch::Augment`).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::{Clips, Inputs, Split};
use crate::config::Data;

/// The frame indices `frames_per_clip` keeps of `t` (evenly spaced, centred), or all.
pub fn chosen(t: usize, keep: Option<usize>) -> Vec<usize> {
    match keep {
        Some(k) if k < t => (0..k).map(|i| ((2 * i + 1) * t) / (2 * k)).collect(),
        _ => (0..t).collect(),
    }
}

/// `data.frames_per_clip` (evenly spaced, centred frames: evaluation splits; training picks
/// its own per batch, see `batch::Augment`) and `data.shuffle_frames` (a seeded permutation per
/// clip) applied to a split of clips.
pub fn select_frames(split: Split, cfg: &Data, seed: u64) -> Split {
    let Inputs::Frames {
        shape,
        clips: Clips::Memory(clips),
    } = split.inputs
    else {
        return split;
    };
    let px = shape.pixels();
    let mut order = FrameOrder::new(cfg, seed);
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
        FrameOrder {
            keep: cfg.frames_per_clip,
            shuffle: cfg
                .shuffle_frames
                .then(|| StdRng::seed_from_u64(seed ^ 0x5eed_f4a3)),
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
