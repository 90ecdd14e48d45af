//! Issue 11 item 9: every call the agent makes is an endpoint of DoorFlow's published OpenAPI
//! spec, and the scope a 403 message names for it is the one the spec's security requirement
//! lists. The spec is read from `tests/fixtures/doorflow-openapi.yaml`.

use doorflow_agent::doorflow::error::{ApiError, ErrorBody};
use doorflow_agent::doorflow::operation::Operation;
use doorflow_agent::testing::openapi::load_spec;
use serde_json::Value;

/// The OAuth2 scopes of the spec's `security` entry for `method path`; `None` when the operation
/// declares no security (the token endpoint).
fn spec_scopes(spec: &Value, method: &str, path: &str) -> Option<Vec<String>> {
    let operation = spec
        .pointer(&format!("/paths/{}/{method}", path.replace('/', "~1")))
        .unwrap_or_else(|| panic!("the spec has no {method} {path}"));
    let security = operation.get("security")?.as_array()?;
    Some(
        security
            .iter()
            .filter_map(|requirement| requirement.get("OAuth2"))
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn every_operation_names_the_scope_the_spec_requires() {
    let spec = load_spec();
    for operation in Operation::ALL {
        let Some(endpoint) = operation.endpoint() else {
            // The event sink is not DoorFlow's API and needs no DoorFlow scope.
            assert_eq!(operation, Operation::PostEvent);
            assert_eq!(operation.required_scope(), None);
            continue;
        };
        let scopes = spec_scopes(&spec, endpoint.method, endpoint.path);
        match (scopes.as_deref(), operation.required_scope()) {
            (None, None) => {}
            (Some([only]), Some(ours)) => assert_eq!(ours, only, "{operation:?}"),
            (spec_says, ours) => {
                panic!("{operation:?}: the spec says {spec_says:?}, the agent says {ours:?}")
            }
        }
    }
}

#[test]
fn a_403_message_quotes_the_spec_scope_for_every_call() {
    let spec = load_spec();
    let scope_error =
        ErrorBody::parse(br#"{"error":"insufficient_scope","error_description":"Missing scope"}"#);
    for operation in Operation::ALL {
        let Some(endpoint) = operation.endpoint() else {
            continue;
        };
        let message = ApiError::Status {
            operation,
            status: 403,
            body: scope_error.clone(),
            retry_at: None,
        }
        .to_string();
        for scope in spec_scopes(&spec, endpoint.method, endpoint.path).unwrap_or_default() {
            assert!(
                message.contains(&format!("`{scope}`")),
                "{operation:?}: {message}"
            );
        }
    }
}

#[test]
fn the_admit_403_of_the_spec_is_about_the_person() {
    let spec = load_spec();
    // The spec's own example of admitPerson's 403 body.
    let properties = spec
        .pointer("/paths/~1api~13~1channels~1{id}~1admit_person/post/responses/403/content/application~1json/schema/properties")
        .expect("the spec documents admitPerson's 403 body");
    let example = serde_json::json!({
        "error": properties["error"]["example"],
        "reason": properties["reason"]["example"],
    });
    let message = ApiError::Status {
        operation: Operation::AdmitPerson,
        status: 403,
        body: ErrorBody::parse(example.to_string().as_bytes()),
        retry_at: None,
    }
    .to_string();
    let reason = properties["reason"]["example"].as_str().unwrap();
    assert!(message.contains(reason), "{message}");
    assert!(!message.contains("account.channel.admit.person"), "{message}");
}
