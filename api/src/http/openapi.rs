//! The OpenAPI 3 document of the `/v1` routes, generated from the handlers with `utoipa`.
//!
//! This module owns [`ApiDoc`] (every `/v1` operation, its bodies, its error answers and the
//! error schema with every code) and `GET /openapi.json`. The handlers' `#[utoipa::path]`
//! attributes and the body types' `ToSchema` derives are the source; the served document also
//! lists the configured currency codes as the `currency` enum.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::AppState;
use crate::http::json::json_response;
use crate::http::{accounts, admin, mode, transfers, webhooks};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ledgerd",
        description = "A double-entry ledger. Amounts are JSON strings of decimal digits. Every error is \
            `{\"error\": {\"code\", \"message\", \"field\"?}}`.",
    ),
    paths(
        accounts::create_account,
        accounts::get_account,
        accounts::freeze_account,
        accounts::unfreeze_account,
        accounts::account_transfers,
        transfers::create_transfer,
        transfers::create_batch,
        transfers::get_transfer_named_batch,
        transfers::get_transfer,
        transfers::post_transfer,
        transfers::void_transfer,
        webhooks::receive_webhook,
        webhooks::create_withdrawal,
        webhooks::get_withdrawal,
        webhooks::create_deposit_order,
        webhooks::get_deposit_order,
        admin::create_snapshot,
        admin::create_backup,
        mode::get_mode,
        mode::set_mode,
    ),
    modifiers(&BearerSecurity),
    tags(
        (name = "accounts", description = "Accounts and their balances."),
        (name = "transfers", description = "Transfers, holds (two-phase) and batches."),
        (name = "webhooks", description = "Signed deposit and withdrawal events from payment providers (no bearer token)."),
        (name = "withdrawals", description = "Withdrawals: a hold posted or voided by the provider's webhooks."),
        (name = "deposits", description = "Deposit orders, credited by the provider's webhooks."),
        (name = "admin", description = "Snapshots and online backups of the served data dir, and the read-only mode (the kill switch)."),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme.
struct BearerSecurity;

impl Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The document as JSON, with the configured currencies as the `currency` enum of requests.
///
/// An optional request body (post, void, freeze, unfreeze) is one that may be left out, not
/// one that may be `null`: utoipa writes `Option<T>` bodies as `oneOf: [null, T]`, which is
/// narrowed here to `T` (the body stays `required: false`).
pub fn document(currency_codes: &[String]) -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    if let Some(Value::Object(paths)) = document.get_mut("paths") {
        for operation in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|item| item.values_mut()) {
            // A parameter both derived from the handler's extractor and listed by hand appears
            // twice; OpenAPI allows each (name, in) once.
            if let Some(Value::Array(parameters)) = operation.get_mut("parameters") {
                let mut seen = std::collections::HashSet::new();
                parameters
                    .retain(|parameter| seen.insert((parameter.get("name").cloned(), parameter.get("in").cloned())));
            }
            if let Some(schema) = operation.pointer_mut("/requestBody/content/application~1json/schema") {
                let narrowed = match schema.get("oneOf").and_then(Value::as_array).map(Vec::as_slice) {
                    Some([null, inner]) if null == &serde_json::json!({"type": "null"}) => Some(inner.clone()),
                    _ => None,
                };
                if let Some(inner) = narrowed {
                    *schema = inner;
                }
            }
        }
    }
    if let Some(currency) = document.pointer_mut("/components/schemas/CreateAccountRequest/properties/currency")
        && let Value::Object(currency) = currency
    {
        currency.insert("enum".to_owned(), Value::from(currency_codes.to_vec()));
    }
    document
}

/// `GET /openapi.json`.
pub async fn openapi_json(State(state): State<Arc<AppState>>) -> Response {
    let mut codes: Vec<String> = state.currencies.iter().map(|currency| currency.code.to_string()).collect();
    codes.sort();
    json_response(StatusCode::OK, &document(&codes))
}
