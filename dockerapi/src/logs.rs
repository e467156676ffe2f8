//! Service and task logs in docker's multiplexed stream format: each line a
//! frame of an 8-byte header (stream 1 = stdout, 2 = stderr; three zero
//! bytes; the payload's length, big-endian u32) and the payload, which
//! starts with the time (`timestamps`) and the task's details (`details`,
//! which the docker CLI asks for to print `web.1.abc@node |`).

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use shoal_api::cluster::v1::LogLine;

use crate::server::Body;

/// What each task's lines are labelled with: its node's and service's ids.
#[derive(Debug, Clone, Default)]
pub struct TaskIds {
    pub node_id: String,
    pub service_id: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub stdout: bool,
    pub stderr: bool,
    pub timestamps: bool,
    pub details: bool,
}

/// One frame of the multiplexed stream.
pub fn frame(stream: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u8(stream);
    b.put_slice(&[0, 0, 0]);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// The frame of one line, or `None` when its stream was not asked for.
pub fn line_frame(l: &LogLine, ids: &HashMap<String, TaskIds>, o: Options) -> Option<Bytes> {
    let stream = match l.stream.as_str() {
        "stdout" if o.stdout => 1,
        "stderr" if o.stderr => 2,
        _ => return None,
    };
    let mut payload = Vec::with_capacity(l.line.len() + 160);
    if o.timestamps {
        payload.extend_from_slice(l.time.as_bytes());
        payload.push(b' ');
    }
    if o.details {
        let t = ids.get(&l.task_id).cloned().unwrap_or_default();
        // dockerd's order: sorted keys, url-query-escaped values (ids need
        // no escaping).
        payload.extend_from_slice(
            format!(
                "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={} ",
                t.node_id, t.service_id, l.task_id
            )
            .as_bytes(),
        );
    }
    payload.extend_from_slice(&l.line);
    payload.push(b'\n');
    Some(frame(stream, &payload))
}

/// The response streaming `lines` as frames until they end (or, when
/// following, until the client goes away).
pub fn response(
    lines: tonic::Streaming<LogLine>,
    ids: HashMap<String, TaskIds>,
    o: Options,
) -> Response<Body> {
    let frames = lines.filter_map(move |l| {
        let out = match l {
            Ok(l) => line_frame(&l, &ids, o).map(|b| Ok(Frame::data(b))),
            // The headers are gone: an error ends the stream, and the
            // client sees it cut short, as with dockerd.
            Err(s) => Some(Err(std::io::Error::other(s.message().to_owned()))),
        };
        futures::future::ready(out)
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/vnd.docker.multiplexed-stream"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stream: &str, text: &str) -> LogLine {
        LogLine {
            task_id: "t1".into(),
            time: "2026-11-02T10:11:12.500000000Z".into(),
            stream: stream.into(),
            line: text.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn frames_carry_stream_and_length() {
        let f = frame(2, b"oops\n");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&f[8..], b"oops\n");
    }

    #[test]
    fn lines_carry_what_the_cli_parses() {
        let ids: HashMap<String, TaskIds> = [(
            "t1".to_owned(),
            TaskIds {
                node_id: "n1".into(),
                service_id: "s1".into(),
            },
        )]
        .into_iter()
        .collect();
        let all = Options {
            stdout: true,
            stderr: true,
            timestamps: true,
            details: true,
        };
        let f = line_frame(&line("stdout", "hello"), &ids, all);
        let f = f.unwrap_or_default();
        assert_eq!(f[0], 1);
        assert_eq!(
            std::str::from_utf8(&f[8..]).unwrap_or_default(),
            "2026-11-02T10:11:12.500000000Z com.docker.swarm.node.id=n1,\
             com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 hello\n"
        );
        let plain = Options {
            stdout: true,
            ..Options::default()
        };
        let f = line_frame(&line("stdout", "hello"), &ids, plain).unwrap_or_default();
        assert_eq!(&f[8..], b"hello\n");
        // Not asked for, or a manager's warning: not a line of the task.
        assert!(line_frame(&line("stderr", "x"), &ids, plain).is_none());
        assert!(line_frame(&line("warning", "x"), &ids, all).is_none());
    }
}
