//! `cargo xtask bench docs [--check]`: docs/bench.md from the result files
//! and fragments docs/bench/manifest.jsonl lists, rendered by
//! `shoal_bench::markdown`. This side only reads files, draws plots a
//! result lacks, and writes or compares the document.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use shoal_bench::{
    BenchResult,
    manifest::{self, Section},
    markdown, plot,
};

/// The manifest, inside docs/bench/.
pub const MANIFEST: &str = "manifest.jsonl";

/// docs/ of this checkout.
pub fn docs_dir() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).join("docs")
}

pub fn run(check_only: bool) -> anyhow::Result<()> {
    let docs = docs_dir();
    match check_only {
        true => check(&docs),
        false => write(&docs),
    }
}

/// The document, and the plots it links that are not there yet.
pub struct Generated {
    pub text: String,
    pub missing: Vec<MissingPlots>,
}

/// A result whose plots are (partly) missing, and where they go.
pub struct MissingPlots {
    pub result: BenchResult,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// A run already rendered, for later runs' comparisons.
struct Earlier {
    title: String,
    link: String,
    result: BenchResult,
}

/// docs/bench.md as the manifest in `docs/bench/` describes it.
pub fn generate(docs: &Path) -> anyhow::Result<Generated> {
    let bench = docs.join("bench");
    let manifest_path = bench.join(MANIFEST);
    let text = read(&manifest_path)?;
    let sections = manifest::parse(&manifest_path.display().to_string(), &text)?;
    let mut out = markdown::header(&format!("docs/bench/{MANIFEST}"));
    let mut missing = Vec::new();
    let mut earlier: Vec<Earlier> = Vec::new();
    for s in sections {
        match s {
            Section::Fragment(f) => out.push_str(&markdown::fragment(&read(&bench.join(f))?)),
            Section::History(f) => out.push_str(&markdown::history(&read(&bench.join(f))?)),
            Section::Run {
                result,
                title,
                prose,
                compare_with,
            } => {
                let r = load(&bench.join(&result))?;
                let prose = prose.map(|p| read(&bench.join(p))).transpose()?;
                let dir = plots_dir(&result);
                let files: Vec<PathBuf> = plot::planned(&r)
                    .iter()
                    .flat_map(|stem| {
                        ["svg", "png"].map(|ext| bench.join(format!("{dir}/{stem}.{ext}")))
                    })
                    .filter(|f| !f.exists())
                    .collect();
                let explicit = match &compare_with {
                    // An earlier section's run keeps its title.
                    Some(c) => match earlier.iter().find(|e| e.link == format!("bench/{c}")) {
                        Some(e) => Some(Earlier {
                            title: e.title.clone(),
                            link: e.link.clone(),
                            result: e.result.clone(),
                        }),
                        None => Some(Earlier {
                            title: c.clone(),
                            link: format!("bench/{c}"),
                            result: load(&bench.join(c))?,
                        }),
                    },
                    None => None,
                };
                let previous = explicit.as_ref().or_else(|| {
                    earlier
                        .iter()
                        .rev()
                        .find(|e| markdown::same_scenarios(&e.result, &r))
                });
                let link = format!("bench/{result}");
                out.push_str(&markdown::run(&markdown::Run {
                    title: &title,
                    result: &r,
                    source: &link,
                    plots_dir: &format!("bench/{dir}"),
                    prose: prose.as_deref(),
                    previous: previous.map(|e| markdown::Previous {
                        title: &e.title,
                        source: &e.link,
                        result: &e.result,
                    }),
                })?);
                if !files.is_empty() {
                    missing.push(MissingPlots {
                        result: r.clone(),
                        dir: bench.join(&dir),
                        files,
                    });
                }
                earlier.push(Earlier {
                    title,
                    link,
                    result: r,
                });
            }
        }
    }
    Ok(Generated {
        text: format!("{}\n", out.trim_end()),
        missing,
    })
}

/// Draws missing plots, then writes docs/bench.md.
pub fn write(docs: &Path) -> anyhow::Result<()> {
    let g = generate(docs)?;
    for m in &g.missing {
        std::fs::create_dir_all(&m.dir).with_context(|| format!("creating {}", m.dir.display()))?;
        for f in plot::write_plots(&m.result, &m.dir)? {
            println!("drew {}", f.display());
        }
        if let Some(f) = m.files.iter().find(|f| !f.exists()) {
            bail!("{} is linked but was not drawn", f.display());
        }
    }
    let path = docs.join("bench.md");
    std::fs::write(&path, &g.text).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Fails when docs/bench.md is not what [`write`] would write, or a plot
/// it links is missing.
pub fn check(docs: &Path) -> anyhow::Result<()> {
    let g = generate(docs)?;
    let fix = "run `cargo xtask bench docs` and commit docs/bench.md and docs/bench/";
    if let Some(m) = g.missing.first() {
        let files: Vec<String> = m.files.iter().map(|f| f.display().to_string()).collect();
        bail!(
            "plots linked from docs/bench.md are missing: {}; {fix}",
            files.join(", ")
        );
    }
    let path = docs.join("bench.md");
    let committed = read(&path)?;
    if committed != g.text {
        let (n, ours, theirs) = first_difference(&committed, &g.text);
        bail!(
            "{} is not what the generator writes (first difference at line {n}: it has {ours:?}, the generator {theirs:?}); edit docs/bench/ instead, then {fix}",
            path.display()
        );
    }
    Ok(())
}

/// A result file's plots: beside `DIR/result.json` (as `shoal bench --out`
/// writes them), else in a directory named after the file (`raft.json` →
/// `raft/`), so two results in one directory never share a plot.
fn plots_dir(result: &str) -> String {
    match result.rsplit_once('/') {
        Some((dir, "result.json")) => dir.to_owned(),
        _ => result.trim_end_matches(".json").to_owned(),
    }
}

/// The line number and both lines where two texts first differ.
fn first_difference(a: &str, b: &str) -> (usize, String, String) {
    let (mut la, mut lb) = (a.lines(), b.lines());
    for n in 1.. {
        match (la.next(), lb.next()) {
            (None, None) => break,
            (x, y) if x != y => {
                let show = |l: Option<&str>| l.unwrap_or("(end of file)").to_owned();
                return (n, show(x), show(y));
            }
            _ => {}
        }
    }
    // Same lines: the difference is in line endings or the final newline.
    (
        a.lines().count(),
        "(line endings)".into(),
        "(line endings)".into(),
    )
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {}: listed in docs/bench/{MANIFEST}; commit the file or fix its entry",
            path.display()
        )
    })
}

fn load(path: &Path) -> anyhow::Result<BenchResult> {
    serde_json::from_str(&read(path)?).with_context(|| {
        format!(
            "{}: not a bench result file (shoal bench --out, cargo xtask bench raft --json)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What CI relies on: the committed document is the generator's output
    /// of the committed files, and every plot it links exists.
    #[test]
    fn committed_bench_md_is_generated_from_committed_files() {
        if let Err(e) = check(&docs_dir()) {
            panic!("{e:#}");
        }
    }

    #[test]
    fn same_files_give_the_same_bytes() {
        let a = generate(&docs_dir()).map(|g| g.text);
        let b = generate(&docs_dir()).map(|g| g.text);
        match (a, b) {
            (Ok(a), Ok(b)) => assert!(a == b, "two generations differ"),
            (a, b) => panic!("{:?} {:?}", a.err(), b.err()),
        }
    }

    /// A small docs tree: a fragment, then one run per `(dir, throughput)`
    /// with its plots present (empty files: only their presence is checked),
    /// and the document generated from them.
    fn tree(runs: &[(&str, f64)]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let bench = tmp.path().join("bench");
        let mut manifest = String::from("{\"fragment\": \"intro.md\"}\n");
        std::fs::create_dir_all(&bench).expect("mkdir");
        std::fs::write(bench.join("intro.md"), "# Benchmarks\n").expect("write");
        for (dir, v) in runs {
            let result = format!(
                r#"{{"schema":1,"meta":{{"shoal_commit":"{dir}","shoal_version":"0.1.0","kernel":"k","cpu_model":"c","cpus":1,"nodes":3,"repeat":1,"duration_secs":1,"started_unix":0,"spread_threshold":0.25,"order":[],"commands":["x"],"notes":[]}},
                "scenarios":[{{"name":"overlay","metrics":[{{"name":"throughput","unit":"Gbit/s","samples":[{v}],"median":{v},"min":{v},"max":{v},"errors":[],"flagged":false}}]}}]}}"#
            );
            std::fs::create_dir_all(bench.join(dir)).expect("mkdir");
            for (f, text) in [
                ("result.json", result.as_str()),
                ("plot-throughput.svg", ""),
                ("plot-throughput.png", ""),
            ] {
                std::fs::write(bench.join(dir).join(f), text).expect("write");
            }
            manifest.push_str(&format!(
                "{{\"run\": \"{dir}/result.json\", \"title\": \"Run {dir}\"}}\n"
            ));
        }
        std::fs::write(bench.join(MANIFEST), manifest).expect("write");
        if let Err(e) = write(tmp.path()) {
            panic!("{e:#}");
        }
        tmp
    }

    #[test]
    fn a_run_is_compared_with_the_previous_run_of_its_scenarios() {
        let tmp = tree(&[("a", 1.0), ("b", 1.5)]);
        let text = std::fs::read_to_string(tmp.path().join("bench.md")).expect("written");
        let (first, second) = text.split_once("## Run b").expect("both runs");
        assert!(
            !first.contains("Against ["),
            "the first run has nothing before it"
        );
        assert!(
            second.contains("Against [Run a](bench/a/result.json)")
                && second
                    .contains("| overlay | throughput | 1.00 Gbit/s | 1.50 Gbit/s | +50.0 % |  |")
                && second.contains("commit a → b"),
            "{second}"
        );
    }

    #[test]
    fn compare_with_names_the_run_to_compare_with() {
        let tmp = tree(&[("a", 1.0), ("b", 1.5), ("c", 2.0)]);
        let manifest = tmp.path().join("bench").join(MANIFEST);
        let text = std::fs::read_to_string(&manifest).expect("written");
        let text = text.replace(
            r#""title": "Run c"}"#,
            r#""title": "Run c", "compare_with": "a/result.json"}"#,
        );
        std::fs::write(&manifest, text).expect("write");
        if let Err(e) = write(tmp.path()) {
            panic!("{e:#}");
        }
        let md = std::fs::read_to_string(tmp.path().join("bench.md")).expect("written");
        let (_, c) = md.split_once("## Run c").expect("run c");
        assert!(
            c.contains("Against [Run a](bench/a/result.json)") && c.contains("+100.0 %"),
            "{c}"
        );
    }

    #[test]
    fn check_passes_on_what_write_wrote_and_fails_on_drift() {
        let tmp = tree(&[("r", 1.0)]);
        let md = tmp.path().join("bench.md");
        let text = std::fs::read_to_string(&md).expect("written");
        assert!(text.contains("## Run r\n") && text.contains("| overlay | throughput | 1.00 |"));
        assert!(check(tmp.path()).is_ok());

        std::fs::write(&md, text.replace("| 1.00 |", "| 1.50 |")).expect("write");
        let e = check(tmp.path()).expect_err("a hand-edited figure");
        assert!(format!("{e}").contains("cargo xtask bench docs"), "{e}");

        std::fs::write(&md, &text).expect("write");
        std::fs::remove_file(tmp.path().join("bench/r/plot-throughput.png")).expect("rm");
        let e = check(tmp.path()).expect_err("a missing plot");
        assert!(format!("{e}").contains("plot-throughput.png"), "{e}");
    }

    #[test]
    fn plot_directories() {
        assert_eq!(plots_dir("2026-12-03/x/result.json"), "2026-12-03/x");
        assert_eq!(plots_dir("2026-12-03/raft.json"), "2026-12-03/raft");
    }
}
