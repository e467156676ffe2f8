//! What `docker service create|update|rollback|scale` prints while the
//! service converges: "overall progress: N out of M tasks", a line per slot
//! with docker's state bar, then "verify: …". The renderer is pure (a
//! service and its tasks in, lines out); `follow` polls the manager and
//! draws the lines, in place on a terminal, as plain lines otherwise.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use shoal_api::{
    cluster::v1::{
        ListTasksRequest, ServiceMode, ServiceRef, ServiceSummary, TaskState, TaskSummary,
        UpdateState,
    },
    words::word,
};

use crate::client::{self, Daemon};

/// docker's numbered states: the bar of a task is its number out of 9.
fn numbered(state: i32) -> Option<u32> {
    Some(match TaskState::try_from(state).ok()? {
        TaskState::New => 1,
        TaskState::Pending => 3,
        TaskState::Assigned => 4,
        TaskState::Accepted => 5,
        TaskState::Preparing => 6,
        TaskState::Starting => 8,
        TaskState::Running => 9,
        TaskState::Complete => 10,
        TaskState::Shutdown => 11,
        TaskState::Failed => 12,
        TaskState::Rejected => 13,
        TaskState::Orphaned | TaskState::Unspecified => return None,
    })
}

const RUNNING: u32 = 9;
/// docker pads states to its longest shown one ("preparing", "allocated").
const LONGEST_STATE: usize = 9;
/// More slots than this get only the overall line, as docker's.
const MAX_BARS: u64 = 20;
/// Swarm's default monitor window, used when the service names none.
const DEFAULT_MONITOR: Duration = Duration::from_secs(5);
/// Gives up when nothing on screen changed for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

fn terminal(n: u32) -> bool {
    n > RUNNING
}

/// docker's 50-wide bar: `[=====>      ]` (`Current` of 9).
pub fn bar(n: u32) -> String {
    let filled = ((n * 100 / RUNNING) / 2).min(50) as usize;
    format!("[{}>{}]", "=".repeat(filled), " ".repeat(50 - filled))
}

/// One line of the display, identified as docker's progress IDs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub id: String,
    pub action: String,
    /// The numbered state, for a bar on a terminal.
    pub current: Option<u32>,
}

impl Line {
    fn text(id: &str, action: impl Into<String>) -> Self {
        Self {
            id: id.to_owned(),
            action: action.into(),
            current: None,
        }
    }

    /// As a terminal shows it (with the bar) or as plain text.
    pub fn render(&self, tty: bool) -> String {
        match self.current {
            Some(n) if tty => format!("{}: {} {}", self.id, self.action, bar(n)),
            _ => format!("{}: {}", self.id, self.action.trim_end()),
        }
    }
}

/// The display: one line per id, in the order ids first appeared.
#[derive(Debug, Default)]
pub struct Screen {
    pub lines: Vec<Line>,
    /// Indexes written since the last draw whose text changed.
    pub changed: Vec<usize>,
}

impl Screen {
    fn write(&mut self, line: Line) {
        match self.lines.iter().position(|l| l.id == line.id) {
            Some(i) if self.lines[i] == line => {}
            Some(i) => {
                self.lines[i] = line;
                self.changed.push(i);
            }
            None => {
                self.lines.push(line);
                self.changed.push(self.lines.len() - 1);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    #[error("service update paused: {message}")]
    UpdatePaused { message: String },
    #[error("service rollback paused: {message}")]
    RollbackPaused { message: String },
    #[error(
        "service {service} did not converge: {running} out of {desired} tasks running and \
         nothing changed for {}s; see 'shoal service ps {service}' (the change stays made)",
        STALL_TIMEOUT.as_secs()
    )]
    Stalled {
        service: String,
        running: u64,
        desired: u64,
    },
}

/// docker's `ServiceProgress` state between polls.
#[derive(Debug)]
pub struct Follower {
    /// As the operator named it, for "verify: Service … converged".
    target: String,
    pub screen: Screen,
    rollback: bool,
    converged_at: Option<Duration>,
    /// The rollback's closing message, printed after "verify".
    message: Option<Line>,
    /// Slot (or node) → its line, so bars stay in order.
    slot_map: BTreeMap<String, usize>,
    initialized: bool,
    done: bool,
    pub running: u64,
    pub desired: u64,
}

impl Follower {
    pub fn new(target: &str) -> Self {
        Self {
            target: target.to_owned(),
            screen: Screen::default(),
            rollback: false,
            converged_at: None,
            message: None,
            slot_map: BTreeMap::new(),
            initialized: false,
            done: false,
            running: 0,
            desired: 0,
        }
    }

    fn overall(&mut self, running: u64, desired: u64) {
        let action = if self.rollback {
            format!("rolling back update: {running} out of {desired} tasks")
        } else {
            format!("{running} out of {desired} tasks")
        };
        self.screen.write(Line::text("overall progress", action));
    }

    /// One poll: the service and its tasks at `now` (time since the start).
    /// `Ok(true)` once converged and stable for the monitor window.
    pub fn step(
        &mut self,
        s: &ServiceSummary,
        tasks: &[TaskSummary],
        now: Duration,
    ) -> Result<bool, FollowError> {
        let monitor = s
            .update_config
            .and_then(|c| c.monitor_ns)
            .filter(|n| *n != 0)
            .map_or(DEFAULT_MONITOR, Duration::from_nanos);
        let converged = self.converged_at.is_some();
        let mut updating = false;
        if let Some(u) = &s.update_status {
            match UpdateState::try_from(u.state).unwrap_or_default() {
                UpdateState::Updating => {
                    self.rollback = false;
                    updating = true;
                }
                // The manager's word that it is done (one monitor window
                // after the last slot): final lines, then the verdict.
                UpdateState::Completed if !converged => {
                    self.update(s, tasks);
                    self.screen.write(Line::text(
                        "verify",
                        format!("Service {} converged", self.target),
                    ));
                    return Ok(true);
                }
                UpdateState::Paused => {
                    return Err(FollowError::UpdatePaused {
                        message: u.message.clone(),
                    });
                }
                UpdateState::RollbackStarted => {
                    if !self.rollback && !u.message.is_empty() {
                        self.screen.write(Line::text("rollback", u.message.clone()));
                    }
                    self.rollback = true;
                    updating = true;
                }
                UpdateState::RollbackPaused => {
                    return Err(FollowError::RollbackPaused {
                        message: u.message.clone(),
                    });
                }
                UpdateState::RollbackCompleted => {
                    if !converged {
                        self.message = Some(Line::text("rollback", u.message.clone()));
                    }
                    self.rollback = true;
                }
                _ => {}
            }
        }
        if let Some(at) = self.converged_at
            && now.saturating_sub(at) >= monitor
        {
            self.screen.write(Line::text(
                "verify",
                format!("Service {} converged", self.target),
            ));
            if let Some(m) = self.message.take() {
                self.screen.write(m);
            }
            return Ok(true);
        }
        // While the manager still replaces tasks the slots are not final,
        // even when every one of them is running.
        let all_running = self.update(s, tasks) && !updating;
        if all_running {
            let at = *self.converged_at.get_or_insert(now);
            let wait = monitor.saturating_sub(now.saturating_sub(at));
            self.screen.write(Line::text(
                "verify",
                format!(
                    "Waiting {} seconds to verify that tasks are stable...",
                    wait.as_secs() + 1
                ),
            ));
        } else {
            if self.converged_at.is_some() {
                self.screen
                    .write(Line::text("verify", "Detected task failure"));
            }
            self.converged_at = None;
        }
        Ok(false)
    }

    /// The slot lines and the overall count; true when all run.
    fn update(&mut self, s: &ServiceSummary, tasks: &[TaskSummary]) -> bool {
        let global = s.mode == ServiceMode::Global as i32;
        let by_slot = current_tasks(tasks, global);
        let desired = if global {
            by_slot.len() as u64
        } else {
            s.desired
        };
        if !self.initialized {
            if global && desired == 0 {
                self.screen
                    .write(Line::text("overall progress", "waiting for new tasks"));
                return false;
            }
            self.overall(0, desired);
            if desired <= MAX_BARS && !global {
                for i in 1..=desired {
                    self.screen
                        .write(Line::text(&format!("{i}/{desired}"), " ".to_owned()));
                }
            }
            self.initialized = true;
        }
        if self.done
            && by_slot
                .values()
                .any(|t| t.state != TaskState::Running as i32)
        {
            self.done = false;
        }
        let mut running = 0;
        for (key, t) in &by_slot {
            let next = self.slot_map.len() + 1;
            let mapped = *self.slot_map.entry(key.clone()).or_insert(next);
            let desired_n = numbered(t.desired_state).unwrap_or(0);
            if !terminal(desired_n) && t.state == TaskState::Running as i32 {
                running += 1;
            }
            if self.done || desired > MAX_BARS || mapped as u64 > desired && !global {
                continue;
            }
            let id = if global {
                t.node_id.get(..12).unwrap_or(&t.node_id).to_owned()
            } else {
                format!("{mapped}/{desired}")
            };
            let state_n = numbered(t.state).unwrap_or(0);
            if !t.err.is_empty() {
                self.screen.write(Line::text(&id, trunc_error(&t.err)));
            } else if !terminal(desired_n) && !terminal(state_n) {
                self.screen.write(Line {
                    id,
                    action: format!("{:<LONGEST_STATE$}", word::<TaskState>(t.state)),
                    current: Some(state_n),
                });
            }
        }
        self.running = running;
        self.desired = desired;
        if !self.done {
            self.overall(running, desired);
            self.done = running == desired;
        }
        running == desired
    }
}

/// docker's truncError: one line, at most 75 characters.
fn trunc_error(err: &str) -> String {
    let one_line = err.replace('\n', " ");
    if one_line.chars().count() > 75 {
        let cut: String = one_line.chars().take(74).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

/// Per slot (per node for a global service) the task that counts: the
/// lowest desired state, then the lowest observed state (start-first
/// leaves two tasks wanted running in a slot for a while), as docker's.
fn current_tasks(tasks: &[TaskSummary], global: bool) -> BTreeMap<String, &TaskSummary> {
    let mut by: BTreeMap<String, &TaskSummary> = BTreeMap::new();
    for t in tasks {
        let (Some(want), Some(have)) = (numbered(t.desired_state), numbered(t.state)) else {
            continue;
        };
        // Zero-padded, so slot 10 sorts after slot 9.
        let key = if global {
            t.node_id.clone()
        } else {
            format!("{:020}", t.slot)
        };
        if let Some(e) = by.get(&key) {
            let (e_want, e_have) = (
                numbered(e.desired_state).unwrap_or(0),
                numbered(e.state).unwrap_or(0),
            );
            if e_want < want || (e_want == want && e_have <= have) {
                continue;
            }
        }
        by.insert(key, t);
    }
    by
}

/// Draws the screen's changes: a terminal redraws its block in place,
/// anything else gets each changed line once.
struct Painter {
    tty: bool,
    drawn: usize,
}

impl Painter {
    fn paint(&mut self, screen: &mut Screen) {
        if screen.changed.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        let mut text = String::new();
        if self.tty {
            if self.drawn > 0 {
                text.push_str(&format!("\x1b[{}A", self.drawn));
            }
            for l in &screen.lines {
                text.push_str("\x1b[2K");
                text.push_str(&l.render(true));
                text.push('\n');
            }
            self.drawn = screen.lines.len();
        } else {
            let mut changed = std::mem::take(&mut screen.changed);
            changed.sort_unstable();
            changed.dedup();
            for i in changed {
                let l = &screen.lines[i];
                // The empty placeholders of the first frame say nothing.
                if l.action.trim().is_empty() {
                    continue;
                }
                text.push_str(&l.render(false));
                text.push('\n');
            }
        }
        screen.changed.clear();
        // A closed stdout (`| head`) must not stop the wait's outcome.
        let _ignored = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}

/// Follows `service` (as the operator named it: `target`) until it has
/// converged and stayed so for the monitor window, as docker does after
/// create, update, rollback and scale.
pub async fn follow(
    d: &mut Daemon,
    service: &str,
    target: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut follower = Follower::new(target);
    let mut painter = Painter {
        tty: std::io::stdout().is_terminal(),
        drawn: 0,
    };
    let mut last_change = Instant::now();
    loop {
        let s = client::call(
            &d.host,
            d.control.inspect_service(ServiceRef {
                service: service.to_owned(),
            }),
        )
        .await?;
        let tasks = client::call(
            &d.host,
            d.control.list_tasks(ListTasksRequest {
                service: s.id.clone(),
            }),
        )
        .await?
        .tasks;
        let done = follower.step(&s, &tasks, start.elapsed());
        if !follower.screen.changed.is_empty() {
            last_change = Instant::now();
        }
        if quiet {
            follower.screen.changed.clear();
        } else {
            painter.paint(&mut follower.screen);
        }
        if done? {
            return Ok(());
        }
        if last_change.elapsed() > STALL_TIMEOUT {
            return Err(FollowError::Stalled {
                service: target.to_owned(),
                running: follower.running,
                desired: follower.desired,
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::cluster::v1::{UpdateConfig, UpdateStatus};

    use super::*;

    fn task(slot: u64, desired: TaskState, state: TaskState) -> TaskSummary {
        TaskSummary {
            id: format!("t{slot}{}{}", desired as i32, state as i32),
            name: format!("web.{slot}"),
            slot,
            desired_state: desired as i32,
            state: state as i32,
            ..Default::default()
        }
    }

    fn service(desired: u64, status: Option<(UpdateState, &str)>) -> ServiceSummary {
        ServiceSummary {
            name: "web".into(),
            mode: ServiceMode::Replicated as i32,
            desired,
            update_config: Some(UpdateConfig {
                monitor_ns: Some(2_000_000_000),
                ..Default::default()
            }),
            update_status: status.map(|(s, m)| UpdateStatus {
                state: s as i32,
                message: m.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn shown(f: &Follower, tty: bool) -> Vec<String> {
        f.screen.lines.iter().map(|l| l.render(tty)).collect()
    }

    const R: TaskState = TaskState::Running;

    #[test]
    fn bars_as_docker_draws_them() {
        assert_eq!(bar(9), format!("[{}>]", "=".repeat(50)));
        assert_eq!(bar(1), format!("[{}>{}]", "=".repeat(5), " ".repeat(45)));
        assert_eq!(bar(6), format!("[{}>{}]", "=".repeat(33), " ".repeat(17)));
        let l = Line {
            id: "1/4".into(),
            action: format!("{:<9}", "running"),
            current: Some(9),
        };
        assert_eq!(
            l.render(true),
            "1/4: running   [==================================================>]"
        );
        assert_eq!(l.render(false), "1/4: running");
    }

    #[test]
    fn a_create_converges_then_verifies() -> Result<(), FollowError> {
        let s = service(2, None);
        let mut f = Follower::new("web");
        let sec = Duration::from_secs;
        let tasks = [
            task(1, R, TaskState::Preparing),
            task(2, R, TaskState::Pending),
        ];
        assert!(!f.step(&s, &tasks, sec(0))?);
        assert_eq!(
            shown(&f, false),
            [
                "overall progress: 0 out of 2 tasks",
                "1/2: preparing",
                "2/2: pending"
            ]
        );
        let tasks = [task(1, R, R), task(2, R, R)];
        assert!(!f.step(&s, &tasks, sec(1))?);
        assert_eq!(
            shown(&f, false),
            [
                "overall progress: 2 out of 2 tasks",
                "1/2: running",
                "2/2: running",
                "verify: Waiting 3 seconds to verify that tasks are stable..."
            ]
        );
        // A failure inside the window restarts the wait.
        let tasks = [task(1, R, R), task(2, R, TaskState::Starting)];
        assert!(!f.step(&s, &tasks, sec(2))?);
        assert_eq!(shown(&f, false)[3], "verify: Detected task failure");
        assert_eq!(shown(&f, false)[0], "overall progress: 1 out of 2 tasks");
        let tasks = [task(1, R, R), task(2, R, R)];
        assert!(!f.step(&s, &tasks, sec(3))?);
        assert!(!f.step(&s, &tasks, sec(4))?);
        assert!(f.step(&s, &tasks, sec(5))?);
        assert_eq!(shown(&f, false)[3], "verify: Service web converged");
        Ok(())
    }

    #[test]
    fn an_update_shows_the_new_task_of_each_slot() -> Result<(), FollowError> {
        let s = service(2, Some((UpdateState::Updating, "update in progress")));
        let mut f = Follower::new("web");
        let sd = TaskState::Shutdown;
        // Slot 1 replaced: the old task (desired shutdown) is not shown.
        let tasks = [
            task(1, sd, R),
            task(1, R, TaskState::Starting),
            task(2, R, R),
        ];
        assert!(!f.step(&s, &tasks, Duration::ZERO)?);
        let lines = shown(&f, true);
        assert_eq!(lines[0], "overall progress: 1 out of 2 tasks");
        assert_eq!(lines[1], format!("1/2: starting  {}", bar(8)));
        assert_eq!(lines[2], format!("2/2: running   {}", bar(9)));
        // All running, but the manager still updates: not converged.
        let tasks = [task(1, sd, sd), task(1, R, R), task(2, R, R)];
        assert!(!f.step(&s, &tasks, Duration::from_secs(9))?);
        assert!(f.screen.lines.iter().all(|l| l.id != "verify"));
        // An error replaces the bar, in docker's words.
        let mut failed = task(2, R, TaskState::Failed);
        failed.err = "unhealthy container".into();
        f.step(&s, &[task(1, R, R), failed], Duration::from_secs(10))?;
        assert_eq!(shown(&f, false)[2], "2/2: unhealthy container");
        Ok(())
    }

    #[test]
    fn paused_updates_and_rollbacks_end_with_their_message() {
        let mut f = Follower::new("web");
        let s = service(
            1,
            Some((
                UpdateState::Paused,
                "update paused due to failure or early termination of task abc",
            )),
        );
        assert_eq!(
            f.step(&s, &[], Duration::ZERO).err().map(|e| e.to_string()),
            Some("service update paused: update paused due to failure or early termination of task abc".into())
        );
        let s = service(1, Some((UpdateState::RollbackPaused, "rollback paused")));
        assert_eq!(
            f.step(&s, &[], Duration::ZERO).err().map(|e| e.to_string()),
            Some("service rollback paused: rollback paused".into())
        );
    }

    #[test]
    fn a_rollback_says_so() -> Result<(), FollowError> {
        let mut f = Follower::new("web");
        let started = service(
            1,
            Some((UpdateState::RollbackStarted, "manually requested rollback")),
        );
        assert!(!f.step(&started, &[task(1, R, TaskState::Pending)], Duration::ZERO)?);
        assert_eq!(
            shown(&f, false),
            [
                "rollback: manually requested rollback",
                "overall progress: rolling back update: 0 out of 1 tasks",
                "1/1: pending"
            ]
        );
        let done = service(
            1,
            Some((UpdateState::RollbackCompleted, "rollback completed")),
        );
        let sec = Duration::from_secs;
        assert!(!f.step(&done, &[task(1, R, R)], sec(1))?);
        assert!(f.step(&done, &[task(1, R, R)], sec(3))?);
        // On a terminal the rollback line is rewritten in place; plain
        // output prints it after the verify line.
        let lines = shown(&f, false);
        assert_eq!(lines[0], "rollback: rollback completed");
        assert_eq!(lines[lines.len() - 1], "verify: Service web converged");
        let last = f
            .screen
            .changed
            .last()
            .map(|i| f.screen.lines[*i].id.as_str());
        assert_eq!(last, Some("rollback"));
        Ok(())
    }

    #[test]
    fn errors_are_cut_to_one_short_line() {
        assert_eq!(trunc_error("a\nb"), "a b");
        let long = "x".repeat(100);
        assert_eq!(trunc_error(&long).chars().count(), 75);
        assert!(trunc_error(&long).ends_with('…'));
    }

    #[test]
    fn many_slots_show_only_the_count() -> Result<(), FollowError> {
        let s = service(25, None);
        let tasks: Vec<_> = (1..=25).map(|i| task(i, R, R)).collect();
        let mut f = Follower::new("web");
        f.step(&s, &tasks, Duration::ZERO)?;
        assert_eq!(shown(&f, false)[0], "overall progress: 25 out of 25 tasks");
        assert_eq!(f.screen.lines.len(), 2);
        Ok(())
    }
}
