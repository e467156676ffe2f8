//! Reading docker's JSON bodies field by field: every type error names the
//! field's path (`TaskTemplate.Resources.Limits.NanoCPUs`), unknown fields
//! are ignored (as dockerd ignores them), and fields Shoal lacks are refused
//! only when they carry something.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::ApiError;

/// An object of a request body, with its path for error messages.
#[derive(Clone, Copy)]
pub struct Obj<'a> {
    value: &'a Value,
    path: &'a str,
}

/// docker's zero values: what Go's encoder writes for a field nobody set.
pub fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_default),
    }
}

/// Joins a path and a key: `TaskTemplate` + `Resources`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Obj<'a> {
    /// The body's top object; `path` is its name in errors ("" for the
    /// body itself).
    pub fn root(value: &'a Value, path: &'a str) -> Result<Self, ApiError> {
        match value {
            Value::Object(_) | Value::Null => Ok(Obj { value, path }),
            other => Err(ApiError::bad(
                if path.is_empty() { "body" } else { path },
                format!("expected a JSON object, got {}", kind(other)),
            )),
        }
    }

    pub fn path(&self) -> &str {
        self.path
    }

    /// A field's value; the key matches case-insensitively when no key
    /// matches exactly, as Go's decoder reads (the Python SDK writes
    /// `{"replicated": {"Replicas": 2}}`).
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        let Value::Object(m) = self.value else {
            return None;
        };
        m.get(key)
            .or_else(|| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
            .filter(|v| !v.is_null())
    }

    /// A nested object; `None` when absent or null. The closure receives it
    /// with its path, which must outlive the call.
    pub fn with<T>(
        &self,
        key: &str,
        f: impl FnOnce(Obj<'_>) -> Result<T, ApiError>,
    ) -> Result<Option<T>, ApiError> {
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        let path = join(self.path, key);
        let o = Obj::root(v, &path)?;
        f(o).map(Some)
    }

    /// Each object of a list.
    pub fn each<T>(
        &self,
        key: &str,
        mut f: impl FnMut(Obj<'_>) -> Result<T, ApiError>,
    ) -> Result<Vec<T>, ApiError> {
        let Some(v) = self.raw(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = v else {
            return Err(self.wrong(key, "a list", v));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{}[{i}]", join(self.path, key));
                f(Obj::root(item, &path)?)
            })
            .collect()
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> ApiError {
        ApiError::bad(
            join(self.path, key),
            format!("expected {expected}, got {}", kind(got)),
        )
    }

    pub fn str(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub fn string(&self, key: &str) -> Result<String, ApiError> {
        Ok(self.str(key)?.unwrap_or_default())
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "true or false", v)),
        }
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a whole number ≥ 0", &Value::Number(n.clone()))),
            Some(v) => Err(self.wrong(key, "a whole number", v)),
        }
    }

    pub fn i64(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a whole number", &Value::Number(n.clone()))),
            Some(v) => Err(self.wrong(key, "a whole number", v)),
        }
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(self.wrong(key, "a number", v)),
        }
    }

    /// A duration: docker's JSON carries them as integer nanoseconds.
    pub fn nanos(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.i64(key)? {
            Some(n) if n < 0 => Err(ApiError::bad(
                join(self.path, key),
                "a duration cannot be negative",
            )),
            n => Ok(n.map(|n| n as u64)),
        }
    }

    pub fn strs(&self, key: &str) -> Result<Vec<String>, ApiError> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.wrong(key, "a list of strings", other)),
                })
                .collect(),
            Some(v) => Err(self.wrong(key, "a list of strings", v)),
        }
    }

    pub fn map(&self, key: &str) -> Result<HashMap<String, String>, ApiError> {
        match self.raw(key) {
            None => Ok(HashMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(ApiError::bad(
                        format!("{}[{k:?}]", join(self.path, key)),
                        format!("expected a string, got {}", kind(other)),
                    )),
                })
                .collect(),
            Some(v) => Err(self.wrong(key, "an object of strings", v)),
        }
    }

    /// Refuses any of `keys` that carries a non-default value: a field of
    /// docker's that Shoal does not implement is never silently dropped.
    pub fn refuse(&self, keys: &[&str]) -> Result<(), ApiError> {
        for key in keys {
            if let Some(v) = self.raw(key)
                && !is_default(v)
            {
                return Err(ApiError::Unsupported {
                    field: join(self.path, key),
                });
            }
        }
        Ok(())
    }

    /// Refuses `key` unless it is default or one of `allowed` (docker
    /// clients write "default" or "container" for some of them).
    pub fn refuse_unless(&self, key: &str, allowed: &[&str]) -> Result<(), ApiError> {
        match self.raw(key) {
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
            Some(v) if !is_default(v) => Err(ApiError::Unsupported {
                field: join(self.path, key),
            }),
            _ => Ok(()),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// RFC 3339 in UTC (Go's `time.Time` in JSON) from Unix seconds; 0 is Go's
/// zero time, as dockerd shows a time it does not have.
pub fn rfc3339(unix: u64) -> String {
    if unix == 0 {
        return "0001-01-01T00:00:00Z".to_owned();
    }
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn type_errors_name_the_path() {
        let body = json!({"TaskTemplate": {"Resources": {"Limits": {"NanoCPUs": "two"}}}});
        let root = Obj::root(&body, "").ok();
        let e = root.and_then(|r| {
            r.with("TaskTemplate", |t| {
                t.with("Resources", |r| {
                    r.with("Limits", |l| l.u64("NanoCPUs")).map(|_| ())
                })
                .map(|_| ())
            })
            .err()
        });
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("TaskTemplate.Resources.Limits.NanoCPUs: expected a whole number, got a string")
        );
    }

    #[test]
    fn defaults_pass_and_values_are_refused() -> Result<(), ApiError> {
        let body = json!({"TTY": false, "DNSConfig": {}, "Groups": [], "Isolation": "default",
                          "OpenStdin": true});
        let o = Obj::root(&body, "ContainerSpec")?;
        o.refuse(&["TTY", "DNSConfig", "Groups", "Missing"])?;
        o.refuse_unless("Isolation", &["default"])?;
        let e = o.refuse(&["OpenStdin"]).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "ContainerSpec.OpenStdin: not supported by Shoal; remove it or leave it at its \
                 default"
            )
        );
        Ok(())
    }

    #[test]
    fn keys_match_as_go_matches_them() -> Result<(), ApiError> {
        let body = json!({"replicated": {"replicas": 2}, "Name": "a", "name": "b"});
        let o = Obj::root(&body, "")?;
        let n = o.with("Replicated", |r| r.u64("Replicas"))?.flatten();
        assert_eq!(n, Some(2));
        // An exact match wins.
        assert_eq!(o.string("Name")?, "a");
        Ok(())
    }

    #[test]
    fn times_read_as_go_writes_them() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_793_268_245), "2026-10-29T10:04:05Z");
    }
}
