//! A small OpenAPI 3.0 schema checker for tests: enough of the schema language to hold the
//! simulator (and the agent's event bodies) to DoorFlow's published spec.
//!
//! Supported: local `$ref` (`#/components/...`), `type` (object, array, string, integer, number,
//! boolean), `nullable`, `properties`, `required`, `additionalProperties` (false or a schema),
//! `items`, `enum`, `allOf` / `oneOf` / `anyOf`, and `format: date-time` (RFC 3339, loosely).
//! Not checked: `pattern`, lengths, ranges and other formats.
//!
//! Lenient mode follows OpenAPI: properties a schema does not list are allowed. Strict mode also
//! reports them (unless `additionalProperties` allows them), which catches a misspelt optional
//! field in a body the simulator makes up.

use serde_json::{json, Value};

/// DoorFlow's spec from `tests/fixtures/doorflow-openapi.yaml`, as JSON. Panics when it cannot be
/// read: the tests that use it cannot run without it.
pub fn load_spec() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/doorflow-openapi.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_spec(&text)
}

pub fn parse_spec(yaml: &str) -> Value {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("spec is not valid YAML: {e}"))
}

/// Checks `value` against `components/schemas/<name>` (lenient, as OpenAPI reads it), e.g.
/// `check_against_schema(&spec, "Event", &body)`. The errors name the JSON path at fault.
pub fn check_against_schema(spec: &Value, name: &str, value: &Value) -> Result<(), Vec<String>> {
    if spec.pointer(&format!("/components/schemas/{name}")).is_none() {
        return Err(vec![format!("the spec has no schema {name}")]);
    }
    check_schema(
        spec,
        &json!({"$ref": format!("#/components/schemas/{name}")}),
        value,
        false,
    )
}

/// Checks `value` against any schema of `spec`.
pub fn check_schema(spec: &Value, schema: &Value, value: &Value, strict: bool) -> Result<(), Vec<String>> {
    let mut checker = Checker {
        spec,
        strict,
        errors: Vec::new(),
    };
    checker.check(schema, value, "$");
    if checker.errors.is_empty() {
        Ok(())
    } else {
        Err(checker.errors)
    }
}

/// The JSON schema the spec declares for `method path` answering `status`, with a response
/// `$ref` (e.g. `#/components/responses/UnauthorizedError`) followed. `None` when the spec
/// declares no JSON body for that status.
pub fn response_schema(spec: &Value, path: &str, method: &str, status: u16) -> Option<Value> {
    let responses = spec.get("paths")?.get(path)?.get(method)?.get("responses")?;
    json_schema_of(spec, responses.get(status.to_string())?)
}

/// The JSON schema of `components/responses/<name>`.
pub fn component_response_schema(spec: &Value, name: &str) -> Option<Value> {
    json_schema_of(spec, spec.pointer(&format!("/components/responses/{name}"))?)
}

fn json_schema_of(spec: &Value, response: &Value) -> Option<Value> {
    let response = match response.get("$ref").and_then(Value::as_str) {
        Some(reference) => spec.pointer(reference.strip_prefix('#')?)?,
        None => response,
    };
    response.pointer("/content/application~1json/schema").cloned()
}

struct Checker<'a> {
    spec: &'a Value,
    strict: bool,
    errors: Vec<String>,
}

/// `$ref` hops allowed on one path before it counts as a cycle.
const MAX_REF_DEPTH: usize = 64;

impl Checker<'_> {
    fn fail(&mut self, at: &str, message: impl std::fmt::Display) {
        self.errors.push(format!("{at}: {message}"));
    }

    /// Whether `value` passes `schema`, without recording errors (for anyOf/oneOf).
    fn passes(&self, schema: &Value, value: &Value, at: &str) -> bool {
        let mut probe = Checker {
            spec: self.spec,
            strict: self.strict,
            errors: Vec::new(),
        };
        probe.check(schema, value, at);
        probe.errors.is_empty()
    }

    fn check(&mut self, schema: &Value, value: &Value, at: &str) {
        self.check_at_depth(schema, value, at, 0);
    }

    fn check_at_depth(&mut self, schema: &Value, value: &Value, at: &str, depth: usize) {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let spec = self.spec;
            match reference
                .strip_prefix('#')
                .and_then(|pointer| spec.pointer(pointer))
            {
                Some(_) if depth >= MAX_REF_DEPTH => self.fail(at, "$ref cycle"),
                Some(target) => self.check_at_depth(target, value, at, depth + 1),
                None => self.fail(at, format!("unresolvable $ref {reference}")),
            }
            return;
        }
        let typed = schema.get("type").and_then(Value::as_str);
        if value.is_null() {
            let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
            if !nullable && (typed.is_some() || schema.get("enum").is_some()) {
                self.fail(at, "null where the schema is not nullable");
            }
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, value, at);
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(|sub| self.passes(sub, value, at)) {
                self.fail(at, "matches none of anyOf");
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = one.iter().filter(|sub| self.passes(sub, value, at)).count();
            if matching != 1 {
                self.fail(at, format!("matches {matching} of oneOf, not exactly one"));
            }
        }
        if let Some(typed) = typed {
            let ok = match typed {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                other => {
                    self.fail(at, format!("unknown type {other} in the schema"));
                    return;
                }
            };
            if !ok {
                self.fail(at, format!("expected {typed}, got {}", kind(value)));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                self.fail(
                    at,
                    format!("{value} is not one of {}", Value::Array(allowed.clone())),
                );
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time") {
            if let Some(text) = value.as_str() {
                if text.parse::<jiff::Timestamp>().is_err() {
                    self.fail(at, format!("{text:?} is not an RFC 3339 date-time"));
                }
            }
        }
        if let Value::Object(object) = value {
            self.check_object(schema, object, at);
        }
        if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{at}[{i}]"));
            }
        }
    }

    fn check_object(&mut self, schema: &Value, object: &serde_json::Map<String, Value>, at: &str) {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    self.fail(at, format!("missing required property {name:?}"));
                }
            }
        }
        for (name, field) in object {
            let path = format!("{at}.{name}");
            if let Some(property) = properties.and_then(|p| p.get(name)) {
                self.check(property, field, &path);
                continue;
            }
            match schema.get("additionalProperties") {
                Some(Value::Bool(false)) => self.fail(&path, "property not allowed by the schema"),
                Some(Value::Bool(true)) => {}
                Some(extra) => self.check(extra, field, &path),
                None if self.strict && properties.is_some() => {
                    self.fail(&path, "property not in the schema (strict)")
                }
                None => {}
            }
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
