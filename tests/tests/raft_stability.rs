//! Raft stays put when it should: no election while both CPUs are
//! saturated for a minute (a manager joining half-way through), and none
//! caused by a restarted manager whose log is stale. Needs root and built `shoald`/`shoal`.
//!
//! SLOW (about 1.5 min) and LOADS EVERY CPU for 60 s on purpose: one test,
//! so the load is paid once.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use shoal_api::cluster::v1::{
    CreateSecretRequest, ListNodesRequest, control_client::ControlClient,
};
use shoal_lab::{Formation, Lab};
use tonic::transport::Channel;

/// How long the CPUs are saturated.
const LOAD: Duration = Duration::from_secs(60);

async fn control(lab: &Lab, k: usize) -> anyhow::Result<ControlClient<Channel>> {
    let ch = shoal_api::unix_channel(lab.node(k).socket())
        .await
        .with_context(|| format!("dialling n{k}"))?;
    Ok(ControlClient::new(ch))
}

/// (Raft term, leader hostname) as manager `k` sees them.
async fn raft_view(lab: &Lab, k: usize) -> anyhow::Result<(u64, Option<String>)> {
    let reply = control(lab, k)
        .await?
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner();
    let leader = reply
        .nodes
        .iter()
        .find(|n| n.manager_status == "Leader")
        .map(|n| n.hostname.clone());
    Ok((reply.raft_term, leader))
}

/// All three managers' views once they agree on a leader and a term.
async fn agreed(lab: &Lab) -> anyhow::Result<(u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        for k in 1..=3 {
            views.push(raft_view(lab, k).await.ok());
        }
        if let Some(Some((term, Some(leader)))) = views.first().cloned()
            && views
                .iter()
                .all(|v| *v == Some((term, Some(leader.clone()))))
        {
            return Ok((term, leader));
        }
        ensure!(
            Instant::now() < deadline,
            "managers never agreed: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn secret(name: String) -> CreateSecretRequest {
    CreateSecretRequest {
        name,
        labels: Default::default(),
        data: vec![b'x'; 64],
    }
}

/// Busy-loop processes, killed (by their own pids) when dropped.
struct Burners(Vec<Child>);

impl Burners {
    fn start(n: usize) -> anyhow::Result<Self> {
        let mut children = Vec::new();
        for _ in 0..n {
            children.push(
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .context("starting a busy loop")?,
            );
        }
        Ok(Burners(children))
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // Already gone is fine; it is reaped right after.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn slow_no_election_under_saturated_cpus_nor_from_a_stale_restarted_manager()
-> anyhow::Result<()> {
    // n4 joins as a fourth manager under the load: a join (learner catch-up,
    // membership change) is what started an election with shorter timeouts.
    let lab = Lab::builder("raftstab").nodes(4).start().await?;
    lab.form_swarm_of(Formation::fast(3, 3))?;
    let manager_token = lab.join_token(1, "manager")?;
    let mut joined = None;
    let (term, leader) = agreed(&lab).await?;
    let leader_k: usize = leader[1..].parse()?;
    let follower = if leader_k == 3 { 2 } else { 3 };
    let other = 6 - leader_k - follower;

    // Two busy loops per CPU, at the managers' own priority, while a client
    // writes through a follower (forwarded: both hops under load).
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burners = Burners::start(2 * cpus)?;
    let mut api = control(&lab, other).await?;
    let (mut ok, mut failed, mut slowest) = (0, 0, Duration::ZERO);
    let mut errors: Vec<String> = Vec::new();
    let end = Instant::now() + LOAD;
    let mut i = 0;
    while Instant::now() < end {
        if joined.is_none() && end - Instant::now() < LOAD / 2 {
            let t = Instant::now();
            lab.shoal(
                4,
                &[
                    "swarm",
                    "join",
                    "--token",
                    &manager_token,
                    &lab.cluster_addr(1),
                ],
            )
            .context("n4 joining as a manager under load")?;
            joined = Some(t.elapsed());
        }
        let t = Instant::now();
        match tokio::time::timeout(
            Duration::from_secs(5),
            api.create_secret(secret(format!("load-{i}"))),
        )
        .await
        {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                failed += 1;
                errors.push(e.message().to_owned());
            }
            Err(_) => {
                failed += 1;
                errors.push("no answer within 5 s".into());
            }
        }
        slowest = slowest.max(t.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(burners);
    eprintln!(
        "under load: {ok} writes, {failed} failed, slowest {slowest:?}; n4 joined in {joined:?}"
    );
    ensure!(joined.is_some(), "n4 never joined during the load");
    let after_load = agreed(&lab).await?;
    ensure!(
        after_load == (term, leader.clone()),
        "an election under CPU load: term {term} leader {leader} became {after_load:?}"
    );
    errors.dedup();
    ensure!(
        ok > 0 && failed == 0,
        "{failed} writes failed under load: {errors:?}"
    );

    // A follower down while the log moves on, then back with its stale log.
    lab.kill(follower).await?;
    for j in 0..50 {
        api.create_secret(secret(format!("while-down-{j}"))).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.start(follower).await?;
    // Caught up (the same leader and term everywhere), then long enough for
    // any election it could start: its grace plus election timeouts.
    let caught_up = agreed(&lab).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let settled = agreed(&lab).await?;
    ensure!(
        caught_up == (term, leader.clone()) && settled == caught_up,
        "the restarted n{follower} disrupted the cluster: term {term} leader {leader}, \
         then {caught_up:?}, then {settled:?}"
    );
    let mut via_restarted = control(&lab, follower).await?;
    via_restarted
        .create_secret(secret("after-restart".into()))
        .await
        .context("a write through the restarted manager")?;
    Ok(())
}
