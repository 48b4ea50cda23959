//! Batches: padding to the longest sequence in the batch, per-sequence lengths, and length
//! buckets so a batch wastes few padded steps. A batch's `x` is what the classifier's front
//! end takes: token ids, per-step features, or frames.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;

use super::{Clips, Inputs, Split};
use crate::error::Result;

/// Batches whose clips a cached split reads ahead of training.
const AHEAD: usize = 4;

/// Batches pooled this many at a time before sorting by length (randomness vs. padding).
const BUCKET_POOL: usize = 50;

pub struct Batch {
    /// Token ids [batch, seq] u32, features [batch, seq, dim] f32, or frames
    /// [batch, seq, channels, height, width] f32 in [0, 1]; zero after each sequence's length.
    pub x: Tensor,
    /// Valid steps per sequence, each >= 1.
    pub lengths: Vec<usize>,
    /// labels: [batch] u32.
    pub labels: Tensor,
}

/// Index lists, one per batch. Training (`rng` given): shuffle, sort pools of
/// `batch_size * 50` by length, cut, shuffle the batch order. Evaluation: sorted by length.
pub fn plan(
    split: &Split,
    batch_size: usize,
    rng: Option<&mut crate::EpochRng>,
) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..split.len()).collect();
    let len = |i: &usize| split.inputs.steps(*i);
    let mut batches: Vec<Vec<usize>> = match rng {
        Some(rng) => {
            idx.shuffle(rng);
            let mut out = Vec::new();
            for pool in idx.chunks_mut(batch_size * BUCKET_POOL) {
                pool.sort_by_key(len);
                out.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
            }
            out.shuffle(rng);
            out
        }
        None => {
            idx.sort_by_key(len);
            idx.chunks(batch_size).map(<[usize]>::to_vec).collect()
        }
    };
    batches.retain(|b| !b.is_empty());
    batches
}

/// Training-time video sampling and augmentation, drawn per clip from the epoch's generator:
/// `data.frames_per_clip` frames, one per equal segment at its own random offset (evaluation
/// splits hold the centred ones), and `data.augment_*`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Augment {
    pub keep: Option<usize>,
    pub shift: usize,
    pub flip: bool,
    pub brightness: f64,
}

impl Augment {
    pub fn of(cfg: &crate::config::Data) -> Option<Augment> {
        let a = Augment {
            keep: cfg.frames_per_clip,
            shift: cfg.augment_shift,
            flip: cfg.augment_flip,
            brightness: cfg.augment_brightness,
        };
        (a.keep.is_some() || a.shift > 0 || a.flip || a.brightness > 0.0).then_some(a)
    }

    /// The frames a training batch takes of a clip of `t`: `keep` of them, one per equal
    /// segment, each at its own random offset in its segment (TSN's sampling); all when
    /// `t <= keep`.
    fn pick(&self, t: usize, rng: &mut crate::EpochRng) -> Vec<usize> {
        use rand::Rng;
        match self.keep {
            Some(k) if k < t => {
                let stride = t as f64 / k as f64;
                (0..k)
                    .map(|i| {
                        let at = i as f64 * stride + rng.random_range(0.0..stride);
                        (at as usize).min(t - 1)
                    })
                    .collect()
            }
            _ => (0..t).collect(),
        }
    }

    /// One clip (frames x C x H x W values in [0, 1]) transformed in place: every frame alike.
    fn apply(&self, clip: &mut [f32], shape: super::FrameShape, rng: &mut crate::EpochRng) {
        use rand::Rng;
        let (h, w) = (shape.height, shape.width);
        let s = self.shift as i64;
        let (dy, dx) = if s > 0 {
            (rng.random_range(-s..=s), rng.random_range(-s..=s))
        } else {
            (0, 0)
        };
        let flip = self.flip && rng.random_bool(0.5);
        let gain = if self.brightness > 0.0 {
            rng.random_range(1.0 - self.brightness..=1.0 + self.brightness) as f32
        } else {
            1.0
        };
        let mut plane = vec![0f32; h * w];
        for p in clip.chunks_mut(h * w) {
            plane.copy_from_slice(p);
            for y in 0..h {
                for x in 0..w {
                    let sy = y as i64 - dy;
                    let sx0 = if flip { (w - 1 - x) as i64 } else { x as i64 };
                    let sx = sx0 - dx;
                    let v = if sy >= 0 && sy < h as i64 && sx >= 0 && sx < w as i64 {
                        plane[sy as usize * w + sx as usize]
                    } else {
                        0.0
                    };
                    p[y * w + x] = (v * gain).clamp(0.0, 1.0);
                }
            }
        }
    }
}

/// The clips of an epoch's batches read from a cached (on-disk) split on a background thread,
/// at most `AHEAD` batches ahead of training, in the plan's order; splits in memory are read
/// where they are.
pub struct Ahead {
    rx: Option<std::sync::mpsc::Receiver<Result<Vec<Vec<u8>>>>>,
}

impl Ahead {
    /// Starts reading the clips of `batches` (the rest of an epoch's plan) from `split`.
    pub fn new(split: &Split, batches: &[Vec<usize>]) -> Ahead {
        let Inputs::Frames {
            clips: clips @ Clips::Disk(_),
            ..
        } = &split.inputs
        else {
            return Ahead { rx: None };
        };
        let (clips, batches) = (clips.clone(), batches.to_vec());
        let (tx, rx) = std::sync::mpsc::sync_channel(AHEAD);
        std::thread::spawn(move || {
            for idx in batches {
                let read = idx
                    .iter()
                    .map(|&i| clips.get(i).map(std::borrow::Cow::into_owned))
                    .collect();
                // Training stopped early: nobody is listening any more.
                if tx.send(read).is_err() {
                    break;
                }
            }
        });
        Ahead { rx: Some(rx) }
    }

    /// [`make_augmented`] for the next batch of the plan, `idx`, from the clips read ahead.
    pub fn make(
        &mut self,
        split: &Split,
        idx: &[usize],
        device: &Device,
        augment: Option<(Augment, &mut crate::EpochRng)>,
    ) -> Result<Batch> {
        let (Some(rx), Inputs::Frames { shape, .. }) = (&self.rx, &split.inputs) else {
            return make_augmented(split, idx, device, augment);
        };
        let clips = match rx.recv() {
            Ok(read) => read?,
            Err(_) => return make_augmented(split, idx, device, augment),
        };
        let (own, all) = own_clips(split, *shape, idx, clips);
        make_augmented(&own, &all, device, augment)
    }
}

/// A batch's clips (`clips`, those of `idx` in `split`) as a split of their own, with their
/// labels, and its indices 0, 1, ...
fn own_clips(
    split: &Split,
    shape: super::FrameShape,
    idx: &[usize],
    clips: Vec<Vec<u8>>,
) -> (Split, Vec<usize>) {
    let own = Split {
        inputs: Inputs::Frames {
            shape,
            clips: clips.into(),
        },
        labels: idx.iter().map(|&i| split.labels[i]).collect(),
    };
    (own, (0..idx.len()).collect())
}

pub fn make(split: &Split, idx: &[usize], device: &Device) -> Result<Batch> {
    make_augmented(split, idx, device, None)
}

/// A batch of windows `(sequence, first step, steps)` of `split`'s sequences (the views of a
/// clip, `eval::view_probabilities`), each labelled as its sequence.
pub fn make_windows(
    split: &Split,
    windows: &[(usize, usize, usize)],
    device: &Device,
) -> Result<Batch> {
    let inputs = match &split.inputs {
        Inputs::Tokens(seqs) => Inputs::Tokens(
            windows
                .iter()
                .map(|&(i, at, n)| seqs[i][at..at + n].to_vec())
                .collect(),
        ),
        Inputs::Features { dim, seqs } => Inputs::Features {
            dim: *dim,
            seqs: windows
                .iter()
                .map(|&(i, at, n)| seqs[i][at * dim..(at + n) * dim].to_vec())
                .collect(),
        },
        Inputs::Frames { shape, clips } => {
            let px = shape.pixels();
            Inputs::Frames {
                shape: *shape,
                clips: windows
                    .iter()
                    .map(|&(i, at, n)| Ok(clips.get(i)?[at * px..(at + n) * px].to_vec()))
                    .collect::<Result<Vec<_>>>()?
                    .into(),
            }
        }
    };
    let own = Split {
        inputs,
        labels: windows.iter().map(|&(i, _, _)| split.labels[i]).collect(),
    };
    let all: Vec<usize> = (0..windows.len()).collect();
    make(&own, &all, device)
}

/// [`make`], with training-time augmentation of video clips (seeded by the epoch's generator).
pub fn make_augmented(
    split: &Split,
    idx: &[usize],
    device: &Device,
    mut augment: Option<(Augment, &mut crate::EpochRng)>,
) -> Result<Batch> {
    // Training's frame sampling first: the batch is built from the picked frames.
    if let (Inputs::Frames { shape, clips }, Some((a, rng))) = (&split.inputs, augment.as_mut()) {
        if a.keep.is_some() {
            let px = shape.pixels();
            let picked: Vec<Vec<u8>> = idx
                .iter()
                .map(|&i| {
                    let clip = clips.get(i)?;
                    Ok(a.pick(clip.len() / px.max(1), rng)
                        .into_iter()
                        .flat_map(|f| clip[f * px..(f + 1) * px].iter().copied())
                        .collect())
                })
                .collect::<Result<_>>()?;
            let (sub, all) = own_clips(split, *shape, idx, picked);
            let rest = Augment { keep: None, ..*a };
            return make_augmented(&sub, &all, device, Some((rest, &mut **rng)));
        }
    }
    // The same sampling of per-frame features (a frozen encoder's, or a tensors file's).
    if let (Inputs::Features { dim, seqs }, Some((a, rng))) = (&split.inputs, augment.as_mut()) {
        if a.keep.is_some() {
            let d = (*dim).max(1);
            let picked = idx
                .iter()
                .map(|&i| {
                    let s = &seqs[i];
                    a.pick(s.len() / d, rng)
                        .into_iter()
                        .flat_map(|f| s[f * d..(f + 1) * d].iter().copied())
                        .collect()
                })
                .collect();
            let sub = Split {
                inputs: Inputs::Features {
                    dim: *dim,
                    seqs: picked,
                },
                labels: idx.iter().map(|&i| split.labels[i]).collect(),
            };
            let all: Vec<usize> = (0..idx.len()).collect();
            return make_augmented(&sub, &all, device, None);
        }
    }
    let lengths: Vec<usize> = idx.iter().map(|&i| split.inputs.steps(i).max(1)).collect();
    let t = lengths.iter().copied().max().unwrap_or(1);
    let b = idx.len();
    let x = match &split.inputs {
        Inputs::Tokens(seqs) => {
            let mut ids = vec![0u32; b * t];
            for (row, &i) in idx.iter().enumerate() {
                let seq = &seqs[i];
                ids[row * t..row * t + seq.len()].copy_from_slice(seq);
            }
            Tensor::from_vec(ids, (b, t), device)?
        }
        Inputs::Features { dim, seqs } => {
            let mut v = vec![0f32; b * t * dim];
            for (row, &i) in idx.iter().enumerate() {
                let seq = &seqs[i];
                v[row * t * dim..row * t * dim + seq.len()].copy_from_slice(seq);
            }
            Tensor::from_vec(v, (b, t, *dim), device)?
        }
        Inputs::Frames { shape, clips } => {
            let px = shape.pixels();
            let mut v = vec![0f32; b * t * px];
            for (row, &i) in idx.iter().enumerate() {
                let clip = clips.get(i)?;
                let out = &mut v[row * t * px..row * t * px + clip.len()];
                for (o, &p) in out.iter_mut().zip(clip.iter()) {
                    *o = p as f32 * (1.0 / 255.0);
                }
                if let Some((a, rng)) = augment.as_mut() {
                    if a.shift > 0 || a.flip || a.brightness > 0.0 {
                        a.apply(out, *shape, rng);
                    }
                }
            }
            Tensor::from_vec(v, (b, t, shape.channels, shape.height, shape.width), device)?
        }
    };
    let labels: Vec<u32> = idx.iter().map(|&i| split.labels[i]).collect();
    Ok(Batch {
        x,
        lengths,
        labels: Tensor::new(labels, device)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The epoch generator is rand's StdRng stream (runs before the switch reproduce), and
    /// its saved position restores the stream exactly.
    #[test]
    fn epoch_rng_is_std_rng_and_resumes_from_its_position() {
        use rand::{Rng, RngCore};
        let mut a = crate::EpochRng::seed_from_u64(7);
        let mut b = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..100 {
            assert_eq!(a.next_u32(), b.next_u32());
        }
        let _: f64 = a.random();
        let pos = a.get_word_pos();
        let want: Vec<u32> = (0..50).map(|_| a.next_u32()).collect();
        let mut c = crate::EpochRng::seed_from_u64(7);
        c.set_word_pos(pos);
        let got: Vec<u32> = (0..50).map(|_| c.next_u32()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn plan_covers_every_example_once_and_buckets() {
        let split = Split {
            inputs: Inputs::Tokens((0..1000).map(|i| vec![1; 1 + i % 37]).collect()),
            labels: vec![0; 1000],
        };
        let mut rng = crate::EpochRng::seed_from_u64(0);
        let batches = plan(&split, 16, Some(&mut rng));
        let mut seen: Vec<usize> = batches.concat();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        let waste: usize = batches
            .iter()
            .map(|b| {
                let m = b.iter().map(|&i| split.inputs.steps(i)).max().unwrap();
                b.iter().map(|&i| m - split.inputs.steps(i)).sum::<usize>()
            })
            .sum();
        assert!(
            waste < 1000,
            "bucketing should keep padding low, wasted {waste}"
        );
    }

    /// Flip mirrors, shift moves with zero fill, every frame of a clip alike, seeded.
    #[test]
    fn augmentation_transforms_every_frame_of_a_clip_alike() {
        let shape = super::super::FrameShape {
            channels: 1,
            height: 3,
            width: 4,
        };
        // Two frames: values 1..=12 / 12, then the same plus nothing (identical frames).
        let frame: Vec<f32> = (1..=12).map(|v| v as f32 / 12.0).collect();
        let clip: Vec<f32> = frame.iter().chain(&frame).copied().collect();
        let flip = Augment {
            flip: true,
            ..Default::default()
        };
        let mut seen_flip = false;
        for seed in 0..8 {
            let mut c = clip.clone();
            flip.apply(&mut c, shape, &mut crate::EpochRng::seed_from_u64(seed));
            assert_eq!(c[..12], c[12..], "frames transformed differently");
            if c != clip {
                seen_flip = true;
                assert_eq!(c[..4], [4.0 / 12.0, 3.0 / 12.0, 2.0 / 12.0, 1.0 / 12.0]);
            }
        }
        assert!(seen_flip);
        let shift = Augment {
            shift: 1,
            ..Default::default()
        };
        let mut c = clip.clone();
        let mut rng = crate::EpochRng::seed_from_u64(3);
        shift.apply(&mut c, shape, &mut rng);
        let mut again = clip.clone();
        shift.apply(&mut again, shape, &mut crate::EpochRng::seed_from_u64(3));
        assert_eq!(c, again, "seeded");
        // Every value is an original one or the zero fill.
        assert!(c.iter().all(|v| *v == 0.0 || frame.contains(v)));
        let dim = Augment {
            brightness: 0.5,
            ..Default::default()
        };
        let mut c = clip.clone();
        dim.apply(&mut c, shape, &mut crate::EpochRng::seed_from_u64(1));
        let gain = c[0] / clip[0];
        assert!((0.5..=1.5).contains(&gain));
        assert!(c
            .iter()
            .zip(&clip)
            .all(|(a, b)| (a - (b * gain).min(1.0)).abs() < 1e-6));
    }

    /// Training picks `keep` frames, one in each equal segment, each at its own seeded random
    /// offset (not one offset shared by all segments).
    #[test]
    fn training_picks_one_frame_per_segment_at_a_random_offset() {
        let a = Augment {
            keep: Some(4),
            ..Default::default()
        };
        let mut offsets = std::collections::BTreeSet::new();
        let mut own = false;
        for seed in 0..20 {
            let p = a.pick(16, &mut crate::EpochRng::seed_from_u64(seed));
            assert_eq!(p.len(), 4);
            for (i, &f) in p.iter().enumerate() {
                assert!((4 * i..4 * i + 4).contains(&f), "{p:?}");
            }
            assert_eq!(p, a.pick(16, &mut crate::EpochRng::seed_from_u64(seed)));
            offsets.insert(p[0]);
            let within: std::collections::BTreeSet<usize> =
                p.iter().enumerate().map(|(i, f)| f - 4 * i).collect();
            own |= within.len() > 1;
        }
        assert!(offsets.len() > 1, "the offset never moved");
        assert!(own, "every pick shared one offset between its segments");
        // 10 frames in 4 segments of 2.5: each pick inside its own segment.
        for seed in 0..20 {
            let p = a.pick(10, &mut crate::EpochRng::seed_from_u64(seed));
            for (i, &f) in p.iter().enumerate() {
                let lo = (i as f64 * 2.5) as usize;
                assert!(f >= lo && (f as f64) < (i + 1) as f64 * 2.5, "{p:?}");
            }
        }
        assert_eq!(a.pick(3, &mut crate::EpochRng::seed_from_u64(0)), [0, 1, 2]);
    }

    /// A split cached on disk, read ahead on a thread, gives the batches the same split in
    /// memory gives, with the same augmentation draws, batch after batch.
    #[test]
    fn batches_read_ahead_from_disk_equal_batches_from_memory() {
        let shape = super::super::FrameShape {
            channels: 1,
            height: 4,
            width: 4,
        };
        let clips: Vec<Vec<u8>> = (0..10)
            .map(|c| {
                (0..(3 + c % 4) * 16)
                    .map(|i| (i * 7 + c * 13) as u8)
                    .collect()
            })
            .collect();
        let path = std::env::temp_dir().join(format!("rnnlab-ahead-{}.u8", std::process::id()));
        std::fs::write(&path, clips.concat()).unwrap();
        let lengths: Vec<usize> = clips.iter().map(Vec::len).collect();
        let disk = Split {
            inputs: Inputs::Frames {
                shape,
                clips: Clips::Disk(super::super::clips::Cached::open(&path, &lengths).unwrap()),
            },
            labels: (0..10).map(|i| i % 3).collect(),
        };
        let memory = Split {
            inputs: Inputs::Frames {
                shape,
                clips: clips.into(),
            },
            labels: disk.labels.clone(),
        };
        let a = Augment {
            keep: Some(2),
            shift: 1,
            flip: true,
            brightness: 0.2,
        };
        let plan = vec![vec![3, 1, 4], vec![0, 9, 2, 6], vec![5, 8, 7]];
        let mut ahead = Ahead::new(&disk, &plan);
        assert!(ahead.rx.is_some());
        let (mut r1, mut r2) = (
            crate::EpochRng::seed_from_u64(5),
            crate::EpochRng::seed_from_u64(5),
        );
        for idx in &plan {
            let x = ahead
                .make(&disk, idx, &Device::Cpu, Some((a, &mut r1)))
                .unwrap();
            let y = make_augmented(&memory, idx, &Device::Cpu, Some((a, &mut r2))).unwrap();
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(v(&x.x), v(&y.x));
            assert_eq!(x.lengths, y.lengths);
            assert_eq!(
                x.labels.to_vec1::<u32>().unwrap(),
                y.labels.to_vec1::<u32>().unwrap()
            );
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn make_pads_with_zero() {
        let split = Split {
            inputs: Inputs::Tokens(vec![vec![5, 6, 7], vec![8]]),
            labels: vec![1, 0],
        };
        let b = make(&split, &[0, 1], &Device::Cpu).unwrap();
        assert_eq!(
            b.x.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![8, 0, 0]]
        );
        assert_eq!(b.lengths, vec![3, 1]);
    }
}
