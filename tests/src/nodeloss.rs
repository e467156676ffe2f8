//! A node lost under load (issue 19, part 5), for the lab test and for
//! `cargo xtask bench failover`: `web` has a task on each of two workers
//! and is published on every node; the lab's client sends one request per
//! new connection to the manager n1, which runs no task, so the mesh there
//! picks one of the two remote backends for each. A worker's underlay is
//! then cut, and the requests that fail are timed from the cut.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, SocketAddrV4},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    Formation, Lab, LabError, eventually,
    images::{busybox_archive, web_image},
    run_in_netns,
};

pub const PORT: u16 = 8080;
/// Each request's time limit: the measurement (a client that gives
/// up after 1 s).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// Between two requests of the loop.
pub const PAUSE: Duration = Duration::from_millis(10);
const IMAGE: &str = "shoal.local/web:nodeloss";

/// A 3-node swarm (n1 manager, n2 and n3 workers, the default 5 s
/// heartbeat, so the managers notice a lost node well after gossip does)
/// of daemons started with `shoald_args`, with `web` running on both
/// workers; every answer names its task.
pub async fn cluster(tag: &str, shoald_args: &[&str]) -> Result<Lab, LabError> {
    let lab = Lab::builder(tag)
        .nodes(3)
        .client(true)
        .shoald_args(shoald_args)
        .start()
        .await?;
    lab.form_swarm_of(Formation::plain(1, 3))?;
    lab.nodes_ready(3, Duration::from_secs(15)).await?;
    lab.load_image(1, busybox_archive()?)?;
    lab.load_image(1, &web_image(IMAGE, "-", None)?)?;
    let port = format!("{PORT}:80");
    lab.shoal(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "2",
            "--constraint",
            "node.role==worker",
            "-p",
            &port,
            IMAGE,
            "sh",
            "-c",
            "echo $HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    )?;
    eventually(Duration::from_secs(60), "web running on n2 and n3", || {
        let rows = lab.service_ps(1, "web")?;
        let on: Vec<&str> = rows
            .iter()
            .filter(|r| r.state == "running")
            .map(|r| r.node.as_str())
            .collect();
        if on.contains(&"n2") && on.contains(&"n3") {
            return Ok(Some(()));
        }
        Err(format!("tasks: {rows:?}").into())
    })
    .await?;
    Ok(lab)
}

/// What one cut did to the request loop.
#[derive(Debug, Clone)]
pub struct Cut {
    /// The node cut off.
    pub victim: usize,
    pub failed: usize,
    pub ok_during: u64,
    /// From the cut to when the last failed request was sent (the mesh's
    /// last new connection to the lost node)...
    pub last_sent: Option<Duration>,
    /// ...and to when it failed (the client's view: requests fail until
    /// then).
    pub last_failed: Option<Duration>,
    /// Answers per task name before the cut: both must be serving.
    pub before: BTreeMap<String, u64>,
    /// The failed requests' errors, counted, and when the requests that
    /// failed were sent (from the cut).
    pub errors: BTreeMap<String, usize>,
    pub failed_sent: Vec<Duration>,
}

/// One request of the open loop: when it was sent and ended (since the
/// loop started), and the answer's body or the error.
#[derive(Debug, Clone)]
pub struct Sample {
    pub began: Duration,
    pub ended: Duration,
    pub answer: Result<String, String>,
}

/// An open request loop: a new connection every [`PAUSE`] whether or not
/// the earlier ones have answered (a closed loop would sit out each failed
/// request's second and hide when the mesh stopped choosing the lost
/// node). Runs on its own thread in the lab client's namespace.
struct OpenLoop {
    started: Instant,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<Result<(), LabError>>>,
}

impl OpenLoop {
    fn start(lab: &Lab, target: SocketAddr) -> Result<Self, LabError> {
        let netns = lab.client_netns().ok_or_else(|| LabError::Config {
            reason: format!("lab {} was built without .client(true)", lab.name()),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let (s, out) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            run_in_netns(&netns, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| LabError::Config {
                        reason: format!("a runtime for the request loop: {e}"),
                    })?;
                rt.block_on(async move {
                    let mut tick = tokio::time::interval(PAUSE);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut inflight = tokio::task::JoinSet::new();
                    while !s.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let out = out.clone();
                        inflight.spawn(async move {
                            let began = started.elapsed();
                            let answer = tokio::time::timeout(CLIENT_TIMEOUT, get(target))
                                .await
                                .unwrap_or_else(|_| {
                                    Err(format!("no answer within {CLIENT_TIMEOUT:?}"))
                                });
                            let ended = started.elapsed();
                            if let Ok(mut v) = out.lock() {
                                v.push(Sample {
                                    began,
                                    ended,
                                    answer,
                                });
                            }
                        });
                        while inflight.try_join_next().is_some() {}
                    }
                    while inflight.join_next().await.is_some() {}
                });
                Ok(())
            })?
        });
        Ok(Self {
            started,
            stop,
            samples,
            thread: Some(thread),
        })
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn finish(mut self) -> Result<Vec<Sample>, LabError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r?,
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Ok(self.samples())
    }
}

impl Drop for OpenLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `GET /` over HTTP/1.0 on a new connection: the body of a 200.
async fn get(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    c.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    if !head.lines().next().unwrap_or_default().contains(" 200 ") {
        return Err(format!(
            "status: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.trim().to_owned())
}

/// Answers per body among the requests sent after `since`, and whether any
/// of them failed.
fn answers_since(samples: &[Sample], since: Duration) -> (BTreeMap<String, u64>, bool) {
    let mut names = BTreeMap::new();
    let mut failing = false;
    for s in samples.iter().filter(|s| s.began >= since) {
        match &s.answer {
            Ok(b) => *names.entry(b.clone()).or_default() += 1,
            Err(_) => failing = true,
        }
    }
    (names, failing)
}

/// Cuts node `victim` (2 or 3) off the underlay for `hold` under the open
/// request loop, heals it, and waits until it serves again (both tasks
/// answering, nothing failing) so the next cut starts from the same state.
pub async fn cut_once(lab: &Lab, victim: usize, hold: Duration) -> Result<Cut, LabError> {
    let target = SocketAddr::V4(SocketAddrV4::new(lab.node(1).addr(), PORT));
    let load = OpenLoop::start(lab, target)?;
    let last_second = || {
        load.started
            .elapsed()
            .saturating_sub(Duration::from_secs(1))
    };
    let result = async {
        // Settled: both tasks answer, nothing failed for the last second
        // (of requests that had their time to answer).
        let before = eventually(Duration::from_secs(30), "both tasks serving", || {
            let since = last_second().saturating_sub(CLIENT_TIMEOUT);
            let (names, failing) = answers_since(&load.samples(), since);
            if names.len() >= 2 && !failing && since > Duration::ZERO {
                return Ok(Some(names));
            }
            Err(format!("answers {names:?}, failing {failing}").into())
        })
        .await?;
        let cut_at = load.started.elapsed();
        lab.cut(victim).await?;
        tokio::time::sleep(hold).await;
        let healed = load.started.elapsed();
        lab.heal(victim).await?;
        eventually(
            Duration::from_secs(60),
            "the healed node serving again",
            || {
                let since = last_second().saturating_sub(CLIENT_TIMEOUT).max(healed);
                let (names, failing) = answers_since(&load.samples(), since);
                Ok((names.len() >= 2 && !failing && since > healed).then_some(()))
            },
        )
        .await?;
        // The requests sent while it was cut off.
        let during: Vec<Sample> = load
            .samples()
            .into_iter()
            .filter(|s| s.began >= cut_at && s.began < healed)
            .collect();
        let failed: Vec<&Sample> = during.iter().filter(|s| s.answer.is_err()).collect();
        Ok(Cut {
            victim,
            failed: failed.len(),
            ok_during: (during.len() - failed.len()) as u64,
            last_sent: failed.iter().map(|f| f.began - cut_at).max(),
            last_failed: failed.iter().map(|f| f.ended - cut_at).max(),
            before,
            errors: failed.iter().fold(BTreeMap::new(), |mut m, f| {
                let e = f.answer.as_ref().err().cloned().unwrap_or_default();
                *m.entry(e).or_default() += 1;
                m
            }),
            failed_sent: failed.iter().map(|f| f.began - cut_at).collect(),
        })
    }
    .await;
    load.finish()?;
    result
}
