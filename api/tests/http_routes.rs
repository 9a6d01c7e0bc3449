//! Every route and every error of the HTTP API, through the real router (`oneshot`), over a
//! real ledger (recovery, committer, actors) on a temporary data dir, with a controllable
//! clock so that timestamps are exact and holds can expire without waiting.

mod router;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use api::serve::AppOptions;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use config::{Config, default_config};
use http_body_util::BodyExt;
use router::{ADMIN_TOKEN, CLIENT_TOKEN, Reply, Router, START_TEXT, with_tokens};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The shared router harness, with the token of every request set on the harness.
struct Harness {
    router: Router,
    token: Option<&'static str>,
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

async fn harness_on(shards: usize) -> Harness {
    harness_with(|config| config.engine.shards = shards).await
}

/// Runs a scenario twice: on one shard (the default) and on three, where the two accounts of a
/// transfer usually live on different shards and every conversation crosses between them.
macro_rules! on_one_and_three_shards {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_shard() {
                super::$scenario(super::harness_on(1).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn three_shards() {
                super::$scenario(super::harness_on(3).await).await;
            }
        }
    };
}

async fn harness_with(edit: impl FnOnce(&mut Config)) -> Harness {
    Harness { router: Router::start(edit).await, token: None }
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Reply {
        self.router.send(request).await
    }

    fn request(&self, method: Method, uri: &str) -> axum::http::request::Builder {
        let builder = Request::builder().method(method).uri(uri);
        match self.token {
            Some(token) => builder.header(header::AUTHORIZATION, format!("Bearer {token}")),
            None => builder,
        }
    }

    async fn raw(&self, method: Method, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Reply {
        let mut builder = self.request(method, uri);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        self.send(builder.body(body.into()).unwrap()).await
    }

    async fn post(&self, uri: &str, body: Value) -> Reply {
        self.raw(Method::POST, uri, Some("application/json"), body.to_string()).await
    }

    async fn post_empty(&self, uri: &str) -> Reply {
        self.raw(Method::POST, uri, None, Body::empty()).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.raw(Method::GET, uri, None, Body::empty()).await
    }

    async fn account(&self, id: &str, currency: &str, overdraft: &str) -> Value {
        let reply =
            self.post("/v1/accounts", json!({"id": id, "currency": currency, "overdraft_limit": overdraft})).await;
        reply.assert_status(StatusCode::CREATED).clone()
    }

    async fn transfer(&self, body: Value) -> Reply {
        self.post("/v1/transfers", body).await
    }

    async fn balance(&self, id: &str) -> Value {
        self.get(&format!("/v1/accounts/{id}")).await.assert_status(StatusCode::OK).clone()
    }

    async fn shutdown(self) {
        self.router.shutdown().await;
    }
}

fn transfer(id: &str, debit: &str, credit: &str, amount: &str) -> Value {
    json!({"id": id, "debit_account": debit, "credit_account": credit, "amount": amount})
}

/// Polls `check` until it is true or `deadline` passes.
async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

// ---- probes and documents ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_documents_need_no_token() {
    let harness = harness_with(with_tokens).await;
    assert_eq!(harness.get("/health").await.assert_status(StatusCode::OK)["status"], "ok");
    assert_eq!(harness.get("/ready").await.assert_status(StatusCode::OK)["status"], "ready");
    let document = harness.get("/openapi.json").await.assert_status(StatusCode::OK).clone();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let metrics = harness.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    harness.get("/v1/accounts/alice").await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized", None);
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_recovery_only_health_answers_200() {
    let state = Arc::new(api::http::AppState::new(&default_config(), None));
    let router = api::http::router(state.clone());
    let call = |uri: &'static str| {
        let router = router.clone();
        async move {
            let response = router.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            Reply { status, headers, body: serde_json::from_slice(&bytes).unwrap() }
        }
    };
    assert_eq!(call("/health").await.status, StatusCode::OK);
    call("/ready").await.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", None);
    let reply = call("/v1/accounts/alice").await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", None);
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    assert!(!state.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_route_body_and_error_code() {
    let harness = harness().await;
    let document = harness.get("/openapi.json").await.assert_status(StatusCode::OK).clone();
    let expected = [
        ("/v1/accounts", "post"),
        ("/v1/accounts/{id}", "get"),
        ("/v1/accounts/{id}/freeze", "post"),
        ("/v1/accounts/{id}/unfreeze", "post"),
        ("/v1/accounts/{id}/transfers", "get"),
        ("/v1/transfers", "post"),
        ("/v1/transfers/batch", "post"),
        ("/v1/transfers/batch", "get"),
        ("/v1/transfers/{id}", "get"),
        ("/v1/transfers/{id}/post", "post"),
        ("/v1/transfers/{id}/void", "post"),
        ("/v1/webhooks/{provider}", "post"),
        ("/v1/withdrawals", "post"),
        ("/v1/withdrawals/{id}", "get"),
        ("/v1/deposits", "post"),
        ("/v1/deposits/{id}", "get"),
        ("/v1/admin/snapshots", "post"),
        ("/v1/admin/backup", "post"),
        ("/v1/admin/mode", "get"),
        ("/v1/admin/mode", "post"),
    ];
    let paths = document["paths"].as_object().unwrap();
    assert_eq!(paths.values().map(|item| item.as_object().unwrap().len()).sum::<usize>(), expected.len());
    for (path, method) in expected {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} missing");
        let takes_input = path.contains('{') || method == "post";
        assert_eq!(operation["responses"]["400"].is_object(), takes_input, "{method} {path}");
        assert!(operation["responses"]["401"].is_object(), "{method} {path}");
        assert!(operation["responses"]["503"].is_object(), "{method} {path}");
        assert_eq!(operation["requestBody"].is_object(), method == "post", "{method} {path}");
    }
    let schemas = &document["components"]["schemas"];
    let properties = |name: &str| -> Vec<String> {
        let mut names: Vec<String> = schemas[name]["properties"].as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    };
    let sorted = |fields: &[&str]| -> Vec<String> {
        let mut names: Vec<String> = fields.iter().map(|field| (*field).to_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(properties("CreateTransferRequest"), sorted(&api::http::transfers::CREATE_TRANSFER_FIELDS));
    assert_eq!(properties("CreateAccountRequest"), sorted(&api::http::accounts::CREATE_ACCOUNT_FIELDS));
    assert_eq!(properties("CreateWithdrawalRequest"), sorted(&api::http::webhooks::CREATE_WITHDRAWAL_FIELDS));
    assert_eq!(properties("CreateDepositRequest"), sorted(&api::http::webhooks::CREATE_DEPOSIT_FIELDS));
    // The webhook route takes no bearer token; the withdrawal routes do.
    assert_eq!(document["paths"]["/v1/webhooks/{provider}"]["post"]["security"], json!([{}]));
    assert!(document["paths"]["/v1/withdrawals"]["post"]["security"].to_string().contains("bearer"));
    let codes = schemas["ErrorCode"]["enum"].as_array().unwrap();
    for code in [
        "invalid_request",
        "insufficient_funds",
        "batch_aborted",
        "payload_too_large",
        "rate_limited",
        "invalid_signature",
        "stale_webhook",
        "provider_unavailable",
        "withdrawal_not_found",
    ] {
        assert!(codes.contains(&Value::from(code)), "{code}");
    }
    let currencies = schemas["CreateAccountRequest"]["properties"]["currency"]["enum"].as_array().unwrap();
    assert!(currencies.contains(&Value::from("USD")) && currencies.contains(&Value::from("ETH")));
    harness.shutdown().await;
}

// ---- accounts ------------------------------------------------------------------------------

on_one_and_three_shards!(accounts_are_created_read_and_replayed);
async fn accounts_are_created_read_and_replayed(harness: Harness) {
    let body = json!({"id": "alice", "currency": "USD", "overdraft_limit": "50", "metadata": {"tier": "gold"}});
    let created = harness.post("/v1/accounts", body.clone()).await;
    let expected = json!({
        "id": "alice", "currency": "USD", "balance": "0.00", "available": "0.00",
        "pending_debits": "0.00", "pending_credits": "0.00", "debits_posted": "0.00", "credits_posted": "0.00",
        "overdraft_limit": "50.00", "frozen": false, "metadata": {"tier": "gold"},
        "created_at": START_TEXT, "version": 1
    });
    assert_eq!(created.assert_status(StatusCode::CREATED), &expected);
    assert!(created.headers.get("idempotent-replayed").is_none());

    // Same fields (the limit written differently): 200 with the stored account.
    let replay = harness
        .post(
            "/v1/accounts",
            json!({"id": "alice", "currency": "USD", "overdraft_limit": "50.0", "metadata": {"tier": "gold"}}),
        )
        .await;
    assert_eq!(replay.assert_status(StatusCode::OK), &expected);
    assert_eq!(harness.get("/v1/accounts/alice").await.assert_status(StatusCode::OK), &expected);

    // Different fields: 409.
    harness.post("/v1/accounts", json!({"id": "alice", "currency": "EUR"})).await.assert_error(
        StatusCode::CONFLICT,
        "exists_with_different_fields",
        None,
    );
    harness
        .post("/v1/accounts", json!({"id": "alice", "currency": "USD", "overdraft_limit": "50"}))
        .await
        .assert_error(StatusCode::CONFLICT, "exists_with_different_fields", None);

    // Scales and the unlimited limit.
    let jpy = harness.account("yen", "JPY", "0").await;
    assert_eq!((jpy["balance"].as_str(), jpy["overdraft_limit"].as_str()), (Some("0"), Some("0")));
    let eth = harness.account("ether", "ETH", "unlimited").await;
    assert_eq!(eth["balance"], "0.000000000000000000");
    assert_eq!(eth["overdraft_limit"], "unlimited");
    let default_limit = harness.post("/v1/accounts", json!({"id": "plain", "currency": "BTC"})).await;
    assert_eq!(default_limit.assert_status(StatusCode::CREATED)["overdraft_limit"], "0.00000000");
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_requests_are_checked_strictly() {
    let harness = harness().await;
    let bad_request = StatusCode::BAD_REQUEST;
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (json!({"currency": "USD"}), "invalid_request", Some("id")),
        (json!({"id": "a"}), "invalid_request", Some("currency")),
        (json!({"id": "a", "currency": "USD", "colour": "red"}), "invalid_request", Some("colour")),
        (json!({"id": 7, "currency": "USD"}), "invalid_request", Some("id")),
        (json!({"id": "a", "currency": 840}), "invalid_request", Some("currency")),
        (json!({"id": "a b", "currency": "USD"}), "invalid_id", Some("id")),
        (json!({"id": "", "currency": "USD"}), "invalid_id", Some("id")),
        (json!({"id": "x".repeat(65), "currency": "USD"}), "invalid_id", Some("id")),
        (json!({"id": "a", "currency": "USD", "overdraft_limit": "-5"}), "invalid_amount", Some("overdraft_limit")),
        (json!({"id": "a", "currency": "USD", "overdraft_limit": 5}), "invalid_amount", Some("overdraft_limit")),
        (json!({"id": "a", "currency": "USD", "overdraft_limit": "1.001"}), "invalid_amount", Some("overdraft_limit")),
        (
            json!({"id": "a", "currency": "USD", "overdraft_limit": "Unlimited"}),
            "invalid_amount",
            Some("overdraft_limit"),
        ),
        (json!({"id": "a", "currency": "USD", "metadata": []}), "invalid_request", Some("metadata")),
        (json!({"id": "a", "currency": "USD", "metadata": {"k": 1}}), "invalid_request", Some("metadata")),
        (json!({"id": "a", "currency": "USD", "metadata": {"k".repeat(65): "v"}}), "invalid_request", Some("metadata")),
        (
            json!({"id": "a", "currency": "USD", "metadata": {"k": "v".repeat(257)}}),
            "invalid_request",
            Some("metadata"),
        ),
        (json!(["not", "an", "object"]), "invalid_request", None),
    ];
    for (body, code, field) in cases {
        harness.post("/v1/accounts", body).await.assert_error(bad_request, code, field);
    }
    let too_many: serde_json::Map<String, Value> =
        (0..17).map(|index| (format!("k{index}"), Value::from("v"))).collect();
    harness.post("/v1/accounts", json!({"id": "a", "currency": "USD", "metadata": too_many})).await.assert_error(
        bad_request,
        "invalid_request",
        Some("metadata"),
    );
    let sixteen: serde_json::Map<String, Value> =
        (0..16).map(|index| (format!("k{index}"), Value::from("v"))).collect();
    let longest = json!({"id": "m".repeat(64), "currency": "USD", "metadata": sixteen});
    harness.post("/v1/accounts", longest).await.assert_status(StatusCode::CREATED);

    harness.post("/v1/accounts", json!({"id": "a", "currency": "XYZ"})).await.assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_currency",
        Some("currency"),
    );
    harness.raw(Method::POST, "/v1/accounts", Some("application/json"), "{\"id\": ").await.assert_error(
        bad_request,
        "invalid_request",
        None,
    );
    harness.raw(Method::POST, "/v1/accounts", Some("application/json"), "").await.assert_error(
        bad_request,
        "invalid_request",
        None,
    );
    harness.get("/v1/accounts/nobody").await.assert_error(StatusCode::NOT_FOUND, "account_not_found", None);
    harness.get("/v1/accounts/a%20b").await.assert_error(bad_request, "invalid_id", Some("id"));
    // Path ids take up to 200 characters (the ledger derives ids longer than a client may).
    harness.get(&format!("/v1/accounts/{}", "x".repeat(201))).await.assert_error(bad_request, "invalid_id", Some("id"));
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_and_body_limit_are_enforced() {
    let harness = harness_with(|config| config.server.body_limit_bytes = 1024).await;
    let body = json!({"id": "a", "currency": "USD"}).to_string();
    harness.raw(Method::POST, "/v1/accounts", Some("text/plain"), body.clone()).await.assert_error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    harness.raw(Method::POST, "/v1/accounts", None, body.clone()).await.assert_error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    harness
        .raw(Method::POST, "/v1/accounts", Some("application/json; charset=utf-8"), body)
        .await
        .assert_status(StatusCode::CREATED);
    let large = json!({"id": "b", "currency": "USD", "metadata": {"k": "v".repeat(2000)}}).to_string();
    harness.raw(Method::POST, "/v1/accounts", Some("application/json"), large).await.assert_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    );
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_json() {
    let harness = harness().await;
    harness.get("/nope").await.assert_error(StatusCode::NOT_FOUND, "not_found", None);
    harness.get("/v1/accounts/a/b/c").await.assert_error(StatusCode::NOT_FOUND, "not_found", None);
    let reply = harness.raw(Method::DELETE, "/v1/accounts/alice", None, Body::empty()).await;
    reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
    assert!(reply.headers[header::ALLOW].to_str().unwrap().contains("GET"));
    harness.get("/v1/accounts").await.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_needs_admin_and_blocks_transfers() {
    let mut harness = harness_with(with_tokens).await;
    harness.token = Some(ADMIN_TOKEN);
    harness.account("alice", "USD", "unlimited").await;
    harness.account("bob", "USD", "0").await;
    harness
        .transfer(
            json!({"id": "hold", "debit_account": "alice", "credit_account": "bob", "amount": "5", "pending": true}),
        )
        .await;
    harness
        .transfer(
            json!({"id": "hold2", "debit_account": "alice", "credit_account": "bob", "amount": "5", "pending": true}),
        )
        .await;

    harness.token = None;
    harness.post_empty("/v1/accounts/bob/freeze").await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized", None);
    harness.token = Some("wrong-token");
    harness.post_empty("/v1/accounts/bob/freeze").await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized", None);
    harness.token = Some(CLIENT_TOKEN);
    harness.post_empty("/v1/accounts/bob/freeze").await.assert_error(StatusCode::FORBIDDEN, "forbidden", None);
    // The role is checked before the id.
    harness.post_empty("/v1/accounts/b%20b/freeze").await.assert_error(StatusCode::FORBIDDEN, "forbidden", None);
    assert_eq!(harness.get("/v1/accounts/bob").await.assert_status(StatusCode::OK)["frozen"], false);

    harness.token = Some(ADMIN_TOKEN);
    let frozen = harness.post_empty("/v1/accounts/bob/freeze").await;
    assert_eq!(frozen.assert_status(StatusCode::OK)["frozen"], true);
    // Idempotent, and `{}` is an acceptable body.
    assert_eq!(harness.post("/v1/accounts/bob/freeze", json!({})).await.assert_status(StatusCode::OK)["frozen"], true);
    harness.post("/v1/accounts/bob/freeze", json!({"x": 1})).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("x"),
    );
    harness.post_empty("/v1/accounts/nobody/freeze").await.assert_error(
        StatusCode::NOT_FOUND,
        "account_not_found",
        None,
    );

    harness.token = Some(CLIENT_TOKEN);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    harness.transfer(transfer("in", "alice", "bob", "1")).await.assert_error(unprocessable, "account_frozen", None);
    harness.transfer(transfer("out", "bob", "alice", "1")).await.assert_error(unprocessable, "account_frozen", None);
    // A hold on a frozen account cannot be posted, but can be voided.
    harness.post_empty("/v1/transfers/hold/post").await.assert_error(unprocessable, "account_frozen", None);
    assert_eq!(harness.post_empty("/v1/transfers/hold2/void").await.assert_status(StatusCode::OK)["status"], "voided");

    harness.token = Some(ADMIN_TOKEN);
    let unfrozen = harness.post_empty("/v1/accounts/bob/unfreeze").await;
    assert_eq!(unfrozen.assert_status(StatusCode::OK)["frozen"], false);
    harness.token = Some(CLIENT_TOKEN);
    harness.transfer(transfer("in", "alice", "bob", "1")).await.assert_status(StatusCode::CREATED);
    harness.shutdown().await;
}

// ---- transfers -----------------------------------------------------------------------------

on_one_and_three_shards!(transfers_move_money_and_replay);
async fn transfers_move_money_and_replay(harness: Harness) {
    harness.account("alice", "USD", "unlimited").await;
    harness.account("bob", "USD", "0").await;
    let body = json!({"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": "12.5",
        "pending": false, "timeout_seconds": 0, "description": "rent", "metadata": {"k": "v"}});
    let created = harness.transfer(body.clone()).await;
    let stored = created.assert_status(StatusCode::CREATED).clone();
    let seq = stored["seq"].as_u64().unwrap();
    assert!(seq >= 3, "two accounts were created first: {stored}");
    assert_eq!(
        stored,
        json!({"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": "12.50",
            "currency": "USD", "status": "posted", "posted_amount": "12.50", "description": "rent",
            "metadata": {"k": "v"}, "created_at": START_TEXT, "seq": seq})
    );
    // The same transfer again, amount written differently, omitted fields at their defaults.
    harness.router.clock_ms.fetch_add(5_000, Ordering::SeqCst);
    let replay = harness
        .transfer(json!({"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": "12.50",
            "description": "rent", "metadata": {"k": "v"}}))
        .await;
    assert_eq!(replay.assert_status(StatusCode::OK), &stored);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    for different in [
        json!({"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": "12.51", "description": "rent", "metadata": {"k": "v"}}),
        json!({"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": "12.50", "metadata": {"k": "v"}}),
        json!({"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": "12.50", "description": "rent"}),
        json!({"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": "12.50", "description": "rent", "metadata": {"k": "v"}, "pending": true}),
    ] {
        harness.transfer(different).await.assert_error(StatusCode::CONFLICT, "exists_with_different_fields", None);
    }
    assert_eq!(harness.get("/v1/transfers/t-1").await.assert_status(StatusCode::OK), &stored);
    harness.get("/v1/transfers/none").await.assert_error(StatusCode::NOT_FOUND, "transfer_not_found", None);

    let bob = harness.balance("bob").await;
    assert_eq!(
        (bob["balance"].as_str(), bob["credits_posted"].as_str(), bob["version"].as_u64()),
        (Some("12.50"), Some("12.50"), Some(2))
    );
    let alice = harness.balance("alice").await;
    assert_eq!(
        (alice["balance"].as_str(), alice["debits_posted"].as_str(), alice["available"].as_str()),
        (Some("-12.50"), Some("12.50"), Some("-12.50"))
    );

    // A rejected transfer is not stored: the same id is evaluated afresh later.
    harness.transfer(transfer("t-2", "bob", "alice", "20")).await.assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient_funds",
        None,
    );
    harness.transfer(transfer("t-2", "bob", "alice", "2")).await.assert_status(StatusCode::CREATED);
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_transfers_are_400_with_the_field() {
    let harness = harness_with(|config| config.limits.amount_max = 1000).await;
    harness.account("alice", "USD", "unlimited").await;
    harness.account("bob", "USD", "0").await;
    let with = |key: &str, value: Value| {
        let mut body = transfer("t", "alice", "bob", "1.00");
        body[key] = value;
        body
    };
    let bad_request = StatusCode::BAD_REQUEST;
    for amount in [
        json!("1e3"),
        json!("NaN"),
        json!(1000),
        json!(12.5),
        json!("-1"),
        json!("0"),
        json!("0.00"),
        json!("12."),
        json!(".5"),
        json!(""),
        json!(" 1"),
        json!("1000.01"),
        json!(null),
        json!(true),
    ] {
        harness.transfer(with("amount", amount.clone())).await.assert_error(
            bad_request,
            "invalid_amount",
            Some("amount"),
        );
    }
    // Too many decimals for the currency: decided once the accounts are known, still 400.
    harness.transfer(with("amount", json!("12.500"))).await.assert_error(bad_request, "invalid_amount", Some("amount"));
    harness.transfer(with("amount", json!("1000"))).await.assert_status(StatusCode::CREATED);
    harness
        .transfer(json!({"id": "t2", "debit_account": "alice", "credit_account": "bob", "amount": "0001.5"}))
        .await
        .assert_status(StatusCode::CREATED);

    let cases: Vec<(Value, &str, &str)> = vec![
        (with("id", json!("bad id")), "invalid_id", "id"),
        (with("debit_account", json!("x".repeat(65))), "invalid_id", "debit_account"),
        (with("credit_account", json!("")), "invalid_id", "credit_account"),
        (with("id", json!(5)), "invalid_request", "id"),
        (with("pending", json!("yes")), "invalid_request", "pending"),
        (with("timeout_seconds", json!(-1)), "invalid_request", "timeout_seconds"),
        (with("timeout_seconds", json!(1.5)), "invalid_request", "timeout_seconds"),
        (with("timeout_seconds", json!(30)), "invalid_request", "timeout_seconds"),
        (with("description", json!("d".repeat(257))), "invalid_request", "description"),
        (with("description", json!(7)), "invalid_request", "description"),
        (with("metadata", json!({"k": null})), "invalid_request", "metadata"),
        (with("extra", json!(1)), "invalid_request", "extra"),
        (json!({"id": "t", "debit_account": "alice", "credit_account": "bob"}), "invalid_request", "amount"),
        (json!({"id": "t", "debit_account": "alice", "amount": "1"}), "invalid_request", "credit_account"),
    ];
    for (body, code, field) in cases {
        harness.transfer(body).await.assert_error(bad_request, code, Some(field));
    }
    harness.shutdown().await;
}

on_one_and_three_shards!(checks_run_in_the_contract_order);
async fn checks_run_in_the_contract_order(harness: Harness) {
    harness.account("alice", "USD", "0").await;
    harness.account("bob", "USD", "0").await;
    harness.account("eve", "EUR", "unlimited").await;
    harness.account("mallory", "USD", "unlimited").await;
    harness.transfer(transfer("fund", "mallory", "alice", "10")).await.assert_status(StatusCode::CREATED);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    // Idempotency comes before every business check.
    harness.transfer(transfer("fund", "mallory", "mallory", "10")).await.assert_error(
        StatusCode::CONFLICT,
        "exists_with_different_fields",
        None,
    );
    // accounts_must_be_different before not-found.
    harness.transfer(transfer("t", "ghost", "ghost", "1")).await.assert_error(
        unprocessable,
        "accounts_must_be_different",
        None,
    );
    // debit before credit.
    harness.transfer(transfer("t", "ghost", "phantom", "1")).await.assert_error(
        unprocessable,
        "debit_account_not_found",
        None,
    );
    harness.transfer(transfer("t", "alice", "phantom", "1")).await.assert_error(
        unprocessable,
        "credit_account_not_found",
        None,
    );
    // currency_mismatch before the scale.
    harness.transfer(transfer("t", "alice", "eve", "1.001")).await.assert_error(
        unprocessable,
        "currency_mismatch",
        None,
    );
    // The scale before frozen.
    harness.post_empty("/v1/accounts/bob/freeze").await.assert_status(StatusCode::OK);
    harness.transfer(transfer("t", "alice", "bob", "1.001")).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_amount",
        Some("amount"),
    );
    // Frozen before insufficient funds.
    harness.transfer(transfer("t", "alice", "bob", "999")).await.assert_error(unprocessable, "account_frozen", None);
    harness.transfer(transfer("t", "alice", "mallory", "10.01")).await.assert_error(
        unprocessable,
        "insufficient_funds",
        None,
    );
    harness.transfer(transfer("t", "alice", "mallory", "10.00")).await.assert_status(StatusCode::CREATED);
    harness.shutdown().await;
}

on_one_and_three_shards!(holds_are_posted_voided_and_expire);
async fn holds_are_posted_voided_and_expire(harness: Harness) {
    harness.account("alice", "USD", "0").await;
    harness.account("bob", "USD", "0").await;
    harness.account("bank", "USD", "unlimited").await;
    harness.transfer(transfer("fund", "bank", "alice", "100")).await.assert_status(StatusCode::CREATED);
    let hold = |id: &str, amount: &str| json!({"id": id, "debit_account": "alice", "credit_account": "bob", "amount": amount, "pending": true});

    let created = harness.transfer(hold("h1", "10")).await;
    let body = created.assert_status(StatusCode::CREATED);
    assert_eq!((body["status"].as_str(), body["posted_amount"].as_str()), (Some("pending"), Some("0.00")));
    let alice = harness.balance("alice").await;
    assert_eq!(
        (
            alice["balance"].as_str(),
            alice["available"].as_str(),
            alice["pending_debits"].as_str(),
            alice["version"].as_u64()
        ),
        (Some("100.00"), Some("90.00"), Some("10.00"), Some(3))
    );
    assert_eq!(harness.balance("bob").await["pending_credits"], "10.00");

    // Post part of it: the rest is released.
    harness.post("/v1/transfers/h1/post", json!({"amount": "10.001"})).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_amount",
        Some("amount"),
    );
    harness.post("/v1/transfers/h1/post", json!({"amount": "1e1"})).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_amount",
        Some("amount"),
    );
    harness.post("/v1/transfers/h1/post", json!({"amount": "10.01"})).await.assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "exceeds_pending_amount",
        None,
    );
    harness.post("/v1/transfers/h1/post", json!({"amount": "4", "x": 1})).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("x"),
    );
    harness.raw(Method::POST, "/v1/transfers/h1/post", Some("text/plain"), "{\"amount\": \"4\"}").await.assert_error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    let posted = harness.post("/v1/transfers/h1/post", json!({"amount": "4.00"})).await;
    let posted = posted.assert_status(StatusCode::OK).clone();
    assert_eq!(
        (posted["status"].as_str(), posted["posted_amount"].as_str(), posted["amount"].as_str()),
        (Some("posted"), Some("4.00"), Some("10.00"))
    );
    let alice = harness.balance("alice").await;
    assert_eq!(
        (alice["balance"].as_str(), alice["available"].as_str(), alice["pending_debits"].as_str()),
        (Some("96.00"), Some("96.00"), Some("0.00"))
    );
    let bob = harness.balance("bob").await;
    assert_eq!((bob["balance"].as_str(), bob["pending_credits"].as_str()), (Some("4.00"), Some("0.00")));
    // Posting again: same answer; naming another amount: 409; voiding: 409.
    assert_eq!(
        harness.post("/v1/transfers/h1/post", json!({"amount": "4"})).await.assert_status(StatusCode::OK),
        &posted
    );
    assert_eq!(harness.post_empty("/v1/transfers/h1/post").await.assert_status(StatusCode::OK), &posted);
    harness.post("/v1/transfers/h1/post", json!({"amount": "5"})).await.assert_error(
        StatusCode::CONFLICT,
        "pending_transfer_already_posted",
        None,
    );
    harness.post_empty("/v1/transfers/h1/void").await.assert_error(
        StatusCode::CONFLICT,
        "pending_transfer_already_posted",
        None,
    );

    // Void, and void again.
    harness.transfer(hold("h2", "20")).await.assert_status(StatusCode::CREATED);
    let voided = harness.post_empty("/v1/transfers/h2/void").await.assert_status(StatusCode::OK).clone();
    assert_eq!((voided["status"].as_str(), voided["posted_amount"].as_str()), (Some("voided"), Some("0.00")));
    assert_eq!(harness.post("/v1/transfers/h2/void", json!({})).await.assert_status(StatusCode::OK), &voided);
    harness.post_empty("/v1/transfers/h2/post").await.assert_error(
        StatusCode::CONFLICT,
        "pending_transfer_already_voided",
        None,
    );
    assert_eq!(harness.balance("alice").await["available"], "96.00");

    // Plain transfers and unknown ids.
    harness.post_empty("/v1/transfers/fund/post").await.assert_error(
        StatusCode::CONFLICT,
        "transfer_not_pending",
        None,
    );
    harness.post_empty("/v1/transfers/fund/void").await.assert_error(
        StatusCode::CONFLICT,
        "transfer_not_pending",
        None,
    );
    harness.post_empty("/v1/transfers/nothing/post").await.assert_error(
        StatusCode::NOT_FOUND,
        "transfer_not_found",
        None,
    );
    harness.post_empty("/v1/transfers/nothing/void").await.assert_error(
        StatusCode::NOT_FOUND,
        "transfer_not_found",
        None,
    );
    harness.post_empty("/v1/transfers/bad%20id/void").await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_id",
        Some("id"),
    );

    // A hold with a timeout: once the deadline passes, post and void answer 409 expired, and
    // the release runs within the expiry tick.
    harness
        .transfer(json!({"id": "h3", "debit_account": "alice", "credit_account": "bob", "amount": "30", "pending": true, "timeout_seconds": 60}))
        .await
        .assert_status(StatusCode::CREATED);
    assert_eq!(harness.balance("alice").await["available"], "66.00");
    harness.router.clock_ms.fetch_add(60_001, Ordering::SeqCst);
    harness.post_empty("/v1/transfers/h3/post").await.assert_error(
        StatusCode::CONFLICT,
        "pending_transfer_expired",
        None,
    );
    harness.post_empty("/v1/transfers/h3/void").await.assert_error(
        StatusCode::CONFLICT,
        "pending_transfer_expired",
        None,
    );
    let released = eventually(Duration::from_secs(5), || async {
        harness.get("/v1/transfers/h3").await.body["status"] == "expired"
    })
    .await;
    assert!(released, "the hold was not released");
    assert_eq!(harness.balance("alice").await["available"], "96.00");
    harness.shutdown().await;
}

// ---- batches -------------------------------------------------------------------------------

on_one_and_three_shards!(batches_apply_in_index_order);
async fn batches_apply_in_index_order(harness: Harness) {
    harness.account("bank", "USD", "unlimited").await;
    harness.account("alice", "USD", "0").await;
    harness.account("bob", "USD", "0").await;
    harness.transfer(transfer("old", "bank", "alice", "1")).await.assert_status(StatusCode::CREATED);
    let reply = harness
        .post(
            "/v1/transfers/batch",
            json!({"transfers": [
                transfer("b1", "bank", "bob", "50"),
                transfer("b2", "bob", "alice", "30"),
                transfer("old", "bank", "alice", "1.00"),
                transfer("b3", "bob", "alice", "30"),
                transfer("b4", "bob", "alice", "1.001"),
                transfer("b5", "bob", "alice", "20"),
            ]}),
        )
        .await;
    let results = reply.assert_status(StatusCode::OK)["results"].as_array().unwrap().clone();
    let statuses: Vec<&str> = results.iter().map(|result| result["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["created", "created", "exists", "rejected", "rejected", "created"]);
    assert_eq!(results[0]["transfer"]["id"], "b1");
    assert_eq!(results[1]["transfer"]["amount"], "30.00");
    assert_eq!(results[2]["transfer"]["id"], "old");
    assert_eq!(results[3]["error"]["code"], "insufficient_funds");
    assert!(results[3].get("transfer").is_none());
    assert_eq!(results[4]["error"]["code"], "invalid_amount");
    let seqs: Vec<u64> = [0, 1, 5].iter().map(|index| results[*index]["transfer"]["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    assert_eq!(harness.balance("bob").await["balance"], "0.00");
    assert_eq!(harness.balance("alice").await["balance"], "51.00");

    // Empty batch.
    let empty = harness.post("/v1/transfers/batch", json!({"transfers": []})).await;
    assert_eq!(empty.assert_status(StatusCode::OK), &json!({"results": []}));
    harness.shutdown().await;
}

on_one_and_three_shards!(atomic_batches_are_all_or_nothing);
async fn atomic_batches_are_all_or_nothing(harness: Harness) {
    harness.account("bank", "USD", "unlimited").await;
    harness.account("alice", "USD", "0").await;
    harness.transfer(transfer("old", "bank", "alice", "1")).await.assert_status(StatusCode::CREATED);
    let reply = harness
        .post(
            "/v1/transfers/batch",
            json!({"atomic": true, "transfers": [
                transfer("a1", "bank", "alice", "10"),
                transfer("old", "bank", "alice", "1"),
                transfer("a2", "alice", "bank", "100"),
                transfer("a3", "alice", "bank", "1"),
            ]}),
        )
        .await;
    let results = reply.assert_status(StatusCode::OK)["results"].as_array().unwrap().clone();
    let codes: Vec<&str> = results.iter().map(|result| result["error"]["code"].as_str().unwrap_or("-")).collect();
    assert_eq!(codes, ["batch_aborted", "batch_aborted", "insufficient_funds", "batch_aborted"]);
    assert!(results.iter().all(|result| result["status"] == "rejected"));
    harness.get("/v1/transfers/a1").await.assert_error(StatusCode::NOT_FOUND, "transfer_not_found", None);
    harness.get("/v1/transfers/a3").await.assert_error(StatusCode::NOT_FOUND, "transfer_not_found", None);
    assert_eq!(harness.balance("alice").await["balance"], "1.00");

    let reply = harness
        .post("/v1/transfers/batch", json!({"atomic": true, "transfers": [transfer("a1", "bank", "alice", "10"), transfer("a2", "alice", "bank", "11")]}))
        .await;
    let statuses: Vec<Value> = reply.assert_status(StatusCode::OK)["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["status"].clone())
        .collect();
    assert_eq!(statuses, [json!("created"), json!("created")]);
    assert_eq!(harness.balance("alice").await["balance"], "0.00");
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_apply_nothing() {
    let harness = harness_with(|config| config.limits.batch_max = 3).await;
    harness.account("bank", "USD", "unlimited").await;
    harness.account("alice", "USD", "0").await;
    let bad_request = StatusCode::BAD_REQUEST;
    let good = transfer("g1", "bank", "alice", "1");
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (
            json!({"transfers": [good.clone(), transfer("g2", "bank", "alice", "1e2")]}),
            "invalid_amount",
            Some("transfers[1].amount"),
        ),
        (
            json!({"transfers": [good.clone(), transfer("bad id", "bank", "alice", "1")]}),
            "invalid_id",
            Some("transfers[1].id"),
        ),
        (json!({"transfers": [good.clone(), {"id": "x"}]}), "invalid_request", Some("transfers[1].debit_account")),
        (json!({"transfers": [good.clone(), 5]}), "invalid_request", Some("transfers[1]")),
        (
            json!({"transfers": [good.clone(), {"id": "g3", "debit_account": "bank", "credit_account": "alice", "amount": "1", "what": 1}]}),
            "invalid_request",
            Some("transfers[1].what"),
        ),
        (
            json!({"transfers": [good.clone(), good.clone(), good.clone(), good.clone()]}),
            "invalid_request",
            Some("transfers"),
        ),
        (json!({"transfers": {}}), "invalid_request", Some("transfers")),
        (json!({"atomic": true}), "invalid_request", Some("transfers")),
        (json!({"transfers": [good.clone()], "atomic": "yes"}), "invalid_request", Some("atomic")),
        (json!({"transfers": [good.clone()], "other": 1}), "invalid_request", Some("other")),
    ];
    for (body, code, field) in cases {
        harness.post("/v1/transfers/batch", body).await.assert_error(bad_request, code, field);
    }
    harness.get("/v1/transfers/g1").await.assert_error(StatusCode::NOT_FOUND, "transfer_not_found", None);
    assert_eq!(harness.balance("alice").await["version"], 1);
    harness.raw(Method::POST, "/v1/transfers/batch", Some("text/plain"), "{}").await.assert_error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    harness.shutdown().await;
}

// ---- history -------------------------------------------------------------------------------

on_one_and_three_shards!(history_pages_newest_first_with_a_cursor);
async fn history_pages_newest_first_with_a_cursor(harness: Harness) {
    harness.account("bank", "USD", "unlimited").await;
    harness.account("alice", "USD", "0").await;
    harness.account("bob", "USD", "0").await;
    for index in 0..5 {
        harness.transfer(transfer(&format!("t{index}"), "bank", "alice", "1")).await.assert_status(StatusCode::CREATED);
        harness.transfer(transfer(&format!("u{index}"), "bank", "bob", "1")).await.assert_status(StatusCode::CREATED);
    }
    harness.transfer(transfer("out", "alice", "bob", "2")).await.assert_status(StatusCode::CREATED);

    let mut seen: Vec<String> = Vec::new();
    let mut uri = "/v1/accounts/alice/transfers?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = harness.get(&uri).await.assert_status(StatusCode::OK).clone();
        pages += 1;
        let transfers = page["transfers"].as_array().unwrap();
        assert!(transfers.len() <= 2);
        seen.extend(transfers.iter().map(|transfer| transfer["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(cursor) => uri = format!("/v1/accounts/alice/transfers?limit=2&before={cursor}"),
            None => {
                assert!(page["next"].is_null());
                break;
            }
        }
        assert!(pages < 10);
    }
    assert_eq!(seen, ["out", "t4", "t3", "t2", "t1", "t0"]);
    let all = harness.get("/v1/accounts/alice/transfers").await.assert_status(StatusCode::OK).clone();
    assert_eq!(all["transfers"].as_array().unwrap().len(), 6);
    assert!(all["next"].is_null());
    assert_eq!(all["transfers"][0]["amount"], "2.00");

    let bad_request = StatusCode::BAD_REQUEST;
    for query in ["limit=0", "limit=1001", "limit=abc", "limit=-1", "limit="] {
        harness.get(&format!("/v1/accounts/alice/transfers?{query}")).await.assert_error(
            bad_request,
            "invalid_request",
            Some("limit"),
        );
    }
    for cursor in ["abc", "", "AAAAAAAAAAB", "AAAAAAAAAAA%3D", "%21%21"] {
        harness.get(&format!("/v1/accounts/alice/transfers?before={cursor}")).await.assert_error(
            bad_request,
            "invalid_request",
            Some("before"),
        );
    }
    harness.get("/v1/accounts/ghost/transfers").await.assert_error(StatusCode::NOT_FOUND, "account_not_found", None);
    let bank = harness.get("/v1/accounts/bank/transfers?limit=1000").await.assert_status(StatusCode::OK).clone();
    assert_eq!(bank["transfers"].as_array().unwrap().len(), 10);
    assert!(bank["next"].is_null());
    harness.shutdown().await;
}

// ---- limits --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let mut harness = harness_with(|config| {
        with_tokens(config);
        config.rate_limit.per_token_per_second = 1;
        config.rate_limit.burst = 2;
    })
    .await;
    harness.token = Some(CLIENT_TOKEN);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = harness.get("/v1/accounts/nobody").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
            let seconds: u64 = reply.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
            assert!(seconds >= 1);
        }
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses[..2], [404, 404]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    // Another token has its own bucket; probes are not limited.
    harness.token = Some(ADMIN_TOKEN);
    harness.get("/v1/accounts/nobody").await.assert_error(StatusCode::NOT_FOUND, "account_not_found", None);
    harness.token = None;
    for _ in 0..5 {
        harness.get("/health").await.assert_status(StatusCode::OK);
    }
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_the_rate_limit_counts_per_address() {
    let harness = harness_with(|config| config.rate_limit.per_token_per_second = 1).await;
    harness.get("/v1/accounts/nobody").await.assert_error(StatusCode::NOT_FOUND, "account_not_found", None);
    let limited = eventually(Duration::from_secs(5), || async {
        harness.get("/v1/accounts/nobody").await.status == StatusCode::TOO_MANY_REQUESTS
    })
    .await;
    assert!(limited, "a second request within the second is limited");
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_with_json() {
    let harness = harness_with(|config| config.server.request_timeout_ms = 200).await;
    let reply = harness.raw(Method::POST, "/v1/accounts", Some("application/json"), Body::new(StalledBody)).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "timeout", None);
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    harness.shutdown().await;
}

/// A request body whose bytes never arrive.
struct StalledBody;

impl hyper::body::Body for StalledBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_family_after_traffic() {
    let options = AppOptions { prometheus: Some(api::http::metrics::install_recorder()), ..AppOptions::default() };
    let harness = Harness { router: Router::start_with(|_| {}, options).await, token: None };
    harness.account("bank", "USD", "unlimited").await;
    harness.account("alice", "USD", "0").await;
    harness.transfer(transfer("m1", "bank", "alice", "2.50")).await.assert_status(StatusCode::CREATED);
    harness.transfer(transfer("m2", "alice", "bank", "20")).await;
    let text = harness.get("/metrics").await.body.as_str().unwrap().to_owned();
    for family in [
        "ledger_transfers_total",
        "ledger_transfer_amount_total",
        "ledger_request_duration_seconds",
        "ledger_wal_commit_duration_seconds",
        "ledger_wal_batch_size",
        "ledger_accounts",
        "ledger_webhooks_total",
        "ledger_snapshot_last_seq",
        "ledger_snapshot_duration_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} missing:\n{text}");
    }
    assert!(text.contains("ledger_transfers_total{result=\"insufficient_funds\"}"), "{text}");
    assert!(text.contains("ledger_transfer_amount_total{currency=\"USD\"} 2.5"), "{text}");
    assert!(text.contains("route=\"/v1/transfers\""), "{text}");
    assert!(text.contains("ledger_accounts 2"), "{text}");
    harness.shutdown().await;
}
