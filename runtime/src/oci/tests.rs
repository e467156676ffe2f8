use std::net::Ipv4Addr;

use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccompAction};

use super::*;
use crate::spec::{ImageDefaults, Resources};

const PROFILE: &str = r#"{
    "defaultAction": "SCMP_ACT_ERRNO",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
    "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["mount", "unshare"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}
    ]
}"#;
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nweb:x:101:102::/srv/web:/bin/sh\n";
const GROUP: &str = "root:x:0:\nweb:x:102:\n";

fn image(config: ImageDefaults) -> Root {
    Root::Image {
        lower: "/var/lib/shoal/images/abc".into(),
        config,
    }
}

fn spec() -> TaskSpec {
    TaskSpec {
        id: "t1".into(),
        name: "web.1".into(),
        args: vec!["sleep".into(), "1".into()],
        attachments: vec![Attachment {
            bridge: "shl-br-1".into(),
            addr: Ipv4Addr::new(10, 0, 1, 2),
            prefix: 24,
            gateway: None,
            mac: None,
            mtu: None,
        }],
        log_dir: "/tmp/logs".into(),
        ..TaskSpec::default()
    }
}

fn build(spec: &TaskSpec) -> Result<Spec, RuntimeError> {
    let profile = seccomp::Profile::parse(PROFILE.as_bytes()).expect("test");
    let hidden = vec![
        PathBuf::from("/run"),
        PathBuf::from("/var/lib/shoal/runtime"),
    ];
    let volumes = vec![("/data".to_owned(), PathBuf::from("/b/t1/volumes/0"))];
    let inputs = BundleInputs {
        rootfs: Path::new("/b/t1/rootfs"),
        netns: (!spec.network_host).then(|| Path::new("/s/netns/t1")),
        resolv_conf: Path::new("/b/t1/resolv.conf"),
        hosts: Path::new("/b/t1/hosts"),
        hostname_file: Path::new("/b/t1/hostname"),
        skip_files: &[],
        hidden: &hidden,
        volumes: &volumes,
        passwd: PASSWD,
        group: GROUP,
        seccomp: &profile,
        platform: seccomp::Platform {
            go_arch: "amd64",
            kernel: (6, 18),
        },
        init: Some(Path::new("/usr/bin/shoal-shim")),
        files: Some(Path::new("/s/files/t1")),
    };
    config(spec, &inputs)
}

fn field(result: Result<Spec, RuntimeError>) -> Option<&'static str> {
    match result {
        Err(RuntimeError::InvalidSpec { field, .. }) => Some(field),
        _ => None,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_command_follows_dockers_merge_rules() {
    let img = ImageDefaults {
        entrypoint: strings(&["/entry"]),
        cmd: strings(&["--serve"]),
        ..ImageDefaults::default()
    };
    /// (entrypoint override, args, expected argv)
    type Case = (Option<Vec<String>>, Vec<String>, Vec<String>);
    let cases: Vec<Case> = vec![
        (None, vec![], strings(&["/entry", "--serve"])),
        (None, strings(&["--debug"]), strings(&["/entry", "--debug"])),
        (Some(strings(&["/bin/sh"])), vec![], strings(&["/bin/sh"])),
        (
            Some(strings(&["/bin/sh"])),
            strings(&["-c", "x"]),
            strings(&["/bin/sh", "-c", "x"]),
        ),
        (Some(vec![]), strings(&["ls"]), strings(&["ls"])),
    ];
    for (entrypoint, args, want) in cases {
        let s = TaskSpec {
            root: image(img.clone()),
            entrypoint: entrypoint.clone(),
            args: args.clone(),
            ..spec()
        };
        assert_eq!(command(&s).expect("test"), want, "{entrypoint:?} {args:?}");
    }
    let empty = TaskSpec {
        root: image(ImageDefaults::default()),
        args: vec![],
        ..spec()
    };
    assert_eq!(field(build(&empty)), Some("args"));
}

#[test]
fn env_is_the_images_then_the_services_with_defaults() {
    let s = TaskSpec {
        root: image(ImageDefaults {
            env: vec![
                ("PATH".into(), "/img/bin".into()),
                ("A".into(), "image".into()),
            ],
            cmd: strings(&["x"]),
            ..ImageDefaults::default()
        }),
        env: vec![("A".into(), "service".into()), ("B".into(), "2".into())],
        ..spec()
    };
    assert_eq!(
        environment(&s, "web.1", Some("/srv")),
        strings(&[
            "PATH=/img/bin",
            "A=service",
            "B=2",
            "HOSTNAME=web.1",
            "HOME=/srv"
        ])
    );
}

#[test]
fn the_process_gets_dockers_caps_no_new_privileges_and_the_resolved_user() {
    let config = build(&TaskSpec {
        user: Some("web".into()),
        ..spec()
    })
    .expect("test");
    let process = config.process().as_ref().expect("test");
    assert_eq!(process.user().uid(), 101);
    assert_eq!(process.user().gid(), 102);
    assert_eq!(process.no_new_privileges(), Some(true));
    assert!(
        process
            .env()
            .as_ref()
            .expect("test")
            .contains(&"HOME=/srv/web".to_owned())
    );
    let effective = process
        .capabilities()
        .as_ref()
        .and_then(|c| c.effective().clone())
        .expect("test");
    assert_eq!(effective.len(), caps::DOCKER_DEFAULT.len());
    assert!(effective.contains(&Capability::NetBindService));
    assert!(!effective.contains(&Capability::SysAdmin));

    assert_eq!(
        field(build(&TaskSpec {
            user: Some("ghost".into()),
            ..spec()
        })),
        Some("user")
    );
    assert_eq!(
        field(build(&TaskSpec {
            cap_add: strings(&["FLY"]),
            ..spec()
        })),
        Some("cap_add")
    );
}

#[test]
fn seccomp_follows_the_capabilities() {
    let allowed = |s: &TaskSpec, call| {
        let config = build(s).expect("test");
        let seccomp = config
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().clone())
            .expect("test");
        seccomp::verdict(&seccomp, call, 0) == LinuxSeccompAction::ScmpActAllow
    };
    assert!(allowed(&spec(), "read"));
    assert!(!allowed(&spec(), "mount"));
    let admin = TaskSpec {
        cap_add: strings(&["CAP_SYS_ADMIN"]),
        ..spec()
    };
    assert!(allowed(&admin, "mount") && allowed(&admin, "unshare"));
}

#[test]
fn the_host_network_is_the_runtimes_own_namespace() {
    let host = TaskSpec {
        network_host: true,
        attachments: Vec::new(),
        ..spec()
    };
    let config = build(&host).expect("test");
    let namespaces = config.linux().as_ref().and_then(|l| l.namespaces().clone());
    let types: Vec<LinuxNamespaceType> = namespaces.iter().flatten().map(|n| n.typ()).collect();
    assert!(!types.contains(&LinuxNamespaceType::Network), "{types:?}");
    assert!(types.contains(&LinuxNamespaceType::Mount), "{types:?}");
    // Its checks: no interface of its own, no sysctl of the node's network.
    assert_eq!(field(host_checked(&spec(), true)), Some("attachments"));
    let sysctl = TaskSpec {
        sysctls: vec![("net.core.somaxconn".into(), "1024".into())],
        attachments: Vec::new(),
        ..spec()
    };
    assert_eq!(field(host_checked(&sysctl, true)), Some("sysctls"));
    assert!(host_checked(&sysctl, false).is_ok());
}

fn host_checked(s: &TaskSpec, network_host: bool) -> Result<Spec, RuntimeError> {
    let s = TaskSpec {
        network_host,
        ..s.clone()
    };
    s.validate()?;
    build(&s)
}

#[test]
fn namespaces_paths_and_cgroups_are_dockers() {
    let config = build(&spec()).expect("test");
    let linux = config.linux().as_ref().expect("test");
    let namespaces = linux.namespaces().as_ref().expect("test");
    let net = namespaces
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
        .expect("test");
    assert_eq!(net.path().as_deref(), Some(Path::new("/s/netns/t1")));
    for typ in [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
    ] {
        let ns = namespaces.iter().find(|n| n.typ() == typ).expect("test");
        assert!(ns.path().is_none(), "{typ:?} is new");
    }
    let masked = linux.masked_paths().as_ref().expect("test");
    for path in [
        "/proc/kcore",
        "/proc/keys",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ] {
        assert!(masked.iter().any(|m| m == path), "{path}");
    }
    assert!(
        linux
            .readonly_paths()
            .as_ref()
            .expect("test")
            .iter()
            .any(|p| p == "/proc/sys")
    );
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/shoal/t1"))
    );
    assert_eq!(config.hostname().as_deref(), Some("web.1"));
    assert_eq!(
        config.root().as_ref().and_then(|r| r.readonly()),
        Some(true)
    );
}

#[test]
fn host_tasks_hide_the_nodes_state_and_get_their_files() {
    let config = build(&spec()).expect("test");
    let mounts = config.mounts().as_ref().expect("test");
    let at = |dest: &str| {
        mounts
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("no mount at {dest}: {mounts:?}"))
    };
    for hidden in ["/run", "/var/lib/shoal/runtime", "/tmp"] {
        assert_eq!(at(hidden).typ().as_deref(), Some("tmpfs"), "{hidden}");
    }
    assert_eq!(
        at("/etc/resolv.conf").source().as_deref(),
        Some(Path::new("/b/t1/resolv.conf"))
    );
    assert_eq!(
        at("/etc/hosts").source().as_deref(),
        Some(Path::new("/b/t1/hosts"))
    );
    assert_eq!(
        at("/sys")
            .options()
            .as_ref()
            .map(|o| o.contains(&"ro".to_owned())),
        Some(true)
    );
    assert_eq!(
        at("/data").source().as_deref(),
        Some(Path::new("/b/t1/volumes/0"))
    );
    // An image task has no node paths to hide and may write its root.
    let config = build(&TaskSpec {
        root: image(ImageDefaults::default()),
        ..spec()
    })
    .expect("test");
    let mounts = config.mounts().as_ref().expect("test");
    assert!(!mounts.iter().any(|m| m.destination() == Path::new("/run")));
    assert_eq!(
        config.root().as_ref().and_then(|r| r.readonly()),
        Some(false)
    );
}

#[test]
fn secrets_and_configs_are_read_only_binds_after_run_and_the_services_mounts() {
    use crate::files::TaskFile;
    let file = |target: &str| TaskFile {
        target: target.into(),
        mode: 0o400,
        data: b"hunter2".to_vec(),
        ..TaskFile::default()
    };
    let s = TaskSpec {
        files: vec![
            file("/run/secrets/db_pass"),
            file("/etc/app.conf"),
            file("/run/secrets/alias"),
        ],
        mounts: vec![Mount::Tmpfs {
            target: "/etc".into(),
            size: None,
        }],
        init: true,
        ..spec()
    };
    let config = build(&s).expect("test");
    let mounts = config.mounts().as_ref().expect("test");
    let index = |dest: &str| {
        mounts
            .iter()
            .position(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("no mount at {dest}: {mounts:?}"))
    };
    let secrets = &mounts[index("/run/secrets")];
    assert_eq!(
        secrets.source().as_deref(),
        Some(Path::new("/s/files/t1/secrets"))
    );
    let conf = &mounts[index("/etc/app.conf")];
    assert_eq!(
        conf.source().as_deref(),
        Some(Path::new("/s/files/t1/single/1"))
    );
    for m in [secrets, conf] {
        let options = m.options().clone().unwrap_or_default();
        for o in ["ro", "rprivate", "nosuid", "nodev", "noexec"] {
            assert!(options.contains(&o.to_owned()), "{o} in {options:?}");
        }
    }
    // /run (a tmpfs of a host task) first, so /run/secrets can be made on
    // it; the service's /etc before the config, which it would hide.
    assert!(index("/run") < index("/run/secrets"));
    assert!(index("/etc") < index("/etc/app.conf"));
    assert!(index("/etc/app.conf") < index(INIT_PATH));
    // The data is in no field of config.json.
    let json = serde_json::to_string(&config).expect("test");
    assert!(!json.contains("hunter2"), "{json}");
    // A mount over the secrets would hide them.
    let hidden = TaskSpec {
        mounts: vec![Mount::Tmpfs {
            target: "/run/secrets/x".into(),
            size: None,
        }],
        ..s.clone()
    };
    assert_eq!(
        field(hidden.validate().map(|()| config.clone())),
        Some("mounts")
    );
}

#[test]
fn resources_become_cgroup_limits() {
    let config = build(&TaskSpec {
        resources: Resources {
            cpu_nanos_limit: Some(1_500_000_000),
            memory_limit: Some(32 << 20),
            pids_limit: Some(100),
            cpu_nanos_reservation: Some(500_000_000),
            memory_reservation: Some(16 << 20),
        },
        sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
        ..spec()
    })
    .expect("test");
    let linux = config.linux().as_ref().expect("test");
    let r = linux.resources().as_ref().expect("test");
    let cpu = r.cpu().as_ref().expect("test");
    assert_eq!(
        (cpu.quota(), cpu.period(), cpu.shares()),
        (Some(150_000), Some(100_000), Some(512))
    );
    let mem = r.memory().as_ref().expect("test");
    assert_eq!(
        (mem.limit(), mem.reservation()),
        (Some(32 << 20), Some(16 << 20))
    );
    assert_eq!(r.pids().as_ref().map(|p| p.limit()), Some(100));
    assert_eq!(
        linux
            .sysctl()
            .as_ref()
            .and_then(|s| s.get("net.ipv4.ip_forward").cloned()),
        Some("1".into())
    );
}

#[test]
fn init_wraps_the_command_and_is_mounted() {
    let config = build(&TaskSpec {
        init: true,
        ..spec()
    })
    .expect("test");
    let args = config
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .expect("test");
    assert_eq!(args, strings(&[INIT_PATH, "init", "--", "sleep", "1"]));
    assert!(
        config
            .mounts()
            .iter()
            .flatten()
            .any(|m| m.destination() == Path::new(INIT_PATH))
    );
}

#[test]
fn stop_signals_parse_by_name_or_number() {
    assert_eq!(parse_signal("SIGQUIT"), Some(Signal::SIGQUIT));
    assert_eq!(parse_signal("quit"), Some(Signal::SIGQUIT));
    assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
    assert_eq!(parse_signal("SIGNOPE"), None);
    let s = TaskSpec {
        root: image(ImageDefaults {
            stop_signal: Some("SIGINT".into()),
            cmd: strings(&["x"]),
            ..ImageDefaults::default()
        }),
        ..spec()
    };
    assert_eq!(stop_signal(&s).expect("test"), Signal::SIGINT);
    assert_eq!(stop_signal(&spec()).expect("test"), Signal::SIGTERM);
    let bad = TaskSpec {
        stop_signal: Some("NOPE".into()),
        ..spec()
    };
    assert!(matches!(
        stop_signal(&bad),
        Err(RuntimeError::InvalidSpec {
            field: "stop_signal",
            ..
        })
    ));
}

#[test]
fn the_hosts_file_names_the_task() {
    let hosts = hosts_file("web.1", &[], &spec().attachments);
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
    assert!(hosts.ends_with("10.0.1.2\tweb.1\n"));
}

#[test]
fn extra_hosts_come_before_the_tasks_own_lines() {
    let extra = ["10.0.0.5 db cache".to_owned()];
    let hosts = hosts_file("web.1", &extra, &spec().attachments);
    assert!(
        hosts.ends_with("ff02::2\tip6-allrouters\n10.0.0.5\tdb cache\n10.0.1.2\tweb.1\n"),
        "{hosts}"
    );
}

#[test]
fn ulimits_become_the_process_rlimits() {
    let config = build(&TaskSpec {
        rlimits: vec![
            crate::Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 2048,
            },
            crate::Rlimit {
                kind: "RLIMIT_CORE".into(),
                soft: crate::RLIM_INFINITY,
                hard: crate::RLIM_INFINITY,
            },
        ],
        ..spec()
    });
    let json = config.map(|c| serde_json::to_value(&c).unwrap_or_default());
    let rlimits = json.map(|j| j["process"]["rlimits"].clone());
    assert_eq!(
        rlimits.ok(),
        Some(serde_json::json!([
            {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048},
            {"type": "RLIMIT_CORE", "soft": u64::MAX, "hard": u64::MAX},
        ]))
    );
}
