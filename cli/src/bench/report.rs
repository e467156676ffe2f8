//! The terminal table: median and min–max per metric, flags and notes.

use std::path::Path;

use anyhow::Context;
use shoal_bench::{BenchResult, Change};

/// Plots of a result file, as `--out` writes them.
pub fn plots(path: &Path, dir: &Path) -> anyhow::Result<()> {
    let r = load(path)?;
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
    for f in shoal_bench::plot::write_plots(&r, dir)? {
        println!("{}", f.display());
    }
    Ok(())
}

/// A result file written by `shoal bench --out`.
pub fn load(path: &Path) -> anyhow::Result<BenchResult> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a shoal bench result; give the result.json that `shoal bench --out DIR` wrote",
            path.display()
        )
    })
}

/// `compare`'s table, and what differs between the two runs' machines.
pub fn changes(changes: &[Change], a: &BenchResult, b: &BenchResult) -> String {
    let mut t = crate::output::table(&["SCENARIO", "METRIC", "A", "B", "CHANGE", "FLAG"]);
    for c in changes {
        let shown = |v: Option<f64>| v.map_or("-".into(), |v| format!("{} {}", num(v, v), c.unit));
        t.add_row(vec![
            c.scenario.clone(),
            c.metric.clone(),
            shown(c.a),
            shown(c.b),
            c.change
                .map_or("-".into(), |x| format!("{:+.1}%", x * 100.0)),
            if c.flagged {
                "flagged".into()
            } else {
                String::new()
            },
        ]);
    }
    let mut out = format!("{t}\n");
    let (ma, mb) = (&a.meta, &b.meta);
    let differs = [
        ("commit", commit(ma), commit(mb)),
        ("kernel", ma.kernel.clone(), mb.kernel.clone()),
        ("cpu", ma.cpu_model.clone(), mb.cpu_model.clone()),
        ("nodes", ma.nodes.to_string(), mb.nodes.to_string()),
        (
            "duration",
            ma.duration_secs.to_string(),
            mb.duration_secs.to_string(),
        ),
    ];
    for (what, x, y) in differs {
        if x != y {
            out.push_str(&format!("{what}: A {x}, B {y}\n"));
        }
    }
    out.push_str("flagged: errors, a missing sample or a spread over the threshold in A or B; its change may be noise\n");
    out
}

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
        "{t}\n{} node(s), repeat {}, {} s each, in shuffled rounds; N streams = {}; caller-side loaders: {} connections on {} threads; kernel {}, {} × {}, shoal {}{}{}\n",
        meta.nodes,
        meta.repeat,
        meta.duration_secs,
        meta.streams,
        meta.connections,
        meta.loaders,
        meta.kernel,
        meta.cpus,
        meta.cpu_model,
        meta.shoal_version,
        meta.shoal_commit
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default(),
        meta.daemon_commit
            .as_deref()
            .map(|c| format!(", shoald {c}"))
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

fn commit(m: &shoal_bench::RunMeta) -> String {
    m.shoal_commit
        .clone()
        .unwrap_or_else(|| format!("unknown (shoal {})", m.shoal_version))
}
