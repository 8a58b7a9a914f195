//! A sample's own fields, carried into the metadata ([`Origin`]): img2dataset's `key`, `url`
//! and original size, from each sample's `.json` (a tar member or a file beside the picture) or
//! from a manifest's columns, and every other field as one JSON object (`extra`).
//!
//! What is known when listing (a manifest's columns, a tar sample's key) is held in the
//! [`Record`](super::Record); a `.json` is read when its record is decoded, never all at once.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::Member;
pub use crate::store::Origin;

/// Fields with a column of their own; the rest of a `.json` goes to `extra`.
pub const TYPED: [&str; 4] = ["key", "url", "original_width", "original_height"];
/// `.json` fields sieve already has a column for (`caption`, and the decoded `width`/`height`),
/// left out of `extra`.
const ALREADY_KEPT: [&str; 3] = ["caption", "width", "height"];
/// A sample's `.json` larger than this is not read (its fields are left empty and a warning says
/// why): its fields are metadata, not data.
pub const MAX_JSON_BYTES: u64 = 1 << 20;

/// Where a `.json` of the sample's fields is.
#[derive(Debug, Clone)]
pub enum JsonAt {
    File(PathBuf),
    Member(Member),
}

/// What a record knows of its origin when listed.
#[derive(Debug, Clone, Default)]
pub struct OriginSource {
    /// Known from the listing.
    pub fields: Origin,
    /// Read when decoding; its fields win over `fields`.
    pub json: Option<JsonAt>,
}

impl OriginSource {
    /// Reads the `.json`, if any, over the listed fields. A `.json` that cannot be read or parsed
    /// leaves the listed fields and says why once per kind of failure (the picture is still
    /// embedded: these fields are metadata).
    pub fn resolve(&self, uri: &str) -> Origin {
        let mut out = self.fields.clone();
        let Some(at) = &self.json else { return out };
        let bytes = match at {
            JsonAt::File(p) => super::read_regular(p, MAX_JSON_BYTES).map_err(|s| s.detail),
            JsonAt::Member(m) => m.read_limited(MAX_JSON_BYTES).map_err(|e| e.to_string()),
        };
        let obj = match bytes {
            Ok((_, true)) => Err(format!("over {MAX_JSON_BYTES} bytes")),
            Ok((b, false)) => match serde_json::from_slice::<Value>(&b) {
                Ok(Value::Object(o)) => Ok(o),
                Ok(_) => Err("not a JSON object".to_string()),
                Err(e) => Err(format!("invalid JSON: {e}")),
            },
            Err(e) => Err(e),
        };
        match obj {
            Ok(o) => merge_json(&mut out, o),
            Err(why) => crate::progress::warn_record("sample-json-unreadable", || {
                format!("not reading the fields of {uri} from its .json: {why}")
            }),
        }
        out
    }
}

/// Text of a key or url value: strings as they are, numbers as written; other kinds are not
/// taken (they stay in `extra`).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A size value: a non-negative integer that fits in 32 bits (or its decimal text).
fn size(v: &Value) -> Option<u32> {
    match v {
        // A CSV manifest's values are all text.
        Value::String(s) => s.trim().parse().ok(),
        _ => v.as_u64().and_then(|n| u32::try_from(n).ok()),
    }
}

/// Moves `obj`'s typed fields into `out` (where their values have the expected kind) and the
/// rest into `out.extra` (merged over what is there).
pub fn merge_json(out: &mut Origin, mut obj: Map<String, Value>) {
    // A null typed field is dropped (its column is null); one of the wrong kind stays in `extra`.
    let mut take = |name: &str, ok: &dyn Fn(&Value) -> bool| match obj.get(name) {
        Some(Value::Null) => obj.remove(name).and(None),
        Some(v) if ok(v) => obj.remove(name),
        _ => None,
    };
    if let Some(v) = take("key", &|v| text(v).is_some()) {
        out.key = text(&v);
    }
    if let Some(v) = take("url", &|v| text(v).is_some()) {
        out.url = text(&v);
    }
    if let Some(v) = take("original_width", &|v| size(v).is_some()) {
        out.original_width = size(&v);
    }
    if let Some(v) = take("original_height", &|v| size(v).is_some()) {
        out.original_height = size(&v);
    }
    for k in ALREADY_KEPT {
        obj.remove(k);
    }
    merge_extra(out, obj);
}

/// Adds `fields` to `out.extra` (a JSON object; same names replaced).
pub fn merge_extra(out: &mut Origin, fields: Map<String, Value>) {
    if fields.is_empty() {
        return;
    }
    let mut extra = match out.extra.as_deref().map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(o))) => o,
        _ => Map::new(),
    };
    extra.extend(fields);
    out.extra = Some(Value::Object(extra).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn img2dataset_json_splits_into_typed_fields_and_extra() {
        let json = serde_json::json!({
            "caption": "a photo", "url": "http://x/a.jpg", "key": "000000", "status": "success",
            "error_message": null, "width": 32, "height": 32, "original_width": 500,
            "original_height": 375, "exif": "{}", "sha256": "ab", "license": {"name": "cc-by"}
        });
        let mut o = Origin::default();
        merge_json(&mut o, json.as_object().unwrap().clone());
        assert_eq!(o.key.as_deref(), Some("000000"));
        assert_eq!(o.url.as_deref(), Some("http://x/a.jpg"));
        assert_eq!((o.original_width, o.original_height), (Some(500), Some(375)));
        let extra: Value = serde_json::from_str(o.extra.as_deref().unwrap()).unwrap();
        assert_eq!(
            extra,
            serde_json::json!({"status": "success", "error_message": null, "exif": "{}", "sha256": "ab",
                               "license": {"name": "cc-by"}})
        );
    }

    #[test]
    fn values_of_the_wrong_kind_stay_in_extra_and_numbers_key_as_text() {
        let json = serde_json::json!({"key": 7, "original_width": -3, "original_height": 1e20, "url": [1]});
        let mut o = Origin::default();
        merge_json(&mut o, json.as_object().unwrap().clone());
        assert_eq!(o.key.as_deref(), Some("7"));
        assert_eq!((o.original_width, o.original_height, o.url.as_deref()), (None, None, None));
        let extra: Value = serde_json::from_str(o.extra.as_deref().unwrap()).unwrap();
        assert_eq!(extra, serde_json::json!({"original_width": -3, "original_height": 1e20, "url": [1]}));
    }
}
