//! The class-id rule every source shares. Labels are class ids as given (a text table's string
//! labels are mapped to ids first). Without `data.class_names` the classes are 0 to the largest
//! training label, and every one of them needs a training example (an id range with a hole is
//! usually a mislabeled file, and an empty class would still get a logit and count in macro-F1);
//! a validation or test label that training lacks is an error naming its file, split and label.
//! `data.class_names` declares the classes instead: a declared class without training examples
//! is then a warning. A validation split carved from train must hold every training class.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// One split's class ids and where example `i` came from (file, 1-based line or 0).
pub struct Labeled<'a> {
    /// "train", "valid" or "test".
    pub split: &'static str,
    pub labels: &'a [u32],
    pub at: &'a dyn Fn(usize) -> (PathBuf, usize),
}

impl<'a> Labeled<'a> {
    pub fn new(
        split: &'static str,
        labels: &'a [u32],
        at: &'a dyn Fn(usize) -> (PathBuf, usize),
    ) -> Labeled<'a> {
        Labeled { split, labels, at }
    }
}

/// The class names, checked against the rule above. `carved`: the validation split was carved
/// from train by this `val_fraction`.
pub fn classes(
    train: Labeled,
    valid: Labeled,
    test: Option<Labeled>,
    declared: Option<&[String]>,
    carved: Option<f64>,
    notes: &mut Vec<String>,
) -> Result<Vec<String>> {
    let train = &train;
    let others: Vec<Labeled> = std::iter::once(valid).chain(test).collect();
    let err = |s: &Labeled, i: usize, msg: String| {
        let (path, line) = (s.at)(i);
        Error::data(path, line, msg)
    };
    // About the split as a whole: its file, no line.
    let whole = |s: &Labeled, msg: String| Error::data((s.at)(0).0, 0, msg);
    let top = train.labels.iter().copied().max().unwrap_or(0) as usize;
    let names: Vec<String> = match declared {
        Some(names) => names.to_vec(),
        None => (0..=top).map(|c| c.to_string()).collect(),
    };
    let n = names.len();
    for s in std::iter::once(train).chain(&others) {
        if let Some(i) = s
            .labels
            .iter()
            .position(|&l| l as usize >= n && declared.is_some())
        {
            return Err(err(
                s,
                i,
                format!(
                    "{} label {} has no name: data.class_names has {n} names",
                    s.split, s.labels[i]
                ),
            ));
        }
    }
    let counts = super::label_counts(train.labels, n);
    let seen = || -> String {
        counts
            .iter()
            .enumerate()
            .filter(|(_, &k)| k > 0)
            .map(|(c, k)| format!("{} ({k})", names[c]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if declared.is_none() && n < 2 {
        return Err(whole(
            train,
            format!(
                "every training label is {}: need at least 2 classes",
                names.first().map_or("0", String::as_str)
            ),
        ));
    }
    for (c, name) in names.iter().enumerate() {
        if counts[c] > 0 {
            continue;
        }
        if declared.is_some() {
            notes.push(format!(
                "warning: class \"{name}\" (declared in data.class_names) has no training example"
            ));
            continue;
        }
        return Err(whole(
            train,
            format!(
                "class \"{name}\" has no training example (training labels, with counts: {}); class ids run from 0 to the largest label, each needs examples: fix the labels, or declare the classes with data.class_names to train anyway",
                seen()
            ),
        ));
    }
    for s in &others {
        let lacking = s
            .labels
            .iter()
            .position(|&l| (l as usize) >= n || (counts[l as usize] == 0 && declared.is_none()));
        if let Some(i) = lacking {
            return Err(err(
                s,
                i,
                format!(
                    "{} label {} has no training example (training labels, with counts: {}); a model cannot learn a class it never sees: fix the labels, or declare the classes with data.class_names",
                    s.split,
                    s.labels[i],
                    seen()
                ),
            ));
        }
        if let (Some(fraction), "valid") = (carved, s.split) {
            let held = super::label_counts(s.labels, n);
            if let Some(c) = (0..n).find(|&c| counts[c] > 0 && held[c] == 0) {
                return Err(whole(
                    train,
                    format!(
                        "the validation examples carved from train (val_fraction {fraction}) hold no example of class \"{}\" ({} in train); raise data.val_fraction or give data.valid",
                        names[c], counts[c]
                    ),
                ));
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: usize) -> (PathBuf, usize) {
        ("f.txt".into(), i + 1)
    }

    fn run(
        train: &[u32],
        valid: &[u32],
        declared: Option<&[String]>,
        carved: Option<f64>,
    ) -> Result<Vec<String>> {
        classes(
            Labeled::new("train", train, &at),
            Labeled::new("valid", valid, &at),
            None,
            declared,
            carved,
            &mut Vec::new(),
        )
    }

    #[test]
    fn ids_are_classes_and_every_one_needs_training_examples() {
        assert_eq!(run(&[0, 1, 1], &[1, 0], None, None).unwrap(), ["0", "1"]);
        // {0, 1, 3}: class 2 has none.
        let e = run(&[0, 1, 3], &[0], None, None).unwrap_err().to_string();
        assert!(
            e.starts_with("f.txt: class \"2\" has no training example"),
            "{e}"
        );
        assert!(e.contains("0 (1), 1 (1), 3 (1)"), "{e}");
        // A stray 7 among 0/1.
        let e = run(&[0, 1, 7, 0], &[0], None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("class \"2\" has no training example"), "{e}");
        // A validation label training lacks: its file, line, split and label.
        let e = run(&[0, 1], &[1, 0, 2], None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f.txt:3: valid label 2 has no training example"),
            "{e}"
        );
        let e = run(&[0, 0], &[0], None, None).unwrap_err().to_string();
        assert!(e.contains("need at least 2 classes"), "{e}");
        // Declared classes: one without examples is a warning.
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let mut notes = Vec::new();
        let got = classes(
            Labeled::new("train", &[0, 2], &at),
            Labeled::new("valid", &[0], &at),
            None,
            Some(&names),
            None,
            &mut notes,
        );
        assert_eq!(got.unwrap(), names);
        assert!(notes[0].contains("class \"b\""), "{notes:?}");
        let e = run(&[0, 3], &[0], Some(&names), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("train label 3 has no name"), "{e}");
    }

    #[test]
    fn a_carved_validation_split_holds_every_training_class() {
        assert!(run(&[0, 1, 1], &[0, 1], None, Some(0.2)).is_ok());
        let e = run(&[0, 1, 1], &[1, 1], None, Some(0.2))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "carved from train (val_fraction 0.2) hold no example of class \"0\" (1 in train)"
            ),
            "{e}"
        );
    }
}
