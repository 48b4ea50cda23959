//! Seeded built-in tasks, so the default configs run offline.
//!
//! - synthetic-sentiment: reviews of one to seven sentences. One sentence is the verdict;
//!   the others describe the plot in neutral words. The verdict is a clause
//!   `det noun verb [not] [intensifier] adjective`, or "A but B" (the clause after "but"
//!   decides), optionally wrapped in "i would not say" / "it is not true that", which flips it
//!   again (nested negation). The verdict sits anywhere, so the deciding words can be 40 tokens
//!   before the readout: a bag of words cannot solve the task (negation, "but") and a vanilla
//!   RNN loses the far verdicts that an LSTM or GRU keeps.
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
/// Outer negations: each flips the verdict clause it wraps.
const OUTER: &[&[&str]] = &[
    &["i", "would", "not", "say"],
    &["it", "is", "not", "true", "that"],
];
const FILLER: &[&str] = &["honestly", "overall", "frankly", "well", "i", "think", ","];
/// Most neutral plot sentences in a review.
const PLOT_MAX: usize = 6;
/// Neutral plot sentences: `det character action det place|thing .`
const CHARACTER: &[&str] = &[
    "detective",
    "family",
    "teacher",
    "soldier",
    "robot",
    "sister",
    "pilot",
    "stranger",
];
const ACTION: &[&str] = &[
    "visits", "leaves", "finds", "follows", "meets", "returns", "builds", "watches",
];
const PLACE: &[&str] = &[
    "town", "city", "house", "ship", "river", "school", "island", "letter", "war", "farm",
];

pub fn sentiment_vocab() -> Vocab {
    let mut itos = vec!["<pad>".to_string(), "<unk>".to_string()];
    let outer: Vec<&str> = OUTER.iter().flat_map(|w| w.iter().copied()).collect();
    for group in [
        DET,
        NOUN,
        VERB,
        POS,
        NEG,
        INT,
        NOT,
        &outer[..],
        FILLER,
        CHARACTER,
        ACTION,
        PLACE,
        &["but", "."][..],
    ] {
        for w in group {
            if !itos.iter().any(|t| t == w) {
                itos.push(w.to_string());
            }
        }
    }
    Vocab::from_tokens(itos)
}

fn pick(rng: &mut StdRng, words: &[&'static str]) -> &'static str {
    words.choose(rng).copied().unwrap_or(".")
}

/// One clause and its polarity (true = positive).
fn clause(rng: &mut StdRng, words: &mut Vec<&'static str>) -> bool {
    words.push(pick(rng, DET));
    words.push(pick(rng, NOUN));
    words.push(pick(rng, VERB));
    let negated = rng.random_bool(0.4);
    if negated {
        words.push(pick(rng, NOT));
    }
    if rng.random_bool(0.4) {
        words.push(pick(rng, INT));
    }
    let positive = rng.random_bool(0.5);
    words.push(pick(rng, if positive { POS } else { NEG }));
    positive != negated
}

/// The verdict sentence and its polarity: [outer negation] clause [but clause] .
fn verdict(rng: &mut StdRng, words: &mut Vec<&'static str>) -> bool {
    for _ in 0..rng.random_range(0..=2) {
        words.push(pick(rng, FILLER));
    }
    let outer = rng.random_bool(0.3);
    if outer {
        words.extend(OUTER.choose(rng).copied().unwrap_or(OUTER[0]));
    }
    let mut positive = clause(rng, words);
    if rng.random_bool(0.5) {
        words.push("but");
        positive = clause(rng, words);
    }
    words.push(".");
    positive != outer
}

fn plot_sentence(rng: &mut StdRng, words: &mut Vec<&'static str>) {
    words.push(pick(rng, DET));
    words.push(pick(rng, CHARACTER));
    words.push(pick(rng, ACTION));
    words.push(pick(rng, DET));
    words.push(pick(rng, PLACE));
    words.push(".");
}

/// `n` generated reviews. Labels: 0 = negative, 1 = positive. Each review is 0..=6 neutral
/// plot sentences with the verdict at a uniformly drawn place among them.
pub fn sentiment(n: usize, seed: u64, vocab: &Vocab) -> Split {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut seqs, mut labels) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let mut words = Vec::new();
        let plot = rng.random_range(0..=PLOT_MAX);
        let at = rng.random_range(0..=plot);
        let mut label = false;
        for s in 0..=plot {
            if s == at {
                label = verdict(&mut rng, &mut words);
            } else {
                plot_sentence(&mut rng, &mut words);
            }
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

/// The temporal-order problem's symbols after `<pad>`: the start and end markers, the two
/// relevant symbols, the four distractors (Hochreiter & Schmidhuber 1997, experiment 6).
const ORDER_SYMBOLS: [&str; 8] = ["E", "B", "X", "Y", "a", "b", "c", "d"];
/// Token ids: E starts a sequence, B ends it, X (Y = X + 1) is relevant, a-d follow Y.
const ORDER_E: u32 = 1;
const ORDER_B: u32 = 2;
const ORDER_X: u32 = 3;

pub fn order_vocab() -> Vocab {
    let mut itos = vec!["<pad>".to_string()];
    itos.extend(ORDER_SYMBOLS.iter().map(|s| s.to_string()));
    Vocab::from_tokens(itos)
}

/// The class names of `relevant` symbols: their order, X or Y each (`XY`), class id the bits
/// with X = 0, first symbol highest.
pub fn order_classes(relevant: usize) -> Vec<String> {
    (0..1usize << relevant)
        .map(|c| {
            (0..relevant)
                .map(|i| {
                    if c >> (relevant - 1 - i) & 1 == 0 {
                        'X'
                    } else {
                        'Y'
                    }
                })
                .collect()
        })
        .collect()
}

/// Where the relevant symbols sit, as fractions of the sequence: experiment 6a's t1 in
/// [10, 20] and t2 in [50, 60] of 100 to 110 steps, 6b's t1 in [10, 20], t2 in [33, 43], t3 in
/// [66, 76], scaled with the length.
fn order_windows(relevant: usize) -> &'static [(f64, f64)] {
    match relevant {
        2 => &[(0.10, 0.20), (0.50, 0.60)],
        _ => &[(0.10, 0.20), (0.33, 0.43), (0.66, 0.76)],
    }
}

/// `n` temporal-order sequences: `E`, distractors a-d, `B` at the end, and `relevant` X / Y
/// symbols at their windows' random positions; each `length` to `length + length / 10` steps
/// (uniform). The class is the relevant symbols' order (`order_classes`).
pub fn temporal_order(n: usize, length: usize, relevant: usize, seed: u64) -> Split {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut seqs, mut labels) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = rng.random_range(length..=length + length / 10);
        let mut seq: Vec<u32> = (0..t)
            .map(|_| rng.random_range(ORDER_X + 2..ORDER_X + 6))
            .collect();
        seq[0] = ORDER_E;
        seq[t - 1] = ORDER_B;
        let mut class = 0u32;
        for &(lo, hi) in order_windows(relevant) {
            let at = rng
                .random_range((lo * t as f64).round() as usize..=(hi * t as f64).round() as usize);
            let y = rng.random_bool(0.5) as u32;
            seq[at] = ORDER_X + y;
            class = class << 1 | y;
        }
        seqs.push(seq);
        labels.push(class);
    }
    Split {
        inputs: Inputs::Tokens(seqs),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sequence: E first, B last, its length in range, exactly the relevant symbols in
    /// their windows and nowhere else, and a class that reads them in order.
    #[test]
    fn temporal_order_places_the_relevant_symbols_and_reads_them_as_the_class() {
        for relevant in [2, 3] {
            let split = temporal_order(500, 100, relevant, 7);
            assert_eq!(split, temporal_order(500, 100, relevant, 7), "seeded");
            let names = order_classes(relevant);
            assert_eq!(names.len(), 1 << relevant);
            let mut seen = vec![0; names.len()];
            for (seq, &y) in split.tokens().iter().zip(&split.labels) {
                let t = seq.len();
                assert!((100..=110).contains(&t));
                assert_eq!((seq[0], seq[t - 1]), (ORDER_E, ORDER_B));
                let at: Vec<usize> = (0..t).filter(|&i| seq[i] == 3 || seq[i] == 4).collect();
                assert_eq!(at.len(), relevant);
                for (&i, &(lo, hi)) in at.iter().zip(order_windows(relevant)) {
                    let (lo, hi) = ((lo * t as f64).round(), (hi * t as f64).round());
                    assert!(
                        (lo..=hi).contains(&(i as f64)),
                        "{i} of {t} outside {lo}..{hi}"
                    );
                }
                let read: String = at
                    .iter()
                    .map(|&i| if seq[i] == 3 { 'X' } else { 'Y' })
                    .collect();
                assert_eq!(names[y as usize], read);
                assert!(seq[1..t - 1]
                    .iter()
                    .enumerate()
                    .all(|(i, &s)| at.contains(&(i + 1)) || (5..=8).contains(&s)));
                seen[y as usize] += 1;
            }
            assert!(seen.iter().all(|&n| n > 500 / names.len() / 2), "{seen:?}");
        }
        assert_eq!(order_classes(2), ["XX", "XY", "YX", "YY"]);
        assert_eq!(order_vocab().len(), 9);
    }

    /// Reads a review back the way a person would: the sentence with an adjective is the
    /// verdict; an outer "i would not say" / "it is not true that" flips it; of the rest, the
    /// clause after "but" decides, and its own "not"/"never" flips it. Returns the polarity and
    /// how many sentences follow the verdict.
    fn read_back(words: &[&str]) -> (bool, usize) {
        let sentences: Vec<&[&str]> = words
            .split(|w| *w == ".")
            .filter(|s| !s.is_empty())
            .collect();
        let is_adj = |w: &&str| POS.contains(w) || NEG.contains(w);
        let v = sentences
            .iter()
            .position(|s| s.iter().any(is_adj))
            .expect("a verdict");
        let sentence = sentences[v];
        let outer_end = match sentence.iter().position(|w| *w == "say" || *w == "true") {
            Some(i) if sentence[i] == "say" => Some(i + 1),
            Some(i) => Some(i + 2), // "true that"
            None => None,
        };
        let rest = &sentence[outer_end.unwrap_or(0)..];
        let last = rest.rsplit(|w| *w == "but").next().expect("a clause");
        let own = last.iter().any(|w| NOT.contains(w));
        let adj = last.iter().find(|w| is_adj(w)).expect("an adjective");
        (
            (POS.contains(adj) != own) != outer_end.is_some(),
            sentences.len() - 1 - v,
        )
    }

    #[test]
    fn sentiment_labels_follow_the_verdict_anywhere_in_the_review() {
        let v = sentiment_vocab();
        let a = sentiment(3000, 7, &v);
        let b = sentiment(3000, 7, &v);
        assert_eq!(a.inputs, b.inputs);
        let pos = a.labels.iter().filter(|&&l| l == 1).count();
        assert!((1300..1700).contains(&pos), "{pos}");
        let mut after = [0usize; 7];
        let (mut outer, mut but) = (0, 0);
        for (seq, &label) in a.tokens().iter().zip(&a.labels) {
            assert!(seq.iter().all(|&t| t > 1) && seq.len() <= 64, "{seq:?}");
            let words: Vec<&str> = seq.iter().map(|&t| v.itos[t as usize].as_str()).collect();
            let (positive, sentences_after) = read_back(&words);
            assert_eq!(positive, label == 1, "{}", words.join(" "));
            after[sentences_after] += 1;
            outer += usize::from(words.contains(&"say") || words.contains(&"true"));
            but += usize::from(words.contains(&"but"));
        }
        // The verdict is last in some reviews and six plot sentences from the end in others.
        assert!(after.iter().all(|&n| n > 20), "{after:?}");
        assert!(outer > 600 && but > 1200, "{outer} {but}");
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
