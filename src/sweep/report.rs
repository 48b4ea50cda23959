//! A sweep's tables as `run-exp` prints them at the end of a sweep and for `run-exp
//! summarize`: Markdown (it reads as a table in a terminal and pastes into a README), the
//! columns a reader compares, numbers formatted, at most 40 rows each (the CSV files hold them
//! all).

use super::record::TrialStatus;
use super::results::{Best, Results};
use super::summary::{groups, rank, Row, BEST_TOML, BY_CONFIG_CSV, IMPORTANCE_CSV, SUMMARY_CSV};

/// At most this many rows of each table are printed (the files hold them all).
const PRINT_ROWS: usize = 40;

/// A number as the tables print it: 4 decimals, or 3 significant digits below 0.001.
fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v != 0.0 && v.abs() < 1e-3 => format!("{v:.2e}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn axis_text(values: &[(String, toml::Value)], key: &str) -> String {
    match values.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "-".into(),
    }
}

/// A Markdown table (it reads as a table in a terminal and pastes into a README).
fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let mut s = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for r in rows {
        s += &format!("| {} |\n", r.join(" | "));
    }
    s
}

/// The tables as printed at the end of a sweep and by `run-exp summarize`: the columns a
/// reader compares (the CSV files hold them all).
pub fn render(results: &Results, best: Option<&Best>) -> String {
    let (root, study, rows) = (results.root(), results.study(), results.rows());
    let groups = groups(study, rows);
    let (m, o) = (study.metric, study.metric.other());
    let (metric, other) = (format!("best_{}", m.key()), format!("best_{}", o.key()));
    let more = |n: usize, what: &str, file: &str| {
        if n > PRINT_ROWS {
            format!(
                "({} more {what} in {})\n",
                n - PRINT_ROWS,
                root.join(file).display()
            )
        } else {
            String::new()
        }
    };
    let mut s = format!(
        "{}\n\nby configuration (mean and std over the completed seeds), best first:\n\n",
        root.display()
    );
    let mut header: Vec<String> = study.axes.clone();
    header.extend(
        [
            "epochs",
            "n",
            &format!("{metric} mean"),
            "std",
            &format!("{other} mean"),
            "test_acc mean",
            "std",
            "elapsed_s mean",
        ]
        .map(String::from),
    );
    let table: Vec<Vec<String>> = groups
        .iter()
        .take(PRINT_ROWS)
        .map(|g| {
            let first = g.rows.first();
            let mut r: Vec<String> = study
                .axes
                .iter()
                .map(|k| first.map_or("-".into(), |f| axis_text(&f.values, k)))
                .collect();
            let (mean, sd, n) = g.stats(|r| r.best(m));
            let (t, tsd, _) = g.stats(|r| r.test_acc);
            r.push(
                first
                    .and_then(|f| f.planned.or(f.budget))
                    .map_or("-".into(), |b| b.epochs.to_string()),
            );
            r.push(format!("{n}/{}", g.rows.len()));
            r.extend([
                num(mean),
                num(sd),
                num(g.stats(|r| r.best(o)).0),
                num(t),
                num(tsd),
                num(g.stats(|r| r.elapsed_s).0),
            ]);
            r
        })
        .collect();
    s += &markdown(&header, &table);
    s += &more(groups.len(), "configurations", BY_CONFIG_CSV);
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by(|a, b| rank(study, a.key(study), b.key(study)));
    s += "\ntrials, best first:\n\n";
    let mut header: Vec<String> = vec!["trial".into(), "status".into()];
    header.extend(study.axes.iter().cloned());
    header.extend(
        [
            "seed",
            "epochs",
            "epochs_done",
            &metric,
            &other,
            "test_acc",
            "elapsed_s",
            "error",
        ]
        .map(String::from),
    );
    let table: Vec<Vec<String>> = sorted
        .iter()
        .take(PRINT_ROWS)
        .map(|t| {
            let mut r = vec![t.trial.clone(), t.status.name().to_string()];
            r.extend(study.axes.iter().map(|k| axis_text(&t.values, k)));
            let mut error: String = t
                .error
                .as_deref()
                .and_then(|e| e.lines().next())
                .unwrap_or("")
                .replace('|', "/");
            if error.chars().count() > 60 {
                error = error.chars().take(59).collect::<String>() + "…";
            }
            r.extend([
                t.seed.to_string(),
                t.budget.map_or("-".into(), |b| b.epochs.to_string()),
                t.epochs_done.map_or("-".into(), |e| e.to_string()),
                num(t.best(m)),
                num(t.best(o)),
                num(t.test_acc),
                t.elapsed_s.map_or("-".into(), |e| format!("{e:.1}")),
                error,
            ]);
            r
        })
        .collect();
    s += &markdown(&header, &table);
    s += &more(rows.len(), "trials", SUMMARY_CSV);
    let behind = rows
        .iter()
        .filter(|r| r.status == TrialStatus::Completed && !r.at_budget())
        .count();
    if behind > 0 {
        s += &format!("\n{behind} completed trial(s) trained to a smaller budget than the sweep now gives (column epochs): not in the means; rerun the sweep to continue them\n");
    }
    let imp = results.importance();
    if !imp.is_empty() {
        s += &format!(
            "\nwhich axes mattered (PED-ANOVA: best 10% of the trials against all; sd over 30 bootstrap resamples; {}):\n\n",
            root.join(IMPORTANCE_CSV).display()
        );
        let table: Vec<Vec<String>> = imp
            .iter()
            .map(|i| {
                vec![
                    i.axis.clone(),
                    format!("{:.3}", i.importance),
                    format!("{:.3}", i.std),
                ]
            })
            .collect();
        s += &markdown(&["axis", "importance", "sd"].map(String::from), &table);
    }
    if let Some((group, mean, n)) = best {
        s += &format!(
            "\nbest: {} ({mean:.4} over {n} seed(s)) -> {}\n",
            if group.is_empty() {
                "the base config"
            } else {
                group
            },
            root.join(BEST_TOML).display()
        );
    }
    s
}

/// `summarize --pareto`: the configurations on the metric-cost frontier, cheapest first, and
/// pareto.png (every configuration).
pub fn pareto(results: &Results, cost: super::pareto::Cost) -> crate::error::Result<String> {
    let study = results.study();
    let points = super::pareto::points(results, cost);
    super::pareto::draw(results.root(), study, &points, cost)?;
    let what = match cost {
        super::pareto::Cost::Time => "train seconds",
        super::pareto::Cost::Parameters => "parameters",
    };
    let front: Vec<Vec<String>> = points
        .iter()
        .filter(|p| p.frontier)
        .map(|p| {
            vec![
                p.group.clone(),
                num(Some(p.metric)),
                match cost {
                    super::pareto::Cost::Time => format!("{:.1}", p.cost),
                    super::pareto::Cost::Parameters => format!("{:.0}", p.cost),
                },
            ]
        })
        .collect();
    let mut s = format!(
        "\nthe frontier: {} of {} configurations that no other beats on both best {} and {what} (means over completed seeds; {}):\n\n",
        front.len(),
        points.len(),
        study.metric.key(),
        results.root().join(super::pareto::PARETO_PNG).display()
    );
    s += &markdown(
        &[
            "configuration".to_string(),
            format!("best {} mean", study.metric.key()),
            what.to_string(),
        ],
        &front,
    );
    Ok(s)
}
