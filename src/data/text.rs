//! Tokenizer and vocabulary for text sources. The tokenizer lowercases (configurable) and
//! splits words from punctuation like torchtext's basic_english; the vocabulary is built from
//! the training split only, with `<pad>` = 0 and `<unk>` = 1.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Data, Tokenizer, TruncationSide};
use crate::error::{Error, Result};

pub const PAD: u32 = 0;
pub const UNK: u32 = 1;

/// The fraction of a sequence's tokens (padding aside) the vocabulary did not know (`<unk>`):
/// how much of an input a run could not read. 0 for a sequence without tokens.
pub fn unknown_share<'a>(seqs: impl IntoIterator<Item = &'a [u32]>) -> f64 {
    let (mut unk, mut all) = (0usize, 0usize);
    for s in seqs {
        all += s.iter().filter(|&&t| t != PAD).count();
        unk += s.iter().filter(|&&t| t == UNK).count();
    }
    if all == 0 {
        0.0
    } else {
        unk as f64 / all as f64
    }
}

/// Tokens of `text` under the data config's tokenizer, lowercase and truncation settings:
/// the one pipeline training, evaluation and `predict` share. Never empty (an empty text is
/// one `<pad>`-free `<unk>`... see `Vocab::encode_text`).
pub fn tokens(text: &str, data: &Data) -> Vec<String> {
    match data.tokenizer {
        Tokenizer::Word => tokenize(text, data.lowercase),
        Tokenizer::Char => text
            .chars()
            .map(|c| {
                if data.lowercase {
                    c.to_lowercase().collect()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    }
}

/// Cuts `ids` to `max_len`, keeping the start ("right") or the end ("left").
pub fn truncate(mut ids: Vec<u32>, max_len: usize, side: TruncationSide) -> Vec<u32> {
    if ids.len() > max_len {
        match side {
            TruncationSide::Right => ids.truncate(max_len),
            TruncationSide::Left => {
                ids.drain(..ids.len() - max_len);
            }
        }
    }
    ids
}

/// Words are runs of letters, digits and apostrophes; every other non-space character is a
/// token of its own ("isn't good." -> ["isn't", "good", "."]).
pub fn tokenize(text: &str, lowercase: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for ch in text.chars() {
        if ch.is_alphanumeric() || ch == '\'' {
            if lowercase {
                word.extend(ch.to_lowercase());
            } else {
                word.push(ch);
            }
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !ch.is_whitespace() {
            out.push(ch.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vocab {
    /// Token strings by id; `itos[0] = "<pad>"`, `itos[1] = "<unk>"`.
    pub itos: Vec<String>,
    #[serde(skip)]
    stoi: HashMap<String, u32>,
}

impl Vocab {
    pub fn from_tokens(itos: Vec<String>) -> Vocab {
        let stoi = itos
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        Vocab { itos, stoi }
    }

    /// Most frequent first (ties alphabetical, so the ids do not depend on hash order).
    pub fn build<'a>(
        docs: impl IntoIterator<Item = &'a Vec<String>>,
        min_freq: usize,
        max_size: Option<usize>,
    ) -> Vocab {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for doc in docs {
            for tok in doc {
                *counts.entry(tok.as_str()).or_default() += 1;
            }
        }
        let mut words: Vec<(&str, usize)> =
            counts.into_iter().filter(|(_, c)| *c >= min_freq).collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        if let Some(max) = max_size {
            words.truncate(max);
        }
        let mut itos = vec!["<pad>".to_string(), "<unk>".to_string()];
        itos.extend(words.into_iter().map(|(w, _)| w.to_string()));
        Vocab::from_tokens(itos)
    }

    pub fn len(&self) -> usize {
        self.itos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.itos.is_empty()
    }

    pub fn id(&self, tok: &str) -> u32 {
        self.stoi.get(tok).copied().unwrap_or(UNK)
    }

    pub fn encode(&self, toks: &[String]) -> Vec<u32> {
        toks.iter().map(|t| self.id(t)).collect()
    }

    /// Ids of `text` as a run sees it: tokenized, mapped, truncated (`data.max_len`,
    /// `data.truncation_side`); an empty text is one `<pad>` step.
    pub fn encode_text(&self, text: &str, data: &Data) -> Vec<u32> {
        self.encode_tokens(&tokens(text, data), data)
    }

    pub fn encode_tokens(&self, toks: &[String], data: &Data) -> Vec<u32> {
        let ids = truncate(self.encode(toks), data.max_len, data.truncation_side);
        if ids.is_empty() {
            vec![PAD]
        } else {
            ids
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string(&self.itos).map_err(|e| Error::Checkpoint {
            path: path.into(),
            msg: e.to_string(),
        })?;
        crate::fsutil::write_atomic(path, json.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Vocab> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let itos: Vec<String> = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: path.into(),
            msg: format!("not a vocabulary (JSON list of tokens): {e}"),
        })?;
        Ok(Vocab::from_tokens(itos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_and_punctuation() {
        assert_eq!(
            tokenize("It isn't GOOD, really!", true),
            vec!["it", "isn't", "good", ",", "really", "!"]
        );
        assert_eq!(tokenize("A b", false), vec!["A", "b"]);
    }

    #[test]
    fn char_mode_and_truncation_sides() {
        let data = Data {
            tokenizer: Tokenizer::Char,
            ..Data::default()
        };
        assert_eq!(tokens("Ab c", &data), vec!["a", "b", " ", "c"]);
        let ids = vec![1, 2, 3, 4, 5];
        assert_eq!(
            truncate(ids.clone(), 3, TruncationSide::Right),
            vec![1, 2, 3]
        );
        assert_eq!(
            truncate(ids.clone(), 3, TruncationSide::Left),
            vec![3, 4, 5]
        );
        assert_eq!(truncate(ids, 9, TruncationSide::Left).len(), 5);
    }

    #[test]
    fn vocab_orders_by_frequency_and_maps_unknown() {
        let docs = vec![
            vec!["b".to_string(), "a".into(), "b".into()],
            vec!["c".to_string(), "a".into(), "b".into()],
        ];
        let v = Vocab::build(&docs, 2, None);
        assert_eq!(v.itos, vec!["<pad>", "<unk>", "b", "a"]);
        assert_eq!(v.encode(&["a".into(), "zzz".into()]), vec![3, UNK]);
    }
}
