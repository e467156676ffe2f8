//! Swarm's service templates: the placeholders `{{.Service.Name}}`,
//! `{{.Node.ID}}`, … in `--env`, `--hostname`, `--mount` sources and the
//! data of configs created with `--template-driver golang`.
//!
//! Only placeholders (and `index .Service.Labels "key"`), not Go's template
//! language: swarm's `secret`, `config` and `env` functions would let a
//! config pull secrets or node environment into a file any process of the
//! task can read, and pipelines buy nothing a placeholder cannot do. Every
//! template is parsed when it is stored (`service create`, `config
//! create`), so an unknown placeholder is refused there, never a broken
//! task; the dispatcher renders it per task for the node that runs it.
//!
//! `.Task.Name` is swarmkit's `naming.Task`: `<service>.<slot>.<task id>`
//! for a replicated task, `<service>.<node id>.<task id>` for a global one
//! (`.Task.Slot` is then 0). That is what swarm templates expand to; it is
//! not the `<service>.<slot>` that `service ps` and the task's default
//! hostname use.

use std::fmt::Write as _;

use crate::model::Labels;

/// What an error lists as the way out.
pub const SUPPORTED: &str = "only these placeholders are supported: {{.Service.Name}}, \
     {{.Service.ID}}, {{.Service.Labels}}, {{index .Service.Labels \"key\"}}, {{.Node.ID}}, \
     {{.Node.Hostname}}, {{.Node.Platform.OS}}, {{.Node.Platform.Architecture}}, {{.Task.ID}}, \
     {{.Task.Name}}, {{.Task.Slot}}";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{{{{{action}}}}} is not a known placeholder; {SUPPORTED}")]
    Unknown { action: String },
    #[error(
        "{{{{{action}}}}}: template functions and pipelines (secret, config, env, printf, |) \
         are not supported; {SUPPORTED}"
    )]
    Function { action: String },
    #[error("the \"{{{{\" at byte {at} is never closed by \"}}}}\"")]
    Unclosed { at: usize },
}

/// A value a placeholder stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    ServiceName,
    ServiceId,
    ServiceLabels,
    ServiceLabel(String),
    NodeId,
    NodeHostname,
    NodeOs,
    NodeArchitecture,
    TaskId,
    TaskName,
    TaskSlot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Field(Field),
}

/// A parsed template, ready to render for any task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template<'a> {
    pieces: Vec<Piece<'a>>,
}

/// What the placeholders of one task expand to.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    pub service_name: &'a str,
    pub service_id: &'a str,
    pub service_labels: Option<&'a Labels>,
    pub node_id: &'a str,
    pub node_hostname: &'a str,
    pub node_os: &'a str,
    pub node_architecture: &'a str,
    pub task_id: &'a str,
    /// 0 for a global service's task, as in swarmkit.
    pub task_slot: u64,
}

impl Context<'_> {
    /// swarmkit's `naming.Task`.
    pub fn task_name(&self) -> String {
        if self.task_slot == 0 {
            format!("{}.{}.{}", self.service_name, self.node_id, self.task_id)
        } else {
            format!("{}.{}.{}", self.service_name, self.task_slot, self.task_id)
        }
    }
}

/// Whether `text` holds anything to expand; text without `{{` is never
/// parsed, so it cannot fail.
pub fn is_template(text: &str) -> bool {
    text.contains("{{")
}

/// Parses `text` with Go's delimiters, `{{- ` and ` -}}` trimming the
/// whitespace beside an action as Go does.
pub fn parse(text: &str) -> Result<Template<'_>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or(TemplateError::Unclosed { at: offset + open })?;
        let mut action = &after[..close];
        let mut before = &rest[..open];
        if trim_next {
            before = before.trim_start();
        }
        // Go's trim markers are "{{- " and " -}}": the dash must touch the
        // braces and be set off by whitespace.
        if let Some(a) = action.strip_prefix('-')
            && a.starts_with(char::is_whitespace)
        {
            before = before.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix('-')
            && a.ends_with(char::is_whitespace)
        {
            trim_next = true;
            action = a;
        }
        if !before.is_empty() {
            pieces.push(Piece::Text(before));
        }
        pieces.push(Piece::Field(field(action.trim())?));
        offset += open + 2 + close + 2;
        rest = &after[close + 2..];
    }
    if trim_next {
        rest = rest.trim_start();
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(Template { pieces })
}

fn field(action: &str) -> Result<Field, TemplateError> {
    let unknown = || TemplateError::Unknown {
        action: action.to_owned(),
    };
    let function = || TemplateError::Function {
        action: action.to_owned(),
    };
    if let Some(args) = action.strip_prefix("index")
        && args.starts_with(char::is_whitespace)
    {
        return index(args.trim()).ok_or_else(function);
    }
    if !action.starts_with('.') {
        return Err(function());
    }
    if action.contains(|c: char| c.is_whitespace() || c == '|' || c == '(') {
        return Err(function());
    }
    Ok(match action {
        ".Service.Name" => Field::ServiceName,
        ".Service.ID" => Field::ServiceId,
        ".Service.Labels" => Field::ServiceLabels,
        ".Node.ID" => Field::NodeId,
        ".Node.Hostname" => Field::NodeHostname,
        ".Node.Platform.OS" => Field::NodeOs,
        ".Node.Platform.Architecture" => Field::NodeArchitecture,
        ".Task.ID" => Field::TaskId,
        ".Task.Name" => Field::TaskName,
        ".Task.Slot" => Field::TaskSlot,
        _ => return Err(unknown()),
    })
}

/// `.Service.Labels "key"` (a double-quoted key without escapes, or a
/// back-quoted one), the one use of `index` stacks make.
fn index(args: &str) -> Option<Field> {
    let key = args.strip_prefix(".Service.Labels")?.trim_start();
    let quoted = |q: char| {
        let inner = key.strip_prefix(q)?.strip_suffix(q)?;
        let escaped = q == '"' && inner.contains('\\');
        (!inner.contains(q) && !escaped).then_some(inner)
    };
    let inner = quoted('"').or_else(|| quoted('`'))?;
    Some(Field::ServiceLabel(inner.to_owned()))
}

impl Template<'_> {
    pub fn render(&self, ctx: &Context<'_>) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => render_field(&mut out, f, ctx),
            }
        }
        out
    }
}

fn render_field(out: &mut String, f: &Field, ctx: &Context<'_>) {
    match f {
        Field::ServiceName => out.push_str(ctx.service_name),
        Field::ServiceId => out.push_str(ctx.service_id),
        Field::ServiceLabels => {
            // Go prints a map as map[k1:v1 k2:v2], keys sorted.
            out.push_str("map[");
            for (i, (k, v)) in ctx.service_labels.into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let _ = write!(out, "{k}:{v}");
            }
            out.push(']');
        }
        // A missing key is the zero value, "", as Go's index gives.
        Field::ServiceLabel(key) => {
            if let Some(v) = ctx.service_labels.and_then(|l| l.get(key)) {
                out.push_str(v);
            }
        }
        Field::NodeId => out.push_str(ctx.node_id),
        Field::NodeHostname => out.push_str(ctx.node_hostname),
        Field::NodeOs => out.push_str(ctx.node_os),
        Field::NodeArchitecture => out.push_str(ctx.node_architecture),
        Field::TaskId => out.push_str(ctx.task_id),
        Field::TaskName => out.push_str(&ctx.task_name()),
        Field::TaskSlot => {
            let _ = write!(out, "{}", ctx.task_slot);
        }
    }
}

/// `text` rendered for `ctx`; text without `{{` comes back as it is.
pub fn expand(text: &str, ctx: &Context<'_>) -> Result<String, TemplateError> {
    if !is_template(text) {
        return Ok(text.to_owned());
    }
    Ok(parse(text)?.render(ctx))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ctx(labels: &Labels) -> Context<'_> {
        Context {
            service_name: "web",
            service_id: "svc1",
            service_labels: Some(labels),
            node_id: "node1",
            node_hostname: "n1.example",
            node_os: "linux",
            node_architecture: "x86_64",
            task_id: "task1",
            task_slot: 2,
        }
    }

    fn labels() -> Labels {
        [("tier", "db"), ("app", "shop")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn every_placeholder_expands() {
        let l = labels();
        let c = ctx(&l);
        let e = |t: &str| expand(t, &c);
        assert_eq!(e("NODE_ID={{.Node.ID}}"), Ok("NODE_ID=node1".into()));
        assert_eq!(e("{{ .Node.Hostname }}"), Ok("n1.example".into()));
        assert_eq!(
            e("{{.Service.Name}}/{{.Service.ID}}/{{.Task.ID}}/{{.Task.Slot}}"),
            Ok("web/svc1/task1/2".into())
        );
        assert_eq!(e("{{.Task.Name}}"), Ok("web.2.task1".into()));
        assert_eq!(
            e("{{.Node.Platform.OS}}-{{.Node.Platform.Architecture}}"),
            Ok("linux-x86_64".into())
        );
        assert_eq!(e("{{.Service.Labels}}"), Ok("map[app:shop tier:db]".into()));
        assert_eq!(e("{{index .Service.Labels \"tier\"}}"), Ok("db".into()));
        assert_eq!(e("{{index .Service.Labels `app`}}"), Ok("shop".into()));
        assert_eq!(e("[{{index .Service.Labels \"none\"}}]"), Ok("[]".into()));
        assert_eq!(e("a  {{- .Node.ID -}}  b"), Ok("anode1b".into()));
        assert_eq!(e("no braces }} here"), Ok("no braces }} here".into()));
        let global = Context {
            task_slot: 0,
            ..ctx(&l)
        };
        assert_eq!(
            expand("{{.Task.Name}}", &global),
            Ok("web.node1.task1".into())
        );
        assert_eq!(
            expand("{{.Service.Labels}}", &Context::default()),
            Ok("map[]".into())
        );
    }

    #[test]
    fn anything_else_is_refused_naming_it() {
        // The error's text; empty when accepted.
        let e = |t: &str| parse(t).err().map(|e| e.to_string()).unwrap_or_default();
        let unknown = e("{{.Node.Name}}");
        assert!(
            unknown.starts_with("{{.Node.Name}} is not a known placeholder"),
            "{unknown}"
        );
        assert!(unknown.contains("{{.Task.Slot}}"), "{unknown}");
        for f in [
            "{{secret \"db\"}}",
            "{{config \"x\"}}",
            "{{env \"HOME\"}}",
            "{{.Node.ID | printf \"%s\"}}",
            "{{index .Node \"x\"}}",
            "{{index .Service.Labels \"a\\\"b\"}}",
            "{{if .Node.ID}}x{{end}}",
            "{{}}",
            "{{/* c */}}",
        ] {
            let got = e(f);
            assert!(got.contains("not supported"), "{f}: {got}");
        }
        assert_eq!(
            parse("ok {{.Node.ID}} then {{.Node.ID"),
            Err(TemplateError::Unclosed { at: 21 })
        );
        assert!(matches!(
            parse("{{.Foo}}"),
            Err(TemplateError::Unknown { .. })
        ));
    }

    proptest! {
        /// Text without "{{" renders as itself, and is not a template.
        #[test]
        fn plain_text_round_trips(t in "[^{]*|([^{]*\\{[^{]+)*") {
            prop_assume!(!t.contains("{{"));
            prop_assert!(!is_template(&t));
            let l = Labels::new();
            prop_assert_eq!(expand(&t, &ctx(&l)), Ok(t.clone()));
            prop_assert_eq!(parse(&t).map(|p| p.render(&ctx(&l))), Ok(t));
        }

        /// The parser never panics, and what it accepts renders.
        #[test]
        fn never_panics(t in any::<String>()) {
            let l = labels();
            if let Ok(p) = parse(&t) {
                let _ = p.render(&ctx(&l));
            }
        }

        /// Placeholders among arbitrary text: the text around them is kept.
        #[test]
        fn text_around_placeholders_is_kept(a in "[^{}]*", b in "[^{}]*") {
            let l = labels();
            let got = expand(&format!("{a}{{{{.Node.ID}}}}{b}"), &ctx(&l));
            prop_assert_eq!(got, Ok(format!("{a}node1{b}")));
        }
    }
}
