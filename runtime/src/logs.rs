//! Task logs: stdout and stderr, line by line, in one file per task.
//!
//! The format is the CRI one (containerd, CRI-O), one record a line:
//!
//! ```text
//! 2026-11-02T10:11:12.123456789Z stdout F hello world
//! 2026-11-02T10:11:12.2Z stderr P first 16 KiB of a very long line…
//! 2026-11-02T10:11:12.2Z stderr F …and the rest of it
//! ```
//!
//! `F` ends a line, `P` is a piece of a longer one (lines are cut at
//! [`MAX_RECORD`] bytes so one chatty task cannot make a record unbounded).
//! Both streams go to one file so `service logs` shows them interleaved as
//! they happened; each record is one `write` on an `O_APPEND` file, so
//! records of the two streams never mix. A last line without a newline is
//! written as `F` when the stream ends.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::RuntimeError;
use crate::error::io_err;

/// Longest text of one record; longer lines are split into `P` records.
pub const MAX_RECORD: usize = 16 * 1024;

/// Which output a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub time: SystemTime,
    pub stream: Stream,
    /// A piece of a line continued by the next record of the same stream.
    pub partial: bool,
    /// The text, without the newline; any bytes but `\n`.
    pub text: Vec<u8>,
}

/// One line of task output, its pieces joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When its first piece was read.
    pub time: SystemTime,
    pub stream: Stream,
    /// The text, invalid UTF-8 replaced.
    pub text: String,
}

/// Why a log line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogParseError {
    #[error("missing the {0} field")]
    MissingField(&'static str),
    #[error("timestamp {0:?} is not RFC 3339")]
    Time(String),
    #[error("stream {0:?} is neither stdout nor stderr")]
    Stream(String),
    #[error("tag {0:?} is neither P nor F")]
    Tag(String),
}

/// The log file of task `id`.
pub fn log_path(log_dir: &Path, id: &str) -> PathBuf {
    log_dir.join(format!("{id}.log"))
}

/// Mode of the log directory and of each log: root's alone, as a log holds
/// whatever a task printed, secrets included.
pub const LOG_DIR_MODE: u32 = 0o700;
pub const LOG_FILE_MODE: u32 = 0o600;

/// Makes `log_dir` (mode 0700, tightened if it was there already).
pub fn ensure_log_dir(log_dir: &Path) -> Result<(), RuntimeError> {
    DirBuilder::new()
        .recursive(true)
        .mode(LOG_DIR_MODE)
        .create(log_dir)
        .map_err(io_err(log_dir, "create"))?;
    std::fs::set_permissions(log_dir, Permissions::from_mode(LOG_DIR_MODE))
        .map_err(io_err(log_dir, "chmod"))
}

/// Opens task `id`'s log for appending, creating it (and its directory)
/// root-only; a log left by an older version is made 0600 as well.
pub fn open_log(log_dir: &Path, id: &str) -> Result<(PathBuf, File), RuntimeError> {
    ensure_log_dir(log_dir)?;
    let path = log_path(log_dir, id);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .open(&path)
        .map_err(io_err(&path, "open"))?;
    file.set_permissions(Permissions::from_mode(LOG_FILE_MODE))
        .map_err(io_err(&path, "chmod"))?;
    Ok((path, file))
}

/// Appends one record, terminated by `\n`, to `out`.
pub fn format_record(record: &LogRecord, out: &mut Vec<u8>) -> Result<(), time::error::Format> {
    let time = OffsetDateTime::from(record.time).format(&Rfc3339)?;
    push_record(out, &time, record.stream, &record.text, record.partial);
    Ok(())
}

/// Parses one line of a log file (without its `\n`).
pub fn parse_record(line: &[u8]) -> Result<LogRecord, LogParseError> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let mut next = |name| fields.next().ok_or(LogParseError::MissingField(name));
    let (time, stream, tag) = (next("time")?, next("stream")?, next("tag")?);
    let text = next("text")?.to_vec();
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let time = std::str::from_utf8(time)
        .ok()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .ok_or_else(|| LogParseError::Time(lossy(time)))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => return Err(LogParseError::Stream(lossy(other))),
    };
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        other => return Err(LogParseError::Tag(lossy(other))),
    };
    Ok(LogRecord {
        time: time.into(),
        stream,
        partial,
        text,
    })
}

/// Joins records into lines: the pieces of a line (`P`… then `F`) of one
/// stream, whatever records of the other stream come between them.
pub fn join_records(records: impl IntoIterator<Item = LogRecord>) -> Vec<LogLine> {
    let mut joiner = LineJoiner::default();
    records.into_iter().filter_map(|r| joiner.push(r)).collect()
}

/// [`join_records`] one record at a time, for a reader following a log as
/// it grows: the pieces of a line may arrive in different reads.
#[derive(Debug, Default)]
pub struct LineJoiner {
    pending: [Option<(SystemTime, Vec<u8>)>; 2],
}

impl LineJoiner {
    /// The line `record` completes, if it does.
    pub fn push(&mut self, record: LogRecord) -> Option<LogLine> {
        let slot = &mut self.pending[record.stream as usize];
        let (time, mut text) = slot.take().unwrap_or((record.time, Vec::new()));
        text.extend_from_slice(&record.text);
        if record.partial {
            *slot = Some((time, text));
            return None;
        }
        Some(LogLine {
            time,
            stream: record.stream,
            text: String::from_utf8_lossy(&text).into_owned(),
        })
    }
}

/// The output of task `id` so far (or in all), as lines, for `service
/// logs`. A last line still being written is left out; a missing file is
/// an empty log.
pub fn read_logs(log_dir: &Path, id: &str) -> Result<Vec<LogLine>, RuntimeError> {
    let path = log_path(log_dir, id);
    let content = match std::fs::read(&path) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&path, "read")(e)),
    };
    // Everything after the last newline is a record still being appended.
    let complete = match content.iter().rposition(|&b| b == b'\n') {
        Some(end) => &content[..end],
        None => return Ok(Vec::new()),
    };
    let records = complete
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            parse_record(line).map_err(|source| RuntimeError::LogRecord {
                path: path.clone(),
                line: i + 1,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(join_records(records))
}

/// Removes the log of task `id` (once the task is forgotten); a missing log
/// is not an error.
pub fn remove_logs(log_dir: &Path, id: &str) -> Result<(), RuntimeError> {
    let path = log_path(log_dir, id);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path, "remove")(e)),
        _ => Ok(()),
    }
}

/// Cuts a byte stream into lines of at most `max` bytes: whole lines are
/// `(text, false)`, pieces of longer ones `(text, true)`.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    max: usize,
    buffer: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn new(max: usize) -> LineSplitter {
        LineSplitter {
            max: max.max(1),
            buffer: Vec::new(),
        }
    }

    /// Feeds `data`; calls `emit` for every record it completes.
    pub(crate) fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let room = self.max - self.buffer.len();
            // One byte past the room: a newline right after a full buffer
            // still ends that line rather than an empty one.
            let window = &data[..data.len().min(room + 1)];
            if let Some(newline) = window.iter().position(|&b| b == b'\n') {
                self.buffer.extend_from_slice(&window[..newline]);
                emit(&self.buffer, false);
                self.buffer.clear();
                data = &data[newline + 1..];
            } else {
                let take = window.len().min(room);
                self.buffer.extend_from_slice(&data[..take]);
                data = &data[take..];
                // Full, and more follows that is not a newline: a piece of
                // a longer line.
                if self.buffer.len() == self.max && !data.is_empty() {
                    emit(&self.buffer, true);
                    self.buffer.clear();
                }
            }
        }
    }

    /// Ends the stream: a last line without newline is emitted whole.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.buffer.is_empty() {
            emit(&self.buffer, false);
            self.buffer.clear();
        }
    }
}

/// Appends one record, stamped with the pre-formatted `time`, to `batch`.
fn push_record(batch: &mut Vec<u8>, time: &str, stream: Stream, text: &[u8], partial: bool) {
    batch.extend_from_slice(time.as_bytes());
    batch.push(b' ');
    batch.extend_from_slice(stream.as_str().as_bytes());
    batch.extend_from_slice(if partial { b" P " } else { b" F " });
    batch.extend_from_slice(text);
    batch.push(b'\n');
}

/// How long a busy stream's copier waits between reads, so that a task
/// logging a line per request costs the shim one wake-up, one read and
/// one write per interval rather than per line. A stream that was quiet
/// for longer is read at once: an occasional line shows without delay.
pub(crate) const COALESCE: Duration = Duration::from_millis(2);

/// Copies one output stream of a task into its log until the stream ends
/// (every process holding its write end is gone). Blocking: the shim runs
/// one thread per stream.
///
/// Each read becomes one `write` of whole records on the `O_APPEND` file,
/// so records of the two streams never interleave within a line; every
/// record of a read carries the time of that read.
pub(crate) fn copy_stream(mut source: impl Read, stream: Stream, out: &File) -> io::Result<()> {
    let mut splitter = LineSplitter::new(MAX_RECORD);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut batch = Vec::with_capacity(buffer.len() + 4096);
    let mut result = Ok(());
    let mut last_read: Option<Instant> = None;
    loop {
        let n = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        let busy = last_read.is_some_and(|t| now.duration_since(t) < COALESCE);
        last_read = Some(now);
        let time = match OffsetDateTime::from(SystemTime::now()).format(&Rfc3339) {
            Ok(time) => time,
            Err(e) => return Err(io::Error::other(e)),
        };
        splitter.push(&buffer[..n], |text, partial| {
            push_record(&mut batch, &time, stream, text, partial);
        });
        // A write error is kept but reading goes on: a task must not block
        // on a full pipe because its log's disk is.
        if result.is_ok() && !batch.is_empty() {
            result = (&*out).write_all(&batch);
        }
        batch.clear();
        if busy {
            std::thread::sleep(COALESCE);
        }
    }
    let time = OffsetDateTime::from(SystemTime::now())
        .format(&Rfc3339)
        .map_err(io::Error::other)?;
    splitter.finish(|text, partial| push_record(&mut batch, &time, stream, text, partial));
    if result.is_ok() && !batch.is_empty() {
        result = (&*out).write_all(&batch);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::new(max);
        for chunk in chunks {
            splitter.push(chunk, |t, p| out.push((t.to_vec(), p)));
        }
        splitter.finish(|t, p| out.push((t.to_vec(), p)));
        out
    }

    #[test]
    fn lines_are_cut_at_newlines_and_at_the_limit() {
        let records = split(4, &[b"ab\ncdefgh", b"ij\n\nxyz"]);
        let expected: Vec<(Vec<u8>, bool)> = vec![
            (b"ab".to_vec(), false),
            (b"cdef".to_vec(), true),
            (b"ghij".to_vec(), false),
            (b"".to_vec(), false),
            (b"xyz".to_vec(), false),
        ];
        assert_eq!(records, expected);
    }

    #[test]
    fn a_full_line_ending_exactly_at_the_limit_is_not_partial() {
        assert_eq!(split(3, &[b"abc", b"\n"]), vec![(b"abc".to_vec(), false)]);
    }

    #[test]
    fn a_record_line_reads_back() {
        let line = b"2026-11-02T10:11:12.5Z stderr P a b  c";
        let record = parse_record(line).expect("test");
        assert_eq!(record.stream, Stream::Stderr);
        assert!(record.partial);
        assert_eq!(record.text, b"a b  c");
        assert_eq!(
            record.time,
            UNIX_EPOCH + Duration::from_millis(1_793_614_272_500)
        );
    }

    #[test]
    fn malformed_records_say_what_is_wrong() {
        let cases: [(&[u8], LogParseError); 4] = [
            (
                b"2026-11-02T10:11:12Z stdout",
                LogParseError::MissingField("tag"),
            ),
            (
                b"yesterday stdout F x",
                LogParseError::Time("yesterday".into()),
            ),
            (
                b"2026-11-02T10:11:12Z stdin F x",
                LogParseError::Stream("stdin".into()),
            ),
            (
                b"2026-11-02T10:11:12Z stdout X x",
                LogParseError::Tag("X".into()),
            ),
        ];
        for (line, error) in cases {
            assert_eq!(parse_record(line), Err(error));
        }
    }

    #[test]
    fn pieces_join_per_stream() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let record = |s, stream, partial, text: &str| LogRecord {
            time: at(s),
            stream,
            partial,
            text: text.as_bytes().to_vec(),
        };
        let lines = join_records([
            record(1, Stream::Stdout, true, "hel"),
            record(2, Stream::Stderr, false, "oops"),
            record(3, Stream::Stdout, false, "lo"),
        ]);
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.time, l.stream, l.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (at(2), Stream::Stderr, "oops"),
                (at(1), Stream::Stdout, "hello")
            ]
        );
    }

    #[test]
    fn a_joiner_keeps_a_piece_until_its_line_ends() {
        let record = |partial, text: &str| LogRecord {
            time: UNIX_EPOCH + Duration::from_secs(u64::from(partial)),
            stream: Stream::Stdout,
            partial,
            text: text.as_bytes().to_vec(),
        };
        let mut joiner = LineJoiner::default();
        assert_eq!(joiner.push(record(true, "a long ")), None);
        // A later read: the line keeps the time of its first piece.
        let line = joiner.push(record(false, "line")).expect("test");
        assert_eq!(
            (line.text.as_str(), line.time),
            ("a long line", UNIX_EPOCH + Duration::from_secs(1))
        );
        assert_eq!(
            joiner.push(record(false, "next")).map(|l| l.text),
            Some("next".into())
        );
    }

    #[test]
    fn logs_and_their_directory_are_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("test").permissions().mode() & 0o777;
        let dir = tempfile::tempdir().expect("test");
        let logs = dir.path().join("tasks");
        // As an older version left them: world-readable.
        std::fs::create_dir(&logs).expect("test");
        std::fs::set_permissions(&logs, Permissions::from_mode(0o755)).expect("test");
        std::fs::write(log_path(&logs, "old"), b"").expect("test");
        std::fs::set_permissions(log_path(&logs, "old"), Permissions::from_mode(0o644))
            .expect("test");
        let (new, _) = open_log(&logs, "new").expect("test");
        let (old, _) = open_log(&logs, "old").expect("test");
        assert_eq!(mode(&logs), 0o700);
        assert_eq!((mode(&new), mode(&old)), (0o600, 0o600));
        // A directory that did not exist yet is made 0700 (its parents too).
        let deep = dir.path().join("a/b");
        open_log(&deep, "t").expect("test");
        assert_eq!(mode(&deep), 0o700);
    }

    #[test]
    fn reading_skips_a_record_still_being_written() {
        let dir = tempfile::tempdir().expect("test");
        std::fs::write(
            log_path(dir.path(), "t1"),
            b"2026-11-02T10:11:12Z stdout F one\n2026-11-02T10:11:13Z stdout F tw",
        )
        .expect("test");
        let lines = read_logs(dir.path(), "t1").expect("test");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "one");
        assert!(read_logs(dir.path(), "missing").expect("test").is_empty());
        std::fs::write(log_path(dir.path(), "bad"), b"garbage\n").expect("test");
        assert!(matches!(
            read_logs(dir.path(), "bad"),
            Err(RuntimeError::LogRecord { line: 1, .. })
        ));
    }

    #[test]
    fn copies_interleave_whole_records_into_one_file() {
        let dir = tempfile::tempdir().expect("test");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(dir.path(), "t"))
            .expect("test");
        let out: &[u8] = b"first\nsecond\nno newline";
        let err: &[u8] = b"warn\n";
        copy_stream(out, Stream::Stdout, &file).expect("test");
        copy_stream(err, Stream::Stderr, &file).expect("test");
        let lines = read_logs(dir.path(), "t").expect("test");
        let got: Vec<_> = lines.iter().map(|l| (l.stream, l.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, "first"),
                (Stream::Stdout, "second"),
                (Stream::Stdout, "no newline"),
                (Stream::Stderr, "warn"),
            ]
        );
    }

    proptest! {
        #[test]
        fn splitting_loses_nothing_and_respects_the_limit(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..5),
            max in 1usize..20,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                chunks.push(&data[start..cut]);
                start = cut;
            }
            let records = split(max, &chunks);
            let mut rebuilt = Vec::new();
            for (text, partial) in &records {
                prop_assert!(text.len() <= max);
                prop_assert!(!text.contains(&b'\n'));
                prop_assert!(!partial || text.len() == max);
                rebuilt.extend_from_slice(text);
                if !partial {
                    rebuilt.push(b'\n');
                }
            }
            let mut expected = data.clone();
            if !expected.is_empty() && expected.last() != Some(&b'\n') {
                expected.push(b'\n');
            }
            prop_assert_eq!(rebuilt, expected);
        }

        #[test]
        fn records_read_back_as_written(
            nanos in 0u64..4_000_000_000_000_000_000,
            stderr in any::<bool>(),
            partial in any::<bool>(),
            text in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..100),
        ) {
            let record = LogRecord {
                time: UNIX_EPOCH + Duration::from_nanos(nanos),
                stream: if stderr { Stream::Stderr } else { Stream::Stdout },
                partial,
                text,
            };
            let mut line = Vec::new();
            format_record(&record, &mut line).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(line.pop(), Some(b'\n'));
            prop_assert_eq!(parse_record(&line), Ok(record));
        }
    }
}
