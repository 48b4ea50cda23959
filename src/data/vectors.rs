//! Pretrained word vectors from a GloVe or word2vec text file: `word v1 v2 ... vd` per line,
//! with word2vec's optional `count dim` first line. Only the vocabulary's words are kept, so a
//! multi-gigabyte file costs one streaming pass, not its size in memory.

use std::io::{BufRead, BufReader};
use std::path::Path;

use super::text::Vocab;
use crate::error::{Error, Result};

/// Vectors for vocabulary ids (`rows[i] = (id, vector)`), and how many words the file had.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vectors {
    pub rows: Vec<(u32, Vec<f32>)>,
    pub file_words: usize,
}

impl Vectors {
    /// "embeddings: 14,013 of 16,284 vocabulary words found in glove.6B.100d.txt".
    pub fn report(&self, vocab: &Vocab, path: &Path) -> String {
        let words = vocab.len().saturating_sub(2);
        format!(
            "embeddings: {} of {words} vocabulary words found in {} ({} words in the file; the rest keep their random init)",
            self.rows.len(),
            path.display(),
            self.file_words
        )
    }
}

pub fn load(path: &Path, vocab: &Vocab, dim: usize) -> Result<Vectors> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::data(path, 0, format!("model.embeddings: cannot open: {e}")))?;
    let mut out = Vectors::default();
    let mut seen = vec![false; vocab.len()];
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| Error::data(path, n, format!("not UTF-8 text: {e}")))?;
        let mut parts = line.split_ascii_whitespace();
        let Some(word) = parts.next() else { continue };
        let values: Vec<&str> = parts.collect();
        if n == 1 && values.len() == 1 && word.parse::<usize>().is_ok() {
            continue; // word2vec header "count dim"
        }
        if values.len() != dim {
            return Err(Error::data(
                path,
                n,
                format!(
                    "\"{word}\" has {} values; model.embedding_dim is {dim} (they must match)",
                    values.len()
                ),
            ));
        }
        out.file_words += 1;
        let id = vocab.id(word);
        if (id == super::text::UNK && word != "<unk>") || seen[id as usize] {
            continue;
        }
        let v = values
            .iter()
            .map(|x| x.parse::<f32>())
            .collect::<std::result::Result<Vec<f32>, _>>()
            .map_err(|e| {
                Error::data(
                    path,
                    n,
                    format!("\"{word}\": a value is not a number ({e})"),
                )
            })?;
        seen[id as usize] = true;
        out.rows.push((id, v));
    }
    if out.file_words == 0 {
        return Err(Error::data(path, 0, "no vectors in the file"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_vocabulary_words_and_checks_width() {
        let dir = std::env::temp_dir().join(format!("rnnlab-vec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("v.txt");
        std::fs::write(&p, "3 2\ngood 0.5 -1\nzzz 1 1\nbad 2 3e-1\n").unwrap();
        let vocab = Vocab::from_tokens(vec![
            "<pad>".into(),
            "<unk>".into(),
            "bad".into(),
            "good".into(),
        ]);
        let v = load(&p, &vocab, 2).unwrap();
        assert_eq!(v.rows, vec![(3, vec![0.5, -1.0]), (2, vec![2.0, 0.3])]);
        assert_eq!(v.file_words, 3);
        let err = load(&p, &vocab, 3).unwrap_err().to_string();
        assert!(
            err.contains("v.txt:2:") && err.contains("embedding_dim is 3"),
            "{err}"
        );
    }
}
