//! Asynchronous successive halving (ASHA, Li et al. 2018) with Optuna's
//! SuccessiveHalvingPruner rule: rung k trains to `min_epochs * eta^k` epochs (the last rung to
//! `train.epochs`); a trial reaching a rung records its metric there and goes on only if that
//! value is in the top ⌊n/eta⌋ of the n values recorded at the rung so far, itself included
//! (the best one while n < eta). Nothing waits for a rung to fill, so trials run in parallel
//! and on a cluster without a coordinator: the records in the trial folders are the rungs.

/// Epoch budgets of the rungs: `min_epochs * eta^k` while below `epochs`, then `epochs`.
pub fn budgets(min_epochs: usize, eta: usize, epochs: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut b = min_epochs.max(1);
    while b < epochs {
        out.push(b);
        b = b.saturating_mul(eta.max(2));
    }
    out.push(epochs);
    out
}

/// Whether `value` goes on from its rung, given every value recorded there (`competing`,
/// `value` among them). Ties count in the trial's favour.
pub fn promotable(value: f64, competing: &[f64], eta: usize, maximize: bool) -> bool {
    let mut vals: Vec<f64> = competing
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if !value.is_finite() {
        return false;
    }
    // Best first.
    vals.sort_by(|a, b| {
        let o = a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
        if maximize {
            o.reverse()
        } else {
            o
        }
    });
    let k = (vals.len() / eta.max(1)).max(1);
    let Some(&cut) = vals.get(k - 1) else {
        return true;
    };
    if maximize {
        value >= cut
    } else {
        value <= cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_grow_by_eta_up_to_the_full_run() {
        assert_eq!(budgets(1, 3, 9), vec![1, 3, 9]);
        assert_eq!(budgets(1, 3, 10), vec![1, 3, 9, 10]);
        assert_eq!(budgets(2, 2, 12), vec![2, 4, 8, 12]);
        assert_eq!(budgets(1, 3, 2), vec![1, 2]);
    }

    /// Worked by hand: eta = 3, values arriving at rung 0 one after another (val_acc).
    #[test]
    fn promotions_follow_the_rung_values_recorded_so_far() {
        // 1st: n = 1, top max(1, 0) = 1: promoted (it is the best).
        assert!(promotable(0.60, &[0.60], 3, true));
        // 2nd: n = 2, top 1 is 0.60: 0.55 is not.
        assert!(!promotable(0.55, &[0.60, 0.55], 3, true));
        // 3rd: n = 3, top 1 is 0.70 (itself).
        assert!(promotable(0.70, &[0.60, 0.55, 0.70], 3, true));
        // 4th .. 6th: n = 4, 5 keep top 1 = 0.70; at n = 6 the top 2 are 0.70, 0.65.
        assert!(!promotable(0.65, &[0.60, 0.55, 0.70, 0.65], 3, true));
        assert!(!promotable(0.50, &[0.60, 0.55, 0.70, 0.65, 0.50], 3, true));
        assert!(promotable(
            0.65,
            &[0.60, 0.55, 0.70, 0.65, 0.50, 0.65],
            3,
            true
        ));
        // val_loss: lower is better. n = 6, top 2 are 0.30, 0.35.
        let losses = [0.50, 0.30, 0.45, 0.35, 0.60, 0.40];
        assert!(promotable(0.35, &losses, 3, false));
        assert!(!promotable(0.40, &losses, 3, false));
        // Optuna's eta = 2, n = 4: top 2.
        assert!(promotable(0.8, &[0.9, 0.8, 0.7, 0.6], 2, true));
        assert!(!promotable(0.7, &[0.9, 0.8, 0.7, 0.6], 2, true));
    }

    #[test]
    fn non_finite_values_never_go_on() {
        assert!(!promotable(f64::NAN, &[f64::NAN], 3, true));
        assert!(promotable(0.1, &[0.1, f64::NAN], 3, true));
    }
}
