//! docker's `filters` query parameter: `{"label":{"a=b":true}}` (the form
//! clients send since API 1.22) or `{"label":["a=b"]}` (the older one), and
//! how each kind of object matches it, as dockerd and swarmkit match.

use std::collections::{BTreeMap, HashMap};

use crate::error::ApiError;

/// Filter name → the values given for it (any of which may match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the query value; empty means no filter.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        if raw.trim().is_empty() {
            return Ok(Self::default());
        }
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad("filters", format!("not docker's filter JSON: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(ApiError::bad(
                "filters",
                "expected a JSON object such as {\"label\":{\"a=b\":true}}",
            ));
        };
        let mut out = BTreeMap::new();
        for (key, values) in map {
            let list: Vec<String> = match values {
                serde_json::Value::Object(m) => m
                    .into_iter()
                    .filter(|(_, on)| on.as_bool() != Some(false))
                    .map(|(v, _)| v)
                    .collect(),
                serde_json::Value::Array(a) => a
                    .into_iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => Ok(s),
                        other => Err(ApiError::bad(
                            format!("filters.{key}"),
                            format!("expected strings, got {other}"),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(ApiError::bad(
                        format!("filters.{key}"),
                        format!("expected an object or a list, got {other}"),
                    ));
                }
            };
            out.insert(key, list);
        }
        Ok(Self(out))
    }

    /// dockerd refuses a filter its list does not know.
    pub fn accept(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::InvalidFilter(k.clone())),
            None => Ok(()),
        }
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn set(&mut self, key: &str, values: Vec<String>) {
        self.0.insert(key.to_owned(), values);
    }

    /// A filter not given matches everything; one given matches when any of
    /// its values does.
    pub fn any(&self, key: &str, matches: impl Fn(&str) -> bool) -> bool {
        let values = self.get(key);
        values.is_empty() || values.iter().any(|v| matches(v))
    }

    /// swarmkit's name and id filters: prefixes.
    pub fn prefix(&self, key: &str, candidate: &str) -> bool {
        self.any(key, |v| candidate.starts_with(v))
    }

    /// dockerd's network name and id filters: the value anywhere in it.
    pub fn contains(&self, key: &str, candidate: &str) -> bool {
        self.any(key, |v| candidate.contains(v))
    }

    pub fn exact(&self, key: &str, candidate: &str) -> bool {
        self.any(key, |v| v == candidate)
    }

    /// `label=KEY` or `label=KEY=VALUE`: unlike the others, every label
    /// filter given must match (swarmkit's `filterMatchLabels`).
    pub fn labels(&self, key: &str, labels: &HashMap<String, String>) -> bool {
        self.get(key).iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(f.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn both_forms_parse() -> Result<(), ApiError> {
        let new = Filters::parse(r#"{"label":{"a=b":true},"name":{"web":true}}"#)?;
        let old = Filters::parse(r#"{"label":["a=b"],"name":["web"]}"#)?;
        assert_eq!(new, old);
        assert_eq!(new.get("label"), ["a=b"]);
        assert!(Filters::parse("")?.get("name").is_empty());
        Ok(())
    }

    #[test]
    fn bad_filters_name_what_is_wrong() {
        for (raw, says) in [
            ("{", "filters"),
            ("[1]", "filters"),
            (r#"{"name":3}"#, "filters.name"),
            (r#"{"name":[3]}"#, "filters.name"),
        ] {
            let e = Filters::parse(raw).err().map(|e| e.to_string());
            assert!(
                e.as_deref().unwrap_or_default().starts_with(says),
                "{raw}: {e:?}"
            );
        }
        let f = Filters::parse(r#"{"colour":["red"]}"#)
            .ok()
            .unwrap_or_default();
        let e = f.accept(&["name"]).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("invalid filter 'colour'"));
    }

    #[test]
    fn labels_match_as_swarmkit_matches() -> Result<(), ApiError> {
        let labels: HashMap<String, String> = [("com.docker.stack.namespace", "app"), ("x", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let f = |raw: &str| Filters::parse(raw);
        assert!(f(r#"{"label":["com.docker.stack.namespace"]}"#)?.labels("label", &labels));
        assert!(f(r#"{"label":["com.docker.stack.namespace=app"]}"#)?.labels("label", &labels));
        assert!(!f(r#"{"label":["com.docker.stack.namespace=other"]}"#)?.labels("label", &labels));
        assert!(!f(r#"{"label":["x","y"]}"#)?.labels("label", &labels));
        assert!(f("{}")?.labels("label", &labels));
        Ok(())
    }

    proptest! {
        // Any filter map, written in either form, reads back the same.
        #[test]
        fn either_form_round_trips(map in proptest::collection::btree_map(
            "[a-z.-]{1,12}", proptest::collection::btree_set("[ -~]{0,16}", 0..4), 0..5)) {
            let as_object: serde_json::Map<String, serde_json::Value> = map.iter().map(|(k, vs)| {
                (k.clone(), serde_json::Value::Object(
                    vs.iter().map(|v| (v.clone(), serde_json::Value::Bool(true))).collect()))
            }).collect();
            let as_list: serde_json::Map<String, serde_json::Value> = map.iter().map(|(k, vs)| {
                (k.clone(), serde_json::Value::Array(
                    vs.iter().map(|v| serde_json::Value::String(v.clone())).collect()))
            }).collect();
            let a = Filters::parse(&serde_json::Value::Object(as_object).to_string());
            let b = Filters::parse(&serde_json::Value::Object(as_list).to_string());
            prop_assert!(a.is_ok() && b.is_ok());
            let (a, b) = (a.ok().unwrap_or_default(), b.ok().unwrap_or_default());
            prop_assert_eq!(&a, &b);
            for (k, vs) in &map {
                let mut got = a.get(k).to_vec();
                got.sort();
                prop_assert_eq!(got, vs.iter().cloned().collect::<Vec<_>>());
            }
        }

        // Whatever the input, parsing answers: a filter or a 400.
        #[test]
        fn never_panics(raw in "[ -~]{0,64}") {
            if let Err(e) = Filters::parse(&raw) {
                prop_assert_eq!(e.status().as_u16(), 400);
            }
        }
    }
}
