//! The `filters` query parameter: `{"key":{"value":true}}` (or the older
//! `{"key":["value"]}`), checked against the keys an endpoint accepts.

use std::collections::BTreeMap;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    terms: BTreeMap<String, Vec<String>>,
}

impl Filters {
    /// Parses `raw` (absent or empty: no filters) and refuses keys not in
    /// `accepted` with dockerd's `Invalid filter 'key'`.
    pub fn parse(raw: Option<&str>, accepted: &[&str]) -> ApiResult<Filters> {
        let raw = raw.unwrap_or("").trim();
        if raw.is_empty() {
            return Ok(Filters::default());
        }
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| ApiError::bad_request("invalid filter: not a JSON object"))?;
        let mut terms = BTreeMap::new();
        for (key, values) in object {
            if !accepted.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!("Invalid filter '{key}'")));
            }
            let list: Vec<String> = match values {
                serde_json::Value::Object(map) => map
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(v, _)| v.clone())
                    .collect(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter: values of '{key}' must be an object or a list"
                    )))
                }
            };
            terms.insert(key.clone(), list);
        }
        Ok(Filters { terms })
    }

    /// The values given for `key` (empty when it was not given).
    pub fn values(&self, key: &str) -> &[String] {
        self.terms.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn has(&self, key: &str) -> bool {
        self.terms.get(key).is_some_and(|v| !v.is_empty())
    }

    /// True when `key` was not given, or `test` holds for one of its values.
    pub fn any(&self, key: &str, test: impl Fn(&str) -> bool) -> bool {
        !self.has(key) || self.values(key).iter().any(|v| test(v))
    }

    /// Refuses a value of `key` outside `allowed` with dockerd's
    /// `Invalid filter 'key=value'`.
    pub fn check_values(&self, key: &str, allowed: &[&str]) -> ApiResult<()> {
        match self
            .values(key)
            .iter()
            .find(|v| !allowed.contains(&v.as_str()))
        {
            Some(bad) => Err(ApiError::bad_request(format!(
                "Invalid filter '{key}={bad}'"
            ))),
            None => Ok(()),
        }
    }

    /// `label` terms: `key` (present) or `key=value` (equal).
    pub fn labels_match(&self, labels: &BTreeMap<String, String>) -> bool {
        self.values("label")
            .iter()
            .all(|term| match term.split_once('=') {
                Some((k, v)) => labels.get(k).map(String::as_str) == Some(v),
                None => labels.contains_key(term.as_str()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_parse_and_unknown_keys_are_refused() {
        let f = Filters::parse(Some(r#"{"status":{"exited":true}}"#), &["status"]).unwrap();
        assert_eq!(f.values("status"), ["exited"]);
        let f = Filters::parse(Some(r#"{"label":["a=b","c"]}"#), &["label"]).unwrap();
        let mut labels = BTreeMap::new();
        labels.insert("a".to_string(), "b".to_string());
        assert!(!f.labels_match(&labels));
        labels.insert("c".to_string(), String::new());
        assert!(f.labels_match(&labels));
        let e = Filters::parse(Some(r#"{"foo":{"bar":true}}"#), &["status"]).unwrap_err();
        assert_eq!(e.message, "Invalid filter 'foo'");
        let f = Filters::parse(Some(r#"{"status":{"bogus":true}}"#), &["status"]).unwrap();
        assert_eq!(
            f.check_values("status", &["running"]).unwrap_err().message,
            "Invalid filter 'status=bogus'"
        );
    }
}
