//! Plain JSON access shared by event parsing and field mapping: reading a field by name or
//! dotted path, and naming a value's kind in messages. Depends on nothing else in the crate.

use serde_json::Value;

/// Reads a field: an exact top-level key first (flattened collectors use dotted keys), then a
/// dotted path through nested objects. It runs for every field of every event: the dots are
/// found with plain byte scans (field names are short), not `str` pattern searchers, whose
/// cost depended on what the compiler chose to inline around them.
#[inline]
pub fn get_field<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    let obj = body.as_object()?;
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let mut dot = path.bytes().position(|b| b == b'.')?;
    let mut cur = body;
    let mut rest = path;
    loop {
        // `.` is ASCII: splitting at it keeps both sides valid UTF-8.
        cur = cur.as_object()?.get(&rest[..dot])?;
        rest = &rest[dot + 1..];
        match rest.bytes().position(|b| b == b'.') {
            Some(next) => dot = next,
            None => return cur.as_object()?.get(rest),
        }
    }
}

/// The JSON name of a value's kind (`"object"`, `"array"`, ...), for error messages.
pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_paths() {
        let v = json!({"a.b": 1, "a": {"b": 2, "c": {"d": "x"}}});
        assert_eq!(
            get_field(&v, "a.b"),
            Some(&json!(1)),
            "exact dotted key wins"
        );
        assert_eq!(get_field(&v, "a.c.d"), Some(&json!("x")));
        assert_eq!(get_field(&v, "a.z"), None);
        assert_eq!(get_field(&v, "missing"), None);
        assert_eq!(get_field(&v, "a.c"), Some(&json!({"d": "x"})));
        assert_eq!(
            get_field(&v, "a."),
            None,
            "an empty last part names nothing"
        );
        assert_eq!(get_field(&v, ".a"), None);
        assert_eq!(get_field(&json!([1]), "a"), None, "not an object");
    }

    #[test]
    fn kind_names() {
        assert_eq!(kind_name(&json!([1, 2])), "array");
        assert_eq!(kind_name(&json!("x")), "string");
        assert_eq!(kind_name(&json!({})), "object");
    }
}
