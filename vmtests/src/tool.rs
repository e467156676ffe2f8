//! Running the external tools the lab is made of (debootstrap, qemu,
//! qemu-img, ssh), with their output in errors.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{VmError, io_err};

/// Lines of a log or console shown in an error.
pub const TAIL_LINES: usize = 30;

fn name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// Runs `cmd` to completion and returns its stdout; a failure carries the
/// end of its stderr.
pub fn output(cmd: &mut Command, what: &str) -> Result<Vec<u8>, VmError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Tool {
            tool: what.to_owned(),
            status: format!("cannot start {}: {e}", name(cmd)),
            output: String::new(),
        })?;
    if !out.status.success() {
        return Err(VmError::Tool {
            tool: what.to_owned(),
            status: out.status.to_string(),
            output: last_lines(&String::from_utf8_lossy(&out.stderr), TAIL_LINES),
        });
    }
    Ok(out.stdout)
}

/// Runs `cmd` to completion with its output appended to `log`; a failure
/// carries the end of the log.
pub fn logged(cmd: &mut Command, what: &str, log: &Path) -> Result<(), VmError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(log, "open"))?;
    let err = file.try_clone().map_err(io_err(log, "dup"))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| VmError::Tool {
            tool: what.to_owned(),
            status: format!("cannot start {}: {e}", name(cmd)),
            output: String::new(),
        })?;
    if !status.success() {
        return Err(VmError::Tool {
            tool: what.to_owned(),
            status: status.to_string(),
            output: tail(log, TAIL_LINES),
        });
    }
    Ok(())
}

/// The last `n` lines of a file ("" if it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    std::fs::read(path)
        .map(|b| last_lines(&String::from_utf8_lossy(&b), n))
        .unwrap_or_default()
}

pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Quotes `arg` for a POSIX shell (ssh hands the remote command to one).
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("node"), "node");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        // The shell gives back exactly the argument, whatever it holds.
        #[test]
        fn sh_reads_back_the_argument(arg in "[^\u{0}]{0,20}") {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(&arg)))
                .output()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout), arg);
        }
    }
}
