//! Validation against docker's compose JSON schemas (`schema/`), the way
//! docker CLI 28 does it with gojsonschema: the same keywords, the same
//! scoring of `oneOf`/`anyOf` alternatives (the closest one's errors are
//! kept), and docker's pick of the single error to report (the deepest
//! field; on a tie an invalid-type error; for a `oneOf`/`anyOf` error, the
//! description of the error that follows it). Maps are walked in document
//! order, so where docker's Go map order makes the pick random this one is
//! the first in the file.
//!
//! Only the draft-4 subset those schemas use is implemented: `type`,
//! `properties`, `patternProperties` (their five patterns),
//! `additionalProperties`, `required`, `items`, `uniqueItems`, `oneOf`,
//! `anyOf`, `enum`, `minimum`, `format` (`ports` and `duration`, as docker
//! registers them; other formats pass, as in gojsonschema) and `$ref`.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value as Json;

use crate::ports;
use crate::units::Duration;
use crate::yaml::{Node, Pos, Value};

/// The versions docker CLI 28 ships a schema for.
pub const VERSIONS: [&str; 14] = [
    "3.0", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12",
    "3.13",
];

/// What a file without `version:` (or with `version: "3"`) is read as.
pub const DEFAULT_VERSION: &str = "3.13";

const SOURCES: [&str; 14] = [
    include_str!("../schema/config_schema_v3.0.json"),
    include_str!("../schema/config_schema_v3.1.json"),
    include_str!("../schema/config_schema_v3.2.json"),
    include_str!("../schema/config_schema_v3.3.json"),
    include_str!("../schema/config_schema_v3.4.json"),
    include_str!("../schema/config_schema_v3.5.json"),
    include_str!("../schema/config_schema_v3.6.json"),
    include_str!("../schema/config_schema_v3.7.json"),
    include_str!("../schema/config_schema_v3.8.json"),
    include_str!("../schema/config_schema_v3.9.json"),
    include_str!("../schema/config_schema_v3.10.json"),
    include_str!("../schema/config_schema_v3.11.json"),
    include_str!("../schema/config_schema_v3.12.json"),
    include_str!("../schema/config_schema_v3.13.json"),
];

/// One schema error as docker reports it: `{field} {description}`, where
/// the field is the dotted path (`(root)` for the top level).
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaError {
    pub field: String,
    pub description: String,
    pub pos: Pos,
    /// For a wrong type, the value that was given (`"two"`).
    pub got: Option<String>,
}

/// Validates a whole file against the schema of `version` (already
/// normalised: "3" and "" mean 3.13). `Err(None)` when there is no schema
/// for that version.
pub fn validate(root: &Node, version: &str) -> Result<(), Option<SchemaError>> {
    let Some(schema) = compiled(version) else {
        return Err(None);
    };
    let mut result = Outcome::default();
    let mut ctx = Vec::new();
    schema.check(schema.root, root, &mut result, &mut ctx);
    if result.errors.is_empty() {
        return Ok(());
    }
    Err(Some(most_specific(&result.errors)))
}

fn compiled(version: &str) -> Option<&'static Schema> {
    static ALL: OnceLock<Vec<Schema>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        SOURCES
            .iter()
            .map(|src| {
                let json: Json = serde_json::from_str(src).unwrap_or(Json::Null);
                Schema::compile(&json)
            })
            .collect()
    });
    VERSIONS.iter().position(|v| *v == version).map(|i| &all[i])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JType {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl JType {
    fn parse(s: &str) -> Option<JType> {
        Some(match s {
            "null" => JType::Null,
            "boolean" => JType::Boolean,
            "integer" => JType::Integer,
            "number" => JType::Number,
            "string" => JType::String,
            "array" => JType::Array,
            "object" => JType::Object,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            JType::Null => "null",
            JType::Boolean => "boolean",
            JType::Integer => "integer",
            JType::Number => "number",
            JType::String => "string",
            JType::Array => "array",
            JType::Object => "object",
        }
    }
}

/// The property-name patterns docker's schemas use, matched as Go's regexp
/// would match them (`.` does not match a newline).
#[derive(Debug, Clone, Copy)]
enum Pattern {
    /// `^[a-zA-Z0-9._-]+$`
    Name,
    /// `^x-`
    Extension,
    /// `^.+$`
    NonEmptyLine,
    /// `.+`
    AnyChar,
    /// `^[a-z]+$`
    Lowercase,
    /// A pattern this validator does not know: matches nothing.
    Unknown,
}

impl Pattern {
    fn parse(p: &str) -> Pattern {
        match p {
            "^[a-zA-Z0-9._-]+$" => Pattern::Name,
            "^x-" => Pattern::Extension,
            "^.+$" => Pattern::NonEmptyLine,
            ".+" => Pattern::AnyChar,
            "^[a-z]+$" => Pattern::Lowercase,
            _ => Pattern::Unknown,
        }
    }

    fn matches(self, key: &str) -> bool {
        match self {
            Pattern::Name => {
                !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            }
            Pattern::Extension => key.starts_with("x-"),
            Pattern::NonEmptyLine => !key.is_empty() && !key.contains('\n'),
            Pattern::AnyChar => key.chars().any(|c| c != '\n'),
            Pattern::Lowercase => !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase()),
            Pattern::Unknown => false,
        }
    }
}

type Id = usize;

#[derive(Debug, Default)]
enum Additional {
    #[default]
    Allowed,
    Denied,
    Schema(Id),
}

#[derive(Debug, Default)]
struct Sub {
    reference: Option<String>,
    types: Vec<JType>,
    properties: Vec<(String, Id)>,
    pattern_properties: Vec<(Pattern, Id)>,
    additional: Additional,
    required: Vec<String>,
    items: Option<Id>,
    unique_items: bool,
    one_of: Vec<Id>,
    any_of: Vec<Id>,
    enumeration: Option<Vec<Json>>,
    minimum: Option<f64>,
    format: Option<String>,
}

struct Schema {
    subs: Vec<Sub>,
    definitions: HashMap<String, Id>,
    root: Id,
}

impl Schema {
    fn compile(json: &Json) -> Schema {
        let mut schema = Schema {
            subs: Vec::new(),
            definitions: HashMap::new(),
            root: 0,
        };
        schema.root = schema.add(json);
        if let Some(defs) = json.get("definitions").and_then(Json::as_object) {
            for (name, def) in defs {
                let id = schema.add(def);
                schema.definitions.insert(name.clone(), id);
            }
        }
        schema
    }

    fn add(&mut self, json: &Json) -> Id {
        let id = self.subs.len();
        self.subs.push(Sub::default());
        let mut sub = Sub {
            reference: json
                .get("$ref")
                .and_then(Json::as_str)
                .and_then(|r| r.strip_prefix("#/definitions/"))
                .map(str::to_string),
            ..Sub::default()
        };
        match json.get("type") {
            Some(Json::String(t)) => sub.types.extend(JType::parse(t)),
            Some(Json::Array(ts)) => {
                sub.types
                    .extend(ts.iter().filter_map(Json::as_str).filter_map(JType::parse));
            }
            _ => {}
        }
        if let Some(props) = json.get("properties").and_then(Json::as_object) {
            for (name, p) in props {
                let child = self.add(p);
                sub.properties.push((name.clone(), child));
            }
        }
        if let Some(props) = json.get("patternProperties").and_then(Json::as_object) {
            for (pattern, p) in props {
                let child = self.add(p);
                sub.pattern_properties
                    .push((Pattern::parse(pattern), child));
            }
        }
        sub.additional = match json.get("additionalProperties") {
            Some(Json::Bool(false)) => Additional::Denied,
            Some(Json::Object(_)) => Additional::Schema(self.add(&json["additionalProperties"])),
            _ => Additional::Allowed,
        };
        if let Some(req) = json.get("required").and_then(Json::as_array) {
            sub.required = req
                .iter()
                .filter_map(Json::as_str)
                .map(str::to_string)
                .collect();
        }
        if let Some(items) = json.get("items").filter(|i| i.is_object()) {
            sub.items = Some(self.add(items));
        }
        sub.unique_items = json.get("uniqueItems") == Some(&Json::Bool(true));
        for (key, list) in [("oneOf", &mut sub.one_of), ("anyOf", &mut sub.any_of)] {
            if let Some(alts) = json.get(key).and_then(Json::as_array) {
                for alt in alts {
                    let child = self.add(alt);
                    list.push(child);
                }
            }
        }
        sub.enumeration = json.get("enum").and_then(Json::as_array).cloned();
        sub.minimum = json.get("minimum").and_then(Json::as_f64);
        sub.format = json
            .get("format")
            .and_then(Json::as_str)
            .map(str::to_string);
        self.subs[id] = sub;
        id
    }

    fn check(&self, id: Id, node: &Node, out: &mut Outcome, ctx: &mut Vec<String>) {
        let sub = &self.subs[id];
        if let Some(name) = &sub.reference {
            if let Some(&target) = self.definitions.get(name) {
                self.check(target, node, out, ctx);
            }
            return;
        }
        let given = given_type(node);
        let typed = !sub.types.is_empty();
        let valid_type = match given {
            JType::Integer => {
                sub.types.contains(&JType::Integer) || sub.types.contains(&JType::Number)
            }
            t => sub.types.contains(&t),
        };
        if typed && !valid_type {
            let description = if sub.types.len() == 1 {
                sub.types[0].name().to_string()
            } else {
                let names: Vec<&str> = sub.types.iter().map(|t| t.name()).collect();
                format!("[{}]", names.join(","))
            };
            out.error(
                ctx,
                node.pos,
                Kind::InvalidType {
                    expected: description,
                },
                Some(node),
            );
            return;
        }
        self.check_alternatives(sub, node, out, ctx);
        match &node.value {
            Value::Seq(items) => self.check_array(sub, items, out, ctx),
            Value::Map(_) => self.check_object(sub, node, out, ctx),
            Value::Int(_) | Value::Float(_) => self.check_number(sub, node, out, ctx),
            _ => {}
        }
        self.check_enum(sub, node, out, ctx);
        if let Value::Str(s) = &node.value {
            self.check_string(sub, s, node, out, ctx);
        }
        if let Value::Map(entries) = &node.value {
            for (name, child) in &sub.properties {
                if let Some(e) = entries.iter().find(|e| &e.key == name) {
                    ctx.push(name.clone());
                    self.check(*child, &e.value, out, ctx);
                    ctx.pop();
                }
            }
        }
        out.score += 1;
    }

    fn sub_check(&self, id: Id, node: &Node, ctx: &mut Vec<String>) -> Outcome {
        let mut o = Outcome::default();
        self.check(id, node, &mut o, ctx);
        o
    }

    fn check_alternatives(&self, sub: &Sub, node: &Node, out: &mut Outcome, ctx: &mut Vec<String>) {
        if !sub.any_of.is_empty() {
            let mut best: Option<Outcome> = None;
            let mut valid = false;
            for &alt in &sub.any_of {
                let r = self.sub_check(alt, node, ctx);
                if r.errors.is_empty() {
                    valid = true;
                    break;
                }
                if best.as_ref().is_none_or(|b| r.score > b.score) {
                    best = Some(r);
                }
            }
            if !valid {
                out.error(ctx, node.pos, Kind::AnyOf, None);
                if let Some(b) = best {
                    out.merge(b);
                }
            }
        }
        if !sub.one_of.is_empty() {
            let mut best: Option<Outcome> = None;
            let mut validated = 0;
            for &alt in &sub.one_of {
                let r = self.sub_check(alt, node, ctx);
                if r.errors.is_empty() {
                    validated += 1;
                } else if validated == 0 && best.as_ref().is_none_or(|b| r.score > b.score) {
                    best = Some(r);
                }
            }
            if validated != 1 {
                out.error(ctx, node.pos, Kind::OneOf, None);
                if validated == 0
                    && let Some(b) = best
                {
                    out.merge(b);
                }
            }
        }
        out.score += 1;
    }

    fn check_array(&self, sub: &Sub, items: &[Node], out: &mut Outcome, ctx: &mut Vec<String>) {
        if let Some(item_schema) = sub.items {
            for (i, item) in items.iter().enumerate() {
                ctx.push(i.to_string());
                let r = self.sub_check(item_schema, item, ctx);
                ctx.pop();
                out.merge(r);
            }
        }
        if sub.unique_items {
            let mut seen: Vec<(String, usize)> = Vec::new();
            for (j, item) in items.iter().enumerate() {
                let key = canonical(item);
                if let Some(slot) = seen.iter_mut().find(|(k, _)| *k == key) {
                    out.error(ctx, item.pos, Kind::Unique { i: slot.1, j }, None);
                    slot.1 = j;
                } else {
                    seen.push((key, j));
                }
            }
        }
        out.score += 1;
    }

    fn check_object(&self, sub: &Sub, node: &Node, out: &mut Outcome, ctx: &mut Vec<String>) {
        let entries = node.as_map().unwrap_or_default();
        for req in &sub.required {
            if entries.iter().any(|e| &e.key == req) {
                out.score += 1;
            } else {
                out.error(
                    ctx,
                    node.pos,
                    Kind::Required {
                        property: req.clone(),
                    },
                    None,
                );
            }
        }
        for e in entries {
            let found = sub.properties.iter().any(|(name, _)| *name == e.key);
            let mut pattern_matched = false;
            for (pattern, child) in &sub.pattern_properties {
                if pattern.matches(&e.key) {
                    pattern_matched = true;
                    ctx.push(e.key.clone());
                    let r = self.sub_check(*child, &e.value, ctx);
                    ctx.pop();
                    out.merge(r);
                }
            }
            if pattern_matched {
                out.score += 1;
            }
            if !found && !pattern_matched {
                match sub.additional {
                    Additional::Allowed => {}
                    Additional::Denied => out.error(
                        ctx,
                        e.key_pos,
                        Kind::AdditionalProperty {
                            property: e.key.clone(),
                        },
                        None,
                    ),
                    Additional::Schema(child) => {
                        ctx.push(e.key.clone());
                        let r = self.sub_check(child, &e.value, ctx);
                        ctx.pop();
                        out.merge(r);
                    }
                }
            }
        }
        out.score += 1;
    }

    fn check_number(&self, sub: &Sub, node: &Node, out: &mut Outcome, ctx: &mut [String]) {
        let value = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            _ => return,
        };
        if let Some(min) = sub.minimum
            && value < min
        {
            out.error(ctx, node.pos, Kind::Minimum { min }, None);
        }
        if let Some(format) = &sub.format {
            // gojsonschema hands numbers to format checkers as a rational;
            // docker's "ports" checker reads its numerator, "duration"
            // wants a string.
            let ok = match format.as_str() {
                "ports" => ports::parse_spec(&numerator(&node.value)).is_ok(),
                "duration" => false,
                _ => true,
            };
            if !ok {
                out.error(
                    ctx,
                    node.pos,
                    Kind::Format {
                        format: format.clone(),
                    },
                    None,
                );
            }
        }
        out.score += 1;
    }

    fn check_enum(&self, sub: &Sub, node: &Node, out: &mut Outcome, ctx: &mut [String]) {
        if let Some(allowed) = &sub.enumeration {
            let ok = allowed.iter().any(|a| match (a, &node.value) {
                (Json::String(a), Value::Str(s)) => a == s,
                (Json::Bool(a), Value::Bool(b)) => a == b,
                (Json::Null, Value::Null) => true,
                (Json::Number(n), Value::Int(i)) => n.as_f64() == Some(*i as f64),
                (Json::Number(n), Value::Float(f)) => n.as_f64() == Some(*f),
                _ => false,
            });
            if !ok {
                let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                out.error(
                    ctx,
                    node.pos,
                    Kind::Enum {
                        allowed: list.join(", "),
                    },
                    None,
                );
            }
        }
        out.score += 1;
    }

    fn check_string(&self, sub: &Sub, s: &str, node: &Node, out: &mut Outcome, ctx: &mut [String]) {
        if let Some(format) = &sub.format {
            let ok = match format.as_str() {
                "ports" => ports::parse_spec(s).is_ok(),
                "duration" => Duration::parse(s).is_ok(),
                _ => true,
            };
            if !ok {
                out.error(
                    ctx,
                    node.pos,
                    Kind::Format {
                        format: format.clone(),
                    },
                    None,
                );
            }
        }
        out.score += 1;
    }
}

/// The numerator of a number as gojsonschema's big.Rat prints it.
fn numerator(v: &Value) -> String {
    match *v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.fract() == 0.0 && f.is_finite() => format!("{}", f as i128),
        Value::Float(f) => {
            // Exact binary fraction n / 2^k reduced, as big.Rat holds it.
            let mut num = f;
            let mut den: u32 = 0;
            while num.fract() != 0.0 && den < 1100 {
                num *= 2.0;
                den += 1;
            }
            if num.is_finite() {
                format!("{}", num as i128)
            } else {
                String::new()
            }
        }
        _ => String::new(),
    }
}

fn given_type(node: &Node) -> JType {
    match node.value {
        Value::Null => JType::Null,
        Value::Bool(_) => JType::Boolean,
        Value::Int(_) => JType::Integer,
        // JSON has one number type: an integral float is an integer.
        Value::Float(f) if f.fract() == 0.0 && f.is_finite() => JType::Integer,
        Value::Float(_) => JType::Number,
        Value::Str(_) => JType::String,
        Value::Seq(_) => JType::Array,
        Value::Map(_) => JType::Object,
    }
}

/// A canonical text of a value for `uniqueItems`, like the JSON docker's
/// validator compares.
fn canonical(node: &Node) -> String {
    match &node.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => crate::yaml::go_float(*f),
        Value::Str(s) => format!("{s:?}"),
        Value::Seq(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        Value::Map(entries) => {
            let mut parts: Vec<String> = entries
                .iter()
                .map(|e| format!("{:?}:{}", e.key, canonical(&e.value)))
                .collect();
            parts.sort();
            format!("{{{}}}", parts.join(","))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    InvalidType { expected: String },
    OneOf,
    AnyOf,
    Required { property: String },
    AdditionalProperty { property: String },
    Unique { i: usize, j: usize },
    Enum { allowed: String },
    Minimum { min: f64 },
    Format { format: String },
}

#[derive(Debug, Clone)]
struct RawError {
    kind: Kind,
    field: String,
    depth: usize,
    pos: Pos,
    got: Option<String>,
}

impl RawError {
    /// gojsonschema's own description of the error.
    fn description(&self) -> String {
        match &self.kind {
            Kind::InvalidType { expected } => {
                format!(
                    "Invalid type. Expected: {expected}, given: {}",
                    self.given()
                )
            }
            Kind::OneOf => "Must validate one and only one schema (oneOf)".into(),
            Kind::AnyOf => "Must validate at least one schema (anyOf)".into(),
            Kind::Required { property } => format!("{property} is required"),
            Kind::AdditionalProperty { property } => {
                format!("Additional property {property} is not allowed")
            }
            Kind::Unique { i, j } => format!("array items[{i},{j}] must be unique"),
            Kind::Enum { allowed } => {
                format!("{} must be one of the following: {allowed}", self.field)
            }
            Kind::Minimum { min } => format!("Must be greater than or equal to {min}"),
            Kind::Format { format } => format!("Does not match format '{format}'"),
        }
    }

    fn given(&self) -> &str {
        self.got
            .as_deref()
            .map(|g| g.split(':').next().unwrap_or(g))
            .unwrap_or("")
    }
}

#[derive(Debug, Default)]
struct Outcome {
    errors: Vec<RawError>,
    score: i64,
}

impl Outcome {
    fn error(&mut self, ctx: &[String], pos: Pos, kind: Kind, node: Option<&Node>) {
        let field = if ctx.is_empty() {
            "(root)".to_string()
        } else {
            ctx.join(".")
        };
        let depth = if ctx.is_empty() {
            1
        } else {
            field.split('.').count()
        };
        let got = node.map(|n| format!("{}:{}", given_type(n).name(), n.describe()));
        self.errors.push(RawError {
            kind,
            field,
            depth,
            pos,
            got,
        });
        self.score -= 2;
    }

    fn merge(&mut self, other: Outcome) {
        self.errors.extend(other.errors);
        self.score += other.score;
    }
}

/// docker's `humanReadableType`: `[string,number]` → "string or number",
/// object → mapping, array → list.
fn human_type(expected: &str) -> String {
    let one = |t: &str| match t {
        "object" => "mapping".to_string(),
        "array" => "list".to_string(),
        t => t.to_string(),
    };
    match expected.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
        Some(list) => {
            let all: Vec<String> = list.split(',').map(one).collect();
            let (last, first) = all
                .split_last()
                .map(|(l, f)| (l.clone(), f.to_vec()))
                .unwrap_or_default();
            format!("{} or {last}", first.join(", "))
        }
        None => one(expected),
    }
}

/// docker's `getMostSpecificError` and `getDescription`.
fn most_specific(errors: &[RawError]) -> SchemaError {
    let mut best = 0;
    for (i, e) in errors.iter().enumerate() {
        let b = &errors[best];
        if e.depth > b.depth {
            best = i;
            continue;
        }
        if e.depth == b.depth
            && matches!(e.kind, Kind::InvalidType { .. })
            && !matches!(b.kind, Kind::InvalidType { .. })
        {
            best = i;
        }
    }
    let parent = &errors[best];
    let child = match parent.kind {
        Kind::OneOf | Kind::AnyOf if best + 1 < errors.len() => Some(&errors[best + 1]),
        _ => None,
    };
    let description = match (&parent.kind, child) {
        (Kind::InvalidType { expected }, _) => format!("must be a {}", human_type(expected)),
        (Kind::OneOf | Kind::AnyOf, Some(child)) => child.description(),
        _ => parent.description(),
    };
    let got = match parent.kind {
        Kind::InvalidType { .. } => parent
            .got
            .as_deref()
            .and_then(|g| g.split_once(':'))
            .map(|(_, v)| v.to_string()),
        _ => None,
    };
    SchemaError {
        field: parent.field.clone(),
        description,
        pos: parent.pos,
        got,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    fn check(text: &str, version: &str) -> Result<(), SchemaError> {
        let node = yaml::parse(text).expect("yaml").expect("doc");
        validate(&node, version).map_err(|e| e.expect("known version"))
    }

    fn error(text: &str) -> String {
        let e = check(text, "3.13").expect_err("invalid");
        format!("{} {}", e.field, e.description)
    }

    #[test]
    fn every_schema_compiles_with_known_patterns() {
        for v in VERSIONS {
            let s = compiled(v).expect("schema");
            assert!(s.subs.len() > 50, "{v}");
            for sub in &s.subs {
                for (p, _) in &sub.pattern_properties {
                    assert!(!matches!(p, Pattern::Unknown), "{v}");
                }
                if let Some(r) = &sub.reference {
                    assert!(s.definitions.contains_key(r), "{v}: {r}");
                }
            }
        }
        assert!(compiled("3.14").is_none());
        assert!(compiled("2.0").is_none());
    }

    // Messages checked against docker CLI 28 (docker/cli loader tests and
    // `docker stack config`).
    #[test]
    fn docker_messages() {
        assert_eq!(
            error("services:\n  web:\n    image: x\n    deploy:\n      replicas: \"two\"\n"),
            "services.web.deploy.replicas must be a integer"
        );
        assert_eq!(
            error("foo:\n  image: busybox\n"),
            "(root) Additional property foo is not allowed"
        );
        assert_eq!(
            error("services:\n  foo:\n    image: 1\n"),
            "services.foo.image must be a string"
        );
        assert_eq!(error("services: []\n"), "services must be a mapping");
        assert_eq!(
            error("services:\n  foo: 1\n"),
            "services.foo must be a mapping"
        );
        assert_eq!(
            error("services:\n  x:\n    image: a\n    environment:\n      FOO: [1]\n"),
            "services.x.environment.FOO must be a string, number or null"
        );
        assert_eq!(
            error("services:\n  x:\n    image: a\n    environment: 1\n"),
            "services.x.environment must be a mapping"
        );
        assert_eq!(
            error(
                "services:\n  x:\n    image: a\n    volumes:\n      - type: tmpfs\n        target: /t\n        tmpfs:\n          size: -1\n"
            ),
            "services.x.volumes.0.tmpfs.size Must be greater than or equal to 0"
        );
        assert_eq!(
            error("services:\n  x:\n    image: a\n    ports:\n      - \"8080:80:90:100\"\n"),
            "services.x.ports.0 Does not match format 'ports'"
        );
        assert_eq!(
            error(
                "services:\n  x:\n    image: a\n    deploy:\n      update_config:\n        order: later\n"
            ),
            "services.x.deploy.update_config.order services.x.deploy.update_config.order must be one of the following: \"start-first\", \"stop-first\""
        );
        assert_eq!(
            error("services:\n  x:\n    image: a\n    stop_grace_period: 10\n"),
            "services.x.stop_grace_period must be a string"
        );
        assert_eq!(
            error("services:\n  x:\n    image: a\n    stop_grace_period: ten\n"),
            "services.x.stop_grace_period Does not match format 'duration'"
        );
        assert_eq!(
            error("services:\n  x:\n    image: a\n    ulimits:\n      nofile: {soft: 1}\n"),
            "services.x.ulimits.nofile hard is required"
        );
        assert_eq!(
            error("services:\n  x:\n    image: a\n    cap_add: [A, B, A]\n"),
            "services.x.cap_add array items[0,2] must be unique"
        );
        assert_eq!(
            error("services:\n  x:\n    image: a\n    command: 123\n"),
            "services.x.command must be a string"
        );
        assert_eq!(
            error(
                "services:\n  x:\n    image: a\n    secrets:\n      - source: s\n        mode: \"0440\"\n"
            ),
            "services.x.secrets.0.mode must be a number"
        );
        let e = check(
            "services:\n  x:\n    image: a\n    healthcheck:\n      start_period: 5s\n",
            "3.3",
        )
        .expect_err("3.3 has no start_period");
        assert_eq!(
            format!("{} {}", e.field, e.description),
            "services.x.healthcheck Additional property start_period is not allowed"
        );
    }

    #[test]
    fn positions_point_at_the_offending_node() {
        let e = check("services:\n  web:\n    image: x\n    bogus: 1\n", "3.13").expect_err("bad");
        assert_eq!(e.pos, Pos { line: 4, col: 5 });
        assert_eq!(e.description, "Additional property bogus is not allowed");
        let e = check("services:\n  web:\n    read_only: yes\n", "3.13").expect_err("yes");
        assert_eq!(
            (e.field.as_str(), e.description.as_str()),
            ("services.web.read_only", "must be a boolean")
        );
        assert_eq!(e.got.as_deref(), Some("\"yes\""));
        assert_eq!(e.pos, Pos { line: 3, col: 16 });
    }

    #[test]
    fn versions_gate_keys() {
        // `configs` arrived in 3.3, `start_period` in 3.4, `x-` top-level
        // keys in 3.4, `start_interval` in 3.12 (per docker's schemas).
        let configs = "version: '3.2'\nservices:\n  x:\n    image: a\n    configs: [c]\n";
        assert!(check(configs, "3.2").is_err());
        assert!(check(configs, "3.3").is_ok());
        let ext = "version: '3'\nx-common: 1\nservices:\n  x:\n    image: a\n";
        assert!(check(ext, "3.3").is_err());
        assert_eq!(check(ext, "3.4"), Ok(()));
        let si = "services:\n  x:\n    image: a\n    healthcheck:\n      start_interval: 1s\n";
        assert!(check(si, "3.11").is_err());
        assert!(check(si, "3.12").is_ok());
    }

    #[test]
    fn extension_keys_are_allowed_where_docker_allows_them() {
        let text = "x-top: {a: 1}\nservices:\n  web:\n    image: a\n    x-svc: 1\n\
                    networks:\n  n:\n    x-n: 1\nvolumes:\n  v:\n    x-v: 1\n\
                    secrets:\n  s:\n    file: f\n    x-s: 1\nconfigs:\n  c:\n    file: f\n    x-c: 1\n";
        assert_eq!(check(text, "3.13"), Ok(()));
        // Not inside deploy.
        assert!(
            check(
                "services:\n  web:\n    image: a\n    deploy:\n      x-d: 1\n",
                "3.13"
            )
            .is_err()
        );
    }
}
