//! Evaluation: loss, accuracy, top-5 and mean class accuracy, confusion matrix, per-class
//! precision / recall / F1 and macro-F1 over a split (no dropout, no graph kept); the confusion
//! matrix goes to TensorBoard's Images tab drawn by `log::plots::confusion_png`. A video test
//! split with several views of each clip (`[eval] clips`) is scored by each clip's views' mean
//! class probabilities (mmaction's `average_clips = "prob"`).

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::data::{batch, Split};
use crate::error::Result;
use crate::log::writer::StepLog;
use crate::model::classifier::Classifier;
use crate::model::stack::RunOpts;

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Scores {
    pub loss: f64,
    pub acc: f64,
    pub macro_f1: f64,
    /// Per class, in class-id order.
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub f1: Vec<f64>,
    /// Examples per true class.
    pub support: Vec<usize>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// The mean of per-class recall over the classes with examples (mmaction's mean class
    /// accuracy): accuracy that each class counts for alike.
    #[serde(default)]
    pub mean_class_acc: f64,
    /// The share of examples whose class is among the 5 highest scores; with 6 classes or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top5: Option<f64>,
}

impl Scores {
    /// From a confusion matrix and the mean loss. Precision, recall and F1 of a class with no
    /// predictions / no examples are 0 (scikit-learn's zero_division=0).
    pub fn from_confusion(confusion: Vec<Vec<usize>>, loss: f64) -> Scores {
        let k = confusion.len();
        let n: usize = confusion.iter().flatten().sum();
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let support: Vec<usize> = confusion.iter().map(|r| r.iter().sum()).collect();
        let predicted: Vec<usize> = (0..k)
            .map(|c| confusion.iter().map(|r| r[c]).sum())
            .collect();
        let precision: Vec<f64> = (0..k)
            .map(|c| ratio(confusion[c][c], predicted[c]))
            .collect();
        let recall: Vec<f64> = (0..k).map(|c| ratio(confusion[c][c], support[c])).collect();
        let f1: Vec<f64> = precision
            .iter()
            .zip(&recall)
            .map(|(p, r)| {
                if p + r == 0.0 {
                    0.0
                } else {
                    2.0 * p * r / (p + r)
                }
            })
            .collect();
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        let present: Vec<f64> = (0..k)
            .filter(|&c| support[c] > 0)
            .map(|c| recall[c])
            .collect();
        Scores {
            mean_class_acc: present.iter().sum::<f64>() / present.len().max(1) as f64,
            top5: None,
            loss,
            acc: ratio(correct, n),
            macro_f1: f1.iter().sum::<f64>() / k.max(1) as f64,
            precision,
            recall,
            f1,
            support,
            confusion,
        }
    }

    /// The confusion matrix as a Markdown table (TensorBoard's Text tab, and the terminal).
    pub fn confusion_markdown(&self, classes: &[String]) -> String {
        let mut s = String::from("| true \\ predicted |");
        for c in classes {
            s.push_str(&format!(" {c} |"));
        }
        s.push_str(" recall |\n|---|");
        s.push_str(&"---|".repeat(classes.len() + 1));
        s.push('\n');
        for (i, row) in self.confusion.iter().enumerate() {
            s.push_str(&format!("| **{}** |", classes[i]));
            for v in row {
                s.push_str(&format!(" {v} |"));
            }
            s.push_str(&format!(" {:.4} |\n", self.recall[i]));
        }
        s.push_str("| precision |");
        for p in &self.precision {
            s.push_str(&format!(" {p:.4} |"));
        }
        s.push_str(&format!(" macro-F1 {:.4} |\n", self.macro_f1));
        s
    }

    /// The scores of `split` into `log`: TensorBoard `<split>/loss`, `/acc`, `/macro_f1`,
    /// `/precision/<class>`, `/recall/<class>`, the confusion matrix as an image and a
    /// Markdown table; the row's `<split>_loss`, `_acc`, `_macro_f1`, `_precision`, `_recall`
    /// and `_confusion`.
    pub fn log(&self, split: &str, classes: &[String], log: &mut StepLog) -> Result<()> {
        log.scalar(
            &format!("{split}_loss"),
            &format!("{split}/loss"),
            self.loss,
        )?;
        log.scalar(&format!("{split}_acc"), &format!("{split}/acc"), self.acc)?;
        log.scalar(
            &format!("{split}_macro_f1"),
            &format!("{split}/macro_f1"),
            self.macro_f1,
        )?;
        log.scalar(
            &format!("{split}_mean_class_acc"),
            &format!("{split}/mean_class_acc"),
            self.mean_class_acc,
        )?;
        if let Some(top5) = self.top5 {
            log.scalar(&format!("{split}_top5"), &format!("{split}/top5"), top5)?;
        }
        for (c, name) in classes.iter().enumerate() {
            log.tb_scalar(&format!("{split}/precision/{name}"), self.precision[c])?;
            log.tb_scalar(&format!("{split}/recall/{name}"), self.recall[c])?;
        }
        log.field(&format!("{split}_precision"), self.precision.clone().into());
        log.field(&format!("{split}_recall"), self.recall.clone().into());
        log.field(
            &format!("{split}_confusion"),
            serde_json::json!(self.confusion),
        );
        let (png, w, h) = crate::log::plots::confusion_png(&self.confusion, classes)?;
        log.image(&format!("{split}/confusion_matrix"), &png, w, h)?;
        log.text(
            &format!("{split}/confusion_table"),
            &self.confusion_markdown(classes),
        )
    }
}

/// Scores of `model` on `split`. `weights` are per-class loss weights (None: plain mean).
/// `view`: a clip longer than this many steps holds views of it, one after another (a test
/// split loaded with `[eval] clips`), scored by their mean class probabilities.
pub fn evaluate(
    model: &Classifier,
    split: &Split,
    classes: usize,
    batch_size: usize,
    device: &Device,
    weights: Option<&Tensor>,
    view: Option<usize>,
) -> Result<Scores> {
    if let Some(view) = view.filter(|&v| (0..split.len()).any(|i| split.inputs.steps(i) > v)) {
        let probs = view_probabilities(model, split, batch_size, device, Some(view))?;
        let weights = weights.map(Tensor::to_vec1::<f32>).transpose()?;
        return Ok(scores_of_probabilities(
            &probs,
            &split.labels,
            classes,
            weights.as_deref(),
        ));
    }
    let mut confusion = vec![vec![0usize; classes]; classes];
    let (mut top5, mut seen) = (0usize, 0usize);
    // Weighted like training: sum(w_y * nll) / sum(w_y).
    let (mut loss_num, mut loss_den) = (0f64, 0f64);
    for idx in batch::plan(split, batch_size, None) {
        let b = batch::make(split, &idx, device)?;
        let logits = logits(model, &b)?;
        let (num, den) = nll_sums(&logits, &b.labels, weights)?;
        loss_num += num.to_scalar::<f32>()? as f64;
        loss_den += den.to_scalar::<f32>()? as f64;
        let pred = logits.argmax(1)?.to_vec1::<u32>()?;
        let labels = b.labels.to_vec1::<u32>()?;
        seen += labels.len();
        for (p, y) in pred.iter().zip(&labels) {
            confusion[*y as usize][*p as usize] += 1;
        }
        if classes >= TOP_K_FROM {
            top5 += top_k_hits(
                &logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?,
                &labels,
                5,
            );
        }
    }
    let loss = if loss_den > 0.0 {
        loss_num / loss_den
    } else {
        0.0
    };
    let mut scores = Scores::from_confusion(confusion, loss);
    scores.top5 = (classes >= TOP_K_FROM && seen > 0).then(|| top5 as f64 / seen as f64);
    Ok(scores)
}

/// The model's logits for a batch, without a graph (evaluation).
fn logits(model: &Classifier, b: &batch::Batch) -> Result<Tensor> {
    Ok(model
        .forward(
            &b.x,
            RunOpts {
                lengths: Some(&b.lengths),
                no_grad: true,
                ..Default::default()
            },
        )?
        .logits
        .detach())
}

/// Each sequence's class probabilities, a clip's views averaged: with `view`, a clip longer
/// than `view` steps is its `steps / view` views of `view` steps, one after another; without,
/// every sequence is one. Batches of `batch_size` views.
pub fn view_probabilities(
    model: &Classifier,
    split: &Split,
    batch_size: usize,
    device: &Device,
    view: Option<usize>,
) -> Result<Vec<Vec<f32>>> {
    let mut windows = Vec::new();
    for i in 0..split.len() {
        let steps = split.inputs.steps(i);
        match view {
            Some(v) if v > 0 && steps > v => windows.extend((0..steps / v).map(|k| (i, k * v, v))),
            _ => windows.push((i, 0, steps)),
        }
    }
    let mut sums: Vec<Vec<f32>> = vec![Vec::new(); split.len()];
    let mut counts = vec![0usize; split.len()];
    for chunk in windows.chunks(batch_size.max(1)) {
        let b = batch::make_windows(split, chunk, device)?;
        let logits = logits(model, &b)?;
        let probs: Vec<Vec<f32>> = crate::model::classifier::probabilities(&logits)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2()?;
        for (&(i, _, _), p) in chunk.iter().zip(probs) {
            let sum = &mut sums[i];
            if sum.is_empty() {
                *sum = p;
            } else {
                sum.iter_mut().zip(&p).for_each(|(s, v)| *s += v);
            }
            counts[i] += 1;
        }
    }
    for (sum, n) in sums.iter_mut().zip(counts) {
        if n > 1 {
            sum.iter_mut().for_each(|s| *s /= n as f32);
        }
    }
    Ok(sums)
}

/// Scores from class probabilities (one row per example): the most probable class predicted,
/// the loss the mean of -ln p(label) (weighted like training with `weights`), top-5 from the
/// rows.
pub fn scores_of_probabilities(
    probs: &[Vec<f32>],
    labels: &[u32],
    classes: usize,
    weights: Option<&[f32]>,
) -> Scores {
    let mut confusion = vec![vec![0usize; classes]; classes];
    let (mut num, mut den) = (0f64, 0f64);
    for (row, &y) in probs.iter().zip(labels) {
        let best = row
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (k, &p)| if p > b.1 { (k, p) } else { b },
            )
            .0;
        confusion[y as usize][best] += 1;
        let w = weights.map_or(1.0, |w| w[y as usize] as f64);
        num += -w * (row[y as usize] as f64).max(f64::MIN_POSITIVE).ln();
        den += w;
    }
    let loss = if den > 0.0 { num / den } else { 0.0 };
    let mut scores = Scores::from_confusion(confusion, loss);
    scores.top5 = (classes >= TOP_K_FROM && !labels.is_empty())
        .then(|| top_k_hits(probs, labels, 5) as f64 / labels.len() as f64);
    scores
}

/// Top-5 accuracy is reported from this many classes on (with 5 or fewer it is always 1).
pub const TOP_K_FROM: usize = 6;

/// How many rows of `scores` rank their label among the `k` highest (ties counted in the
/// label's favour: fewer than `k` scores strictly above it).
pub fn top_k_hits(scores: &[Vec<f32>], labels: &[u32], k: usize) -> usize {
    scores
        .iter()
        .zip(labels)
        .filter(|(row, &y)| {
            let own = row[y as usize];
            row.iter().filter(|&&v| v > own).count() < k
        })
        .count()
}

/// Summed cross-entropy of a batch and the sum of its weights: sum(w_y * nll) and sum(w_y)
/// with class weights, sum(nll) and the batch size without.
fn nll_sums(
    logits: &Tensor,
    labels: &Tensor,
    weights: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    let nll = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    Ok(match weights {
        Some(w) => {
            let wy = w.index_select(labels, 0)?;
            ((nll * &wy)?.sum_all()?, wy.sum_all()?)
        }
        None => {
            let n = Tensor::new(labels.dim(0)? as f32, logits.device())?;
            (nll.sum_all()?, n)
        }
    })
}

/// PyTorch's `cross_entropy(logits, labels, weight=w)`: sum(w_y * nll) / sum(w_y); the plain
/// mean without weights.
pub fn loss(logits: &Tensor, labels: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    Ok(match weights {
        None => candle_nn::loss::cross_entropy(logits, labels)?,
        Some(_) => {
            let (num, den) = nll_sums(logits, labels, weights)?;
            (num / den)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_scikit_learn_definitions() {
        // true 0: 3 right, 1 called 1; true 1: 2 called 0, 4 right; true 2: none predicted.
        let s = Scores::from_confusion(vec![vec![3, 1, 0], vec![2, 4, 0], vec![1, 0, 0]], 0.5);
        assert_eq!(s.support, vec![4, 6, 1]);
        assert!((s.acc - 7.0 / 11.0).abs() < 1e-12);
        assert!((s.precision[0] - 0.5).abs() < 1e-12);
        assert!((s.recall[1] - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!((s.precision[2], s.recall[2], s.f1[2]), (0.0, 0.0, 0.0));
        let f0 = 2.0 * 0.5 * 0.75 / 1.25;
        let f1 = 2.0 * 0.8 * (4.0 / 6.0) / (0.8 + 4.0 / 6.0);
        assert!((s.macro_f1 - (f0 + f1) / 3.0).abs() < 1e-12);
        // Mean class accuracy: the mean of the recalls 3/4, 4/6, 0.
        assert!((s.mean_class_acc - (0.75 + 4.0 / 6.0) / 3.0).abs() < 1e-12);
        // A class without examples does not count: (1 + 1/2) / 2, not / 3.
        let s = Scores::from_confusion(vec![vec![2, 0, 0], vec![0, 0, 0], vec![1, 0, 1]], 0.0);
        assert!((s.mean_class_acc - 0.75).abs() < 1e-12);
        assert!((s.acc - 0.75).abs() < 1e-12);
    }

    /// Top-k on hand-made scores: a label ranked 1st, 3rd, 6th, and tied with the 5th.
    #[test]
    fn top_k_counts_labels_among_the_highest_scores() {
        let rows = vec![
            vec![9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec![9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0],
            vec![0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec![5.0, 5.0, 2.0, 3.0, 7.0, 8.0, 9.0],
        ];
        // Row 0: label 0 first; row 1: label 5 third; row 2: label 1 sixth; row 3: label 1
        // at 5.0 with only three scores (7, 8, 9) above it.
        let labels = [0, 5, 1, 1];
        assert_eq!(top_k_hits(&rows, &labels, 5), 3);
        assert_eq!(top_k_hits(&rows, &labels, 1), 1);
        // Label 3 in row 0 has four scores above it; the others five or more.
        assert_eq!(top_k_hits(&rows, &[3, 2, 0, 2], 5), 1);
    }

    /// Scores from averaged probabilities, by hand: argmax, -ln p(label), weights, top-5.
    #[test]
    fn scores_from_probabilities_by_hand() {
        let probs = vec![
            vec![0.5, 0.3, 0.2, 0.0, 0.0, 0.0],
            vec![0.1, 0.2, 0.05, 0.05, 0.1, 0.5],
            vec![0.0, 0.0, 0.0, 0.0, 0.1, 0.9],
        ];
        let labels = [0, 1, 0];
        let s = scores_of_probabilities(&probs, &labels, 6, None);
        assert_eq!(s.confusion[0][0], 1);
        assert_eq!(s.confusion[1][5], 1);
        assert_eq!(s.confusion[0][5], 1);
        assert!((s.acc - 1.0 / 3.0).abs() < 1e-12);
        let want = -(0.5f64.ln() + (0.2f32 as f64).ln() + f64::MIN_POSITIVE.ln()) / 3.0;
        assert!((s.loss - want).abs() < 1e-9, "{} vs {want}", s.loss);
        // Label 1 is 2nd in row 1; label 0 in row 2 is tied at 0 with four others below 0.1
        // and 0.9: two scores above it, so within the top 5.
        assert_eq!(s.top5, Some(1.0));
        let w = [2.0f32, 1.0, 1.0, 1.0, 1.0, 1.0];
        let s = scores_of_probabilities(&probs[..2], &labels[..2], 6, Some(&w));
        let want = -(2.0 * 0.5f64.ln() + (0.2f32 as f64).ln()) / 3.0;
        assert!((s.loss - want).abs() < 1e-9);
    }
}
