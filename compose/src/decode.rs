//! One schema-valid, interpolated file to the typed model, doing what
//! docker's `loadSections` does on the way: short syntaxes expanded,
//! `env_file:` and the caller's environment folded into `environment:`,
//! relative paths made absolute against the working directory, external
//! names moved to `name`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{Error, Location};
use crate::interpolate::{Seg, dotted};
use crate::model::*;
use crate::units::{self, shlex_split};
use crate::yaml::{Entry, Node, Value, go_float};
use crate::{envfile, ports, volumespec};

/// Keys docker warns about and drops (`GetUnsupportedProperties`).
pub const UNSUPPORTED: [&str; 16] = [
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "restart",
    "security_opt",
    "shm_size",
    "userns_mode",
];

/// Keys docker warns about as deprecated, with its explanation.
pub const DEPRECATED: [(&str, &str); 2] = [
    (
        "container_name",
        "Setting the container name is not supported.",
    ),
    (
        "expose",
        "Exposing ports is unnecessary - services on the same network can access each other's containers on any port.",
    ),
];

/// Keys docker refuses, with its explanation.
pub const FORBIDDEN: [(&str, &str); 8] = [
    ("extends", "Support for `extends` is not implemented yet."),
    (
        "volume_driver",
        "Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there.",
    ),
    (
        "volumes_from",
        "To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option.",
    ),
    ("cpu_quota", "Set resource limits using deploy.resources"),
    ("cpu_shares", "Set resource limits using deploy.resources"),
    ("cpuset", "Set resource limits using deploy.resources"),
    ("mem_limit", "Set resource limits using deploy.resources"),
    (
        "memswap_limit",
        "Set resource limits using deploy.resources",
    ),
];

/// docker's `versions.GreaterThanOrEqualTo` on "3.x" strings.
pub fn version_at_least(version: &str, min: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (a, b) = (parse(version), parse(min));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x > y;
        }
    }
    true
}

pub struct Decoder<'a> {
    pub file: &'a str,
    pub version: &'a str,
    pub working_dir: &'a Path,
    pub env: &'a HashMap<String, String>,
    pub warnings: &'a mut Vec<String>,
    path: Vec<Seg>,
}

type R<T> = Result<T, Error>;

impl<'a> Decoder<'a> {
    pub fn new(
        file: &'a str,
        version: &'a str,
        working_dir: &'a Path,
        env: &'a HashMap<String, String>,
        warnings: &'a mut Vec<String>,
    ) -> Decoder<'a> {
        Decoder {
            file,
            version,
            working_dir,
            env,
            warnings,
            path: Vec::new(),
        }
    }

    fn at(&self, node: &Node) -> Location {
        Location {
            file: self.file.to_string(),
            line: node.pos.line,
            col: node.pos.col,
            path: dotted(&self.path),
        }
    }

    fn invalid(&self, node: &Node, message: impl Into<String>) -> Error {
        Error::Invalid {
            at: self.at(node),
            message: message.into(),
        }
    }

    fn wrong(&self, node: &Node, want: &str) -> Error {
        Error::Schema {
            at: self.at(node),
            description: format!("must be a {want}"),
            got: Some(node.describe()),
        }
    }

    /// Runs `f` with `key` pushed on the path.
    fn under<T>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        self.path.push(Seg::Key(key.to_string()));
        let out = f(self);
        self.path.pop();
        out
    }

    fn at_index<T>(&mut self, i: usize, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        self.path.push(Seg::Index(i));
        let out = f(self);
        self.path.pop();
        out
    }

    fn entries<'n>(&self, node: &'n Node) -> R<&'n [Entry]> {
        match &node.value {
            Value::Map(e) => Ok(e),
            Value::Null => Ok(&[]),
            _ => Err(self.wrong(node, "mapping")),
        }
    }

    fn string(&self, node: &Node) -> R<String> {
        match &node.value {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(self.wrong(node, "string")),
        }
    }

    /// A string where "" means unset, as docker's omitempty strings do.
    fn opt_string(&self, node: &Node) -> R<Option<String>> {
        Ok(Some(self.string(node)?).filter(|s| !s.is_empty()))
    }

    fn boolean(&self, node: &Node) -> R<bool> {
        match node.value {
            Value::Bool(b) => Ok(b),
            _ => Err(self.wrong(node, "boolean")),
        }
    }

    fn int(&self, node: &Node) -> R<i64> {
        match node.value {
            Value::Int(i) => {
                i64::try_from(i).map_err(|_| self.invalid(node, format!("{i} overflows int")))
            }
            // mapstructure truncates floats.
            Value::Float(f) if f.is_finite() => Ok(f as i64),
            _ => Err(self.wrong(node, "integer")),
        }
    }

    /// An unsigned field: mapstructure refuses negatives.
    fn uint(&self, node: &Node) -> R<u64> {
        let v = self.int(node)?;
        u64::try_from(v).map_err(|_| self.invalid(node, format!("{v} overflows uint")))
    }

    fn duration(&self, node: &Node) -> R<Duration> {
        let s = self.string(node)?;
        Duration::parse(&s).map_err(|e| self.invalid(node, e))
    }

    fn string_list(&mut self, node: &Node) -> R<Vec<String>> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| self.at_index(i, |d| d.string(n)))
                .collect(),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.wrong(node, "list")),
        }
    }

    fn string_or_list(&mut self, node: &Node) -> R<Vec<String>> {
        match &node.value {
            Value::Str(s) => Ok(vec![s.clone()]),
            _ => self.string_list(node),
        }
    }

    /// docker's `toString`: numbers as Go prints them, null as "" (or None
    /// when `allow_nil`).
    fn scalar_text(&self, node: &Node) -> R<Option<String>> {
        Ok(match &node.value {
            Value::Null => None,
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(go_float(*f)),
            Value::Bool(b) => Some(b.to_string()),
            _ => return Err(self.wrong(node, "string, number or null")),
        })
    }

    /// `list_or_dict` as a map (`labels`, `sysctls`, `environment`): a list
    /// of `key=value` (or `key`) strings, or a mapping.
    fn mapping(&mut self, node: &Node, sep: char) -> R<BTreeMap<String, Option<String>>> {
        let mut out = BTreeMap::new();
        match &node.value {
            Value::Map(entries) => {
                for e in entries {
                    let v = self.under(&e.key, |d| d.scalar_text(&e.value))?;
                    out.insert(e.key.clone(), v);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let s = self.at_index(i, |d| d.string(item))?;
                    match s.split_once(sep) {
                        Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                        None => out.insert(s, None),
                    };
                }
            }
            Value::Null => {}
            _ => return Err(self.wrong(node, "mapping")),
        }
        Ok(out)
    }

    fn labels(&mut self, node: &Node) -> R<BTreeMap<String, String>> {
        Ok(self
            .mapping(node, '=')?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect())
    }

    fn string_map(&mut self, node: &Node) -> R<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for e in self.entries(node)? {
            let v = self.under(&e.key, |d| d.scalar_text(&e.value))?;
            out.insert(e.key.clone(), v.unwrap_or_default());
        }
        Ok(out)
    }

    /// Docker's `absPath`: relative to the working directory, cleaned.
    fn abs(&self, p: &str) -> String {
        abs_path(self.working_dir, p)
    }

    pub fn config(&mut self, root: &Node) -> R<Config> {
        let mut cfg = Config {
            version: self.version.to_string(),
            ..Config::default()
        };
        for e in self.entries(root)? {
            self.path.push(Seg::Key(e.key.clone()));
            let res = match e.key.as_str() {
                "services" => self.services(&e.value).map(|s| cfg.services = s),
                "networks" => self.networks(&e.value).map(|n| cfg.networks = n),
                "volumes" => self.volumes(&e.value).map(|v| cfg.volumes = v),
                "secrets" => self
                    .file_objects(&e.value, "secret")
                    .map(|s| cfg.secrets = s),
                "configs" => self
                    .file_objects(&e.value, "config")
                    .map(|c| cfg.configs = c),
                _ => Ok(()),
            };
            self.path.pop();
            res?;
        }
        Ok(cfg)
    }

    fn services(&mut self, node: &Node) -> R<BTreeMap<String, Service>> {
        let mut out = BTreeMap::new();
        for e in self.entries(node)? {
            let svc = self.under(&e.key, |d| d.service(&e.value))?;
            out.insert(e.key.clone(), svc);
        }
        Ok(out)
    }

    fn service(&mut self, node: &Node) -> R<Service> {
        let mut s = Service::default();
        let mut env_node = None;
        for e in self.entries(node)? {
            let v = &e.value;
            self.path.push(Seg::Key(e.key.clone()));
            let res: R<()> = (|| {
                match e.key.as_str() {
                    "cap_add" => s.cap_add = self.string_list(v)?,
                    "cap_drop" => s.cap_drop = self.string_list(v)?,
                    "command" => s.command = self.shell_command(v)?,
                    "configs" => s.configs = self.file_references(v)?,
                    "credential_spec" => {
                        let mut c = CredentialSpec::default();
                        for f in self.entries(v)? {
                            let val = self.under(&f.key, |d| d.opt_string(&f.value))?;
                            match f.key.as_str() {
                                "config" => c.config = val,
                                "file" => c.file = val,
                                "registry" => c.registry = val,
                                _ => {}
                            }
                        }
                        s.credential_spec = Some(c);
                    }
                    "depends_on" => s.depends_on = self.string_list(v)?,
                    "deploy" => s.deploy = self.deploy(v)?,
                    "dns" => s.dns = self.string_or_list(v)?,
                    "dns_search" => s.dns_search = self.string_or_list(v)?,
                    "entrypoint" => s.entrypoint = self.shell_command(v)?,
                    "environment" => env_node = Some(v),
                    "env_file" => s.env_file = self.string_or_list(v)?,
                    "extra_hosts" => s.extra_hosts = self.hosts(v)?,
                    "healthcheck" => s.healthcheck = Some(self.healthcheck(v)?),
                    "hostname" => s.hostname = self.opt_string(v)?,
                    "image" => s.image = self.string(v)?,
                    "init" => s.init = Some(self.boolean(v)?),
                    "isolation" => s.isolation = self.opt_string(v)?,
                    "labels" => s.labels = self.labels(v)?,
                    "logging" => s.logging = Some(self.logging(v)?),
                    "networks" => s.networks = self.service_networks(v)?,
                    // Docker's schema takes it but its decoder never fills
                    // the field (no mapstructure name), so it has no effect.
                    "oom_score_adj" => {}
                    "ports" => s.ports = self.ports(v)?,
                    "read_only" => s.read_only = self.boolean(v)?,
                    "restart" => s.restart = self.opt_string(v)?,
                    "secrets" => s.secrets = self.file_references(v)?,
                    "stdin_open" => s.stdin_open = self.boolean(v)?,
                    "stop_grace_period" => s.stop_grace_period = Some(self.duration(v)?),
                    "stop_signal" => s.stop_signal = self.opt_string(v)?,
                    "sysctls" => s.sysctls = self.labels(v)?,
                    "tmpfs" => s.tmpfs = self.string_or_list(v)?,
                    "tty" => s.tty = self.boolean(v)?,
                    "ulimits" => s.ulimits = self.ulimits(v)?,
                    "user" => s.user = self.opt_string(v)?,
                    "volumes" => s.volumes = self.service_volumes(v)?,
                    "working_dir" => s.working_dir = self.opt_string(v)?,
                    // Unsupported, deprecated and x- keys: warned about (or
                    // not) by the caller, not part of the model.
                    _ => {}
                }
                Ok(())
            })();
            self.path.pop();
            res?;
        }
        let environment = match env_node {
            Some(n) => self.under("environment", |d| d.mapping(n, '='))?,
            None => BTreeMap::new(),
        };
        s.environment = self.resolve_environment(node, &s.env_file, environment)?;
        Ok(s)
    }

    /// docker's `resolveEnvironment`: env files first, then `environment:`
    /// over them; an empty or missing value takes the caller's, if set.
    fn resolve_environment(
        &mut self,
        service: &Node,
        env_files: &[String],
        environment: BTreeMap<String, Option<String>>,
    ) -> R<BTreeMap<String, Option<String>>> {
        let mut out = BTreeMap::new();
        let mut from_files: Vec<(String, Option<String>)> = Vec::new();
        for file in env_files {
            let path = PathBuf::from(self.abs(file));
            let at_node = service.get("env_file").unwrap_or(service);
            let at = self.under("env_file", |d| Ok(d.at(at_node)))?;
            let bytes = std::fs::read(&path).map_err(|e| Error::EnvFile {
                at: at.clone(),
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let lines = envfile::parse(&bytes, self.env).map_err(|reason| Error::EnvFile {
                at,
                path: path.clone(),
                reason,
            })?;
            for line in lines {
                match line.split_once('=') {
                    Some((k, v)) => from_files.push((k.to_string(), Some(v.to_string()))),
                    None => from_files.push((line, None)),
                }
            }
        }
        let mut update = |vars: Vec<(String, Option<String>)>| {
            for (k, v) in vars {
                let empty = v.as_deref().is_none_or(str::is_empty);
                match self.env.get(&k) {
                    Some(from_env) if empty => out.insert(k, Some(from_env.clone())),
                    _ => out.insert(k, v),
                };
            }
        };
        update(from_files);
        update(environment.into_iter().collect());
        Ok(out)
    }

    fn shell_command(&mut self, node: &Node) -> R<Vec<String>> {
        match &node.value {
            Value::Str(s) => shlex_split(s).map_err(|e| self.invalid(node, e)),
            _ => self.string_list(node),
        }
    }

    /// docker's `transformHostsList`: `host:ip` from a mapping, or from
    /// list entries written `host=ip` or `host:ip`; brackets dropped from
    /// an IPv6 address.
    fn hosts(&mut self, node: &Node) -> R<Vec<String>> {
        let pairs: Vec<String> = match &node.value {
            Value::Map(entries) => {
                let mut v = Vec::new();
                for e in entries {
                    if let Some(val) = self.under(&e.key, |d| d.scalar_text(&e.value))? {
                        v.push(format!("{}:{val}", e.key));
                    }
                }
                v.sort();
                v
            }
            _ => self
                .string_list(node)?
                .into_iter()
                .filter_map(|s| {
                    s.split_once('=')
                        .or_else(|| s.split_once(':'))
                        .map(|(k, v)| format!("{k}:{v}"))
                })
                .collect(),
        };
        Ok(pairs
            .into_iter()
            .map(|hip| {
                let (host, ip) = hip.split_once(':').unwrap_or((&hip, ""));
                let ip = if ip.len() > 2 && ip.starts_with('[') && ip.ends_with(']') {
                    &ip[1..ip.len() - 1]
                } else {
                    ip
                };
                format!("{host}:{ip}")
            })
            .collect())
    }

    fn healthcheck(&mut self, node: &Node) -> R<Healthcheck> {
        let mut h = Healthcheck::default();
        for e in self.entries(node)? {
            let v = &e.value;
            self.under(&e.key, |d| {
                match e.key.as_str() {
                    "test" => {
                        h.test = match &v.value {
                            Value::Str(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                            _ => d.string_list(v)?,
                        }
                    }
                    "interval" => h.interval = Some(d.duration(v)?),
                    "timeout" => h.timeout = Some(d.duration(v)?),
                    "start_period" => h.start_period = Some(d.duration(v)?),
                    "start_interval" => h.start_interval = Some(d.duration(v)?),
                    "retries" => h.retries = Some(d.uint(v)?),
                    "disable" => h.disable = d.boolean(v)?,
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(h)
    }

    fn logging(&mut self, node: &Node) -> R<Logging> {
        let mut l = Logging::default();
        for e in self.entries(node)? {
            let v = &e.value;
            self.under(&e.key, |d| {
                match e.key.as_str() {
                    "driver" => l.driver = d.opt_string(v)?,
                    "options" => l.options = Some(d.string_map(v)?),
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(l)
    }

    fn service_networks(&mut self, node: &Node) -> R<BTreeMap<String, Option<ServiceNetwork>>> {
        let mut out = BTreeMap::new();
        if let Value::Seq(_) = node.value {
            for name in self.string_list(node)? {
                out.insert(name, None);
            }
            return Ok(out);
        }
        for e in self.entries(node)? {
            let v = &e.value;
            let net = self.under(&e.key, |d| {
                if v.value == Value::Null {
                    return Ok(None);
                }
                let mut n = ServiceNetwork::default();
                for f in d.entries(v)? {
                    let fv = &f.value;
                    d.under(&f.key, |d| {
                        match f.key.as_str() {
                            "aliases" => n.aliases = d.string_list(fv)?,
                            "driver_opts" => n.driver_opts = d.string_map(fv)?,
                            "ipv4_address" => n.ipv4_address = d.opt_string(fv)?,
                            "ipv6_address" => n.ipv6_address = d.opt_string(fv)?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                }
                Ok(Some(n))
            })?;
            out.insert(e.key.clone(), net);
        }
        Ok(out)
    }

    fn ports(&mut self, node: &Node) -> R<Vec<Port>> {
        let Value::Seq(items) = &node.value else {
            return Err(self.wrong(node, "list"));
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            self.at_index(i, |d| {
                let spec = match &item.value {
                    Value::Int(p) => p.to_string(),
                    Value::Str(s) => s.clone(),
                    Value::Map(_) => {
                        let mut p = Port::default();
                        for f in d.entries(item)? {
                            let fv = &f.value;
                            d.under(&f.key, |d| {
                                match f.key.as_str() {
                                    "mode" => p.mode = d.opt_string(fv)?,
                                    "protocol" => p.protocol = d.opt_string(fv)?,
                                    "target" => p.target = d.port_number(fv)?,
                                    "published" => {
                                        p.published = Some(d.port_number(fv)?).filter(|&n| n != 0)
                                    }
                                    _ => {}
                                }
                                Ok(())
                            })?;
                        }
                        out.push(p);
                        return Ok(());
                    }
                    _ => {
                        return Err(
                            d.invalid(item, format!("invalid type {} for port", item.kind_name()))
                        );
                    }
                };
                let (expanded, warnings) = ports::expand(&spec).map_err(|e| d.invalid(item, e))?;
                d.warnings.extend(warnings);
                out.extend(expanded.into_iter().map(|p| Port {
                    mode: Some("ingress".into()),
                    target: p.target.into(),
                    published: Some(u32::from(p.published)).filter(|&n| n != 0),
                    protocol: Some(p.protocol),
                }));
                Ok(())
            })?;
        }
        Ok(out)
    }

    fn port_number(&self, node: &Node) -> R<u32> {
        let v = self.int(node)?;
        u32::try_from(v).map_err(|_| self.invalid(node, format!("{v} overflows uint32")))
    }

    fn file_references(&mut self, node: &Node) -> R<Vec<FileReference>> {
        let Value::Seq(items) = &node.value else {
            return Err(self.wrong(node, "list"));
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let r = self.at_index(i, |d| {
                if let Value::Str(s) = &item.value {
                    return Ok(FileReference {
                        source: s.clone(),
                        ..FileReference::default()
                    });
                }
                let mut r = FileReference::default();
                for f in d.entries(item)? {
                    let fv = &f.value;
                    d.under(&f.key, |d| {
                        match f.key.as_str() {
                            "source" => r.source = d.string(fv)?,
                            "target" => r.target = d.opt_string(fv)?,
                            "uid" => r.uid = d.opt_string(fv)?,
                            "gid" => r.gid = d.opt_string(fv)?,
                            "mode" => {
                                let m = d.uint(fv)?;
                                r.mode =
                                    Some(u32::try_from(m).map_err(|_| {
                                        d.invalid(fv, format!("{m} overflows uint32"))
                                    })?);
                            }
                            _ => {}
                        }
                        Ok(())
                    })?;
                }
                Ok(r)
            })?;
            out.push(r);
        }
        Ok(out)
    }

    fn ulimits(&mut self, node: &Node) -> R<BTreeMap<String, Ulimit>> {
        let mut out = BTreeMap::new();
        for e in self.entries(node)? {
            let v = &e.value;
            let u = self.under(&e.key, |d| match &v.value {
                Value::Map(_) => {
                    let soft = v
                        .get("soft")
                        .ok_or_else(|| d.invalid(v, "soft is required"))?;
                    let hard = v
                        .get("hard")
                        .ok_or_else(|| d.invalid(v, "hard is required"))?;
                    Ok(Ulimit::SoftHard {
                        soft: d.under("soft", |d| d.int(soft))?,
                        hard: d.under("hard", |d| d.int(hard))?,
                    })
                }
                _ => Ok(Ulimit::Single(d.int(v)?)),
            })?;
            out.insert(e.key.clone(), u);
        }
        Ok(out)
    }

    fn service_volumes(&mut self, node: &Node) -> R<Vec<ServiceVolume>> {
        let Value::Seq(items) = &node.value else {
            return Err(self.wrong(node, "list"));
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let vol = self.at_index(i, |d| {
                let mut vol = match &item.value {
                    Value::Str(s) => volumespec::parse(s).map_err(|e| d.invalid(item, e))?,
                    _ => d.long_volume(item)?,
                };
                if vol.kind == MountType::Bind {
                    let Some(src) = vol.source.clone().filter(|s| !s.is_empty()) else {
                        return Err(d.invalid(
                            item,
                            "invalid mount config for type \"bind\": field Source must not be empty",
                        ));
                    };
                    let src = d.expand_user(&src);
                    vol.source = Some(if is_abs_any(&src) { src } else { d.abs(&src) });
                }
                Ok(vol)
            })?;
            out.push(vol);
        }
        Ok(out)
    }

    fn expand_user(&mut self, src: &str) -> String {
        if !src.starts_with('~') {
            return src.to_string();
        }
        match self.env.get("HOME") {
            Some(home) => src.replacen('~', home, 1),
            None => {
                self.warnings
                    .push("cannot expand '~', because the environment lacks HOME".to_string());
                src.to_string()
            }
        }
    }

    fn long_volume(&mut self, node: &Node) -> R<ServiceVolume> {
        let mut v = ServiceVolume::default();
        for e in self.entries(node)? {
            let fv = &e.value;
            self.under(&e.key, |d| {
                match e.key.as_str() {
                    "type" => v.kind = MountType::parse(&d.string(fv)?),
                    "source" => v.source = d.opt_string(fv)?,
                    "target" => v.target = d.string(fv)?,
                    "read_only" => v.read_only = d.boolean(fv)?,
                    "consistency" => v.consistency = d.opt_string(fv)?,
                    "bind" => {
                        let mut b = BindOptions::default();
                        if let Some(p) = fv.get("propagation") {
                            b.propagation = d.under("propagation", |d| d.opt_string(p))?;
                        }
                        v.bind = Some(b);
                    }
                    "volume" => {
                        let mut o = VolumeOptions::default();
                        if let Some(n) = fv.get("nocopy") {
                            o.nocopy = d.under("nocopy", |d| d.boolean(n))?;
                        }
                        if let Some(s) = fv.get("subpath") {
                            o.subpath = d.under("subpath", |d| d.opt_string(s))?;
                        }
                        v.volume = Some(o);
                    }
                    "tmpfs" => {
                        let mut t = TmpfsOptions::default();
                        if let Some(s) = fv.get("size") {
                            t.size = Some(d.under("size", |d| d.size(s))?);
                        }
                        v.tmpfs = Some(t);
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(v)
    }

    /// docker's `transformSize`: an integer is bytes, a string is read with
    /// go-units `RAMInBytes` (`50M`).
    fn size(&self, node: &Node) -> R<i64> {
        match &node.value {
            Value::Str(s) => units::ram_in_bytes(s).map_err(|e| self.invalid(node, e)),
            _ => self.int(node),
        }
    }

    fn cpus(&self, node: &Node) -> R<i64> {
        let s = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => go_float(*f),
            _ => return Err(self.wrong(node, "string")),
        };
        units::parse_cpus(&s).map_err(|e| self.invalid(node, e))
    }

    fn deploy(&mut self, node: &Node) -> R<Deploy> {
        let mut dep = Deploy::default();
        for e in self.entries(node)? {
            let v = &e.value;
            self.under(&e.key, |d| {
                match e.key.as_str() {
                    "mode" => dep.mode = d.opt_string(v)?,
                    "replicas" => dep.replicas = Some(d.uint(v)?),
                    "labels" => dep.labels = d.labels(v)?,
                    "update_config" => dep.update_config = Some(d.update_config(v)?),
                    "rollback_config" => dep.rollback_config = Some(d.update_config(v)?),
                    "resources" => dep.resources = d.resources(v)?,
                    "restart_policy" => dep.restart_policy = Some(d.restart_policy(v)?),
                    "placement" => dep.placement = d.placement(v)?,
                    "endpoint_mode" => dep.endpoint_mode = d.opt_string(v)?,
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(dep)
    }

    fn update_config(&mut self, node: &Node) -> R<UpdateConfig> {
        let mut u = UpdateConfig::default();
        for e in self.entries(node)? {
            let v = &e.value;
            self.under(&e.key, |d| {
                match e.key.as_str() {
                    "parallelism" => u.parallelism = Some(d.uint(v)?),
                    "delay" => u.delay = d.duration(v)?,
                    "failure_action" => u.failure_action = d.opt_string(v)?,
                    "monitor" => u.monitor = d.duration(v)?,
                    "max_failure_ratio" => {
                        u.max_failure_ratio = match v.value {
                            Value::Int(i) => i as f32,
                            Value::Float(f) => f as f32,
                            _ => return Err(d.wrong(v, "number")),
                        }
                    }
                    "order" => {
                        u.order = match d.string(v)?.as_str() {
                            "start-first" => Some(UpdateOrder::StartFirst),
                            "stop-first" => Some(UpdateOrder::StopFirst),
                            "" => None,
                            other => {
                                return Err(d.invalid(
                                    v,
                                    format!("{other:?} must be one of the following: \"start-first\", \"stop-first\""),
                                ));
                            }
                        }
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(u)
    }

    fn resources(&mut self, node: &Node) -> R<Resources> {
        let mut r = Resources::default();
        for e in self.entries(node)? {
            let v = &e.value;
            self.under(&e.key, |d| {
                match e.key.as_str() {
                    "limits" => {
                        let mut l = Limits::default();
                        for f in d.entries(v)? {
                            let fv = &f.value;
                            d.under(&f.key, |d| {
                                match f.key.as_str() {
                                    "cpus" => l.nano_cpus = Some(d.cpus(fv)?),
                                    "memory" => l.memory_bytes = Some(d.size(fv)?),
                                    "pids" => l.pids = Some(d.int(fv)?),
                                    _ => {}
                                }
                                Ok(())
                            })?;
                        }
                        r.limits = Some(l);
                    }
                    "reservations" => {
                        let mut res = Reservations::default();
                        for f in d.entries(v)? {
                            let fv = &f.value;
                            d.under(&f.key, |d| {
                                match f.key.as_str() {
                                    "cpus" => res.nano_cpus = Some(d.cpus(fv)?),
                                    "memory" => res.memory_bytes = Some(d.size(fv)?),
                                    "generic_resources" => {
                                        res.generic_resources = d.generic_resources(fv)?
                                    }
                                    _ => {}
                                }
                                Ok(())
                            })?;
                        }
                        r.reservations = Some(res);
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(r)
    }

    fn generic_resources(&mut self, node: &Node) -> R<Vec<GenericResource>> {
        let Value::Seq(items) = &node.value else {
            return Err(self.wrong(node, "list"));
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let g = self.at_index(i, |d| {
                let mut g = GenericResource::default();
                if let Some(spec) = item.get("discrete_resource_spec") {
                    d.under("discrete_resource_spec", |d| {
                        if let Some(k) = spec.get("kind") {
                            g.kind = d.under("kind", |d| d.string(k))?;
                        }
                        if let Some(v) = spec.get("value") {
                            g.value = d.under("value", |d| d.int(v))?;
                        }
                        Ok(())
                    })?;
                }
                Ok(g)
            })?;
            out.push(g);
        }
        Ok(out)
    }

    fn restart_policy(&mut self, node: &Node) -> R<RestartPolicy> {
        let mut p = RestartPolicy::default();
        for e in self.entries(node)? {
            let v = &e.value;
            self.under(&e.key, |d| {
                match e.key.as_str() {
                    "condition" => p.condition = d.opt_string(v)?,
                    "delay" => p.delay = Some(d.duration(v)?),
                    "max_attempts" => p.max_attempts = Some(d.uint(v)?),
                    "window" => p.window = Some(d.duration(v)?),
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(p)
    }

    fn placement(&mut self, node: &Node) -> R<Placement> {
        let mut p = Placement::default();
        for e in self.entries(node)? {
            let v = &e.value;
            self.under(&e.key, |d| {
                match e.key.as_str() {
                    "constraints" => p.constraints = d.string_list(v)?,
                    "max_replicas_per_node" => {
                        p.max_replicas_per_node = Some(d.uint(v)?).filter(|&n| n != 0)
                    }
                    "preferences" => {
                        let Value::Seq(items) = &v.value else {
                            return Err(d.wrong(v, "list"));
                        };
                        for (i, item) in items.iter().enumerate() {
                            if let Some(s) = item.get("spread") {
                                let s = d.at_index(i, |d| d.under("spread", |d| d.string(s)))?;
                                p.preferences.push(s);
                            } else {
                                p.preferences.push(String::new());
                            }
                        }
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(p)
    }

    /// Reads `external:` (bool or `{name}`), returning (external, name).
    fn external(&mut self, node: &Node) -> R<(bool, Option<String>)> {
        match &node.value {
            Value::Bool(b) => Ok((*b, None)),
            Value::Map(_) => {
                let name = match node.get("name") {
                    Some(n) => self.under("name", |d| d.opt_string(n))?,
                    None => None,
                };
                Ok((true, name))
            }
            _ => Err(self.wrong(node, "boolean or mapping")),
        }
    }

    fn networks(&mut self, node: &Node) -> R<BTreeMap<String, Network>> {
        let mut out = BTreeMap::new();
        for e in self.entries(node)? {
            let v = &e.value;
            let net = self.under(&e.key, |d| {
                let mut n = Network::default();
                let mut external_name = None;
                for f in d.entries(v)? {
                    let fv = &f.value;
                    d.under(&f.key, |d| {
                        match f.key.as_str() {
                            "name" => n.name = d.opt_string(fv)?,
                            "driver" => n.driver = d.opt_string(fv)?,
                            "driver_opts" => n.driver_opts = d.string_map(fv)?,
                            "ipam" => {
                                for g in d.entries(fv)? {
                                    let gv = &g.value;
                                    d.under(&g.key, |d| {
                                        match g.key.as_str() {
                                            "driver" => n.ipam.driver = d.opt_string(gv)?,
                                            "config" => {
                                                let Value::Seq(pools) = &gv.value else {
                                                    return Err(d.wrong(gv, "list"));
                                                };
                                                for (i, pool) in pools.iter().enumerate() {
                                                    let subnet = match pool.get("subnet") {
                                                        Some(s) => d.at_index(i, |d| {
                                                            d.under("subnet", |d| d.string(s))
                                                        })?,
                                                        None => String::new(),
                                                    };
                                                    n.ipam.subnets.push(subnet);
                                                }
                                            }
                                            _ => {}
                                        }
                                        Ok(())
                                    })?;
                                }
                            }
                            "external" => (n.external, external_name) = d.external(fv)?,
                            "internal" => n.internal = d.boolean(fv)?,
                            "attachable" => n.attachable = d.boolean(fv)?,
                            "labels" => n.labels = d.labels(fv)?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                }
                if n.external {
                    if let Some(ext) = external_name {
                        if n.name.is_some() {
                            return Err(d.invalid(v, format!(
                                "network {}: network.external.name and network.name conflict; only use network.name",
                                e.key
                            )));
                        }
                        if version_at_least(d.version, "3.5") {
                            d.warnings.push(format!(
                                "network {}: network.external.name is deprecated in favor of network.name",
                                e.key
                            ));
                        }
                        n.name = Some(ext);
                    } else if n.name.is_none() {
                        n.name = Some(e.key.clone());
                    }
                }
                Ok(n)
            })?;
            out.insert(e.key.clone(), net);
        }
        Ok(out)
    }

    fn volumes(&mut self, node: &Node) -> R<BTreeMap<String, Volume>> {
        let mut out = BTreeMap::new();
        for e in self.entries(node)? {
            let v = &e.value;
            let vol = self.under(&e.key, |d| {
                let mut vol = Volume::default();
                let mut external_name = None;
                for f in d.entries(v)? {
                    let fv = &f.value;
                    d.under(&f.key, |d| {
                        match f.key.as_str() {
                            "name" => vol.name = d.opt_string(fv)?,
                            "driver" => vol.driver = d.opt_string(fv)?,
                            "driver_opts" => vol.driver_opts = d.string_map(fv)?,
                            "external" => (vol.external, external_name) = d.external(fv)?,
                            "labels" => vol.labels = d.labels(fv)?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                }
                if vol.external {
                    let conflict = if vol.driver.is_some() {
                        Some("driver")
                    } else if !vol.driver_opts.is_empty() {
                        Some("driver_opts")
                    } else if !vol.labels.is_empty() {
                        Some("labels")
                    } else {
                        None
                    };
                    if let Some(key) = conflict {
                        return Err(d.invalid(v, format!(
                            "conflicting parameters \"external\" and {key:?} specified for volume {:?}",
                            e.key
                        )));
                    }
                    if let Some(ext) = external_name {
                        if vol.name.is_some() {
                            return Err(d.invalid(v, format!(
                                "volume {}: volume.external.name and volume.name conflict; only use volume.name",
                                e.key
                            )));
                        }
                        if version_at_least(d.version, "3.4") {
                            d.warnings.push(format!(
                                "volume {}: volume.external.name is deprecated in favor of volume.name",
                                e.key
                            ));
                        }
                        vol.name = Some(ext);
                    } else if vol.name.is_none() {
                        vol.name = Some(e.key.clone());
                    }
                }
                Ok(vol)
            })?;
            out.insert(e.key.clone(), vol);
        }
        Ok(out)
    }

    fn file_objects(&mut self, node: &Node, kind: &str) -> R<BTreeMap<String, FileObject>> {
        let mut out = BTreeMap::new();
        for e in self.entries(node)? {
            let v = &e.value;
            let obj = self.under(&e.key, |d| {
                let mut o = FileObject::default();
                let mut file = None;
                let mut external_name = None;
                for f in d.entries(v)? {
                    let fv = &f.value;
                    d.under(&f.key, |d| {
                        match f.key.as_str() {
                            "name" => o.name = d.opt_string(fv)?,
                            "file" => file = d.opt_string(fv)?,
                            "external" => (o.external, external_name) = d.external(fv)?,
                            "labels" => o.labels = d.labels(fv)?,
                            "driver" => o.driver = d.opt_string(fv)?,
                            "driver_opts" => o.driver_opts = d.string_map(fv)?,
                            "template_driver" => o.template_driver = d.opt_string(fv)?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                }
                let name = &e.key;
                if o.external {
                    if let Some(ext) = external_name {
                        if o.name.is_some() {
                            return Err(d.invalid(v, format!(
                                "{kind} {name}: {kind}.external.name and {kind}.name conflict; only use {kind}.name"
                            )));
                        }
                        if version_at_least(d.version, "3.5") {
                            d.warnings.push(format!(
                                "{kind} {name}: {kind}.external.name is deprecated in favor of {kind}.name"
                            ));
                        }
                        o.name = Some(ext);
                    } else if o.name.is_none() {
                        o.name = Some(name.clone());
                    }
                    o.file = file.map(PathBuf::from);
                } else if o.driver.is_some() {
                    if file.is_some() {
                        return Err(d.invalid(v, format!(
                            "{kind} {name}: {kind}.driver and {kind}.file conflict; only use {kind}.driver"
                        )));
                    }
                } else {
                    // Docker joins even a missing file to the working dir.
                    o.file = Some(PathBuf::from(d.abs(file.as_deref().unwrap_or(""))));
                }
                Ok(o)
            })?;
            out.insert(e.key.clone(), obj);
        }
        Ok(out)
    }
}

/// Absolute as Unix or Windows sees it (docker checks both, for a client
/// and daemon on different systems).
fn is_abs_any(p: &str) -> bool {
    if p.starts_with('/') || p.starts_with("\\\\") {
        return true;
    }
    let b = p.as_bytes();
    b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/')
}

/// docker's `absPath`: an absolute path as is, else `filepath.Join(dir, p)`
/// (which also cleans `.` and `..`).
pub fn abs_path(dir: &Path, p: &str) -> String {
    if p.starts_with('/') {
        return p.to_string();
    }
    go_clean(&format!("{}/{p}", dir.display()))
}

/// Go's `path.Clean`.
pub fn go_clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_clean_like_go() {
        assert_eq!(go_clean("/a/./b/../c/"), "/a/c");
        assert_eq!(go_clean("/../a"), "/a");
        assert_eq!(go_clean("a/../.."), "..");
        assert_eq!(go_clean(""), ".");
        assert_eq!(abs_path(Path::new("/w"), "./src"), "/w/src");
        assert_eq!(abs_path(Path::new("/w"), ""), "/w");
        assert_eq!(abs_path(Path::new("/w"), "/abs/./x"), "/abs/./x");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("3.10", "3.5"));
        assert!(version_at_least("3.5", "3.5"));
        assert!(!version_at_least("3.4", "3.5"));
    }
}
