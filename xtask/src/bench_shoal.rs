//! `cargo xtask bench mesh|overlay|matrix`: thin wrappers around `shoal
//! bench`. Each starts a 3-node lab of this build's release binaries, loads
//! the lab tools image on n1 (the other nodes fetch it), and runs the
//! release `shoal bench` from n1 with the scenarios of its group; the
//! figures, ratios, JSON and plots are all `shoal bench`'s.

use std::{path::Path, process::Stdio};

use anyhow::{Context, ensure};
use shoal_lab::SHOAL_HOST_ENV;

/// The scenario groups.
pub const MESH: &[&str] = &[
    "ingress-local",
    "ingress-remote",
    "direct",
    "haproxy-local",
    "haproxy-remote",
];
pub const OVERLAY: &[&str] = &[
    "overlay",
    "overlay-wireguard",
    "vip",
    "underlay",
    "kernel-vxlan",
];
/// Every scenario: `shoal bench` with none named.
pub const MATRIX: &[&str] = &[];

/// What the wrapper passes through to `shoal bench`.
#[derive(clap::Args, Clone)]
pub struct Pass {
    /// Measurements per scenario (`shoal bench --repeat`).
    #[arg(long, default_value_t = 5)]
    pub repeat: u32,
    /// Length of one measurement (`shoal bench --duration`).
    #[arg(long, default_value = "5s")]
    pub duration: String,
    /// Where result.json and the plots go (default target/bench/NAME).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Fail when a metric is flagged (`shoal bench --strict`).
    #[arg(long)]
    pub strict: bool,
    /// Only these of the group's scenarios, comma-separated (e.g.
    /// `overlay,kernel-vxlan`): more repeats of one ratio in the same time.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// `scenarios` narrowed to `only` (all when empty), in the group's order;
/// a name the group does not have is refused with the group's names.
fn narrow<'a>(scenarios: &[&'a str], only: &[String]) -> anyhow::Result<Vec<&'a str>> {
    if let Some(bad) = only.iter().find(|o| !scenarios.contains(&o.as_str())) {
        anyhow::bail!(
            "--only: this group has no scenario {bad:?}; it has {}",
            scenarios.join(", ")
        );
    }
    Ok(scenarios
        .iter()
        .copied()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s))
        .collect())
}

pub async fn run(bin: &Path, name: &str, scenarios: &[&str], p: &Pass) -> anyhow::Result<()> {
    let scenarios = narrow(scenarios, &p.only)?;
    // HAProxy runs from the nodes' filesystem (`--haproxy-image host`).
    crate::bench_mesh::ensure_tools()?;
    let lab = crate::bench::three_nodes(&format!("bench-{name}"), bin).await?;
    let image = crate::bench::load_lab_tools(&lab, bin, 1)?;
    let out = p.out.clone().unwrap_or_else(|| {
        crate::setup::workspace_root()
            .join("target/bench")
            .join(name)
    });
    let out = std::path::absolute(&out).context("--out")?;
    let sources = extra_sources(&lab).await?;
    let mut cmd = lab.command(1, bin.join("shoal"));
    cmd.env(SHOAL_HOST_ENV, lab.node(1).shoal_host())
        .arg("bench")
        .args(&scenarios)
        .args(["--repeat", &p.repeat.to_string()])
        .args(["--duration", &p.duration])
        .args(["--image", image])
        .args(
            sources
                .iter()
                .flat_map(|a| ["--source".to_owned(), a.to_string()]),
        )
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if p.strict {
        cmd.arg("--strict");
    }
    println!(
        "{}: shoal bench {} on a 3-node lab",
        name,
        scenarios.join(" ")
    );
    let status = cmd.status().context("running shoal bench")?;
    lab.down()?;
    ensure!(status.success(), "shoal bench failed: {status}");
    Ok(())
}

/// Source addresses of the distinct-tuples connection-rate runs: n1's own
/// and [`EXTRA_SOURCES`] more on its underlay link, so a 5 × 5 matrix at
/// several thousand connections/s never waits for a tuple to leave
/// TIME_WAIT (about 36,000 tuples per address per minute).
async fn extra_sources(lab: &shoal_lab::Lab) -> anyhow::Result<Vec<std::net::Ipv4Addr>> {
    let node = lab.node(1);
    let handle = shoal_lab::netns::netlink(node.netns())?;
    let mut all = vec![node.addr()];
    for i in 0..EXTRA_SOURCES {
        let a = std::net::Ipv4Addr::new(198, 18, 0, 200 + i);
        shoal_lab::address_up(&handle, node.netns(), shoal_lab::DATA_IFACE, a, 24).await?;
        all.push(a);
    }
    Ok(all)
}

/// 198.18.0.200–207: above the lab's node addresses, below its client's.
const EXTRA_SOURCES: u8 = 8;

#[cfg(test)]
mod tests {
    use super::{OVERLAY, narrow};

    #[test]
    fn only_narrows_in_the_groups_order_and_refuses_strangers() {
        let all = narrow(OVERLAY, &[]).expect("no filter");
        assert_eq!(all, OVERLAY);
        let two = narrow(OVERLAY, &["kernel-vxlan".into(), "overlay".into()]).expect("two");
        assert_eq!(two, ["overlay", "kernel-vxlan"]);
        let err = narrow(OVERLAY, &["haproxy-remote".into()]).expect_err("not in the group");
        let text = err.to_string();
        assert!(
            text.contains("--only") && text.contains("haproxy-remote"),
            "{text}"
        );
        assert!(
            text.contains("kernel-vxlan"),
            "names what the group has: {text}"
        );
    }
}
