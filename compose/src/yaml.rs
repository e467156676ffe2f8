//! A positioned YAML value tree, read the way docker CLI 28 reads compose
//! files: gopkg.in/yaml.v3 decoding into `interface{}`.
//!
//! saphyr-parser gives events with positions; scalars are resolved here by
//! yaml.v3's rules rather than YAML 1.2's, because that is what decides what
//! docker sees: `0440` is octal (288), `0x1F` hex, `1_000` is 1000, `08` is the
//! float 8, only `true`/`false` (three spellings each) are booleans — `yes`,
//! `on`, `y` stay strings when decoded into `interface{}` —, date-like values
//! stay strings, and there are no sexagesimal numbers. Quoted and block
//! scalars are always strings. `<<` merge keys take a mapping or a list of
//! mappings; keys written in the mapping itself win over merged ones, and in
//! a list the earlier mapping wins. A key written twice is an error, as in
//! yaml.v3.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// Where a node starts in its file: line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

/// A resolved YAML value. Integers keep the width yaml.v3 gives them
/// (int64 or uint64), so an i128 holds both.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// One mapping entry: a string key (with its position) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    pub fn new(value: Value, pos: Pos) -> Node {
        Node { value, pos }
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    /// What kind of value this is, in the words of docker's schema errors.
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(f) if f.fract() == 0.0 && f.is_finite() => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "object",
        }
    }

    /// A short rendering of a scalar for error messages (`"two"`, `3`,
    /// `a list`).
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => go_float(*f),
            Value::Str(s) => format!("{s:?}"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
}

/// How Go's `fmt.Sprint` prints a float64 (`%v`: shortest digits, exponent
/// form from 1e6 up and below 1e-4), which is how docker turns a number
/// into a string for labels, environment values and sysctls.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Shortest round-trip digits from Rust's `{:e}`, then Go's %g layout.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    let point = exp + 1; // digits before the decimal point
    if point <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-point) as usize));
        out.push_str(&digits);
    } else if (point as usize) >= digits.len() {
        out.push_str(&digits);
        out.push_str(&"0".repeat(point as usize - digits.len()));
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
    out
}

/// Why a file could not be read as YAML, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl YamlError {
    fn at(pos: Pos, message: impl Into<String>) -> YamlError {
        YamlError {
            pos,
            message: message.into(),
        }
    }
}

/// Aliases are expanded by copying; past this many copied nodes the document
/// is refused, as yaml.v3 refuses "excessive aliasing" (billion laughs).
const ALIAS_BUDGET: usize = 1_000_000;

/// Parses the first document of `text`. `Ok(None)` when there is none (an
/// empty file), which docker reports as "top-level object must be a mapping".
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        copied: 0,
        depth: 0,
    };
    loop {
        let (event, span) = builder.next()?;
        match event {
            Event::StreamStart | Event::Nothing => {}
            Event::StreamEnd => return Ok(None),
            Event::DocumentStart(_) => {
                let (event, span) = builder.next()?;
                if matches!(event, Event::DocumentEnd) {
                    return Ok(None);
                }
                return builder.node(event, span).map(Some);
            }
            _ => {
                return Err(YamlError::at(
                    Pos::of(&span),
                    "unexpected event before document",
                ));
            }
        }
    }
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    copied: usize,
    depth: usize,
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 512;

/// A raw key as written, before it is known to be a string: yaml.v3 compares
/// keys by their text when it looks for duplicates.
struct RawKey {
    text: String,
    pos: Pos,
    is_merge: bool,
    resolved: Value,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(YamlError::at(
                Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                e.info().to_string(),
            )),
            None => Err(YamlError::at(Pos::default(), "unexpected end of input")),
        }
    }

    fn node(&mut self, event: Event<'a>, span: Span) -> Result<Node, YamlError> {
        let pos = Pos::of(&span);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(&text, style, tag.as_deref(), pos)?;
                let node = Node::new(value, pos);
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(YamlError::at(pos, "unknown anchor"));
                };
                let size = count(target);
                self.copied += size;
                if self.copied > ALIAS_BUDGET {
                    return Err(YamlError::at(pos, "document contains excessive aliasing"));
                }
                Ok(target.clone())
            }
            Event::SequenceStart(anchor, _) => {
                self.enter(pos)?;
                let mut items = Vec::new();
                loop {
                    let (ev, sp) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, sp)?);
                }
                self.depth -= 1;
                let node = Node::new(Value::Seq(items), pos);
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::MappingStart(anchor, _) => {
                self.enter(pos)?;
                let node = self.mapping(pos)?;
                self.depth -= 1;
                self.remember(anchor, &node);
                Ok(node)
            }
            _ => Err(YamlError::at(pos, "unexpected YAML event")),
        }
    }

    fn enter(&mut self, pos: Pos) -> Result<(), YamlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(YamlError::at(pos, "document is nested too deeply"));
        }
        Ok(())
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        // saphyr numbers anchors from 1; 0 means none.
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }

    fn key(&mut self, event: Event<'a>, span: Span) -> Result<RawKey, YamlError> {
        let pos = Pos::of(&span);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let is_merge = style == ScalarStyle::Plain
                    && tag.as_deref().is_none_or(|t| is_core(t, "merge"))
                    && text == "<<";
                let resolved = if is_merge {
                    Value::Str("<<".into())
                } else {
                    resolve_scalar(&text, style, tag.as_deref(), pos)?
                };
                self.remember(anchor, &Node::new(resolved.clone(), pos));
                Ok(RawKey {
                    text: text.into_owned(),
                    pos,
                    is_merge,
                    resolved,
                })
            }
            Event::Alias(_) => {
                let node = self.node(event, span)?;
                let text = match &node.value {
                    Value::Str(s) => s.clone(),
                    other => scalar_text(other),
                };
                Ok(RawKey {
                    text,
                    pos,
                    is_merge: false,
                    resolved: node.value,
                })
            }
            // A collection as a key: read it (to stay in step with the
            // events) and refuse it below as a non-string key.
            ev => {
                let node = self.node(ev, span)?;
                Ok(RawKey {
                    text: String::new(),
                    pos,
                    is_merge: false,
                    resolved: node.value,
                })
            }
        }
    }

    fn mapping(&mut self, pos: Pos) -> Result<Node, YamlError> {
        let mut raw: Vec<(RawKey, Node)> = Vec::new();
        loop {
            let (ev, sp) = self.next()?;
            if matches!(ev, Event::MappingEnd) {
                break;
            }
            let key = self.key(ev, sp)?;
            let (ev, sp) = self.next()?;
            let value = self.node(ev, sp)?;
            raw.push((key, value));
        }
        // yaml.v3: a key written twice (same text) is an error.
        for (i, (a, _)) in raw.iter().enumerate() {
            if let Some((b, _)) = raw[i + 1..].iter().find(|(b, _)| b.text == a.text) {
                return Err(YamlError::at(
                    b.pos,
                    format!(
                        "mapping key {:?} already defined at line {}",
                        a.text, a.pos.line
                    ),
                ));
            }
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut merge: Option<Node> = None;
        for (key, value) in raw {
            if key.is_merge {
                merge = Some(value);
                continue;
            }
            let Value::Str(name) = key.resolved else {
                return Err(YamlError::at(
                    key.pos,
                    format!(
                        "non-string key {}",
                        if key.text.is_empty() {
                            "(a collection)".to_string()
                        } else {
                            key.text
                        }
                    ),
                ));
            };
            entries.push(Entry {
                key: name,
                key_pos: key.pos,
                value,
            });
        }
        if let Some(merge) = merge {
            let sources: Vec<Node> = match merge.value {
                Value::Map(_) => vec![merge],
                Value::Seq(items) => items,
                _ => {
                    return Err(YamlError::at(
                        merge.pos,
                        "map merge requires map or sequence of maps as the value",
                    ));
                }
            };
            for source in sources {
                let Value::Map(merged) = source.value else {
                    return Err(YamlError::at(
                        source.pos,
                        "map merge requires map or sequence of maps as the value",
                    ));
                };
                for entry in merged {
                    if !entries.iter().any(|e| e.key == entry.key) {
                        entries.push(entry);
                    }
                }
            }
        }
        Ok(Node::new(Value::Map(entries), pos))
    }
}

fn count(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|e| 1 + count(&e.value)).sum::<usize>(),
        _ => 1,
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => go_float(*f),
        Value::Str(s) => s.clone(),
        _ => String::new(),
    }
}

fn is_core(tag: &Tag, suffix: &str) -> bool {
    (tag.is_yaml_core_schema() || tag.handle == "!!") && tag.suffix == suffix
}

/// The core-schema name of a tag (`str`, `int`, …), or None for a local or
/// unknown tag, which yaml.v3 leaves as a string when decoding into
/// `interface{}`.
fn core_name(tag: &Tag) -> Option<&str> {
    if tag.is_yaml_core_schema() || tag.handle == "!!" {
        Some(tag.suffix.as_str())
    } else {
        None
    }
}

fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    pos: Pos,
) -> Result<Value, YamlError> {
    if let Some(tag) = tag {
        let Some(name) = core_name(tag) else {
            return Ok(Value::Str(text.to_string()));
        };
        let plain = resolve_plain(text);
        let bad = |what: &str| {
            YamlError::at(
                pos,
                format!("cannot decode {} `{text}` as a !!{what}", tag_of(&plain)),
            )
        };
        return match name {
            "str" | "timestamp" => Ok(Value::Str(text.to_string())),
            "binary" => Ok(Value::Str(text.to_string())),
            "int" => match plain {
                Value::Int(_) => Ok(plain),
                _ => Err(bad("int")),
            },
            "float" => match plain {
                Value::Int(i) => Ok(Value::Float(i as f64)),
                Value::Float(_) => Ok(plain),
                _ => Err(bad("float")),
            },
            "bool" => match plain {
                Value::Bool(_) => Ok(plain),
                _ => Err(bad("bool")),
            },
            "null" => match plain {
                Value::Null => Ok(plain),
                _ => Err(bad("null")),
            },
            _ => Ok(Value::Str(text.to_string())),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.to_string()));
    }
    Ok(resolve_plain(text))
}

fn tag_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "!!null",
        Value::Bool(_) => "!!bool",
        Value::Int(_) => "!!int",
        Value::Float(_) => "!!float",
        _ => "!!str",
    }
}

/// yaml.v3's `resolve("", in)` for a plain scalar.
pub fn resolve_plain(text: &str) -> Value {
    match text {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match text.as_bytes()[0] {
        b'.' => {
            if is_dot_float(text)
                && let Ok(f) = text.parse::<f64>()
            {
                return Value::Float(f);
            }
            Value::Str(text.to_string())
        }
        b'0'..=b'9' | b'+' | b'-' => {
            let plain: String = text.chars().filter(|&c| c != '_').collect();
            if let Some(i) = go_parse_int(&plain) {
                return Value::Int(i);
            }
            if is_yaml_float(&plain)
                && let Ok(f) = plain.parse::<f64>()
            {
                return Value::Float(f);
            }
            Value::Str(text.to_string())
        }
        _ => Value::Str(text.to_string()),
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` then `ParseUint(s, 0, 64)`: an optional
/// sign, then `0x`/`0o`/`0b` prefixes or a leading `0` for octal.
fn go_parse_int(s: &str) -> Option<i128> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest.is_empty() {
        return None;
    }
    let lower = rest.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    if negative {
        // int64 only: ParseUint does not take a sign.
        (magnitude <= 1u128 << 63).then(|| -(magnitude as i128))
    } else if magnitude <= u64::MAX as u128 {
        Some(magnitude as i128)
    } else {
        None
    }
}

/// yaml.v3's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// What Go's ParseFloat accepts after a leading dot: `.5`, `.5e3`.
fn is_dot_float(s: &str) -> bool {
    s.starts_with('.') && s.len() > 1 && s.as_bytes()[1].is_ascii_digit() && is_yaml_float(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc(text: &str) -> Node {
        parse(text).expect("parses").expect("has a document")
    }

    fn scalar(text: &str) -> Value {
        doc(&format!("k: {text}\n"))
            .get("k")
            .expect("k")
            .value
            .clone()
    }

    #[test]
    fn yaml_v3_scalars() {
        assert_eq!(scalar("0440"), Value::Int(288));
        assert_eq!(scalar("0o17"), Value::Int(15));
        assert_eq!(scalar("0x1F"), Value::Int(31));
        assert_eq!(scalar("-0x1F"), Value::Int(-31));
        assert_eq!(scalar("0b101"), Value::Int(5));
        assert_eq!(scalar("1_000"), Value::Int(1000));
        assert_eq!(scalar("+12"), Value::Int(12));
        assert_eq!(scalar("08"), Value::Float(8.0));
        assert_eq!(scalar("1e3"), Value::Float(1000.0));
        assert_eq!(scalar(".5"), Value::Float(0.5));
        assert_eq!(scalar("18446744073709551615"), Value::Int(u64::MAX as i128));
        // Past uint64, yaml.v3's float pattern takes it.
        assert_eq!(
            scalar("18446744073709551616"),
            Value::Float(18446744073709551616.0)
        );
        assert_eq!(scalar("true"), Value::Bool(true));
        assert_eq!(scalar("FALSE"), Value::Bool(false));
        assert_eq!(scalar("~"), Value::Null);
        assert_eq!(scalar(""), Value::Null);
        // YAML 1.1 booleans are strings when yaml.v3 decodes into interface{}.
        for word in ["yes", "no", "on", "off", "y", "n", "Yes", "ON"] {
            assert_eq!(scalar(word), Value::Str(word.into()), "{word}");
        }
        // No sexagesimal numbers, and timestamps stay strings.
        assert_eq!(scalar("190:20:30"), Value::Str("190:20:30".into()));
        assert_eq!(scalar("2001-12-14"), Value::Str("2001-12-14".into()));
        assert_eq!(scalar("8080:80"), Value::Str("8080:80".into()));
        assert_eq!(scalar("_1"), Value::Str("_1".into()));
        assert_eq!(scalar("1.2.3"), Value::Str("1.2.3".into()));
        assert!(matches!(scalar(".inf"), Value::Float(f) if f.is_infinite()));
    }

    #[test]
    fn quoted_and_block_scalars_stay_strings() {
        assert_eq!(scalar("\"0440\""), Value::Str("0440".into()));
        assert_eq!(scalar("'true'"), Value::Str("true".into()));
        assert_eq!(scalar("|\n  123\n"), Value::Str("123\n".into()));
        assert_eq!(scalar("!!str 12"), Value::Str("12".into()));
        assert_eq!(scalar("!!int \"12\""), Value::Int(12));
        assert_eq!(scalar("!!float 3"), Value::Float(3.0));
        assert!(parse("k: !!int abc\n").is_err());
    }

    #[test]
    fn merge_keys_and_aliases() {
        let n = doc("base: &b {a: 1, b: 2}\nother: &o {b: 20, c: 30}\n\
                     x:\n  <<: *b\n  a: 10\n\
                     y:\n  <<: [*o, *b]\n\
                     z: *b\n");
        let x = n.get("x").expect("x");
        assert_eq!(x.get("a").map(|v| &v.value), Some(&Value::Int(10)));
        assert_eq!(x.get("b").map(|v| &v.value), Some(&Value::Int(2)));
        let y = n.get("y").expect("y");
        // The earlier map in the list wins.
        assert_eq!(y.get("b").map(|v| &v.value), Some(&Value::Int(20)));
        assert_eq!(y.get("a").map(|v| &v.value), Some(&Value::Int(1)));
        assert_eq!(y.get("c").map(|v| &v.value), Some(&Value::Int(30)));
        assert_eq!(n.get("z"), n.get("base"));
        // A quoted "<<" is an ordinary key.
        let q = doc("\"<<\": 1\n");
        assert_eq!(q.get("<<").map(|v| &v.value), Some(&Value::Int(1)));
        let err = parse("a: 1\nb:\n  <<: 3\n").expect_err("merge of a scalar");
        assert!(err.message.contains("map merge requires map"), "{err:?}");
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let err = parse("a: 1\nb: 2\n\"a\": 3\n").expect_err("duplicate");
        assert_eq!(err.pos.line, 3);
        assert_eq!(err.message, "mapping key \"a\" already defined at line 1");
    }

    #[test]
    fn positions_are_one_based() {
        let n = doc("services:\n  web:\n    image: nginx\n");
        let image = n
            .get("services")
            .and_then(|s| s.get("web"))
            .and_then(|w| w.get("image"));
        assert_eq!(image.map(|i| i.pos), Some(Pos { line: 3, col: 12 }));
        let web = &n.get("services").and_then(|s| s.as_map()).expect("map")[0];
        assert_eq!(web.key_pos, Pos { line: 2, col: 3 });
    }

    #[test]
    fn non_string_keys_and_errors() {
        assert!(
            parse("123: a\n")
                .expect_err("int key")
                .message
                .contains("non-string key 123")
        );
        let err = parse("a: [1, 2\n").expect_err("unclosed");
        assert!(err.pos.line >= 1);
        assert_eq!(parse("").expect("empty"), None);
        assert_eq!(parse("# only a comment\n").expect("comment"), None);
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text).expect_err("too many aliases");
        assert!(err.message.contains("excessive aliasing"));
    }

    #[test]
    fn go_float_matches_fmt_sprint() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(1000000.0), "1e+06");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(-2.25), "-2.25");
        assert_eq!(go_float(1e21), "1e+21");
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn decimal_ints_resolve_to_themselves(n in 1u64..u64::MAX) {
            prop_assert_eq!(resolve_plain(&n.to_string()), Value::Int(n as i128));
        }

        #[test]
        fn plain_words_without_digits_stay_strings(w in "[a-zA-Z][a-zA-Z_ ]{0,20}") {
            let v = resolve_plain(&w);
            let keyword = matches!(w.as_str(), "true" | "True" | "TRUE" | "false" | "False"
                | "FALSE" | "null" | "Null" | "NULL");
            prop_assert!(keyword || v == Value::Str(w.clone()));
        }
    }
}
