//! Rules for every string in the file, whatever its key: no NUL byte (no path or name can
//! hold one; the kernel would refuse it at the first open) and no template placeholder left
//! in (`REPLACE-WITH-…` in `config/doorflow-agent.toml`: the agent must not run, and so never
//! drive the template's GPIO lines, until the config is the site's own).

use serde_json::Value;

/// What the shipped template writes where a site's own value must go.
pub const PLACEHOLDER: &str = "REPLACE-WITH-";

/// Every string value under `value` with its dotted key (`doors[0].reader.chip`).
fn strings<'a>(value: &'a Value, key: &str, found: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(text) => found.push((key.to_string(), text)),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                strings(item, &format!("{key}[{index}]"), found);
            }
        }
        Value::Object(fields) => {
            for (name, field) in fields {
                let path = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}.{name}")
                };
                strings(field, &path, found);
            }
        }
        _ => {}
    }
}

fn is_placeholder(text: &str) -> bool {
    text.to_ascii_uppercase().contains(PLACEHOLDER)
}

/// Reports NUL bytes and placeholders in the (serialised) config.
pub(super) fn validate(config: &Value, report: &mut impl FnMut(String, String)) {
    let mut found = Vec::new();
    strings(config, "", &mut found);
    for (key, text) in found {
        if text.contains('\0') {
            report(key, "contains a NUL byte; no path or name can hold one".into());
        } else if is_placeholder(text) {
            report(
                key,
                format!(
                    "`{text}` is the template's placeholder: set this site's own value \
                     (the agent does not start until every {PLACEHOLDER}… is replaced)"
                ),
            );
        }
    }
}

/// The keys that still hold a template placeholder in config text; empty when the text is not
/// TOML (other checks report that).
pub fn template_placeholders(text: &str) -> Vec<String> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    let Ok(value) = serde_json::to_value(table) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    strings(&value, "", &mut found);
    found
        .into_iter()
        .filter(|(_, text)| is_placeholder(text))
        .map(|(key, _)| key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_bytes_and_placeholders_are_found_under_any_key() {
        let config = json!({
            "api": {"auth": {"client_id": "REPLACE-WITH-YOUR-OAUTH-CLIENT-ID"}},
            "store": {"path": "/var/lib/x\u{0}y"},
            "doors": [{"name": "front"}, {"reader": {"chip": "replace-with-chip"}}],
        });
        let mut problems = Vec::new();
        validate(&config, &mut |key, message| problems.push((key, message)));
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["api.auth.client_id", "doors[1].reader.chip", "store.path"]);
        assert!(problems[2].1.contains("NUL"));
        assert!(problems[0].1.contains("placeholder"));
    }

    #[test]
    fn the_shipped_template_still_holds_its_placeholder() {
        let template = include_str!("../../config/doorflow-agent.toml");
        assert_eq!(template_placeholders(template), ["api.auth.client_id"]);
        let demo = include_str!("../../config/demo.toml");
        assert!(template_placeholders(demo).is_empty());
        assert!(template_placeholders("not = [toml").is_empty());
    }
}
