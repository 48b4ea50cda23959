//! One axis of `[sweep.axes]`: its forms (a list, or a distribution), how it is drawn, the
//! domain the HParams tab shows, and how its observed values are read for the pictures.

use rand::Rng;

/// One axis of `[sweep.axes]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Axis {
    /// A list: every value (grid), or a uniform choice (random / halving).
    Values(Vec<toml::Value>),
    /// `{ log_uniform = [lo, hi] }`: exp of a uniform draw in [ln lo, ln hi].
    LogUniform(f64, f64),
    /// `{ uniform = [lo, hi] }`.
    Uniform(f64, f64),
    /// `{ int_range = [lo, hi] }`, both ends included.
    IntRange(i64, i64),
    /// `{ choice = [...] }`: a uniform choice.
    Choice(Vec<toml::Value>),
}

impl Axis {
    pub(super) fn parse(v: &toml::Value) -> std::result::Result<Axis, String> {
        const FORMS: &str = "expected a list of values, or { log_uniform = [lo, hi] }, { uniform = [lo, hi] }, { int_range = [lo, hi] }, { choice = [...] }";
        let pair = |v: &toml::Value| -> Option<(f64, f64)> {
            let a = v.as_array()?;
            let num = |x: &toml::Value| x.as_float().or_else(|| x.as_integer().map(|i| i as f64));
            match a.as_slice() {
                [lo, hi] => Some((num(lo)?, num(hi)?)),
                _ => None,
            }
        };
        match v {
            toml::Value::Array(vs) if vs.is_empty() => Err("an empty list gives no trials".into()),
            toml::Value::Array(vs) => Ok(Axis::Values(vs.clone())),
            toml::Value::Table(t) if t.len() == 1 => {
                let (kind, arg) = t.iter().next().ok_or_else(|| FORMS.to_string())?;
                match kind.as_str() {
                    "log_uniform" => match pair(arg) {
                        Some((lo, hi)) if lo > 0.0 && lo < hi && hi.is_finite() => {
                            Ok(Axis::LogUniform(lo, hi))
                        }
                        _ => Err("log_uniform needs [lo, hi] with 0 < lo < hi".into()),
                    },
                    "uniform" => match pair(arg) {
                        Some((lo, hi)) if lo < hi && lo.is_finite() && hi.is_finite() => {
                            Ok(Axis::Uniform(lo, hi))
                        }
                        _ => Err("uniform needs [lo, hi] with lo < hi".into()),
                    },
                    "int_range" => match arg.as_array().map(|a| a.as_slice()) {
                        Some([lo, hi]) => match (lo.as_integer(), hi.as_integer()) {
                            (Some(lo), Some(hi)) if lo <= hi => Ok(Axis::IntRange(lo, hi)),
                            _ => Err("int_range needs [lo, hi], integers with lo <= hi".into()),
                        },
                        _ => Err("int_range needs [lo, hi], integers with lo <= hi".into()),
                    },
                    "choice" => match arg.as_array() {
                        Some(vs) if !vs.is_empty() => Ok(Axis::Choice(vs.clone())),
                        _ => Err("choice needs a non-empty list".into()),
                    },
                    other => Err(format!("unknown distribution \"{other}\"; {FORMS}")),
                }
            }
            _ => Err(FORMS.into()),
        }
    }

    pub(super) fn is_distribution(&self) -> bool {
        !matches!(self, Axis::Values(_))
    }

    /// The values that stand for the axis when it is checked: every listed value, the ends of
    /// a range.
    pub(super) fn probes(&self) -> Vec<toml::Value> {
        match self {
            Axis::Values(vs) | Axis::Choice(vs) => vs.clone(),
            Axis::LogUniform(lo, hi) | Axis::Uniform(lo, hi) => {
                vec![toml::Value::Float(*lo), toml::Value::Float(*hi)]
            }
            Axis::IntRange(lo, hi) => vec![toml::Value::Integer(*lo), toml::Value::Integer(*hi)],
        }
    }

    pub(super) fn sample(&self, rng: &mut impl Rng) -> toml::Value {
        match self {
            Axis::Values(vs) | Axis::Choice(vs) => vs[rng.random_range(0..vs.len())].clone(),
            Axis::LogUniform(lo, hi) => {
                toml::Value::Float(round_sig(rng.random_range(lo.ln()..=hi.ln()).exp()))
            }
            Axis::Uniform(lo, hi) => toml::Value::Float(round_sig(rng.random_range(*lo..=*hi))),
            Axis::IntRange(lo, hi) => toml::Value::Integer(rng.random_range(*lo..=*hi)),
        }
    }

    /// How the HParams tab describes the axis: its discrete values, or an interval.
    pub fn domain(&self) -> Domain {
        match self {
            Axis::Values(vs) | Axis::Choice(vs) => Domain::Discrete(vs.clone()),
            Axis::LogUniform(lo, hi) | Axis::Uniform(lo, hi) => Domain::Interval(*lo, *hi),
            Axis::IntRange(lo, hi) => Domain::Interval(*lo as f64, *hi as f64),
        }
    }
}

pub enum Domain {
    Discrete(Vec<toml::Value>),
    Interval(f64, f64),
}

pub fn number(v: &toml::Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

/// How an axis's observed values are read (importance, the sweep's pictures): a numeric axis
/// with more than 5 values is continuous, on a log scale when its values span a factor of 10;
/// a list or a choice is one position per value (numbers in order).
pub enum ValueScale {
    Linear,
    Log,
    Categories(Vec<toml::Value>),
}

impl ValueScale {
    pub fn of(values: &[&toml::Value]) -> ValueScale {
        let mut distinct: Vec<&toml::Value> = Vec::new();
        for v in values {
            if !distinct.contains(v) {
                distinct.push(v);
            }
        }
        let nums: Option<Vec<f64>> = values.iter().map(|v| number(v)).collect();
        match nums {
            Some(xs) if distinct.len() > 5 => {
                let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if lo > 0.0 && hi / lo >= 10.0 {
                    ValueScale::Log
                } else {
                    ValueScale::Linear
                }
            }
            _ => {
                let mut cats: Vec<toml::Value> = distinct.into_iter().cloned().collect();
                if cats.iter().all(|v| number(v).is_some()) {
                    cats.sort_by(|a, b| {
                        number(a)
                            .unwrap_or(0.0)
                            .total_cmp(&number(b).unwrap_or(0.0))
                    });
                }
                ValueScale::Categories(cats)
            }
        }
    }

    /// The value's position: itself, its log10, or its category's index.
    pub fn x(&self, v: &toml::Value) -> Option<f64> {
        match self {
            ValueScale::Linear => number(v),
            ValueScale::Log => number(v).filter(|x| *x > 0.0).map(f64::log10),
            ValueScale::Categories(cats) => cats.iter().position(|c| c == v).map(|i| i as f64),
        }
    }

    pub fn describe(&self, axis: &str) -> String {
        match self {
            ValueScale::Log => format!("log10 {axis}"),
            _ => axis.to_string(),
        }
    }
}

/// 4 significant digits: sampled values read well in tables and hash the same on every
/// machine.
pub(super) fn round_sig(x: f64) -> f64 {
    format!("{x:.3e}").parse().unwrap_or(x)
}
