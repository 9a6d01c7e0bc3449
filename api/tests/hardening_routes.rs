//! The hardening rules of the contract (API.md §2, §4) through the real router (`oneshot`) over
//! a real ledger on a temporary data dir: reserved ids, what a `client` token may name, path
//! ids up to 200 characters, duplicate JSON keys, `amount_max` with many fractional digits,
//! failed authentications limited per client address, the security headers and CORS.

mod router;

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use config::Config;
use router::{ADMIN_TOKEN, CLIENT_TOKEN, Reply, Router, with_tokens};
use serde_json::{Value, json};

/// The shared router harness, with requests written as (method, path, token, body).
struct Harness(Router);

async fn harness_with(edit: impl FnOnce(&mut Config)) -> Harness {
    Harness(Router::start(edit).await)
}

impl Harness {
    async fn send_from(&self, request: Request<Body>, remote: SocketAddr) -> Reply {
        self.0.send_from(request, remote).await
    }

    async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => builder.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_owned())),
            None => builder.body(Body::empty()),
        };
        self.send_from(request.unwrap(), "127.0.0.1:40000".parse().unwrap()).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.request(Method::POST, path, token, Some(&body.to_string())).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.request(Method::GET, path, token, None).await
    }

    async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_the_ledger_cannot_be_created_by_anyone() {
    let harness = harness_with(with_tokens).await;
    let admin = Some(ADMIN_TOKEN);
    for id in ["alice", "bob"] {
        let reply = harness.post("/v1/accounts", admin, &json!({"id": id, "currency": "EUR"})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    }
    harness
        .post("/v1/accounts", admin, &json!({"id": "settlement:processor:EUR", "currency": "EUR"}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "reserved_id", Some("id"));
    for id in ["dep:processor:d-100", "wd:processor:w-9"] {
        let transfer =
            json!({"id": id, "debit_account": "alice", "credit_account": "bob", "amount": "1", "pending": true});
        harness.post("/v1/transfers", admin, &transfer).await.assert_error(
            StatusCode::BAD_REQUEST,
            "reserved_id",
            Some("id"),
        );
    }
    // A batch fails whole: its first, valid item is not applied either.
    let batch = json!({"transfers": [
        {"id": "fine", "debit_account": "alice", "credit_account": "bob", "amount": "1", "pending": true},
        {"id": "dep:processor:d-1", "debit_account": "alice", "credit_account": "bob", "amount": "1", "pending": true},
    ]});
    harness.post("/v1/transfers/batch", admin, &batch).await.assert_error(
        StatusCode::BAD_REQUEST,
        "reserved_id",
        Some("transfers[1].id"),
    );
    harness.get("/v1/transfers/fine", admin).await.assert_error(StatusCode::NOT_FOUND, "transfer_not_found", None);
    // Reading them is allowed.
    harness.get("/v1/transfers/dep:processor:d-100", admin).await.assert_error(
        StatusCode::NOT_FOUND,
        "transfer_not_found",
        None,
    );
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_may_not_name_settlement_accounts_or_create_unlimited_overdrafts() {
    let harness = harness_with(with_tokens).await;
    let (client, admin) = (Some(CLIENT_TOKEN), Some(ADMIN_TOKEN));
    harness
        .post("/v1/accounts", client, &json!({"id": "mint", "currency": "USD", "overdraft_limit": "unlimited"}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden", Some("overdraft_limit"));
    harness.get("/v1/accounts/mint", client).await.assert_error(StatusCode::NOT_FOUND, "account_not_found", None);
    let reply = harness
        .post("/v1/accounts", admin, &json!({"id": "mint", "currency": "USD", "overdraft_limit": "unlimited"}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let reply = harness.post("/v1/accounts", client, &json!({"id": "alice", "currency": "USD"})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let from_settlement =
        json!({"id": "t-1", "debit_account": "settlement:processor:USD", "credit_account": "alice", "amount": "5"});
    harness.post("/v1/transfers", client, &from_settlement).await.assert_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        Some("debit_account"),
    );
    let batch = json!({"transfers": [
        {"id": "t-2", "debit_account": "mint", "credit_account": "alice", "amount": "5"},
        {"id": "t-3", "debit_account": "alice", "credit_account": "settlement:processor:USD", "amount": "1"},
    ]});
    harness.post("/v1/transfers/batch", client, &batch).await.assert_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        Some("transfers[1].credit_account"),
    );
    harness.get("/v1/transfers/t-2", client).await.assert_error(StatusCode::NOT_FOUND, "transfer_not_found", None);
    // An admin passes the role check (and meets the ordinary ones).
    harness.post("/v1/transfers", admin, &from_settlement).await.assert_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "debit_account_not_found",
        None,
    );
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_ids_take_up_to_200_characters() {
    let harness = harness_with(|_| {}).await;
    let long = format!("dep:{}:{}", "p".repeat(64), "d".repeat(64));
    assert!(long.len() > 64 && long.len() <= 200);
    harness.get(&format!("/v1/transfers/{long}"), None).await.assert_error(
        StatusCode::NOT_FOUND,
        "transfer_not_found",
        None,
    );
    harness.get(&format!("/v1/accounts/{long}"), None).await.assert_error(
        StatusCode::NOT_FOUND,
        "account_not_found",
        None,
    );
    let reply = harness.request(Method::POST, &format!("/v1/transfers/{long}/void"), None, None).await;
    reply.assert_error(StatusCode::NOT_FOUND, "transfer_not_found", None);
    let too_long = "a".repeat(201);
    harness.get(&format!("/v1/transfers/{too_long}"), None).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_id",
        Some("id"),
    );
    // A body id is still a client id: at most 64 characters.
    let body = json!({"id": "a".repeat(65), "currency": "USD"});
    harness.post("/v1/accounts", None, &body).await.assert_error(StatusCode::BAD_REQUEST, "invalid_id", Some("id"));
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_json_keys_are_refused_and_named() {
    let harness = harness_with(|_| {}).await;
    for id in ["alice", "bob"] {
        harness.post("/v1/accounts", None, &json!({"id": id, "currency": "USD", "overdraft_limit": "1000"})).await;
    }
    let transfer = r#"{"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": "1", "amount": "99"}"#;
    harness.request(Method::POST, "/v1/transfers", None, Some(transfer)).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("amount"),
    );
    let batch = r#"{"transfers": [{"id": "t-2", "debit_account": "alice", "credit_account": "bob", "amount": "1",
        "metadata": {"k": "1", "k": "2"}}]}"#;
    harness.request(Method::POST, "/v1/transfers/batch", None, Some(batch)).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("transfers[0].metadata.k"),
    );
    let account = r#"{"id": "carol", "currency": "USD", "currency": "EUR"}"#;
    harness.request(Method::POST, "/v1/accounts", None, Some(account)).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("currency"),
    );
    let reply = harness.get("/v1/accounts/bob", None).await;
    assert_eq!(reply.body["balance"], "0.00", "{reply:?}");
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amount_over_amount_max_with_many_fractional_digits_is_invalid_and_fails_a_batch() {
    let harness = harness_with(|_| {}).await;
    for id in ["alice", "bob"] {
        harness.post("/v1/accounts", None, &json!({"id": id, "currency": "USD", "overdraft_limit": "unlimited"})).await;
    }
    let over = "1000000000000000.00000000000001";
    let transfer = json!({"id": "t-1", "debit_account": "alice", "credit_account": "bob", "amount": over});
    harness.post("/v1/transfers", None, &transfer).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_amount",
        Some("amount"),
    );
    let batch = json!({"transfers": [
        {"id": "t-2", "debit_account": "alice", "credit_account": "bob", "amount": "1"},
        {"id": "t-3", "debit_account": "alice", "credit_account": "bob", "amount": over},
    ]});
    harness.post("/v1/transfers/batch", None, &batch).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_amount",
        Some("transfers[1].amount"),
    );
    harness.get("/v1/transfers/t-2", None).await.assert_error(StatusCode::NOT_FOUND, "transfer_not_found", None);
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_limited_per_client_address() {
    let harness = harness_with(|config| {
        with_tokens(config);
        config.auth.failures_per_minute = 3;
    })
    .await;
    let guesser: SocketAddr = "192.0.2.7:5000".parse().unwrap();
    let neighbour: SocketAddr = "192.0.2.8:5000".parse().unwrap();
    let get = |token: &str| {
        Request::get("/v1/accounts/alice")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    for guess in ["guess-1", "guess-2", "guess-3"] {
        harness.send_from(get(guess), guesser).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized", None);
    }
    // From now on, good tokens included, the guesser's address gets 429 with Retry-After.
    for token in ["guess-4", ADMIN_TOKEN] {
        let reply = harness.send_from(get(token), guesser).await;
        reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
        let retry_after: u64 = reply.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
    }
    // Another address is unaffected.
    harness.send_from(get(ADMIN_TOKEN), neighbour).await.assert_error(StatusCode::NOT_FOUND, "account_not_found", None);
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers_and_cors_is_for_listed_origins_only() {
    let harness =
        harness_with(|config| config.server.cors_allowed_origins = vec!["https://app.example.com".to_owned()]).await;
    for reply in [harness.get("/health", None).await, harness.get("/v1/accounts/nobody", None).await] {
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{reply:?}");
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store", "{reply:?}");
    }
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/transfers")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, content-type")
            .body(Body::empty())
            .unwrap()
    };
    let remote: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let allowed = harness.send_from(preflight("https://app.example.com"), remote).await;
    assert!(allowed.status.is_success(), "{allowed:?}");
    assert_eq!(allowed.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
    let methods = allowed.headers[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().to_owned();
    assert!(methods.contains("GET") && methods.contains("POST"), "{methods}");
    let other = harness.send_from(preflight("https://evil.example.com"), remote).await;
    assert!(other.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "{other:?}");
    let simple =
        Request::get("/health").header(header::ORIGIN, "https://evil.example.com").body(Body::empty()).unwrap();
    assert!(harness.send_from(simple, remote).await.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_each_parameter_once_and_names_the_batch_errors() {
    let harness = harness_with(|_| {}).await;
    let document = harness.get("/openapi.json", None).await.body;
    let paths = document["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            let mut seen = std::collections::HashSet::new();
            for parameter in &parameters {
                let key = (parameter["name"].clone(), parameter["in"].clone());
                assert!(seen.insert(key), "{method} {path} lists {parameter} twice");
            }
        }
    }
    let webhook = &paths["/v1/webhooks/{provider}"]["post"]["parameters"];
    assert_eq!(webhook.as_array().unwrap().iter().filter(|parameter| parameter["name"] == "provider").count(), 1);
    let batch_400 = paths["/v1/transfers/batch"]["post"]["responses"]["400"]["description"].as_str().unwrap();
    for code in ["invalid_request", "invalid_id", "invalid_amount", "reserved_id"] {
        assert!(batch_400.contains(code), "{batch_400}");
    }
    assert!(paths.contains_key("/v1/admin/mode"));
    let codes = document["components"]["schemas"]["ErrorCode"]["enum"].as_array().unwrap();
    for code in ["reserved_id", "read_only", "request_timeout", "uri_too_long", "headers_too_large"] {
        assert!(codes.contains(&json!(code)), "{code} missing from {codes:?}");
    }
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_created_items_of_a_batch_get_seqs_in_index_order_on_four_shards() {
    let harness = harness_with(|config| config.engine.shards = 4).await;
    let accounts: Vec<String> = (0..16).map(|index| format!("acct-{index}")).collect();
    for id in &accounts {
        let reply = harness
            .post("/v1/accounts", None, &json!({"id": id, "currency": "USD", "overdraft_limit": "unlimited"}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    }
    for atomic in [false, true] {
        let items: Vec<Value> = (0..200)
            .map(|index| {
                json!({"id": format!("b-{atomic}-{index}"), "debit_account": accounts[index % 16],
                       "credit_account": accounts[(index * 7 + 3) % 16], "amount": "1"})
            })
            .filter(|item| item["debit_account"] != item["credit_account"])
            .collect();
        let reply = harness.post("/v1/transfers/batch", None, &json!({"transfers": items, "atomic": atomic})).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        let seqs: Vec<u64> = reply.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|result| {
                assert_eq!(result["status"], "created", "{result}");
                result["transfer"]["seq"].as_u64().unwrap()
            })
            .collect();
        assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "atomic {atomic}: {seqs:?}");
    }
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_one_line_of_the_audit_log_refused_ones_included() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_path = audit_dir.path().join("audit.jsonl");
    let path_for_config = audit_path.clone();
    let harness = harness_with(move |config| {
        with_tokens(config);
        config.server.audit_log = Some(path_for_config);
    })
    .await;
    let admin = Some(ADMIN_TOKEN);
    let created = harness.post("/v1/accounts", admin, &json!({"id": "alice", "currency": "EUR"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    harness.post("/v1/accounts", admin, &json!({"id": "bob", "currency": "EUR", "overdraft_limit": "unlimited"})).await;
    harness
        .post("/v1/accounts", Some(CLIENT_TOKEN), &json!({"id": "settlement:x:EUR", "currency": "EUR"}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "reserved_id", Some("id"));
    harness.post("/v1/transfers", Some("not-a-token"), &json!({"id": "t-1"})).await.assert_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        None,
    );
    let transfer =
        json!({"id": "t-2", "debit_account": "bob", "credit_account": "alice", "amount": "1", "pending": true});
    let held = harness.post("/v1/transfers", admin, &transfer).await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    let voided = harness.request(Method::POST, "/v1/transfers/t-2/void", admin, None).await;
    assert_eq!(voided.status, StatusCode::OK, "{voided:?}");
    // Reads are not writes.
    harness.get("/v1/accounts/alice", admin).await;
    harness.shutdown().await;

    let text = std::fs::read_to_string(&audit_path).unwrap();
    let lines: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    // (route, who, status, code, ids) of each line.
    type Summary = (String, Option<String>, u64, Option<String>, Vec<String>);
    let summary: Vec<Summary> = lines
        .iter()
        .map(|line| {
            (
                line["route"].as_str().unwrap().to_owned(),
                line["who"].as_str().map(str::to_owned),
                line["status"].as_u64().unwrap(),
                line["code"].as_str().map(str::to_owned),
                line["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect(),
            )
        })
        .collect();
    let owned = |text: &str| Some(text.to_owned());
    let ids = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        summary,
        vec![
            ("/v1/accounts".to_owned(), owned("operator"), 201, None, ids(&["alice"])),
            ("/v1/accounts".to_owned(), owned("operator"), 201, None, ids(&["bob"])),
            ("/v1/accounts".to_owned(), owned("checkout"), 400, owned("reserved_id"), ids(&["settlement:x:EUR"])),
            // Refused before its body was read: no body ids from an unauthenticated caller.
            ("/v1/transfers".to_owned(), None, 401, owned("unauthorized"), ids(&[])),
            ("/v1/transfers".to_owned(), owned("operator"), 201, None, ids(&["t-2", "bob", "alice"])),
            ("/v1/transfers/{id}/void".to_owned(), owned("operator"), 200, None, ids(&["t-2"])),
        ]
    );
    for line in &lines {
        assert_eq!((line["method"].as_str(), line["remote"].as_str()), (Some("POST"), Some("127.0.0.1:40000")));
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(!line.to_string().contains("token-0123456789"), "no token in the audit log: {line}");
    }
    assert_eq!(lines[0]["role"], "admin");
    assert_eq!(lines[2]["role"], "client");
    assert_eq!(lines[3]["role"], Value::Null);
}
