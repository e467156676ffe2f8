//! Progress on stderr while the repeats run: a bar over all measurements
//! with the one running now, or, where a bar cannot be drawn (stderr not a
//! terminal, or `--format json` whose reader wants no noise), one plain
//! line per measurement.

use std::{io::IsTerminal, time::Duration};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Format;

pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
}

/// A bar only for a person watching: table output on a terminal.
pub fn wanted(format: Format, stderr_is_tty: bool) -> bool {
    format == Format::Table && stderr_is_tty
}

impl Progress {
    pub fn new(format: Format, total: usize) -> Self {
        let bar = wanted(format, std::io::stderr().is_terminal()).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            // The template is a constant; a bad one would show at once.
            if let Ok(style) =
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Self { bar, total }
    }

    /// Measurement `i` (from 0) starts.
    pub fn start(&self, i: usize, what: &str) {
        match &self.bar {
            Some(b) => {
                b.set_position(i as u64);
                b.set_message(what.to_owned());
            }
            None => eprintln!("[{}/{}] {what}", i + 1, self.total),
        }
    }

    /// A line that must stay visible (a failed measurement).
    pub fn say(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_only_for_a_table_on_a_terminal() {
        assert!(wanted(Format::Table, true));
        assert!(!wanted(Format::Table, false));
        assert!(!wanted(Format::Json, true));
    }
}
