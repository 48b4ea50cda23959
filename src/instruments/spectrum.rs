//! The recurrent spectrum: the largest singular value of every W_hh (power iteration), whose
//! size decides whether backpropagation through time shrinks or grows a gradient.

use super::{Instrument, StepLog, StepView};
use crate::error::Result;
use crate::model::classifier::Classifier;

pub struct Spectrum;

impl Instrument for Spectrum {
    fn record(&mut self, at: &StepView, log: &mut StepLog) -> Result<()> {
        log.group(&["spectrum"], "spectrum", &spectrum(at.model)?)
    }
}

/// σ_max of every recurrent weight matrix (`*weight_hh*`), by parameter name.
fn spectrum(model: &Classifier) -> Result<Vec<(String, f64)>> {
    model
        .params
        .iter()
        .filter(|(name, _)| name.contains("weight_hh"))
        .map(|(name, var)| {
            let (r, c) = var.as_tensor().dims2()?;
            let w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            Ok((name.clone(), sigma_max(&w, r, c)))
        })
        .collect()
}

/// The largest singular value of a matrix (`rows` x `cols`, row-major): power iteration on
/// W^T W from a fixed start, to a relative change below 1e-6 or 200 iterations.
fn sigma_max(w: &[f32], rows: usize, cols: usize) -> f64 {
    if rows == 0 || cols == 0 {
        return 0.0;
    }
    let w: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    // Start off every axis and symmetry: 1 + i/cols.
    let mut v: Vec<f64> = (0..cols).map(|i| 1.0 + i as f64 / cols as f64).collect();
    let mut sigma = 0.0;
    for _ in 0..200 {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        v.iter_mut().for_each(|x| *x /= norm);
        let wv: Vec<f64> = w
            .chunks(cols)
            .map(|row| row.iter().zip(&v).map(|(a, b)| a * b).sum())
            .collect();
        let next = wv.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut u = vec![0f64; cols];
        for (row, s) in w.chunks(cols).zip(&wv) {
            u.iter_mut().zip(row).for_each(|(a, r)| *a += r * s);
        }
        v = u;
        if (next - sigma).abs() <= 1e-6 * next {
            return next;
        }
        sigma = next;
    }
    sigma
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against closed forms: [[1, 2], [0, 1]] has largest singular value 1 + sqrt(2); a
    /// diagonal matrix its largest magnitude; [[3, 0], [0, 4], [0, 0]] 4.
    #[test]
    fn sigma_max_matches_closed_forms() {
        let s = sigma_max(&[1.0, 2.0, 0.0, 1.0], 2, 2);
        assert!((s - (1.0 + 2f64.sqrt())).abs() < 1e-5, "{s}");
        let s = sigma_max(&[0.5, 0.0, 0.0, 0.0, -3.0, 0.0, 0.0, 0.0, 2.0], 3, 3);
        assert!((s - 3.0).abs() < 1e-5, "{s}");
        let s = sigma_max(&[3.0, 0.0, 0.0, 4.0, 0.0, 0.0], 3, 2);
        assert!((s - 4.0).abs() < 1e-5, "{s}");
        assert_eq!(sigma_max(&[0.0; 4], 2, 2), 0.0);
    }
}
