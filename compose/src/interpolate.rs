//! Interpolation of a whole file's values (never keys), before the schema
//! check, as docker does: every string is substituted from the caller's
//! environment; where docker's `interpolateTypeCastMapping` names the path
//! and the string changed, the result is cast (`replicas: ${N}` becomes a
//! number, `read_only: ${RO}` a boolean — there `yes`/`on`/`y` count, as
//! docker's cast follows YAML 1.1).

use std::collections::HashMap;

use crate::error::{Error, Location};
use crate::template::{self, TemplateError};
use crate::yaml::{Node, Value};

enum Cast {
    Int,
    Float,
    Bool,
}

/// Docker's cast table: `*` is any key, `[]` any list item.
const CASTS: &[(&str, Cast)] = &[
    ("services.*.configs.[].mode", Cast::Int),
    ("services.*.secrets.[].mode", Cast::Int),
    ("services.*.healthcheck.retries", Cast::Int),
    ("services.*.healthcheck.disable", Cast::Bool),
    ("services.*.deploy.replicas", Cast::Int),
    ("services.*.deploy.update_config.parallelism", Cast::Int),
    (
        "services.*.deploy.update_config.max_failure_ratio",
        Cast::Float,
    ),
    ("services.*.deploy.rollback_config.parallelism", Cast::Int),
    (
        "services.*.deploy.rollback_config.max_failure_ratio",
        Cast::Float,
    ),
    ("services.*.deploy.restart_policy.max_attempts", Cast::Int),
    (
        "services.*.deploy.placement.max_replicas_per_node",
        Cast::Int,
    ),
    ("services.*.ports.[].target", Cast::Int),
    ("services.*.ports.[].published", Cast::Int),
    ("services.*.ulimits.*", Cast::Int),
    ("services.*.ulimits.*.hard", Cast::Int),
    ("services.*.ulimits.*.soft", Cast::Int),
    ("services.*.privileged", Cast::Bool),
    ("services.*.oom_score_adj", Cast::Int),
    ("services.*.read_only", Cast::Bool),
    ("services.*.stdin_open", Cast::Bool),
    ("services.*.tty", Cast::Bool),
    ("services.*.volumes.[].read_only", Cast::Bool),
    ("services.*.volumes.[].volume.nocopy", Cast::Bool),
    ("networks.*.external", Cast::Bool),
    ("networks.*.internal", Cast::Bool),
    ("networks.*.attachable", Cast::Bool),
    ("volumes.*.external", Cast::Bool),
    ("secrets.*.external", Cast::Bool),
    ("configs.*.external", Cast::Bool),
];

/// One step of a key path.
#[derive(Debug, Clone)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// The dotted path docker's schema errors use (`services.web.ports.0`).
pub fn dotted(path: &[Seg]) -> String {
    if path.is_empty() {
        return "(root)".into();
    }
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn cast_for(path: &[Seg]) -> Option<&'static Cast> {
    CASTS.iter().find_map(|(pattern, cast)| {
        let parts: Vec<&str> = pattern.split('.').collect();
        let matches = parts.len() == path.len()
            && parts.iter().zip(path).all(|(p, seg)| match (*p, seg) {
                ("*", _) => true,
                ("[]", Seg::Index(_)) => true,
                (name, Seg::Key(k)) => name == k,
                _ => false,
            });
        matches.then_some(cast)
    })
}

/// Go's `strconv.Atoi`: optional sign and decimal digits.
fn atoi(s: &str) -> Option<i128> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = s.parse().ok()?;
    Some(v.into())
}

fn cast(kind: &Cast, s: &str) -> Result<Value, String> {
    match kind {
        Cast::Int => atoi(s)
            .map(Value::Int)
            .ok_or_else(|| format!("strconv.Atoi: parsing {s:?}: invalid syntax")),
        Cast::Float => s
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
        Cast::Bool => match s.to_lowercase().as_str() {
            "y" | "yes" | "true" | "on" => Ok(Value::Bool(true)),
            "n" | "no" | "false" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("invalid boolean: {s}")),
        },
    }
}

/// Interpolates `root` in place. Variables used without a default and not
/// set are added to `unset` (once each).
pub fn interpolate(
    root: &mut Node,
    file: &str,
    env: &HashMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<(), Error> {
    let mut path = Vec::new();
    walk(root, &mut path, file, env, unset)
}

fn walk(
    node: &mut Node,
    path: &mut Vec<Seg>,
    file: &str,
    env: &HashMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<(), Error> {
    let at = |path: &[Seg], node: &Node| Location {
        file: file.to_string(),
        line: node.pos.line,
        col: node.pos.col,
        path: dotted(path),
    };
    match &mut node.value {
        Value::Str(s) => {
            if !s.contains('$') {
                return Ok(());
            }
            let done = match template::substitute(s, env) {
                Ok(done) => done,
                Err(TemplateError::Invalid { template }) => {
                    return Err(Error::Interpolation {
                        at: at(path, node),
                        template,
                    });
                }
                Err(TemplateError::Required { name, message }) => {
                    return Err(Error::RequiredVariable {
                        at: at(path, node),
                        name,
                        message,
                    });
                }
            };
            for name in done.unset {
                if !unset.contains(&name) {
                    unset.push(name);
                }
            }
            if done.value == *s {
                return Ok(());
            }
            node.value = match cast_for(path) {
                Some(kind) => cast(kind, &done.value).map_err(|reason| Error::Cast {
                    at: at(path, node),
                    reason,
                })?,
                None => Value::Str(done.value),
            };
            Ok(())
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                walk(item, path, file, env, unset)?;
                path.pop();
            }
            Ok(())
        }
        Value::Map(entries) => {
            for e in entries.iter_mut() {
                path.push(Seg::Key(e.key.clone()));
                walk(&mut e.value, path, file, env, unset)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    fn run(text: &str, env: &[(&str, &str)]) -> Result<Node, Error> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut node = yaml::parse(text).expect("yaml").expect("doc");
        let mut unset = Vec::new();
        interpolate(&mut node, "c.yml", &env, &mut unset)?;
        Ok(node)
    }

    fn at<'a>(n: &'a Node, path: &[&str]) -> &'a Value {
        let mut cur = n;
        for p in path {
            cur = match p.parse::<usize>() {
                Ok(i) => match &cur.value {
                    Value::Seq(items) => &items[i],
                    _ => panic!("not a list"),
                },
                Err(_) => cur.get(p).expect(p),
            };
        }
        &cur.value
    }

    #[test]
    fn casts_where_docker_casts() {
        let n = run(
            "services:\n  web:\n    read_only: ${RO}\n    deploy:\n      replicas: ${N}\n    \
             labels:\n      n: ${N}\n    ports:\n      - target: ${N}\n",
            &[("RO", "yes"), ("N", "3")],
        )
        .expect("ok");
        assert_eq!(
            at(&n, &["services", "web", "read_only"]),
            &Value::Bool(true)
        );
        assert_eq!(
            at(&n, &["services", "web", "deploy", "replicas"]),
            &Value::Int(3)
        );
        // Labels are not in the cast table: they stay strings.
        assert_eq!(
            at(&n, &["services", "web", "labels", "n"]),
            &Value::Str("3".into())
        );
        assert_eq!(
            at(&n, &["services", "web", "ports", "0", "target"]),
            &Value::Int(3)
        );
    }

    #[test]
    fn keys_are_not_interpolated_and_plain_strings_are_not_cast() {
        let n = run(
            "services:\n  ${X}:\n    read_only: \"yes\"\n",
            &[("X", "web")],
        )
        .expect("ok");
        assert!(n.get("services").and_then(|s| s.get("${X}")).is_some());
        assert_eq!(
            at(&n, &["services", "${X}", "read_only"]),
            &Value::Str("yes".into())
        );
    }

    #[test]
    fn errors_name_file_line_and_path() {
        let e = run("services:\n  web:\n    image: ${IMG:?set IMG}\n", &[]).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "c.yml:3:12: services.web.image: required variable IMG is missing a value: set IMG"
        );
        let e = run("services:\n  web:\n    command: [a, \"$\"]\n", &[]).expect_err("invalid");
        assert_eq!(
            e.to_string(),
            "c.yml:3:18: services.web.command.1: invalid interpolation format for \
             services.web.command.1: \"$\"; you may need to escape any $ with another $"
        );
        let e = run(
            "services:\n  web:\n    deploy:\n      replicas: ${N}\n",
            &[("N", "two")],
        )
        .expect_err("cast");
        assert!(
            e.to_string().contains("failed to cast to expected type"),
            "{e}"
        );
    }
}
