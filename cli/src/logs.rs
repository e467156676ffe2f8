//! `shoal service logs`: a service's (or one task's) output, fetched by the
//! manager from the nodes running it, printed as docker prints it:
//!
//! ```text
//! web.1.x7k2m9q4ab3c@n1    | hello
//! web.10.0pz5w1nr8kq2@n2   | hello
//! ```
//!
//! stdout lines on stdout, stderr lines on stderr; sorted by time, or as
//! they come with `--follow`.

use std::io::{self, Write};

use clap::Args;
use shoal_api::cluster::v1::{LogLine, ServiceLogsRequest, ServiceMode, ServiceRef};

use crate::{
    client,
    parse::{FlagError, Problem},
};

/// Task ids are shown this long unless `--no-trunc`, as docker's.
const SHORT_ID: usize = 12;

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(long, short)]
    follow: bool,
    /// Number of lines to show from the end of each task's log, or "all".
    #[arg(long, short = 'n', default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(long, short)]
    timestamps: bool,
    /// Do not neatly format logs: the lines alone.
    #[arg(long)]
    raw: bool,
    /// Do not include task IDs in output.
    #[arg(long)]
    no_task_ids: bool,
    /// Do not truncate output (full task IDs).
    #[arg(long)]
    no_trunc: bool,
    /// Service (name, ID or ID prefix) or task ID.
    #[arg(value_name = "SERVICE|TASK")]
    target: String,
}

/// `--tail`: `None` for all.
fn parse_tail(s: &str) -> Result<Option<u64>, FlagError> {
    match s.trim() {
        "all" => Ok(None),
        n => n
            .parse()
            .map(Some)
            .map_err(|_| FlagError::new("--tail", s, Problem::TailLines)),
    }
}

fn digits(n: u64) -> usize {
    n.to_string().len()
}

/// How each line is printed.
#[derive(Debug, Clone)]
struct Layout {
    raw: bool,
    timestamps: bool,
    task_ids: bool,
    no_trunc: bool,
    /// Digits of the largest slot: shorter slots are padded so the `|`
    /// line up, as docker pads them.
    slot_width: usize,
}

impl Layout {
    /// `web.1.x7k2m9q4ab3c@n1` and its padding.
    fn context(&self, l: &LogLine) -> String {
        let mut name = l.task_name.clone();
        if self.task_ids {
            let id = match self.no_trunc {
                true => l.task_id.as_str(),
                false => l.task_id.get(..SHORT_ID).unwrap_or(&l.task_id),
            };
            name.push('.');
            name.push_str(id);
        }
        let slot = l
            .task_name
            .rsplit_once('.')
            .and_then(|(_, slot)| slot.parse::<u64>().ok());
        let pad = slot.map_or(0, |s| self.slot_width.saturating_sub(digits(s)));
        format!("{name}@{}{}", l.node, " ".repeat(pad))
    }

    fn line(&self, l: &LogLine) -> Vec<u8> {
        let mut out = Vec::with_capacity(l.line.len() + 64);
        if self.timestamps {
            out.extend_from_slice(l.time.as_bytes());
            out.push(b' ');
        }
        if !self.raw {
            out.extend_from_slice(self.context(l).as_bytes());
            out.extend_from_slice(b"    | ");
        }
        out.extend_from_slice(&l.line);
        out.push(b'\n');
        out
    }
}

pub async fn run(host: &str, a: LogsArgs) -> anyhow::Result<()> {
    let tail = parse_tail(&a.tail)?;
    let mut d = client::connect(host).await?;
    // Padding as docker's: from the service's replica count; a task (or a
    // global service) needs none.
    let service = d.control.inspect_service(ServiceRef {
        service: a.target.clone(),
    });
    let slot_width = match service.await {
        Ok(s) if s.get_ref().mode == ServiceMode::Replicated as i32 => digits(s.get_ref().desired),
        _ => 0,
    };
    let layout = Layout {
        raw: a.raw,
        timestamps: a.timestamps,
        task_ids: !a.no_task_ids,
        no_trunc: a.no_trunc,
        slot_width,
    };
    let req = ServiceLogsRequest {
        service: a.target,
        follow: a.follow,
        tail,
    };
    let mut stream = client::call(host, d.control.service_logs(req)).await?;
    let (stdout, stderr) = (io::stdout(), io::stderr());
    while let Some(l) = stream
        .message()
        .await
        .map_err(|s| client::status_error(host, &s))?
    {
        let written = match l.stream.as_str() {
            "warning" => writeln!(
                stderr.lock(),
                "warning: {}",
                String::from_utf8_lossy(&l.line)
            ),
            "stderr" => write_line(&mut stderr.lock(), &layout.line(&l)),
            _ => write_line(&mut stdout.lock(), &layout.line(&l)),
        };
        match written {
            Ok(()) => {}
            // `shoal service logs web | head`: the reader has had enough.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One line, flushed: a follower shows each as it comes.
fn write_line(out: &mut impl Write, line: &[u8]) -> io::Result<()> {
    out.write_all(line)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(task_name: &str, stream: &str, text: &str) -> LogLine {
        LogLine {
            task_id: "x7k2m9q4ab3cdefghijklmnop".into(),
            time: "2026-11-02T10:11:12.500000000Z".into(),
            stream: stream.into(),
            line: text.as_bytes().to_vec(),
            task_name: task_name.into(),
            node: "n1".into(),
        }
    }

    fn layout() -> Layout {
        Layout {
            raw: false,
            timestamps: false,
            task_ids: true,
            no_trunc: false,
            slot_width: 2,
        }
    }

    fn shown(layout: &Layout, l: &LogLine) -> String {
        String::from_utf8_lossy(&layout.line(l)).into_owned()
    }

    #[test]
    fn lines_read_like_docker() {
        let l = layout();
        assert_eq!(
            shown(&l, &line("web.1", "stdout", "hello")),
            "web.1.x7k2m9q4ab3c@n1     | hello\n"
        );
        assert_eq!(
            shown(&l, &line("web.10", "stdout", "hello")),
            "web.10.x7k2m9q4ab3c@n1    | hello\n"
        );
        // A global service's task is named after its node: no padding.
        assert_eq!(
            shown(&l, &line("agent.n1id", "stdout", "up")),
            "agent.n1id.x7k2m9q4ab3c@n1    | up\n"
        );
        let l = Layout {
            task_ids: false,
            timestamps: true,
            slot_width: 1,
            ..layout()
        };
        assert_eq!(
            shown(&l, &line("web.1", "stdout", "hello")),
            "2026-11-02T10:11:12.500000000Z web.1@n1    | hello\n"
        );
        let l = Layout {
            no_trunc: true,
            slot_width: 1,
            ..layout()
        };
        assert_eq!(
            shown(&l, &line("web.1", "stdout", "x")),
            "web.1.x7k2m9q4ab3cdefghijklmnop@n1    | x\n"
        );
    }

    #[test]
    fn raw_lines_are_the_text_alone() {
        let raw = Layout {
            raw: true,
            ..layout()
        };
        assert_eq!(shown(&raw, &line("web.1", "stdout", "a | b")), "a | b\n");
        let raw = Layout {
            timestamps: true,
            ..raw
        };
        assert_eq!(
            shown(&raw, &line("web.1", "stdout", "a")),
            "2026-11-02T10:11:12.500000000Z a\n"
        );
    }

    #[test]
    fn tail_takes_a_count_or_all() {
        assert_eq!(parse_tail("all").ok(), Some(None));
        assert_eq!(parse_tail("0").ok(), Some(Some(0)));
        assert_eq!(parse_tail("25").ok(), Some(Some(25)));
        for bad in ["-1", "ten", ""] {
            let e = parse_tail(bad)
                .err()
                .map(|e| format!("{:#}", anyhow::Error::from(e)));
            assert!(e.unwrap_or_default().contains("--tail"), "{bad}");
        }
    }
}
