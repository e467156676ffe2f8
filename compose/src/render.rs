//! The merged, interpolated stack printed the way `docker stack config`
//! prints it: docker's type fields in their declaration order, maps sorted
//! by key, empty values left out, and yaml.v3's scalar styles (quoted when
//! the text would read back as something else, `'…'` when it starts with
//! an indicator, literal blocks for multi-line text, long lines folded past
//! column 80).

use std::collections::BTreeMap;

use crate::model::*;
use crate::units::format_cpus;
use crate::yaml::{Value, resolve_plain};

/// An output value.
enum Y {
    Null,
    Bool(bool),
    Int(i128),
    Float(String),
    Str(String),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
}

/// Builds a mapping, leaving out empty values (docker's `omitempty`).
#[derive(Default)]
struct M(Vec<(String, Y)>);

impl M {
    fn put(&mut self, key: &str, v: Y) -> &mut Self {
        self.0.push((key.to_string(), v));
        self
    }
    fn s(&mut self, key: &str, v: &Option<String>) -> &mut Self {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            self.put(key, Y::Str(v.clone()));
        }
        self
    }
    fn s_str(&mut self, key: &str, v: &str) -> &mut Self {
        if !v.is_empty() {
            self.put(key, Y::Str(v.to_string()));
        }
        self
    }
    fn list(&mut self, key: &str, v: &[String]) -> &mut Self {
        if !v.is_empty() {
            self.put(key, Y::Seq(v.iter().cloned().map(Y::Str).collect()));
        }
        self
    }
    fn map(&mut self, key: &str, v: &BTreeMap<String, String>) -> &mut Self {
        if !v.is_empty() {
            self.put(
                key,
                Y::Map(
                    v.iter()
                        .map(|(k, v)| (k.clone(), Y::Str(v.clone())))
                        .collect(),
                ),
            );
        }
        self
    }
    fn flag(&mut self, key: &str, v: bool) -> &mut Self {
        if v {
            self.put(key, Y::Bool(true));
        }
        self
    }
    fn dur(&mut self, key: &str, v: Option<Duration>) -> &mut Self {
        if let Some(d) = v {
            self.put(key, Y::Str(d.to_string()));
        }
        self
    }
    fn int(&mut self, key: &str, v: Option<i128>) -> &mut Self {
        if let Some(i) = v {
            self.put(key, Y::Int(i));
        }
        self
    }
    fn nested(&mut self, key: &str, m: M) -> &mut Self {
        if !m.0.is_empty() {
            self.put(key, Y::Map(m.0));
        }
        self
    }
    fn done(self) -> Y {
        Y::Map(self.0)
    }
}

/// Prints `config` as `docker stack config` would.
pub fn render(config: &Config) -> String {
    let mut top = M::default();
    top.put("version", Y::Str(config.version.clone()));
    top.put(
        "services",
        Y::Map(
            config
                .services
                .iter()
                .map(|(k, s)| (k.clone(), service(s)))
                .collect(),
        ),
    );
    if !config.networks.is_empty() {
        top.put(
            "networks",
            Y::Map(
                config
                    .networks
                    .iter()
                    .map(|(k, n)| (k.clone(), network(n)))
                    .collect(),
            ),
        );
    }
    if !config.volumes.is_empty() {
        top.put(
            "volumes",
            Y::Map(
                config
                    .volumes
                    .iter()
                    .map(|(k, v)| (k.clone(), volume(v)))
                    .collect(),
            ),
        );
    }
    if !config.secrets.is_empty() {
        top.put(
            "secrets",
            Y::Map(
                config
                    .secrets
                    .iter()
                    .map(|(k, o)| (k.clone(), file_object(o)))
                    .collect(),
            ),
        );
    }
    if !config.configs.is_empty() {
        top.put(
            "configs",
            Y::Map(
                config
                    .configs
                    .iter()
                    .map(|(k, o)| (k.clone(), file_object(o)))
                    .collect(),
            ),
        );
    }
    let mut out = String::new();
    emit_map_body(&mut out, &top.0, 0);
    out
}

/// docker's `External` prints as a bare boolean once the loader has moved
/// any `external.name` to `name`.
fn external(m: &mut M, external: bool) {
    m.flag("external", external);
}

fn network(n: &Network) -> Y {
    let mut m = M::default();
    m.s("name", &n.name)
        .s("driver", &n.driver)
        .map("driver_opts", &n.driver_opts);
    let mut ipam = M::default();
    ipam.s("driver", &n.ipam.driver);
    if !n.ipam.subnets.is_empty() {
        ipam.put(
            "config",
            Y::Seq(
                n.ipam
                    .subnets
                    .iter()
                    .map(|s| {
                        let mut p = M::default();
                        p.s_str("subnet", s);
                        p.done()
                    })
                    .collect(),
            ),
        );
    }
    m.nested("ipam", ipam);
    external(&mut m, n.external);
    m.flag("internal", n.internal)
        .flag("attachable", n.attachable)
        .map("labels", &n.labels);
    m.done()
}

fn volume(v: &Volume) -> Y {
    let mut m = M::default();
    m.s("name", &v.name)
        .s("driver", &v.driver)
        .map("driver_opts", &v.driver_opts);
    external(&mut m, v.external);
    m.map("labels", &v.labels);
    m.done()
}

fn file_object(o: &FileObject) -> Y {
    let mut m = M::default();
    m.s("name", &o.name);
    if let Some(f) = &o.file {
        m.put("file", Y::Str(f.display().to_string()));
    }
    external(&mut m, o.external);
    m.map("labels", &o.labels)
        .s("driver", &o.driver)
        .map("driver_opts", &o.driver_opts)
        .s("template_driver", &o.template_driver);
    m.done()
}

fn file_refs(refs: &[FileReference]) -> Y {
    Y::Seq(
        refs.iter()
            .map(|r| {
                let mut m = M::default();
                m.s_str("source", &r.source)
                    .s("target", &r.target)
                    .s("uid", &r.uid)
                    .s("gid", &r.gid);
                m.int("mode", r.mode.map(i128::from));
                m.done()
            })
            .collect(),
    )
}

fn update_config(u: &UpdateConfig) -> Y {
    let mut m = M::default();
    m.int("parallelism", u.parallelism.map(i128::from));
    if u.delay != Duration::ZERO {
        m.put("delay", Y::Str(u.delay.to_string()));
    }
    m.s("failure_action", &u.failure_action);
    if u.monitor != Duration::ZERO {
        m.put("monitor", Y::Str(u.monitor.to_string()));
    }
    if u.max_failure_ratio != 0.0 {
        m.put(
            "max_failure_ratio",
            Y::Float(go_float32(u.max_failure_ratio)),
        );
    }
    if let Some(o) = u.order {
        m.put("order", Y::Str(o.as_str().into()));
    }
    m.done()
}

fn deploy(d: &Deploy) -> M {
    let mut m = M::default();
    m.s("mode", &d.mode)
        .int("replicas", d.replicas.map(i128::from))
        .map("labels", &d.labels);
    if let Some(u) = &d.update_config {
        m.put("update_config", update_config(u));
    }
    if let Some(u) = &d.rollback_config {
        m.put("rollback_config", update_config(u));
    }
    let mut res = M::default();
    if let Some(l) = &d.resources.limits {
        let mut lm = M::default();
        if let Some(c) = l.nano_cpus {
            lm.put("cpus", Y::Str(format_cpus(c)));
        }
        if let Some(b) = l.memory_bytes.filter(|&b| b != 0) {
            lm.put("memory", Y::Str(b.to_string()));
        }
        lm.int("pids", l.pids.filter(|&p| p != 0).map(i128::from));
        res.put("limits", lm.done());
    }
    if let Some(r) = &d.resources.reservations {
        let mut rm = M::default();
        if let Some(c) = r.nano_cpus {
            rm.put("cpus", Y::Str(format_cpus(c)));
        }
        if let Some(b) = r.memory_bytes.filter(|&b| b != 0) {
            rm.put("memory", Y::Str(b.to_string()));
        }
        if !r.generic_resources.is_empty() {
            rm.put(
                "generic_resources",
                Y::Seq(
                    r.generic_resources
                        .iter()
                        .map(|g| {
                            let mut spec = M::default();
                            spec.s_str("kind", &g.kind);
                            if g.value != 0 {
                                spec.put("value", Y::Int(g.value.into()));
                            }
                            let mut outer = M::default();
                            outer.nested("discrete_resource_spec", spec);
                            outer.done()
                        })
                        .collect(),
                ),
            );
        }
        res.put("reservations", rm.done());
    }
    m.nested("resources", res);
    if let Some(r) = &d.restart_policy {
        let mut rm = M::default();
        rm.s("condition", &r.condition)
            .dur("delay", r.delay)
            .int("max_attempts", r.max_attempts.map(i128::from))
            .dur("window", r.window);
        m.put("restart_policy", rm.done());
    }
    let mut p = M::default();
    p.list("constraints", &d.placement.constraints);
    if !d.placement.preferences.is_empty() {
        p.put(
            "preferences",
            Y::Seq(
                d.placement
                    .preferences
                    .iter()
                    .map(|s| {
                        let mut pm = M::default();
                        pm.s_str("spread", s);
                        pm.done()
                    })
                    .collect(),
            ),
        );
    }
    p.int(
        "max_replicas_per_node",
        d.placement.max_replicas_per_node.map(i128::from),
    );
    m.nested("placement", p);
    m.s("endpoint_mode", &d.endpoint_mode);
    m
}

fn service(s: &Service) -> Y {
    let mut m = M::default();
    m.list("cap_add", &s.cap_add)
        .list("cap_drop", &s.cap_drop)
        .list("command", &s.command);
    if !s.configs.is_empty() {
        m.put("configs", file_refs(&s.configs));
    }
    if let Some(c) = &s.credential_spec {
        let mut cm = M::default();
        cm.s("config", &c.config)
            .s("file", &c.file)
            .s("registry", &c.registry);
        m.nested("credential_spec", cm);
    }
    m.list("depends_on", &s.depends_on);
    m.nested("deploy", deploy(&s.deploy));
    m.list("dns", &s.dns)
        .list("dns_search", &s.dns_search)
        .list("entrypoint", &s.entrypoint);
    if !s.environment.is_empty() {
        m.put(
            "environment",
            Y::Map(
                s.environment
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().map_or(Y::Null, Y::Str)))
                    .collect(),
            ),
        );
    }
    m.list("env_file", &s.env_file)
        .list("extra_hosts", &s.extra_hosts)
        .s("hostname", &s.hostname);
    if let Some(h) = &s.healthcheck {
        let mut hm = M::default();
        hm.list("test", &h.test)
            .dur("timeout", h.timeout)
            .dur("interval", h.interval)
            .int("retries", h.retries.map(i128::from))
            .dur("start_period", h.start_period)
            .dur("start_interval", h.start_interval)
            .flag("disable", h.disable);
        m.put("healthcheck", hm.done());
    }
    m.s_str("image", &s.image);
    if let Some(i) = s.init {
        m.put("init", Y::Bool(i));
    }
    m.s("isolation", &s.isolation).map("labels", &s.labels);
    if let Some(l) = &s.logging {
        let mut lm = M::default();
        lm.s("driver", &l.driver);
        if let Some(o) = &l.options {
            lm.map("options", o);
        }
        m.put("logging", lm.done());
    }
    if !s.networks.is_empty() {
        m.put(
            "networks",
            Y::Map(
                s.networks
                    .iter()
                    .map(|(k, n)| {
                        let v = match n {
                            None => Y::Null,
                            Some(n) => {
                                let mut nm = M::default();
                                nm.list("aliases", &n.aliases)
                                    .map("driver_opts", &n.driver_opts)
                                    .s("ipv4_address", &n.ipv4_address)
                                    .s("ipv6_address", &n.ipv6_address);
                                nm.done()
                            }
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
        );
    }
    if !s.ports.is_empty() {
        m.put(
            "ports",
            Y::Seq(
                s.ports
                    .iter()
                    .map(|p| {
                        let mut pm = M::default();
                        pm.s("mode", &p.mode);
                        if p.target != 0 {
                            pm.put("target", Y::Int(p.target.into()));
                        }
                        pm.int("published", p.published.map(i128::from));
                        pm.s("protocol", &p.protocol);
                        pm.done()
                    })
                    .collect(),
            ),
        );
    }
    m.flag("read_only", s.read_only).s("restart", &s.restart);
    if !s.secrets.is_empty() {
        m.put("secrets", file_refs(&s.secrets));
    }
    m.flag("stdin_open", s.stdin_open)
        .dur("stop_grace_period", s.stop_grace_period)
        .s("stop_signal", &s.stop_signal)
        .map("sysctls", &s.sysctls)
        .list("tmpfs", &s.tmpfs)
        .flag("tty", s.tty);
    if !s.ulimits.is_empty() {
        m.put(
            "ulimits",
            Y::Map(
                s.ulimits
                    .iter()
                    .map(|(k, u)| {
                        let v = match *u {
                            Ulimit::Single(n) => Y::Int(n.into()),
                            Ulimit::SoftHard { soft, hard } => Y::Map(vec![
                                ("soft".into(), Y::Int(soft.into())),
                                ("hard".into(), Y::Int(hard.into())),
                            ]),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
        );
    }
    m.s("user", &s.user);
    if !s.volumes.is_empty() {
        m.put(
            "volumes",
            Y::Seq(s.volumes.iter().map(service_volume).collect()),
        );
    }
    m.s("working_dir", &s.working_dir);
    m.done()
}

fn service_volume(v: &ServiceVolume) -> Y {
    let mut m = M::default();
    m.s_str("type", v.kind.as_str())
        .s("source", &v.source)
        .s_str("target", &v.target);
    m.flag("read_only", v.read_only)
        .s("consistency", &v.consistency);
    if let Some(b) = &v.bind {
        let mut bm = M::default();
        bm.s("propagation", &b.propagation);
        m.put("bind", bm.done());
    }
    if let Some(o) = &v.volume {
        let mut om = M::default();
        om.flag("nocopy", o.nocopy).s("subpath", &o.subpath);
        m.put("volume", om.done());
    }
    if let Some(t) = &v.tmpfs {
        let mut tm = M::default();
        tm.int("size", t.size.filter(|&s| s != 0).map(i128::from));
        m.put("tmpfs", tm.done());
    }
    m.done()
}

/// yaml.v3 prints a float32 with 32-bit shortest digits.
fn go_float32(f: f32) -> String {
    let s = format!("{f:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..21).contains(&exp) {
        format!("{}", f)
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    }
}

const WIDTH: usize = 80;

fn emit_map_body(out: &mut String, entries: &[(String, Y)], indent: usize) {
    for (k, v) in entries {
        out.push_str(&" ".repeat(indent));
        let key = scalar(k, indent, indent + 2);
        out.push_str(&key);
        out.push(':');
        emit_value(out, v, indent, indent + 2);
    }
}

/// Emits a value after `key:` (or `-`), starting on the same line.
fn emit_value(out: &mut String, v: &Y, indent: usize, child: usize) {
    match v {
        Y::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Y::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Y::Map(entries) => {
            out.push('\n');
            emit_map_body(out, entries, child);
        }
        Y::Seq(items) => {
            out.push('\n');
            emit_seq(out, items, child);
        }
        scalar_value => {
            out.push(' ');
            out.push_str(&scalar_text(scalar_value, out_column(out), indent + 2));
            out.push('\n');
        }
    }
}

fn out_column(out: &str) -> usize {
    out.len() - out.rfind('\n').map_or(0, |i| i + 1)
}

fn emit_seq(out: &mut String, items: &[Y], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Y::Map(entries) if !entries.is_empty() => {
                // The first entry shares the dash's line.
                let (k, v) = &entries[0];
                out.push(' ');
                out.push_str(&scalar(k, indent + 2, indent + 4));
                out.push(':');
                emit_value(out, v, indent + 2, indent + 4);
                emit_map_body(out, &entries[1..], indent + 2);
            }
            other => emit_value(out, other, indent, indent + 2),
        }
    }
}

fn scalar_text(v: &Y, column: usize, cont: usize) -> String {
    match v {
        Y::Null => "null".into(),
        Y::Bool(b) => b.to_string(),
        Y::Int(i) => i.to_string(),
        Y::Float(f) => f.clone(),
        Y::Str(s) => {
            let text = scalar(s, column, cont);
            if text.starts_with('|') {
                // Literal block: lines indented one level under the key.
                let mut lines = text.lines();
                let header = lines.next().unwrap_or("|");
                let body: Vec<String> = lines
                    .map(|l| {
                        if l.is_empty() {
                            String::new()
                        } else {
                            format!("{}{l}", " ".repeat(cont))
                        }
                    })
                    .collect();
                format!("{header}\n{}", body.join("\n"))
            } else {
                text
            }
        }
        Y::Seq(_) | Y::Map(_) => String::new(),
    }
}

fn is_old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// yaml.v3's `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    while b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        i += 1;
        let start = i;
        while i < b.len() && i - start < 2 && b[i].is_ascii_digit() {
            i += 1;
        }
        let group = &b[start..i];
        let ok = match group.len() {
            1 => true,
            2 => group[0] <= b'5',
            _ => false,
        };
        if !ok {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

fn printable(c: char) -> bool {
    c == '\n' || (' '..='~').contains(&c) || (c as u32 >= 0xA0 && c != '\u{feff}')
}

/// A string scalar in yaml.v3's style (plain, single-quoted,
/// double-quoted or literal), `column` being where it starts and `cont`
/// the indent of folded continuation lines.
fn scalar(s: &str, column: usize, cont: usize) -> String {
    let resolves_to_string = matches!(resolve_plain(s), Value::Str(_)) && !s.is_empty();
    let plain_candidate = resolves_to_string && !is_base60_float(s) && !is_old_bool(s);
    let special = s.chars().any(|c| !printable(c));
    if s.contains('\n') && !special {
        let trailing_space = s.lines().any(|l| l.ends_with(' '));
        if !trailing_space {
            return literal(s);
        }
    }
    if !plain_candidate {
        return double_quoted(s);
    }
    if !special && plain_allowed(s) {
        return fold(s, column, cont);
    }
    if !(special || s.contains('\n')) {
        return fold(&format!("'{}'", s.replace('\'', "''")), column, cont);
    }
    double_quoted(s)
}

fn plain_allowed(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    if chars.first() == Some(&' ') || chars.last() == Some(&' ') {
        return false;
    }
    for (i, &c) in chars.iter().enumerate() {
        let next_blank = chars.get(i + 1).is_none_or(|n| *n == ' ' || *n == '\t');
        let prev_blank = i > 0 && (chars[i - 1] == ' ' || chars[i - 1] == '\t');
        if i == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(c) {
                return false;
            }
            if (c == '?' || c == ':' || c == '-') && next_blank {
                return false;
            }
        } else {
            if c == ':' && next_blank {
                return false;
            }
            if c == '#' && prev_blank {
                return false;
            }
        }
    }
    true
}

/// libyaml folds plain and quoted scalars at a space once past column 80.
fn fold(s: &str, column: usize, cont: usize) -> String {
    let mut out = String::new();
    let mut col = column;
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' '
            && col > WIDTH
            && i > 0
            && i + 1 < chars.len()
            && chars[i - 1] != ' '
            && chars[i + 1] != ' '
        {
            out.push('\n');
            out.push_str(&" ".repeat(cont));
            col = cont;
            continue;
        }
        out.push(c);
        col += 1;
    }
    out
}

fn literal(s: &str) -> String {
    let chomp = if !s.ends_with('\n') {
        "-"
    } else if s.ends_with("\n\n") {
        "+"
    } else {
        ""
    };
    let indicator = if s.starts_with(' ') { "2" } else { "" };
    let body = s.strip_suffix('\n').unwrap_or(s);
    format!("|{indicator}{chomp}\n{body}")
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if !printable(c) => {
                let n = c as u32;
                if n <= 0xFF {
                    out.push_str(&format!("\\x{n:02X}"));
                } else if n <= 0xFFFF {
                    out.push_str(&format!("\\u{n:04X}"));
                } else {
                    out.push_str(&format!("\\U{n:08X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected styles checked with `docker stack config` (docker CLI 28).
    #[test]
    fn scalar_styles_like_yaml_v3() {
        let s = |t: &str| scalar(t, 10, 8);
        assert_eq!(s("x: y"), "'x: y'");
        assert_eq!(s("*star"), "'*star'");
        assert_eq!(s(" lead"), "' lead'");
        assert_eq!(s("a #b"), "'a #b'");
        assert_eq!(s("10:30"), "\"10:30\"");
        assert_eq!(s("line1\nline2"), "|-\nline1\nline2");
        assert_eq!(s("tab\there"), "\"tab\\there\"");
        assert_eq!(s("-dash"), "-dash");
        assert_eq!(s("- dash"), "'- dash'");
        assert_eq!(s("it's"), "it's");
        assert_eq!(s("@at"), "'@at'");
        assert_eq!(s("true"), "\"true\"");
        assert_eq!(s("0x10"), "\"0x10\"");
        assert_eq!(s("1e3"), "\"1e3\"");
        assert_eq!(s("~"), "\"~\"");
        assert_eq!(s("trail "), "'trail '");
        assert_eq!(s("line1\nline2\n"), "|\nline1\nline2");
        assert_eq!(s("%pct"), "'%pct'");
        assert_eq!(s("ünï"), "ünï");
        assert_eq!(s("?q"), "?q");
        assert_eq!(s("null"), "\"null\"");
        assert_eq!(s("n"), "\"n\"");
        assert_eq!(s("NaN"), "NaN");
        assert_eq!(s(".5"), "\".5\"");
        assert_eq!(s(""), "\"\"");
        assert_eq!(s("8080:80"), "8080:80");
        assert_eq!(s("3.13"), "\"3.13\"");
    }

    #[test]
    fn long_plain_lines_fold_past_column_80() {
        let long = "word ".repeat(30);
        let long = long.trim_end();
        let folded = scalar(long, 10, 8);
        assert!(folded.contains("\n        word"), "{folded}");
        assert_eq!(folded.replace("\n        ", " "), long);
    }

    #[test]
    fn shapes() {
        let mut c = Config {
            version: "3.13".into(),
            ..Config::default()
        };
        let mut s = Service {
            image: "nginx".into(),
            ..Service::default()
        };
        s.networks.insert("back".into(), None);
        s.networks.insert(
            "front".into(),
            Some(ServiceNetwork {
                aliases: vec!["w1".into()],
                ..ServiceNetwork::default()
            }),
        );
        s.ports.push(Port {
            mode: Some("ingress".into()),
            target: 80,
            published: Some(8080),
            protocol: Some("tcp".into()),
        });
        s.environment.insert("A".into(), Some("1".into()));
        s.environment.insert("B".into(), None);
        c.services.insert("web".into(), s);
        c.networks.insert("some".into(), Network::default());
        assert_eq!(
            render(&c),
            "version: \"3.13\"\nservices:\n  web:\n    environment:\n      A: \"1\"\n      B: null\n    \
             image: nginx\n    networks:\n      back: null\n      front:\n        aliases:\n          - w1\n    \
             ports:\n      - mode: ingress\n        target: 80\n        published: 8080\n        protocol: tcp\n\
             networks:\n  some: {}\n"
        );
    }
}
