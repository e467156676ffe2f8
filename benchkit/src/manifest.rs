//! `docs/bench/manifest.jsonl`: which committed result file feeds which
//! section of docs/bench.md, in which order, and which hand-written
//! fragments go around them. One JSON object per line (blank lines and
//! lines starting with `#` are skipped), so adding a run is adding one
//! line, with no comma to fix on the line before:
//!
//! ```text
//! {"run": "2026-12-03/full/result.json", "title": "`shoal bench`, full matrix — 2026-12-03"}
//! ```
//!
//! Paths are relative to the manifest's directory and may not leave it.

use serde::Deserialize;

/// One section of the document, as written in the manifest. Exactly one of
/// `run`, `fragment` and `history` is set; [`parse`] checks that.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// A result file (`shoal bench --out`, `cargo xtask bench raft --json`).
    pub run: Option<String>,
    /// The run's heading.
    pub title: Option<String>,
    /// A markdown file of hand-written prose for the run: its setup and
    /// findings, with the generated figures in place of a line
    /// `{{figures}}`, or after the prose without one; `{{SCENARIO/METRIC/STAT}}`
    /// in it quotes a figure of the run.
    pub prose: Option<String>,
    /// The run to compare this one with; without it, the latest earlier run
    /// in the manifest with the same scenarios, if any.
    pub compare_with: Option<String>,
    /// Markdown included verbatim (introduction, hand-written sections).
    pub fragment: Option<String>,
    /// Markdown included verbatim under a "hand-recorded, not regenerated"
    /// label: figures typed from tool output before result files existed.
    pub history: Option<String>,
}

/// A checked entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Section {
    Run {
        result: String,
        title: String,
        prose: Option<String>,
        compare_with: Option<String>,
    },
    Fragment(String),
    History(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: {}", problems.join("; "))]
    Entries { file: String, problems: Vec<String> },
}

/// Reads and checks a manifest; every bad line is reported at once, each
/// naming its line, its field and the fix.
pub fn parse(file: &str, text: &str) -> Result<Vec<Section>, ManifestError> {
    let mut sections = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => match check(e) {
                Ok(s) => sections.push(s),
                Err(p) => problems.extend(p.into_iter().map(|p| format!("line {n}: {p}"))),
            },
            Err(e) => problems.push(format!(
                "line {n}: {e}; write one object per line, as {{\"run\": \"DIR/result.json\", \"title\": \"…\"}}"
            )),
        }
    }
    match problems.is_empty() {
        true => Ok(sections),
        false => Err(ManifestError::Entries {
            file: file.to_owned(),
            problems,
        }),
    }
}

fn check(e: Entry) -> Result<Section, Vec<String>> {
    let mut problems = Vec::new();
    let mut path = |field: &str, value: &Option<String>, ext: &str| {
        if let Some(v) = value
            && let Err(p) = relative(v, ext)
        {
            problems.push(format!("`{field}` {v:?}: {p}"));
        }
    };
    path("run", &e.run, ".json");
    path("compare_with", &e.compare_with, ".json");
    path("prose", &e.prose, ".md");
    path("fragment", &e.fragment, ".md");
    path("history", &e.history, ".md");
    let kinds = [&e.run, &e.fragment, &e.history]
        .iter()
        .filter(|k| k.is_some())
        .count();
    if kinds != 1 {
        problems.push(format!(
            "has {kinds} of `run`, `fragment`, `history`; give exactly one"
        ));
    }
    if e.run.is_some() && e.title.as_deref().is_none_or(|t| t.trim().is_empty()) {
        problems.push("`run` without a `title`; add \"title\": \"what, when\"".into());
    }
    if e.run.is_none() {
        for (field, set) in [
            ("title", e.title.is_some()),
            ("prose", e.prose.is_some()),
            ("compare_with", e.compare_with.is_some()),
        ] {
            if set {
                problems.push(format!(
                    "`{field}` belongs to a `run` entry; remove it or add `run`"
                ));
            }
        }
    }
    if let Some(t) = &e.title
        && t.contains('\n')
    {
        problems.push("`title` has a line break; make it one line".into());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(match (e.run, e.fragment, e.history) {
        (Some(result), _, _) => Section::Run {
            result,
            title: e.title.unwrap_or_default(),
            prose: e.prose,
            compare_with: e.compare_with,
        },
        (_, Some(f), _) => Section::Fragment(f),
        (_, _, Some(h)) => Section::History(h),
        (None, None, None) => {
            return Err(vec!["no kind; give `run`, `fragment` or `history`".into()]);
        }
    })
}

/// A path inside the manifest's directory, with the expected extension.
fn relative(path: &str, ext: &str) -> Result<(), String> {
    if path.starts_with('/') || path.contains('\\') {
        return Err("must be relative to the manifest's directory, with `/`".into());
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("empty, `.` or `..` component; name the file inside docs/bench/".into());
    }
    if !path.ends_with(ext) {
        return Err(format!("must be a `{ext}` file"));
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '(' || c == ')' || c == ' ')
    {
        return Err(
            "spaces, parentheses and control characters break markdown links; rename the file"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn runs_fragments_and_history() {
        let text = r#"# The document's order.
{"fragment": "intro.md"}

  {"run": "2026-12-03/a/result.json", "title": "A", "prose": "a.md"}
{"history": "history.md"}
"#;
        assert_eq!(
            parse("m.jsonl", text),
            Ok(vec![
                Section::Fragment("intro.md".into()),
                Section::Run {
                    result: "2026-12-03/a/result.json".into(),
                    title: "A".into(),
                    prose: Some("a.md".into()),
                    compare_with: None,
                },
                Section::History("history.md".into()),
            ])
        );
    }

    #[test]
    fn every_bad_entry_is_named_with_its_field() {
        let text = r#"{"run": "../x.json"}
{"fragment": "a.md", "history": "b.md"}
{"fragment": "a.md", "title": "T"}
{"run": "x.json", "title": "T"},
{"run": "x.txt", "title": "T"}
"#;
        let e = parse("m.jsonl", text).expect_err("five bad lines");
        let msg = e.to_string();
        for want in [
            "line 1: `run` \"../x.json\": empty, `.` or `..`",
            "line 1: `run` without a `title`",
            "line 2: has 2 of `run`, `fragment`, `history`",
            "line 3: `title` belongs to a `run` entry",
            "line 4: trailing characters",
            "line 5: `run` \"x.txt\": must be a `.json` file",
        ] {
            assert!(msg.contains(want), "{want:?} not in {msg}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = parse("m.jsonl", r#"{"run": "a.json", "titel": "T"}"#).expect_err("typo");
        assert!(e.to_string().contains("unknown field `titel`"), "{e}");
    }

    proptest! {
        #[test]
        fn any_text_parses_or_errs(text in ".{0,300}") {
            let _ = parse("m.jsonl", &text);
        }

        #[test]
        fn any_entry_parses_or_errs(
            run in proptest::option::of(".{0,20}"),
            title in proptest::option::of(".{0,20}"),
            prose in proptest::option::of(".{0,20}"),
            fragment in proptest::option::of(".{0,20}"),
            history in proptest::option::of(".{0,20}"),
        ) {
            let e = Entry { run, title, prose, compare_with: None, fragment, history };
            if let Ok(Section::Run { result, .. }) = check(e.clone()) {
                prop_assert!(result.ends_with(".json"));
                prop_assert!(!result.split('/').any(|c| c == ".." || c.is_empty()));
                prop_assert!(e.title.is_some());
            }
        }
    }
}
