//! How every source's splits are put together, one rule each: a generated source draws each
//! split from its own seed (`generated`); a source that reads files takes train from
//! `data.train`, validation from `data.valid` or carved from train by one seeded rule, and test
//! from `data.test` (`read`). `Which::seed` is the one derivation of a split's seed, which
//! generation and frame choice share.

use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::config::Data;
use crate::error::{Error, Result};

/// A dataset's three splits, in whatever form the source holds them before they become
/// `Split`s.
pub struct Parts<T> {
    pub train: T,
    pub valid: T,
    pub test: Option<T>,
}

/// Which split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Train,
    Valid,
    Test,
}

impl Which {
    /// The seed of this split in a run seeded `seed`: distinct for the three splits, so
    /// generated splits are independent samples and each split orders its frames apart.
    pub fn seed(self, seed: u64) -> u64 {
        let k = match self {
            Which::Train => 1,
            Which::Valid => 2,
            Which::Test => 3,
        };
        seed.wrapping_mul(3) + k
    }
}

/// A generated source's splits: `data.num_train`, `num_valid` and `num_test` (none when 0)
/// examples, each drawn by `gen(n, seed)` with its split's seed.
pub fn generated<T>(cfg: &Data, seed: u64, gen: impl Fn(usize, u64) -> T) -> Parts<T> {
    Parts {
        train: gen(cfg.num_train, Which::Train.seed(seed)),
        valid: gen(cfg.num_valid, Which::Valid.seed(seed)),
        test: (cfg.num_test > 0).then(|| gen(cfg.num_test, Which::Test.seed(seed))),
    }
}

/// A file source's splits: `read(which, path)` for `data.train` (required), `data.valid` and
/// `data.test`; without `data.valid`, `data.val_fraction` of train carved off (`carve`) and a
/// note saying so. `len` counts a part's examples; `take(part, keep, moved)` splits a part
/// into the examples at `keep` and those at `moved`; `unit` names one example ("row",
/// "sequence", "clip").
pub fn read<T>(
    cfg: &Data,
    seed: u64,
    unit: &str,
    mut read: impl FnMut(Which, &Path) -> Result<T>,
    len: impl Fn(&T) -> usize,
    take: impl FnOnce(T, &[usize], &[usize]) -> (T, T),
    notes: &mut Vec<String>,
) -> Result<Parts<T>> {
    let train_path = cfg.train.as_deref().ok_or_else(|| Error::Config {
        location: "config".into(),
        key: "data.train".into(),
        msg: format!("source = \"{}\" needs a train file", cfg.source.name()),
    })?;
    let train = read(Which::Train, train_path)?;
    let (train, valid) = match &cfg.valid {
        Some(p) => (train, read(Which::Valid, p)?),
        None if len(&train) < 2 => {
            return Err(Error::data(
                train_path,
                0,
                format!("one {unit} cannot be split into train and validation (give data.valid)"),
            ))
        }
        None => {
            let (keep, moved) = carve(len(&train), cfg.val_fraction, seed);
            notes.push(format!(
                "validation: {} {unit}s carved from train (val_fraction {}, seed {seed})",
                moved.len(),
                cfg.val_fraction
            ));
            take(train, &keep, &moved)
        }
    };
    let test = cfg
        .test
        .as_deref()
        .map(|p| read(Which::Test, p))
        .transpose()?;
    Ok(Parts { train, valid, test })
}

/// Which of `n` (at least 2) examples a seeded `fraction` moves to validation: (train,
/// validation) indices, each in order, at least one each side.
pub fn carve(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x05ee_d5a1));
    let n_val = ((n as f64 * fraction).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let mut is_val = vec![false; n];
    for &i in &idx[..n_val.min(n)] {
        is_val[i] = true;
    }
    (0..n).partition(|&i| !is_val[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carve_is_seeded_ordered_and_leaves_one_each_side() {
        let (t, v) = carve(10, 0.3, 7);
        assert_eq!((t.len(), v.len()), (7, 3));
        assert!(t.windows(2).all(|w| w[0] < w[1]) && v.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(carve(10, 0.3, 7), (t.clone(), v.clone()));
        assert_ne!(carve(10, 0.3, 8), (t, v));
        assert_eq!(carve(2, 0.99, 0).0.len(), 1);
        assert_eq!(carve(2, 0.01, 0).1.len(), 1);
    }

    #[test]
    fn split_seeds_are_distinct() {
        let s = [Which::Train, Which::Valid, Which::Test].map(|w| w.seed(5));
        assert_eq!(s, [16, 17, 18]);
    }
}
