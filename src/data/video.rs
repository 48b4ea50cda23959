//! Video clips as sequences of frames. `synthetic-video` is the built-in, seeded task whose
//! class only the order of the frames shows: a bar whose brightness steps through four levels
//! in a fixed cyclic order, repeated, from a random phase, while it turns at random and a
//! square wanders, under pixel noise. Class 0 ("forward") flashes and fades (a jump up, then
//! decay: a sawtooth); class 1 ("reversed") is its time reversal (slow rise, sudden drop); with
//! `num_classes` up to 6, the other cyclic orders of the four levels follow. Every class shows
//! the same frames: each frame's brightness is uniform over the same levels whatever the class,
//! so a single frame, or the frames in any order, carry no information about it: only their
//! sequence does.

use std::f64::consts::PI;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::selection;
use super::splits::{self, Which};
use super::{Dataset, FrameShape, Inputs, Split};
use crate::config::Data;
use crate::error::Result;

/// The period in frames (its levels: 0, 1/(P-1), ..., 1).
const PERIOD: usize = 4;

/// Each class's cyclic order of the levels: all six orders of four levels up to rotation.
const ORDERS: [[usize; PERIOD]; 6] = [
    [3, 2, 1, 0],
    [0, 1, 2, 3],
    [3, 0, 2, 1],
    [3, 1, 0, 2],
    [3, 1, 2, 0],
    [3, 2, 0, 1],
];

/// The most classes `synthetic-video` has (the config checks `num_classes` against it).
pub const MAX_CLASSES: usize = crate::config::SYNTHETIC_VIDEO_CLASSES;
const _: () = assert!(ORDERS.len() == MAX_CLASSES);

/// Class `k`'s name: forward, reversed, then its order of levels (`order-3021`).
pub fn class_name(k: usize) -> String {
    match k {
        0 => "forward".into(),
        1 => "reversed".into(),
        _ => format!("order-{}", ORDERS[k].map(|l| l.to_string()).concat()),
    }
}

/// The bar's brightness level (0..=1) at frame `t` of a clip of class `class` from phase
/// `phase`.
pub fn level(class: usize, t: usize, phase: usize) -> f64 {
    ORDERS[class][(t + phase) % PERIOD] as f64 / (PERIOD - 1) as f64
}

/// `n` clips of `frames` frames, drawn from a generator seeded by `seed`.
pub fn synthetic(cfg: &Data, n: usize, seed: u64) -> Split {
    let shape = FrameShape {
        channels: cfg.channels,
        height: cfg.height,
        width: cfg.width,
    };
    let (h, w, c, frames) = (cfg.height, cfg.width, cfg.channels, cfg.frames);
    let mut rng = StdRng::seed_from_u64(seed);
    let side = h.min(w) as f64;
    let mut clips = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let class = rng.random_range(0..cfg.num_classes.clamp(1, MAX_CLASSES));
        let phase = rng.random_range(0..PERIOD);
        // The turning is a distractor: random direction and speed.
        let theta0 = rng.random_range(0.0..PI);
        let omega = rng.random_range(-0.3..0.3);
        let len = side * rng.random_range(0.6..0.8);
        let thick = (side / 8.0).max(2.0);
        let colour: Vec<f64> = (0..c).map(|_| rng.random_range(0.7..1.0)).collect();
        let (mut cx, mut cy) = (
            w as f64 * rng.random_range(0.4..0.6),
            h as f64 * rng.random_range(0.4..0.6),
        );
        let drift = (rng.random_range(-0.3..0.3), rng.random_range(-0.3..0.3));
        // The distractor: a square wandering at random, its own colour.
        let sq = side / 8.0;
        let (mut dx, mut dy) = (
            rng.random_range(0.0..w as f64 - sq),
            rng.random_range(0.0..h as f64 - sq),
        );
        let dcolour: Vec<f64> = (0..c).map(|_| rng.random_range(0.3..0.9)).collect();
        let mut clip = Vec::with_capacity(frames * shape.pixels());
        for t in 0..frames {
            let theta = theta0 + omega * t as f64;
            let bright = level(class, t, phase);
            let (ux, uy) = (theta.cos(), theta.sin());
            let mut frame = vec![0f64; c * h * w];
            for y in 0..h {
                for x in 0..w {
                    let (px, py) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                    // Distance to the segment of half-length len/2 through the centre.
                    let along = (px * ux + py * uy).clamp(-len / 2.0, len / 2.0);
                    let dist = ((px - along * ux).powi(2) + (py - along * uy).powi(2)).sqrt();
                    let bar = (thick / 2.0 + 0.5 - dist).clamp(0.0, 1.0);
                    let in_sq = (x as f64) >= dx
                        && (x as f64) < dx + sq
                        && (y as f64) >= dy
                        && (y as f64) < dy + sq;
                    for ch in 0..c {
                        let mut v = 0.1 + bar * (bright * colour[ch] - 0.1);
                        if in_sq {
                            v = v.max(dcolour[ch]);
                        }
                        frame[(ch * h + y) * w + x] = v;
                    }
                }
            }
            for v in frame {
                let noisy = v + cfg.noise * gaussian(&mut rng);
                clip.push((noisy.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
            cx = (cx + drift.0).clamp(len / 2.0, w as f64 - len / 2.0);
            cy = (cy + drift.1).clamp(len / 2.0, h as f64 - len / 2.0);
            dx = (dx + rng.random_range(-1.5..1.5)).clamp(0.0, w as f64 - sq);
            dy = (dy + rng.random_range(-1.5..1.5)).clamp(0.0, h as f64 - sq);
        }
        clips.push(clip);
        labels.push(class as u32);
    }
    Split {
        inputs: Inputs::Frames {
            shape,
            clips: clips.into(),
        },
        labels,
    }
}

fn gaussian(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// The `synthetic-video` dataset: independent seeded splits, class names, no vocabulary.
pub fn synthetic_dataset(cfg: &Data, seed: u64, test_views: usize) -> Result<Dataset> {
    let parts = splits::generated(cfg, seed, |n, s| synthetic(cfg, n, s));
    let select = |s: Split, which| selection::select(s, cfg, seed, which, test_views);
    Ok(Dataset {
        train: select(parts.train, Which::Train),
        valid: select(parts.valid, Which::Valid),
        test: parts.test.map(|t| select(t, Which::Test)),
        vocab: None,
        classes: (0..cfg.num_classes.min(MAX_CLASSES))
            .map(class_name)
            .collect(),
        notes: Vec::new(),
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Clips;

    /// Both classes show the same levels, each once per period, in opposite orders.
    #[test]
    fn the_classes_are_each_other_reversed() {
        for phase in 0..PERIOD {
            let fwd: Vec<f64> = (0..PERIOD).map(|t| level(0, t, phase)).collect();
            let mut rev: Vec<f64> = (0..PERIOD).map(|t| level(1, t, phase)).collect();
            let mut a = fwd.clone();
            a.sort_by(f64::total_cmp);
            rev.sort_by(f64::total_cmp);
            assert_eq!(a, rev);
        }
        // Forward: a jump up then steady decay; reversed: steady rise then a drop.
        let f: Vec<f64> = (0..8).map(|t| level(0, t, 0)).collect();
        assert_eq!(f[..4], [1.0, 2.0 / 3.0, 1.0 / 3.0, 0.0]);
        let r: Vec<f64> = (0..4).map(|t| level(1, t, 0)).collect();
        assert_eq!(r, [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    }

    /// Every class steps through the same four levels once a period, and no two classes are
    /// the same order from any phase (so only the order tells them apart, and it always does).
    #[test]
    fn all_classes_show_the_same_levels_in_distinct_orders() {
        let period = |k: usize, phase: usize| -> Vec<f64> {
            (0..PERIOD).map(|t| level(k, t, phase)).collect()
        };
        for k in 0..MAX_CLASSES {
            let mut levels = period(k, 0);
            levels.sort_by(f64::total_cmp);
            assert_eq!(levels, [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0], "class {k}");
            for j in 0..k {
                for phase in 0..PERIOD {
                    assert_ne!(period(k, 0), period(j, phase), "classes {k} and {j}");
                }
            }
        }
        assert_eq!(class_name(2), "order-3021");
    }

    #[test]
    fn clips_are_seeded_sized_and_balanced() {
        let cfg = Data {
            frames: 6,
            height: 12,
            width: 10,
            channels: 3,
            num_classes: 2,
            ..Data::default()
        };
        let a = synthetic(&cfg, 200, 1);
        assert_eq!(a, synthetic(&cfg, 200, 1));
        let Inputs::Frames {
            shape,
            clips: Clips::Memory(clips),
        } = &a.inputs
        else {
            panic!("frames expected")
        };
        assert_eq!(shape.pixels(), 3 * 12 * 10);
        assert!(clips.iter().all(|c| c.len() == 6 * 360));
        for class in 0..2 {
            let n = a.labels.iter().filter(|&&l| l == class).count();
            assert!((70..130).contains(&n), "class {class}: {n}");
        }
        let six = synthetic(
            &Data {
                num_classes: 6,
                ..cfg.clone()
            },
            300,
            1,
        );
        for class in 0..6 {
            let n = six.labels.iter().filter(|&&l| l == class).count();
            assert!((25..75).contains(&n), "class {class} of 6: {n}");
        }
        // One frame kept: the middle one; shuffled: the same frames in another order.
        let one = crate::data::selection::select_frames(
            a.clone(),
            &Data {
                frames_per_clip: Some(1),
                ..cfg.clone()
            },
            0,
        );
        let (
            Inputs::Frames {
                clips: Clips::Memory(c1),
                ..
            },
            Inputs::Frames {
                clips: Clips::Memory(c0),
                ..
            },
        ) = (&one.inputs, &a.inputs)
        else {
            panic!()
        };
        assert_eq!(c1[0], c0[0][3 * 360..4 * 360]);
        let sh = crate::data::selection::select_frames(
            a.clone(),
            &Data {
                shuffle_frames: true,
                ..cfg.clone()
            },
            0,
        );
        let Inputs::Frames {
            clips: Clips::Memory(cs),
            ..
        } = &sh.inputs
        else {
            panic!()
        };
        let frames = |c: &[u8]| {
            let mut f: Vec<Vec<u8>> = c.chunks(360).map(<[u8]>::to_vec).collect();
            f.sort();
            f
        };
        assert_eq!(frames(&cs[0]), frames(&c0[0]));
        assert!(cs.iter().zip(c0).any(|(s, o)| s != o));
    }
}
