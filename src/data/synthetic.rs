//! Seeded built-in tasks, so the default configs run offline.
//!
//! - synthetic-sentiment: short reviews whose label needs word order. A clause is
//!   `det noun verb [not] [intensifier] adjective`; negation flips the adjective, and in
//!   "A but B" the clause after "but" decides. A bag of words cannot solve it.
//! - delayed-recall: a class token, then `lag` random distractors; the label is the first
//!   token. Vanilla RNNs lose it as the lag grows, LSTM/GRU keep it.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::text::Vocab;
use super::{Inputs, Split};

const DET: &[&str] = &["the", "this", "that", "a"];
const NOUN: &[&str] = &[
    "movie",
    "film",
    "plot",
    "acting",
    "story",
    "cast",
    "script",
    "ending",
    "soundtrack",
    "director",
];
const VERB: &[&str] = &["is", "was", "seems", "felt"];
const POS: &[&str] = &[
    "good",
    "great",
    "brilliant",
    "fun",
    "moving",
    "clever",
    "superb",
    "charming",
];
const NEG: &[&str] = &[
    "bad", "awful", "boring", "dull", "terrible", "weak", "clumsy", "bland",
];
const INT: &[&str] = &["very", "really", "truly", "quite", "so"];
const NOT: &[&str] = &["not", "never"];
const FILLER: &[&str] = &["honestly", "overall", "frankly", "well", "i", "think", ","];

pub fn sentiment_vocab() -> Vocab {
    let mut itos = vec!["<pad>".to_string(), "<unk>".to_string()];
    for group in [
        DET,
        NOUN,
        VERB,
        POS,
        NEG,
        INT,
        NOT,
        FILLER,
        &["but", "."][..],
    ] {
        itos.extend(group.iter().map(|w| w.to_string()));
    }
    Vocab::from_tokens(itos)
}

/// One clause and its polarity (true = positive).
fn clause(rng: &mut StdRng, words: &mut Vec<&'static str>) -> bool {
    words.push(DET.choose(rng).copied().unwrap_or("the"));
    words.push(NOUN.choose(rng).copied().unwrap_or("movie"));
    words.push(VERB.choose(rng).copied().unwrap_or("is"));
    let negated = rng.random_bool(0.4);
    if negated {
        words.push(NOT.choose(rng).copied().unwrap_or("not"));
    }
    if rng.random_bool(0.4) {
        words.push(INT.choose(rng).copied().unwrap_or("very"));
    }
    let positive = rng.random_bool(0.5);
    let adj = if positive { POS } else { NEG };
    words.push(adj.choose(rng).copied().unwrap_or("good"));
    positive != negated
}

/// `n` generated reviews. Labels: 0 = negative, 1 = positive.
pub fn sentiment(n: usize, seed: u64, vocab: &Vocab) -> Split {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut seqs, mut labels) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let mut words = Vec::new();
        for _ in 0..rng.random_range(0..=3) {
            words.push(FILLER.choose(&mut rng).copied().unwrap_or("well"));
        }
        let mut label = clause(&mut rng, &mut words);
        if rng.random_bool(0.5) {
            words.push("but");
            label = clause(&mut rng, &mut words);
        }
        if rng.random_bool(0.5) {
            words.push(".");
        }
        seqs.push(words.iter().map(|w| vocab.id(w)).collect());
        labels.push(label as u32);
    }
    Split {
        inputs: Inputs::Tokens(seqs),
        labels,
    }
}

pub fn recall_vocab(num_classes: usize, vocab_size: usize) -> Vocab {
    let mut itos = vec!["<pad>".to_string()];
    itos.extend((0..num_classes).map(|c| format!("<class{c}>")));
    itos.extend((num_classes + 1..vocab_size).map(|d| format!("<d{d}>")));
    Vocab::from_tokens(itos)
}

/// `n` sequences of `lag + 1` tokens: class token (1..=classes), then distractors.
pub fn delayed_recall(n: usize, lag: usize, classes: usize, vocab_size: usize, seed: u64) -> Split {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut seqs, mut labels) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let class = rng.random_range(0..classes);
        let mut seq = Vec::with_capacity(lag + 1);
        seq.push(class as u32 + 1);
        for _ in 0..lag {
            seq.push(rng.random_range(classes + 1..vocab_size) as u32);
        }
        seqs.push(seq);
        labels.push(class as u32);
    }
    Split {
        inputs: Inputs::Tokens(seqs),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentiment_is_seeded_and_balanced() {
        let v = sentiment_vocab();
        let a = sentiment(2000, 7, &v);
        let b = sentiment(2000, 7, &v);
        assert_eq!(a.inputs, b.inputs);
        let pos = a.labels.iter().filter(|&&l| l == 1).count();
        assert!((800..1200).contains(&pos), "{pos}");
        assert!(a.tokens().iter().all(|s| s.iter().all(|&t| t > 1)));
        let but = v.id("but");
        assert!(a.tokens().iter().any(|s| s.contains(&but)));
    }

    #[test]
    fn recall_label_is_first_token() {
        let s = delayed_recall(100, 20, 4, 16, 1);
        for (seq, &l) in s.tokens().iter().zip(&s.labels) {
            assert_eq!(seq.len(), 21);
            assert_eq!(seq[0], l + 1);
            assert!(seq[1..].iter().all(|&t| (5..16).contains(&t)));
        }
    }
}
