//! The machine's description for [`crate::RunMeta`]: read, never guessed;
//! what cannot be read is said so.

use std::process::Command;

/// `uname -r`, or why not.
pub fn kernel() -> String {
    command_line("uname", &["-r"]).unwrap_or_else(|| "unknown (uname -r failed)".into())
}

/// `git rev-parse HEAD` in the current directory: the commit when run from
/// a Shoal checkout, `None` elsewhere.
pub fn git_commit() -> Option<String> {
    command_line("git", &["rev-parse", "HEAD"])
}

/// The first `model name` of /proc/cpuinfo and the number of processors.
pub fn cpu() -> (String, usize) {
    match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(text) => cpu_from(&text),
        Err(e) => (format!("unknown (/proc/cpuinfo: {e})"), 0),
    }
}

/// [`cpu`] of a cpuinfo text.
pub fn cpu_from(text: &str) -> (String, usize) {
    let mut model = None;
    let mut cpus = 0;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "processor" => cpus += 1,
            "model name" if model.is_none() => model = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    (
        model.unwrap_or_else(|| "unknown (no model name)".into()),
        cpus,
    )
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_model_and_count() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_from(text), ("AMD EPYC 7B13".into(), 2));
        assert_eq!(cpu_from("").1, 0);
    }
}
