//! `GET /v1/openapi.json`: the OpenAPI 3.1 document, generated from the route table, so it
//! lists exactly the routes the router serves, each with the permission it needs.

use serde_json::{json, Map, Value};

use crate::route_table::{Permission, ROUTES};

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": props})
}

fn id() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn consent() -> Value {
    json!({"type": "object", "properties": {"email": {"type": "boolean"}, "sms": {"type": "boolean"}, "phone": {"type": "boolean"}}})
}

/// Request and response shapes by name.
fn schemas() -> Map<String, Value> {
    customer_requests()
        .into_iter()
        .chain(device_requests())
        .chain(operator_requests())
        .chain(answers_with_shape())
        .chain(described_answers())
        .map(|(name, schema)| (name.to_string(), schema))
        .collect()
}

/// Bodies sent to the customer routes.
fn customer_requests() -> Vec<(&'static str, Value)> {
    let s = string();
    let nullable = json!({"type": ["string", "null"]});
    vec![
        (
            "CreateCustomer",
            obj(
                &["name"],
                json!({"id": id(), "name": s, "email": s, "phone": s, "company": s, "tags": {"type": "array", "items": s}, "consent": consent()}),
            ),
        ),
        (
            "PatchCustomer",
            obj(
                &[],
                json!({"name": s, "email": nullable, "phone": nullable, "company": nullable, "tags": {"type": "array", "items": s}, "consent": consent()}),
            ),
        ),
        (
            "InteractionsBatch",
            obj(
                &["interactions"],
                json!({"interactions": {"type": "array", "minItems": 1, "maxItems": 1000, "items": obj(&["id", "customer_id", "kind", "item"], json!({"id": id(), "customer_id": id(), "kind": {"type": "string", "enum": keelson_recommend::KINDS.iter().map(|(k, _)| *k).collect::<Vec<_>>()}, "item": id(), "at_ms": {"type": "integer", "minimum": 0}}))}}),
            ),
        ),
        (
            "AddInteraction",
            obj(
                &["kind", "item"],
                json!({"kind": s, "item": s, "at_ms": {"type": "integer", "minimum": 0}}),
            ),
        ),
    ]
}

/// Bodies sent to the device routes.
fn device_requests() -> Vec<(&'static str, Value)> {
    let s = string();
    let scalar = json!({"type": ["string", "number", "boolean"]});
    vec![
        (
            "CreateDevice",
            obj(
                &["customer_id", "kind", "firmware"],
                json!({"id": id(), "customer_id": id(), "kind": s, "firmware": s}),
            ),
        ),
        (
            "PostTelemetry",
            obj(
                &["readings"],
                json!({"readings": {"type": "object", "additionalProperties": {"type": "number"}}, "at_ms": {"type": "integer", "minimum": 0}}),
            ),
        ),
        (
            "PatchDesired",
            obj(
                &["state"],
                json!({"state": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}}, "expected_version": {"type": "integer", "minimum": 0}}),
            ),
        ),
        (
            "PostCommand",
            obj(
                &["name"],
                json!({"id": id(), "name": s, "params": {"type": "object", "additionalProperties": scalar}}),
            ),
        ),
    ]
}

/// Bodies sent to the key and fault-injection routes.
fn operator_requests() -> Vec<(&'static str, Value)> {
    vec![
        (
            "CreateKey",
            obj(
                &["name", "role"],
                json!({"name": id(), "role": {"enum": ["admin", "operator", "agent", "viewer"]}}),
            ),
        ),
        (
            "InjectFault",
            obj(&["mode"], json!({"mode": {"enum": ["panic", "error"]}})),
        ),
    ]
}

/// Answers whose fields are spelled out: the secrets shown once, the error, the empty body.
fn answers_with_shape() -> Vec<(&'static str, Value)> {
    let s = string();
    vec![
        (
            "NewKey",
            obj(
                &["name", "role", "key"],
                json!({"name": s, "role": s, "key": {"type": "string", "description": "shown once; store it now"}}),
            ),
        ),
        (
            "DeviceCredentials",
            obj(
                &["device_id", "username", "password"],
                json!({"device_id": s, "username": s, "password": {"type": "string", "description": "shown once"}}),
            ),
        ),
        (
            "Error",
            obj(
                &["error"],
                json!({"error": obj(&["code", "message"], json!({"code": s, "message": s}))}),
            ),
        ),
        ("Empty", json!({"description": "no body"})),
    ]
}

/// Answers described in a line.
fn described_answers() -> Vec<(&'static str, Value)> {
    [
        ("Status", "liveness or readiness"),
        ("OpenApi", "this document"),
        (
            "Customer",
            "a customer (email and phone masked for viewers)",
        ),
        (
            "InteractionAdded",
            "customer_id, the interaction, the new version",
        ),
        (
            "Interactions",
            "customer_id, a page of interactions oldest first, total, next_after",
        ),
        (
            "BatchResults",
            "applied, duplicates, refused, and per interaction: id, customer_id, status (applied, duplicate, refused), error",
        ),
        (
            "Recommendations",
            "customer_id, items [{item, score, because}] best first, model_version",
        ),
        ("Tickets", "support tickets"),
        ("Device", "a device"),
        ("Telemetry", "recent samples and per-minute history"),
        ("Twin", "reported, desired, their versions and delta"),
        ("Command", "a command and whether it was published"),
        ("Commands", "commands with their acknowledgement"),
        ("Alerts", "alerts"),
        ("Cluster", "members, state, shards per member"),
        (
            "Shards",
            "every shard's epoch, primary, followers, learners",
        ),
        ("Location", "shard, owner, owner's state, epoch"),
        (
            "NodeRemoval",
            "node, state (draining), copies it holds, map_version",
        ),
        (
            "Keys",
            "API keys: name, role, created, revoked (never the key)",
        ),
        ("Key", "one API key record"),
        ("Injected", "{\"injected\": true}"),
        (
            "MqttCredentials",
            "version, and each device's $7$ password hash (or unchanged: true)",
        ),
    ]
    .into_iter()
    .map(|(name, what)| (name, json!({"type": "object", "description": what})))
    .collect()
}

fn error_response(d: &str) -> Value {
    json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in ROUTES {
        let mut op = json!({
            "operationId": format!("{}{}", r.method.to_lowercase(), r.path.replace(['/', '{', '}'], "_")),
            "summary": r.summary,
            "x-keelson-permission": r.permission.as_str(),
            "responses": {
                r.response.0.to_string(): {
                    "description": r.summary,
                    "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", r.response.1)}}}
                },
                "400": error_response("invalid request (the message names the field)"),
                "default": error_response("any other error: 404, 405, 409, 413, 500, 503 with Retry-After, 504"),
            }
        });
        if r.permission == Permission::Open {
            op["security"] = json!([]);
        } else {
            op["responses"]["401"] = error_response("unauthenticated");
            op["responses"]["403"] =
                error_response("forbidden: the message names the permission missing");
        }
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(req) = r.request {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{req}")}}}});
        }
        paths
            .entry(r.path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects")
            .insert(r.method.to_lowercase(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Keelson", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Customers and devices as actors on a self-healing cluster. Every route but /health and /ready needs `Authorization: Bearer <API key or JWT>`."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "an API key (kk_...) or a JWT from the configured identity provider"}}
        },
        "security": [{"bearer": []}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route_table::{resolve, Resolved};

    #[test]
    fn the_document_and_the_router_agree_route_for_route() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut in_doc = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                in_doc += 1;
                let m = method.to_uppercase();
                let concrete = path
                    .replace("{kind}", "customer")
                    .replace("{id}", "x")
                    .replace("{name}", "k");
                let Resolved::Route(r, _) = resolve(&m, &concrete) else {
                    panic!("{m} {path} is in the document but the router does not serve it")
                };
                assert_eq!(r.path, path);
                assert_eq!(op["x-keelson-permission"], r.permission.as_str());
                for schema in [r.request, Some(r.response.1)].into_iter().flatten() {
                    assert!(
                        doc["components"]["schemas"][schema].is_object(),
                        "{schema} has no schema"
                    );
                }
            }
        }
        assert_eq!(in_doc, ROUTES.len(), "every route is in the document once");
    }
}
