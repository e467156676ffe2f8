//! The terminal table: median and min–max per metric, flags and notes.

use shoal_bench::BenchResult;

pub fn table(r: &BenchResult) -> String {
    let mut t = crate::output::table(&["SCENARIO", "METRIC", "MEDIAN", "MIN–MAX", "N", "FLAG"]);
    for s in &r.scenarios {
        for m in &s.metrics {
            let (median, range) = match (m.median, m.min, m.max) {
                (Some(md), Some(lo), Some(hi)) => (
                    format!("{} {}", num(md, md), m.unit),
                    format!("{}–{}", num(lo, md), num(hi, md)),
                ),
                _ => ("-".into(), "-".into()),
            };
            let flag = match (m.errors.len(), m.flagged) {
                (0, false) => String::new(),
                (0, true) => "spread".into(),
                (n, _) => format!("{n} error(s)"),
            };
            t.add_row(vec![
                s.name.clone(),
                m.name.clone(),
                median,
                range,
                m.samples.len().to_string(),
                flag,
            ]);
        }
    }
    let meta = &r.meta;
    let mut out = format!(
        "{t}\n{} node(s), repeat {}, {} s each, shuffled; kernel {}, {} × {}, shoal {}{}\n",
        meta.nodes,
        meta.repeat,
        meta.duration_secs,
        meta.kernel,
        meta.cpus,
        meta.cpu_model,
        meta.shoal_version,
        meta.shoal_commit
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default(),
    );
    for n in &meta.notes {
        out.push_str(&format!("- {n}\n"));
    }
    out
}

/// About three significant digits of the median, enough for noisy
/// repeats; the range is printed with the median's decimals so the columns
/// read alike.
fn num(v: f64, median: f64) -> String {
    match median.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}
