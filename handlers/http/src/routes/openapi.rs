//! `GET /openapi.json`: an OpenAPI 3.1 document of the call operations the caller may call
//! (the public ones for an anonymous caller), from their JSON Schemas (OpenAPI 3.1 schemas
//! are JSON Schema 2020-12, so they are used as registered). Gzip-compressed for a client
//! that accepts it (`compress.rs`).

use alknet_proto::call::ErrorCode;
use alknet_runtime::OperationInfo;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::auth::{request_identity, ConnInfo};
use crate::routes::{compress, error_response};
use crate::HttpState;

pub async fn openapi(
    State(state): State<HttpState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
) -> Response {
    let identity = match request_identity(conn.as_deref(), &headers) {
        Ok(i) => i,
        Err(e) => return error_response(ErrorCode::Unauthenticated, e.to_string()),
    };
    let ops = state
        .invoker
        .as_ref()
        .map(|i| i.operations(identity.as_ref()))
        .unwrap_or_default();
    let Ok(json) = serde_json::to_vec(&document(state.version, &ops)) else {
        return error_response(ErrorCode::Internal, "encoding the OpenAPI document failed");
    };
    compress::respond(
        &headers,
        "/openapi.json",
        &[(header::CONTENT_TYPE, "application/json")],
        Bytes::from(json),
        |json| compress::gzip(json, flate2::Compression::fast()).map(Bytes::from),
    )
}

/// An empty schema means "anything" in the registry; OpenAPI wants an object for that too.
fn schema(s: &Value) -> Value {
    match s {
        Value::Object(m) if m.is_empty() => json!({}),
        other => other.clone(),
    }
}

/// The OpenAPI 3.1 document for `ops`.
pub fn document(version: &str, ops: &[OperationInfo]) -> Value {
    let mut paths = Map::new();
    for op in ops.iter().filter(|o| !o.streaming) {
        let security = if op.public {
            json!([])
        } else {
            json!([{ "bearer": [] }, { "clientCertificate": [] }])
        };
        paths.insert(
            format!("/api/call/{}", op.id),
            json!({
                "post": {
                    "operationId": op.id,
                    "description": op.description,
                    "security": security,
                    "requestBody": {
                        "required": false,
                        "content": { "application/json": { "schema": schema(&op.input_schema) } }
                    },
                    "responses": {
                        "200": {
                            "description": "the operation's output",
                            "content": { "application/json": { "schema": schema(&op.output_schema) } }
                        },
                        "default": {
                            "description": "a call error (400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403 FORBIDDEN, 404 NOT_FOUND, 500 INTERNAL, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED)",
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                        }
                    }
                }
            }),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Alknet node", "version": version },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "clientCertificate": { "type": "mutualTLS" }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": { "type": "string", "enum": ErrorCode::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>() },
                                "message": { "type": "string" }
                            }
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_unary_operations_with_their_schemas() {
        let ops = vec![
            OperationInfo {
                id: "echo".into(),
                description: "echoes".into(),
                input_schema: json!({"type": "object"}),
                output_schema: json!({}),
                streaming: false,
                public: true,
            },
            OperationInfo {
                id: "echo.stream".into(),
                description: String::new(),
                input_schema: json!({}),
                output_schema: json!({}),
                streaming: true,
                public: false,
            },
        ];
        let doc = document("1.0", &ops);
        assert_eq!(doc["openapi"], "3.1.0");
        let post = &doc["paths"]["/api/call/echo"]["post"];
        assert_eq!(post["operationId"], "echo");
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["type"],
            "object"
        );
        assert!(doc["paths"].get("/api/call/echo.stream").is_none());
    }
}
