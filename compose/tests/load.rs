//! The loader end to end: files in, typed stack or docker's error out.
//! Expected values were worked out from docker's rules and, where marked,
//! checked against `docker stack config` / `docker stack deploy` of docker
//! CLI 28.2.2.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use proptest::prelude::*;
use shoal_compose::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load1(text: &str) -> Result<Loaded, Error> {
    load(
        &[Source::new("compose.yml", text)],
        Path::new("/stack"),
        &HashMap::new(),
    )
}

fn err(text: &str) -> String {
    load1(text).expect_err("must fail").to_string()
}

fn ok(text: &str) -> Config {
    load1(text).unwrap_or_else(|e| panic!("{e}")).config
}

// ---- The course notes' multi-file example -------------------------------
//
// The notes show compose v1 files (services at the top level); docker stack
// deploy refuses those, so the files below are the same services under
// `services:` with a 3.x version, as a stack needs them.

const BASE: &str = r#"version: "3.8"
services:
  web:
    image: example/my_web_app:latest
    depends_on:
      - db
      - cache
  db:
    image: postgres:latest
  cache:
    image: redis:latest
"#;

const OVERRIDE: &str = r#"version: "3.8"
services:
  web:
    build: .
    volumes:
      - '.:/code'
    ports:
      - 8883:80
    environment:
      DEBUG: 'true'
  db:
    command: '-d'
    ports:
      - 5432:5432
  cache:
    ports:
      - 6379:6379
"#;

const PROD: &str = r#"version: "3.8"
services:
  web:
    ports:
      - 80:80
    environment:
      PRODUCTION: 'true'
  cache:
    environment:
      TTL: '500'
"#;

fn ingress(target: u32, published: u32) -> Port {
    Port {
        mode: Some("ingress".into()),
        target,
        published: Some(published),
        protocol: Some("tcp".into()),
    }
}

fn some_env(pairs: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}

#[test]
fn course_base_and_prod() {
    let loaded = load(
        &[
            Source::new("docker-compose.yml", BASE),
            Source::new("docker-compose.prod.yml", PROD),
        ],
        Path::new("/course"),
        &HashMap::new(),
    )
    .expect("loads");
    let c = loaded.config;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(c.version, "3.8");
    assert_eq!(
        c.services.keys().collect::<Vec<_>>(),
        ["cache", "db", "web"]
    );
    let web = &c.services["web"];
    assert_eq!(web.image, "example/my_web_app:latest");
    assert_eq!(web.depends_on, ["db", "cache"]);
    assert_eq!(web.environment, some_env(&[("PRODUCTION", "true")]));
    assert_eq!(web.ports, [ingress(80, 80)]);
    assert!(web.volumes.is_empty());
    let cache = &c.services["cache"];
    assert_eq!(cache.image, "redis:latest");
    assert_eq!(cache.environment, some_env(&[("TTL", "500")]));
    assert!(cache.ports.is_empty());
    assert_eq!(
        c.services["db"],
        Service {
            image: "postgres:latest".into(),
            ..Service::default()
        }
    );
}

#[test]
fn course_base_override_and_prod() {
    let loaded = load(
        &[
            Source::new("docker-compose.yml", BASE),
            Source::new("docker-compose.override.yml", OVERRIDE),
            Source::new("docker-compose.prod.yml", PROD),
        ],
        Path::new("/course"),
        &HashMap::new(),
    )
    .expect("loads");
    // `build` is warned about and dropped (checked with docker stack deploy).
    assert_eq!(loaded.warnings, ["Ignoring unsupported options: build"]);
    let c = loaded.config;
    let web = &c.services["web"];
    assert_eq!(web.image, "example/my_web_app:latest");
    assert_eq!(web.depends_on, ["db", "cache"]);
    // Environment maps merge per key.
    assert_eq!(
        web.environment,
        some_env(&[("DEBUG", "true"), ("PRODUCTION", "true")])
    );
    // Ports merge by published port and come out sorted by it.
    assert_eq!(web.ports, [ingress(80, 80), ingress(80, 8883)]);
    // The bind source is relative to the first file's directory.
    assert_eq!(
        web.volumes,
        [ServiceVolume {
            kind: MountType::Bind,
            source: Some("/course".into()),
            target: "/code".into(),
            ..ServiceVolume::default()
        }]
    );
    let db = &c.services["db"];
    assert_eq!(db.command, ["-d"]);
    assert_eq!(db.ports, [ingress(5432, 5432)]);
    let cache = &c.services["cache"];
    assert_eq!(cache.ports, [ingress(6379, 6379)]);
    assert_eq!(cache.environment, some_env(&[("TTL", "500")]));
}

#[test]
fn course_files_as_written_are_refused_like_docker() {
    // The notes' v1 layout (checked with docker stack config).
    let v1 = "web:\n  image: example/my_web_app:latest\n";
    assert_eq!(
        err(v1),
        "compose.yml:1:1: (root): Additional property web is not allowed"
    );
}

// ---- One file, many keys (checked against docker stack config) ----------

const FULL: &str = r#"version: "3.13"
x-top: {a: 1}
services:
  web:
    image: nginx:1.25
    command: echo "hello world" 'a b' c\ d
    entrypoint: ["/bin/sh", "-c"]
    environment:
      - A=1
      - B
      - C=
    env_file: ./e.env
    ports:
      - "8080:80"
      - "127.0.0.1:8081:81/udp"
      - "3000-3002:4000-4002"
      - 9000
      - target: 90
        published: 9090
        mode: host
    networks:
      front:
        aliases: [w1]
      back:
    volumes:
      - data:/var/lib/data:ro
      - ./src:/src
      - type: tmpfs
        target: /tmp
        tmpfs: {size: 1000}
    secrets:
      - s1
      - source: s2
        target: /run/s2
        mode: 0440
    healthcheck:
      test: curl -f http://localhost
      interval: 1m30s
      retries: 3
    stop_grace_period: 90s
    ulimits:
      nproc: 65535
      nofile: {soft: 1, hard: 2}
    sysctls: [net.core.somaxconn=1024]
    labels: {a: "1", b: 2}
    extra_hosts: ["h:1.2.3.4"]
    logging: {driver: json-file, options: {max-size: 10m}}
    init: true
    x-svc: 1
    deploy:
      mode: replicated
      replicas: 2
      resources:
        limits: {cpus: "0.5", memory: 50M, pids: 10}
        reservations: {cpus: '0.25', memory: 1g}
      restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 2m}
      update_config: {parallelism: 2, delay: 10s, order: start-first, failure_action: rollback, monitor: 1m, max_failure_ratio: 0.5}
      placement:
        constraints: [node.role==worker]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 2
      endpoint_mode: vip
      labels: [x=y]
networks:
  front: {driver: overlay, attachable: true, ipam: {config: [{subnet: 10.1.0.0/24}]}}
  back: {external: true}
  old: {external: {name: legacy}}
volumes:
  data: {driver: local}
secrets:
  s1: {file: ./s1.txt}
  s2: {external: true}
"#;

fn full_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("e.env"), "A=fromfile\nD=d\nB\n").expect("env file");
    dir
}

#[test]
fn full_file() {
    let dir = full_dir();
    let wd = dir.path().to_str().expect("utf-8").to_string();
    let loaded = load(
        &[Source::new("full.yml", FULL)],
        dir.path(),
        &env(&[("B", "fromenv")]),
    )
    .expect("loads");
    assert_eq!(
        loaded.warnings,
        [
            "ignoring IP-address (127.0.0.1:8081:81/udp) service will listen on '0.0.0.0'",
            "network old: network.external.name is deprecated in favor of network.name",
        ]
    );
    let c = loaded.config;
    let web = &c.services["web"];
    assert_eq!(web.command, ["echo", "hello world", "a b", "c d"]);
    assert_eq!(web.entrypoint, ["/bin/sh", "-c"]);
    let mut want_env = some_env(&[("A", "1"), ("B", "fromenv"), ("C", ""), ("D", "d")]);
    assert_eq!(web.environment, want_env);
    want_env.clear();
    assert_eq!(web.env_file, ["./e.env"]);
    let p = |mode: &str, target, published: Option<u32>, proto: Option<&str>| Port {
        mode: Some(mode.into()),
        target,
        published,
        protocol: proto.map(str::to_string),
    };
    assert_eq!(
        web.ports,
        [
            p("ingress", 80, Some(8080), Some("tcp")),
            p("ingress", 81, Some(8081), Some("udp")),
            p("ingress", 4000, Some(3000), Some("tcp")),
            p("ingress", 4001, Some(3001), Some("tcp")),
            p("ingress", 4002, Some(3002), Some("tcp")),
            p("ingress", 9000, None, Some("tcp")),
            p("host", 90, Some(9090), None),
        ]
    );
    assert_eq!(web.networks["back"], None);
    assert_eq!(
        web.networks["front"].as_ref().map(|n| n.aliases.clone()),
        Some(vec!["w1".to_string()])
    );
    assert_eq!(web.volumes.len(), 3);
    assert_eq!(web.volumes[0].source.as_deref(), Some("data"));
    assert!(web.volumes[0].read_only);
    assert_eq!(web.volumes[1].source, Some(format!("{wd}/src")));
    assert_eq!(
        web.volumes[2].tmpfs,
        Some(TmpfsOptions { size: Some(1000) })
    );
    assert_eq!(web.secrets[1].mode, Some(0o440));
    assert_eq!(web.secrets[1].target.as_deref(), Some("/run/s2"));
    let h = web.healthcheck.as_ref().expect("healthcheck");
    assert_eq!(h.test, ["CMD-SHELL", "curl -f http://localhost"]);
    assert_eq!(h.interval, Some(Duration(90_000_000_000)));
    assert_eq!(h.retries, Some(3));
    assert_eq!(web.stop_grace_period, Some(Duration(90_000_000_000)));
    assert_eq!(web.ulimits["nproc"], Ulimit::Single(65535));
    assert_eq!(web.ulimits["nofile"], Ulimit::SoftHard { soft: 1, hard: 2 });
    assert_eq!(web.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(web.labels["b"], "2");
    assert_eq!(web.extra_hosts, ["h:1.2.3.4"]);
    assert_eq!(web.init, Some(true));
    let d = &web.deploy;
    assert_eq!(
        (d.mode.as_deref(), d.replicas),
        (Some("replicated"), Some(2))
    );
    let limits = d.resources.limits.as_ref().expect("limits");
    assert_eq!(
        (limits.nano_cpus, limits.memory_bytes, limits.pids),
        (Some(500_000_000), Some(52_428_800), Some(10))
    );
    let res = d.resources.reservations.as_ref().expect("reservations");
    assert_eq!(
        (res.nano_cpus, res.memory_bytes),
        (Some(250_000_000), Some(1_073_741_824))
    );
    let rp = d.restart_policy.as_ref().expect("restart policy");
    assert_eq!(rp.window, Some(Duration(120_000_000_000)));
    let u = d.update_config.as_ref().expect("update");
    assert_eq!(u.order, Some(UpdateOrder::StartFirst));
    assert_eq!(u.max_failure_ratio, 0.5);
    assert_eq!(d.placement.preferences, ["node.labels.zone"]);
    assert_eq!(d.placement.max_replicas_per_node, Some(2));
    assert_eq!(d.labels["x"], "y");
    assert_eq!(c.networks["back"].name.as_deref(), Some("back"));
    assert_eq!(c.networks["old"].name.as_deref(), Some("legacy"));
    assert_eq!(c.networks["front"].ipam.subnets, ["10.1.0.0/24"]);
    assert_eq!(
        c.secrets["s1"].file.as_deref(),
        Some(dir.path().join("s1.txt").as_path())
    );
    assert_eq!(c.secrets["s2"].name.as_deref(), Some("s2"));
}

#[test]
fn render_matches_docker_stack_config_and_round_trips() {
    let dir = full_dir();
    let wd = dir.path().to_str().expect("utf-8").to_string();
    let e = env(&[("B", "fromenv")]);
    let first = load(&[Source::new("full.yml", FULL)], dir.path(), &e)
        .expect("loads")
        .config;
    let text = render(&first);
    // docker stack config's output for FULL, less the x- keys this loader
    // drops and with this directory.
    let want = DOCKER_FULL.replace("/tmp/gochk", &wd);
    assert_eq!(text, want);
    let again = load(
        &[Source::new("rendered.yml", text.as_str())],
        dir.path(),
        &e,
    )
    .expect("rendered text loads")
    .config;
    assert_eq!(again, first);
}

const DOCKER_FULL: &str = r#"version: "3.13"
services:
  web:
    command:
      - echo
      - hello world
      - a b
      - c d
    deploy:
      mode: replicated
      replicas: 2
      labels:
        x: "y"
      update_config:
        parallelism: 2
        delay: 10s
        failure_action: rollback
        monitor: 1m0s
        max_failure_ratio: 0.5
        order: start-first
      resources:
        limits:
          cpus: "0.5"
          memory: "52428800"
          pids: 10
        reservations:
          cpus: "0.25"
          memory: "1073741824"
      restart_policy:
        condition: on-failure
        delay: 5s
        max_attempts: 3
        window: 2m0s
      placement:
        constraints:
          - node.role==worker
        preferences:
          - spread: node.labels.zone
        max_replicas_per_node: 2
      endpoint_mode: vip
    entrypoint:
      - /bin/sh
      - -c
    environment:
      A: "1"
      B: fromenv
      C: ""
      D: d
    env_file:
      - ./e.env
    extra_hosts:
      - h:1.2.3.4
    healthcheck:
      test:
        - CMD-SHELL
        - curl -f http://localhost
      interval: 1m30s
      retries: 3
    image: nginx:1.25
    init: true
    labels:
      a: "1"
      b: "2"
    logging:
      driver: json-file
      options:
        max-size: 10m
    networks:
      back: null
      front:
        aliases:
          - w1
    ports:
      - mode: ingress
        target: 80
        published: 8080
        protocol: tcp
      - mode: ingress
        target: 81
        published: 8081
        protocol: udp
      - mode: ingress
        target: 4000
        published: 3000
        protocol: tcp
      - mode: ingress
        target: 4001
        published: 3001
        protocol: tcp
      - mode: ingress
        target: 4002
        published: 3002
        protocol: tcp
      - mode: ingress
        target: 9000
        protocol: tcp
      - mode: host
        target: 90
        published: 9090
    secrets:
      - source: s1
      - source: s2
        target: /run/s2
        mode: 288
    stop_grace_period: 1m30s
    sysctls:
      net.core.somaxconn: "1024"
    ulimits:
      nofile:
        soft: 1
        hard: 2
      nproc: 65535
    volumes:
      - type: volume
        source: data
        target: /var/lib/data
        read_only: true
      - type: bind
        source: /tmp/gochk/src
        target: /src
      - type: tmpfs
        target: /tmp
        tmpfs:
          size: 1000
networks:
  back:
    name: back
    external: true
  front:
    driver: overlay
    ipam:
      config:
        - subnet: 10.1.0.0/24
    attachable: true
  old:
    name: legacy
    external: true
volumes:
  data:
    driver: local
secrets:
  s1:
    file: /tmp/gochk/s1.txt
  s2:
    name: s2
    external: true
"#;

// ---- A voting-app-shaped stack, written for these tests -----------------

const VOTING: &str = r#"version: "3.9"
services:
  redis:
    image: redis:alpine
    networks:
      - frontend
    deploy:
      replicas: 1
      update_config:
        parallelism: 2
        delay: 10s
      restart_policy:
        condition: on-failure
  db:
    image: postgres:15-alpine
    environment:
      POSTGRES_USER: "postgres"
      POSTGRES_PASSWORD: "postgres"
    volumes:
      - db-data:/var/lib/postgresql/data
    networks:
      - backend
    deploy:
      placement:
        constraints: [node.role == manager]
  vote:
    image: dockersamples/examplevotingapp_vote:latest
    ports:
      - 5000:80
    networks:
      - frontend
    depends_on:
      - redis
    deploy:
      replicas: 2
      update_config:
        parallelism: 2
      restart_policy:
        condition: on-failure
  result:
    image: dockersamples/examplevotingapp_result:latest
    ports:
      - 5001:80
    networks:
      - backend
    depends_on:
      - db
    deploy:
      replicas: 1
      update_config:
        parallelism: 2
        delay: 10s
      restart_policy:
        condition: on-failure
  worker:
    image: dockersamples/examplevotingapp_worker
    networks:
      - frontend
      - backend
    deploy:
      mode: replicated
      replicas: 1
      labels: [APP=VOTING]
      restart_policy:
        condition: on-failure
        delay: 10s
        max_attempts: 3
        window: 120s
      placement:
        constraints: [node.role == manager]
  visualizer:
    image: dockersamples/visualizer:stable
    ports:
      - "8080:8080"
    stop_grace_period: 1m30s
    volumes:
      - "/var/run/docker.sock:/var/run/docker.sock"
    deploy:
      placement:
        constraints: [node.role == manager]
networks:
  frontend:
  backend:
volumes:
  db-data:
"#;

#[test]
fn voting_app_stack() {
    let c = ok(VOTING);
    assert_eq!(c.version, "3.9");
    assert_eq!(c.services.len(), 6);
    assert_eq!(c.services["vote"].ports, [ingress(80, 5000)]);
    assert_eq!(
        c.services["worker"].networks.keys().collect::<Vec<_>>(),
        ["backend", "frontend"]
    );
    let w = &c.services["worker"].deploy.restart_policy;
    assert_eq!(w.as_ref().and_then(|r| r.max_attempts), Some(3));
    assert_eq!(
        w.as_ref().and_then(|r| r.window),
        Some(Duration(120_000_000_000))
    );
    assert_eq!(
        c.services["db"].volumes[0].source.as_deref(),
        Some("db-data")
    );
    assert_eq!(c.services["visualizer"].volumes[0].kind, MountType::Bind);
    assert_eq!(
        c.networks.keys().collect::<Vec<_>>(),
        ["backend", "frontend"]
    );
    assert_eq!(c.volumes["db-data"], Volume::default());
    let again = load1(&render(&c)).expect("round trip").config;
    assert_eq!(again, c);
}

// ---- YAML as docker reads it --------------------------------------------

#[test]
fn yaml_v3_scalars_through_the_loader() {
    let c = ok(
        "services:\n  web:\n    image: a\n    secrets:\n      - source: s\n        mode: 0440\n    \
                deploy:\n      replicas: 0x3\n      update_config:\n        parallelism: 1_000\n    \
                environment:\n      A: yes\n      B: 1000000.0\n      C: \"0440\"\n      D: 0440\n\
                secrets:\n  s:\n    external: true\n",
    );
    let web = &c.services["web"];
    assert_eq!(web.secrets[0].mode, Some(288));
    assert_eq!(web.deploy.replicas, Some(3));
    assert_eq!(
        web.deploy
            .update_config
            .as_ref()
            .and_then(|u| u.parallelism),
        Some(1000)
    );
    // Checked with docker stack config: "yes" stays a string, floats print
    // as Go prints them, octal becomes its value.
    assert_eq!(web.environment["A"].as_deref(), Some("yes"));
    assert_eq!(web.environment["B"].as_deref(), Some("1e+06"));
    assert_eq!(web.environment["C"].as_deref(), Some("0440"));
    assert_eq!(web.environment["D"].as_deref(), Some("288"));
}

#[test]
fn yaml_11_booleans_are_refused_where_a_boolean_is_needed() {
    // yaml.v3 decodes `yes` into a string; docker's schema then refuses it.
    assert_eq!(
        err("services:\n  web:\n    image: a\n    read_only: yes\n"),
        "compose.yml:4:16: services.web.read_only: must be a boolean, got \"yes\""
    );
    // …unless it comes through interpolation, where docker casts YAML 1.1.
    let c = load(
        &[Source::new(
            "c.yml",
            "services:\n  web:\n    image: a\n    read_only: ${RO}\n    tty: $T\n",
        )],
        Path::new("/"),
        &env(&[("RO", "yes"), ("T", "off")]),
    )
    .expect("loads")
    .config;
    assert!(c.services["web"].read_only);
    assert!(!c.services["web"].tty);
}

#[test]
fn anchors_and_merge_keys() {
    let c = ok(r#"version: "3.8"
x-defaults: &defaults
  image: busybox
  environment:
    A: "1"
x-deploy: &deploy
  deploy:
    replicas: 2
services:
  a:
    <<: *defaults
  b:
    <<: [*deploy, *defaults]
    image: alpine
"#);
    assert_eq!(c.services["a"].image, "busybox");
    assert_eq!(c.services["a"].environment, some_env(&[("A", "1")]));
    assert_eq!(c.services["b"].image, "alpine");
    assert_eq!(c.services["b"].deploy.replicas, Some(2));
}

#[test]
fn extension_keys_are_ignored() {
    let c = ok(
        "version: '3.9'\nx-a: {b: 1}\nservices:\n  web:\n    image: a\n    x-svc: [1]\n\
                networks:\n  n:\n    x-n: 1\nvolumes:\n  v:\n    x-v: 1\n",
    );
    assert_eq!(
        c.services["web"],
        Service {
            image: "a".into(),
            ..Service::default()
        }
    );
    assert_eq!(c.networks["n"], Network::default());
}

// ---- Interpolation --------------------------------------------------------

#[test]
fn interpolation_from_the_callers_environment_only() {
    let text = "services:\n  web:\n    image: ${REG:-docker.io}/app:${TAG}\n    labels:\n      \
                cost: $$5\n      who: ${USER-nobody}\n    environment:\n      E: ${UNSET_VAR}\n";
    let loaded = load(
        &[Source::new("c.yml", text)],
        Path::new("/"),
        &env(&[("TAG", "v2")]),
    )
    .expect("loads");
    let web = &loaded.config.services["web"];
    assert_eq!(web.image, "docker.io/app:v2");
    assert_eq!(web.labels["cost"], "$5");
    assert_eq!(web.labels["who"], "nobody");
    assert_eq!(web.environment["E"].as_deref(), Some(""));
    assert_eq!(
        loaded.warnings,
        ["The \"UNSET_VAR\" variable is not set. Defaulting to a blank string."]
    );
}

#[test]
fn required_variable_names_file_line_path_and_message() {
    let e = load(
        &[Source::new(
            "stack.yml",
            "services:\n  web:\n    image: ${IMAGE:?set the image}\n",
        )],
        Path::new("/"),
        &HashMap::new(),
    )
    .expect_err("missing");
    assert_eq!(
        e.to_string(),
        "stack.yml:3:12: services.web.image: required variable IMAGE is missing a value: set the image"
    );
}

// ---- env_file and environment ---------------------------------------------

#[test]
fn env_files_under_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.env"), "# c\nA=a\nB=b\nEMPTY=\nBARE\n").expect("a");
    std::fs::write(dir.path().join("b.env"), "B=b2\n").expect("b");
    let text = "services:\n  web:\n    image: x\n    env_file: [a.env, b.env]\n    environment:\n      \
                A: override\n      FROM_ENV:\n      NOT_SET:\n";
    let c = load(
        &[Source::new("c.yml", text)],
        dir.path(),
        &env(&[("BARE", "bare"), ("EMPTY", "filled"), ("FROM_ENV", "fe")]),
    )
    .expect("loads")
    .config;
    let e = &c.services["web"].environment;
    assert_eq!(e["A"].as_deref(), Some("override"));
    assert_eq!(e["B"].as_deref(), Some("b2"));
    // docker fills an empty value from the caller's environment.
    assert_eq!(e["EMPTY"].as_deref(), Some("filled"));
    assert_eq!(e["BARE"].as_deref(), Some("bare"));
    assert_eq!(e["FROM_ENV"].as_deref(), Some("fe"));
    assert_eq!(e["NOT_SET"], None);
    let missing = load(
        &[Source::new(
            "c.yml",
            "services:\n  web:\n    image: x\n    env_file: nope.env\n",
        )],
        dir.path(),
        &HashMap::new(),
    )
    .expect_err("missing env file")
    .to_string();
    assert!(
        missing.starts_with("c.yml:4:15: services.web.env_file: invalid env file ("),
        "{missing}"
    );
}

// ---- Versions ---------------------------------------------------------------

#[test]
fn versions() {
    for v in VERSIONS {
        let c = ok(&format!(
            "version: '{v}'\nservices:\n  web:\n    image: a\n"
        ));
        assert_eq!(c.version, v);
    }
    assert_eq!(ok("services:\n  web:\n    image: a\n").version, "3.13");
    assert_eq!(
        ok("version: '3'\nservices:\n  web:\n    image: a\n").version,
        "3.13"
    );
    assert_eq!(
        err("version: '3.14'\nservices: {}\n"),
        "compose.yml: unsupported Compose file version: 3.14"
    );
    assert_eq!(
        err("version: '2'\nservices: {}\n"),
        "compose.yml: unsupported Compose file version: 2"
    );
    assert_eq!(
        err("version: 3\nservices: {}\n"),
        "compose.yml:1:10: version: must be a string, got 3"
    );
    // A key newer than the file's version.
    assert_eq!(
        err(
            "version: '3.3'\nservices:\n  web:\n    image: a\n    healthcheck:\n      start_period: 5s\n"
        ),
        "compose.yml:6:7: services.web.healthcheck: Additional property start_period is not allowed"
    );
    // Different versions in one deploy (text checked with docker).
    let e = load(
        &[
            Source::new("a.yml", "version: '3.7'\nservices: {}\n"),
            Source::new("b.yml", "services: {}\n"),
        ],
        Path::new("/"),
        &HashMap::new(),
    )
    .expect_err("mismatch");
    assert_eq!(
        e.to_string(),
        "b.yml: version mismatched between two composefiles : 3.7 and 3.13"
    );
}

// ---- Key categories ---------------------------------------------------------

#[test]
fn unsupported_deprecated_and_ignored_keys() {
    let loaded = load1(
        "services:\n  web:\n    image: a\n    restart: always\n    build: .\n    container_name: c\n    \
         expose: ['80']\n    depends_on: [db]\n  db:\n    image: b\n    privileged: true\n",
    )
    .expect("loads");
    assert_eq!(
        loaded.warnings,
        [
            "Ignoring unsupported options: build, privileged, restart".to_string(),
            "Ignoring deprecated options:\n\ncontainer_name: Setting the container name is not supported.\
             \n\nexpose: Exposing ports is unnecessary - services on the same network can access each \
             other's containers on any port."
                .to_string(),
        ]
    );
    // `restart` is kept: docker's converter still reads it.
    assert_eq!(
        loaded.config.services["web"].restart.as_deref(),
        Some("always")
    );
    assert_eq!(loaded.config.services["web"].depends_on, ["db"]);
}

#[test]
fn forbidden_keys_are_refused_with_dockers_text() {
    assert_eq!(
        err("services:\n  web:\n    image: a\n    mem_limit: 1g\n    extends: {service: x}\n"),
        "compose.yml: Compose file contains unsupported options:\n\n\
         extends: Support for `extends` is not implemented yet.\n\n\
         mem_limit: Set resource limits using deploy.resources\n"
    );
}

#[test]
fn unknown_keys_and_wrong_types_name_file_line_and_path() {
    assert_eq!(
        err("services:\n  web:\n    image: a\n    deploy:\n      replicas: \"two\"\n"),
        "compose.yml:5:17: services.web.deploy.replicas: must be a integer, got \"two\""
    );
    assert_eq!(
        err("services:\n  web:\n    image: a\n    imagee: b\n"),
        "compose.yml:4:5: services.web: Additional property imagee is not allowed"
    );
    assert_eq!(
        err("services:\n  web:\n    image: a\n    ports: ['80:80:80:80']\n"),
        "compose.yml:4:13: services.web.ports.0: Does not match format 'ports'"
    );
}

// ---- Errors: YAML, files, references ---------------------------------------

#[test]
fn yaml_errors_name_the_position() {
    let e = err("services:\n  web:\n    image: [a\n");
    assert!(e.starts_with("compose.yml:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
    assert_eq!(err(""), "compose.yml: top-level object must be a mapping");
    assert_eq!(
        err("- a\n"),
        "compose.yml: top-level object must be a mapping"
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n  a:\n    image: y\n"),
        "compose.yml:4:3: invalid YAML: mapping key \"a\" already defined at line 2"
    );
}

#[test]
fn undefined_references_are_refused() {
    assert_eq!(
        err("services:\n  web:\n    image: a\n    networks: [nope]\n"),
        "service \"web\" uses undefined network \"nope\""
    );
    assert_eq!(
        err("services:\n  web:\n    image: a\n    secrets: [s]\n"),
        "service \"web\" uses undefined secret \"s\""
    );
    assert_eq!(
        err("services:\n  web:\n    image: a\n    configs: [c]\n"),
        "service \"web\" uses undefined config \"c\""
    );
    assert_eq!(
        err("services:\n  web:\n    image: a\n    volumes: ['data:/d']\n"),
        "service \"web\" uses undefined volume \"data\""
    );
    assert_eq!(
        err("services:\n  web:\n    environment: {}\n"),
        "invalid image reference for service web: no image specified"
    );
    // The implicit default network and bind/anonymous mounts need nothing.
    ok(
        "services:\n  web:\n    image: a\n    networks: [default]\n    volumes: ['/anon', './b:/b']\n",
    );
}

#[test]
fn conflicting_external_keys() {
    assert_eq!(
        err("services: {}\nvolumes:\n  v:\n    external: true\n    driver: local\n"),
        "compose.yml:4:5: volumes.v: conflicting parameters \"external\" and \"driver\" specified for volume \"v\""
    );
    assert_eq!(
        err("services: {}\nnetworks:\n  n:\n    name: a\n    external: {name: b}\n"),
        "compose.yml:4:5: networks.n: network n: network.external.name and network.name conflict; only use network.name"
    );
}

// ---- Merge properties --------------------------------------------------------

fn small_stack() -> impl Strategy<Value = String> {
    let port = (1u16..60000, 1u16..60000).prop_map(|(p, t)| format!("      - \"{p}:{t}\"\n"));
    let label = ("[a-z]{1,5}", "[a-z0-9]{0,5}").prop_map(|(k, v)| format!("      {k}: \"{v}\"\n"));
    (
        proptest::collection::vec(port, 0..4),
        proptest::collection::vec(label, 0..4),
        proptest::option::of(1u64..10),
        "[a-z]{1,8}",
    )
        .prop_map(|(ports, labels, replicas, image)| {
            let mut s = format!("services:\n  web:\n    image: {image}\n");
            if !ports.is_empty() {
                s.push_str("    ports:\n");
                s.extend(ports);
            }
            if !labels.is_empty() {
                s.push_str("    labels:\n");
                let mut seen = std::collections::HashSet::new();
                for l in labels {
                    let key = l.split(':').next().unwrap_or_default().to_string();
                    if seen.insert(key) {
                        s.push_str(&l);
                    }
                }
            }
            if let Some(r) = replicas {
                s.push_str(&format!("    deploy:\n      replicas: {r}\n"));
            }
            s
        })
}

proptest! {
    #[test]
    fn merging_a_file_with_itself_keeps_keyed_lists(text in small_stack()) {
        let one = load1(&text);
        prop_assume!(one.is_ok());
        let one = one.expect("checked").config;
        let two = load(&[Source::new("a.yml", text.as_str()), Source::new("b.yml", text.as_str())],
                       Path::new("/stack"), &HashMap::new()).expect("loads twice").config;
        let (a, b) = (&one.services["web"], &two.services["web"]);
        prop_assert_eq!(&a.labels, &b.labels);
        prop_assert_eq!(a.deploy.replicas, b.deploy.replicas);
        prop_assert_eq!(&a.image, &b.image);
        // Ports are de-duplicated by published port, sorted by it.
        let mut want: BTreeMap<Option<u32>, Port> = BTreeMap::new();
        for p in &a.ports {
            want.insert(p.published, p.clone());
        }
        let want: Vec<Port> = want.into_values().collect();
        if !a.ports.is_empty() {
            prop_assert_eq!(&b.ports, &want);
        }
    }

    #[test]
    fn merging_an_empty_override_is_identity(text in small_stack()) {
        let one = load1(&text);
        prop_assume!(one.is_ok());
        let one = one.expect("checked").config;
        let two = load(&[Source::new("a.yml", text.as_str()), Source::new("b.yml", "services: {}\n")],
                       Path::new("/stack"), &HashMap::new()).expect("loads").config;
        prop_assert_eq!(one, two);
    }

    #[test]
    fn load_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes).to_string();
        let _ = load1(&text);
    }

    #[test]
    fn load_never_panics_on_yamlish_text(
        lines in proptest::collection::vec(
            (0usize..4, prop_oneof![
                Just("services:"), Just("web:"), Just("image: a"), Just("ports:"), Just("- 80:80"),
                Just("- \"${X:-1}\""), Just("deploy:"), Just("replicas: 0x2"), Just("<<: *a"),
                Just("x: &a {b: 1}"), Just("volumes:"), Just("- ./a:/b:ro"), Just("networks:"),
                Just("environment:"), Just("- A"), Just("labels: [a=b]"), Just("version: '3.4'"),
                Just("healthcheck: {test: 'x', interval: 1s}"), Just("secrets: [s]"), Just("[{]"),
            ]),
            0..24,
        )
    ) {
        let text: String = lines.iter().map(|(indent, l)| format!("{}{l}\n", "  ".repeat(*indent))).collect();
        let _ = load1(&text);
    }
}

// ---- Merge edge cases, against docker stack config's own output ----------

const M1: &str = r#"version: "3.8"
services:
  s:
    image: a
    read_only: true
    environment: {A: "1", B: "2", C: "3"}
    networks:
      n1: {aliases: [x], ipv4_address: 10.0.0.2}
      n2: {aliases: [y]}
    logging: {driver: json-file}
    healthcheck: {test: [CMD, a], retries: 3}
    ports: ["81", "82", "8080:80"]
    init: true
    deploy: {replicas: 2}
networks: {n1: {}, n2: {}}
"#;

const M2: &str = r#"version: "3.8"
services:
  s:
    read_only: false
    environment: {A: "10", B: "", C: }
    networks:
      n1: {aliases: []}
      n2:
    logging: {options: {a: "1"}}
    healthcheck: {test: [CMD, b], retries: 0}
    ports: ["8080:8000", "443:443"]
    init: false
    deploy: {replicas: 0}
"#;

const DOCKER_M1_M2: &str = r#"version: "3.8"
services:
  s:
    deploy:
      replicas: 0
    environment:
      A: "10"
      B: "2"
      C: "3"
    healthcheck:
      test:
        - CMD
        - a
        - CMD
        - b
      retries: 0
    image: a
    init: true
    logging:
      driver: json-file
    networks:
      n1:
        ipv4_address: 10.0.0.2
      n2:
        aliases:
          - "y"
    ports:
      - mode: ingress
        target: 82
        protocol: tcp
      - mode: ingress
        target: 443
        published: 443
        protocol: tcp
      - mode: ingress
        target: 8000
        published: 8080
        protocol: tcp
    read_only: true
networks:
  n1: {}
  n2: {}
"#;

#[test]
fn merge_edge_cases_match_docker() {
    let c = load(
        &[Source::new("m1.yml", M1), Source::new("m2.yml", M2)],
        Path::new("/"),
        &HashMap::new(),
    )
    .expect("loads")
    .config;
    assert_eq!(render(&c), DOCKER_M1_M2);
}

const MORE: &str = include_str!("fixtures/more.yml");

/// `docker stack config -c more.yml` run in /tmp/gochk/r.
const DOCKER_MORE: &str = include_str!("fixtures/more.docker-stack-config.yml");

#[test]
fn more_keys_match_docker_stack_config() {
    let loaded = load(
        &[Source::new("more.yml", MORE)],
        Path::new("/tmp/gochk/r"),
        &HashMap::new(),
    )
    .expect("loads");
    assert_eq!(
        loaded.warnings,
        ["secret key: secret.external.name is deprecated in favor of secret.name"]
    );
    assert_eq!(render(&loaded.config), DOCKER_MORE);
    let api = &loaded.config.services["api"];
    assert_eq!(api.configs[0].mode, Some(0o644));
    assert_eq!(api.extra_hosts, ["db:10.0.0.5", "v6:::1"]);
    assert_eq!(
        api.deploy
            .rollback_config
            .as_ref()
            .and_then(|r| r.parallelism),
        Some(0)
    );
    assert_eq!(
        api.deploy
            .resources
            .reservations
            .as_ref()
            .map(|r| r.generic_resources.clone()),
        Some(vec![GenericResource {
            kind: "gpu".into(),
            value: 2
        }])
    );
}
