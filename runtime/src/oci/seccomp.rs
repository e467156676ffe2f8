//! Docker's seccomp profile (its `default.json` format) translated into the
//! runtime spec's `linux.seccomp` for one task: the rules that apply on
//! this architecture, kernel and effective capability set, as docker's
//! `setupSeccomp` selects them.

use std::collections::BTreeSet;
use std::path::Path;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder, LinuxSyscall,
    LinuxSyscallBuilder,
};
use serde::Deserialize;

/// Where Debian's `golang-github-docker-docker-dev` puts docker's profile.
pub const DOCKER_PROFILE: &str =
    "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json";

/// A profile in docker's format.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "reading seccomp profile {path}: {source} (install Debian's golang-github-docker-docker-dev \
         for docker's, or give another profile)"
    )]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp profile {path}: {source}")]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("seccomp profile: rule for {names:?}: minKernel {value:?} is not MAJOR.MINOR")]
    MinKernel { names: Vec<String>, value: String },
    #[error("seccomp profile: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

impl Profile {
    /// Reads a profile in docker's JSON format.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Profile::parse(&text).map_err(|source| ProfileError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub fn parse(json: &[u8]) -> Result<Profile, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// This machine, as docker's profile names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    /// Go's name of the architecture (`amd64`, `arm64`), used by
    /// `includes.arches`.
    pub go_arch: &'static str,
    /// The kernel's (major, minor).
    pub kernel: (u32, u32),
}

impl Platform {
    /// The running machine.
    pub fn current() -> Platform {
        let go_arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "s390x" => "s390x",
            "powerpc64" => "ppc64le",
            "riscv64" => "riscv64",
            other => other,
        };
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Platform {
            go_arch,
            kernel: parse_kernel(&release).unwrap_or((0, 0)),
        }
    }

    fn seccomp_arch(&self) -> Option<Arch> {
        Some(match self.go_arch {
            "amd64" => Arch::ScmpArchX86_64,
            "arm64" => Arch::ScmpArchAarch64,
            "386" => Arch::ScmpArchX86,
            "arm" => Arch::ScmpArchArm,
            "s390x" => Arch::ScmpArchS390x,
            "ppc64le" => Arch::ScmpArchPpc64le,
            "riscv64" => Arch::ScmpArchRiscv64,
            _ => return None,
        })
    }
}

/// `6.18.0-1-amd64` → (6, 18).
fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The `linux.seccomp` of a task whose effective capabilities are `caps`
/// (`CAP_…` names), on `platform`.
pub fn translate(
    profile: &Profile,
    caps: &BTreeSet<&str>,
    platform: Platform,
) -> Result<LinuxSeccomp, ProfileError> {
    let native = platform.seccomp_arch();
    let architectures: Vec<Arch> = profile
        .arch_map
        .iter()
        .filter(|m| Some(m.architecture) == native)
        .flat_map(|m| std::iter::once(m.architecture).chain(m.sub_architectures.iter().copied()))
        .collect();
    let mut syscalls = Vec::new();
    for rule in &profile.syscalls {
        if !applies(rule, caps, platform)? {
            continue;
        }
        let mut call = LinuxSyscallBuilder::default()
            .names(rule.names.clone())
            .action(rule.action);
        if let Some(errno) = rule.errno_ret {
            call = call.errno_ret(errno);
        }
        if let Some(args) = rule.args.as_ref().filter(|a| !a.is_empty()) {
            call = call.args(args.clone());
        }
        syscalls.push(call.build()?);
    }
    let mut seccomp = LinuxSeccompBuilder::default()
        .default_action(profile.default_action)
        .architectures(architectures)
        .syscalls(syscalls);
    if let Some(errno) = profile.default_errno_ret {
        seccomp = seccomp.default_errno_ret(errno);
    }
    Ok(seccomp.build()?)
}

fn applies(rule: &Rule, caps: &BTreeSet<&str>, platform: Platform) -> Result<bool, ProfileError> {
    let arch = platform.go_arch;
    let inc = &rule.includes;
    let exc = &rule.excludes;
    if let Some(arches) = inc.arches.as_ref().filter(|a| !a.is_empty())
        && !arches.iter().any(|a| a == arch)
    {
        return Ok(false);
    }
    if let Some(needed) = &inc.caps
        && !needed.iter().all(|c| caps.contains(c.as_str()))
    {
        return Ok(false);
    }
    if let Some(min) = inc.min_kernel.as_deref().filter(|m| !m.is_empty()) {
        let wanted = parse_kernel(min).ok_or_else(|| ProfileError::MinKernel {
            names: rule.names.clone(),
            value: min.to_owned(),
        })?;
        if platform.kernel < wanted {
            return Ok(false);
        }
    }
    if exc
        .arches
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == arch))
    {
        return Ok(false);
    }
    if exc
        .caps
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| caps.contains(c.as_str())))
    {
        return Ok(false);
    }
    Ok(true)
}

/// What the filter does to `name` called with first argument `arg0` (the
/// rules' own order: the first whose conditions hold wins, as libseccomp
/// merges them for these profiles). For tests and `node doctor`-style checks.
pub fn verdict(seccomp: &LinuxSeccomp, name: &str, arg0: u64) -> LinuxSeccompAction {
    let matches = |call: &&LinuxSyscall| {
        call.names().iter().any(|n| n == name)
            && call.args().as_ref().is_none_or(|args| {
                args.iter().all(|a| {
                    a.index() != 0 || {
                        use oci_spec::runtime::LinuxSeccompOperator as Op;
                        match a.op() {
                            Op::ScmpCmpEq => arg0 == a.value(),
                            Op::ScmpCmpNe => arg0 != a.value(),
                            Op::ScmpCmpMaskedEq => arg0 & a.value() == a.value_two().unwrap_or(0),
                            Op::ScmpCmpLt => arg0 < a.value(),
                            Op::ScmpCmpLe => arg0 <= a.value(),
                            Op::ScmpCmpGt => arg0 > a.value(),
                            Op::ScmpCmpGe => arg0 >= a.value(),
                        }
                    }
                })
            })
    };
    seccomp
        .syscalls()
        .iter()
        .flatten()
        .find(matches)
        .map_or(seccomp.default_action(), LinuxSyscall::action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::caps;

    const PLATFORM: Platform = Platform {
        go_arch: "amd64",
        kernel: (6, 18),
    };

    /// A small profile in docker's shape, written for these tests.
    const PROFILE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}, "excludes": {}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "args": null, "includes": {"minKernel": "4.8"}, "excludes": {}},
            {"names": ["newer"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "7.1"}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["arm_only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
            {"names": ["mount", "unshare", "bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
             "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
        ]
    }"#;

    fn seccomp(add: &[&str]) -> LinuxSeccomp {
        let add: Vec<String> = add.iter().map(|s| (*s).to_owned()).collect();
        let caps = caps::effective(&add, &[]).expect("test");
        let profile = Profile::parse(PROFILE.as_bytes()).expect("test");
        translate(&profile, &caps, PLATFORM).expect("test")
    }

    fn names(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .flat_map(|c| c.names().clone())
            .collect()
    }

    #[test]
    fn arch_map_gives_the_native_arch_and_its_sub_arches() {
        assert_eq!(
            seccomp(&[]).architectures().clone().unwrap_or_default(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
    }

    #[test]
    fn rules_are_kept_by_arch_kernel_and_capabilities() {
        let default = seccomp(&[]);
        let got = names(&default);
        for kept in ["read", "ptrace", "arch_prctl", "clone", "clone3"] {
            assert!(got.iter().any(|n| n == kept), "{kept} in {got:?}");
        }
        for dropped in ["newer", "arm_only", "mount", "unshare", "bpf"] {
            assert!(!got.iter().any(|n| n == dropped), "{dropped} in {got:?}");
        }
        assert_eq!(
            verdict(&default, "mount", 0),
            LinuxSeccompAction::ScmpActErrno
        );
        assert_eq!(
            verdict(&default, "unshare", 0),
            LinuxSeccompAction::ScmpActErrno
        );
        assert_eq!(
            verdict(&default, "bpf", 0),
            LinuxSeccompAction::ScmpActErrno
        );
        // clone with a namespace flag is refused, a plain fork is not.
        assert_eq!(
            verdict(&default, "clone", 0x11),
            LinuxSeccompAction::ScmpActAllow
        );
        assert_eq!(
            verdict(&default, "clone", 0x2000_0000),
            LinuxSeccompAction::ScmpActErrno
        );
        let clone3 = default
            .syscalls()
            .iter()
            .flatten()
            .find(|c| c.names() == &["clone3"])
            .expect("test");
        assert_eq!(clone3.errno_ret(), Some(38));
        assert_eq!(default.default_errno_ret(), Some(1));

        let admin = seccomp(&["SYS_ADMIN"]);
        for allowed in ["mount", "unshare", "bpf"] {
            assert_eq!(
                verdict(&admin, allowed, 0),
                LinuxSeccompAction::ScmpActAllow
            );
        }
        assert!(!names(&admin).iter().any(|n| n == "clone3"));
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_kernel("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("x"), None);
    }

    /// Docker's own profile, where Debian's package put it.
    #[test]
    fn dockers_profile_denies_bpf_mount_and_unshare_by_default() {
        let path = Path::new(DOCKER_PROFILE);
        if !path.exists() {
            eprintln!("skipped: {DOCKER_PROFILE} missing");
            return;
        }
        let profile = Profile::load(path).expect("test");
        let caps = caps::effective(&[], &[]).expect("test");
        let default = translate(&profile, &caps, PLATFORM).expect("test");
        for denied in [
            "bpf",
            "mount",
            "unshare",
            "setns",
            "init_module",
            "kexec_load",
        ] {
            assert_ne!(
                verdict(&default, denied, 0),
                LinuxSeccompAction::ScmpActAllow,
                "{denied}"
            );
        }
        assert_eq!(
            verdict(&default, "read", 0),
            LinuxSeccompAction::ScmpActAllow
        );
        let caps = caps::effective(&["SYS_ADMIN".into()], &[]).expect("test");
        let admin = translate(&profile, &caps, PLATFORM).expect("test");
        for allowed in ["mount", "unshare", "bpf"] {
            assert_eq!(
                verdict(&admin, allowed, 0),
                LinuxSeccompAction::ScmpActAllow
            );
        }
    }
}
