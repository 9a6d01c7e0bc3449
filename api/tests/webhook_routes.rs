//! The webhook service through the real router (`oneshot`) over a real ledger on a temporary
//! data dir, with a clock the test controls: a crash between a money movement and the fact
//! that records it (simulated by moving the money directly on the ledger, as the interrupted
//! delivery had), concurrent deliveries of one event, and the replay window against the
//! ledger's own clock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use api::serve::{App, AppOptions, build_app};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use config::{ProviderConfig, ProviderScheme, default_config};
use engine::{Id, TransferRequest};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use common::{APP_DEPOSIT, CC_APP_ID, CC_SECRET, STANDARD_SECRET, StandIn, ccpayment_headers, standard_headers};

/// 2026-11-22T10:00:00Z.
const START_SECONDS: i64 = 1_795_341_600;

struct Harness {
    app: Option<App>,
    clock_ms: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

async fn harness(api_base_url: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = default_config();
    config.storage.data_dir = dir.path().join("data");
    let provider = |name: &str, scheme| ProviderConfig {
        name: name.to_owned(),
        scheme,
        secret: Some(if scheme == ProviderScheme::Standard { STANDARD_SECRET } else { CC_SECRET }.to_owned()),
        secret_env: None,
        app_id: (scheme == ProviderScheme::Ccpayment).then(|| CC_APP_ID.to_owned()),
        api_base_url: (scheme == ProviderScheme::Ccpayment).then(|| api_base_url.to_owned()),
        replay_window_seconds: 300,
        fetch_timeout_ms: 1000,
        fetch_retries: 1,
    };
    config.webhooks.providers =
        vec![provider("processor", ProviderScheme::Standard), provider("ccpayment", ProviderScheme::Ccpayment)];
    config.validate().unwrap();
    let clock_ms = Arc::new(AtomicI64::new(START_SECONDS * 1000));
    let clock = clock_ms.clone();
    let options = AppOptions { clock: Arc::new(move || clock.load(Ordering::SeqCst)), prometheus: None };
    let app = build_app(&config, options).await.unwrap();
    Harness { app: Some(app), clock_ms, _dir: dir }
}

impl Harness {
    fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    fn now_seconds(&self) -> i64 {
        self.clock_ms.load(Ordering::SeqCst) / 1000
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app().router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::post(uri).header("content-type", "application/json").body(Body::from(body.to_string()));
        self.send(request.unwrap()).await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn standard(&self, event: &Value, timestamp: i64) -> (StatusCode, Value) {
        let body = event.to_string().into_bytes();
        let mut request = Request::post("/v1/webhooks/processor");
        for (name, value) in standard_headers(STANDARD_SECRET, "msg", timestamp, &body) {
            request = request.header(name, value);
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    async fn ccpayment(&self, notification: &Value) -> (StatusCode, Value) {
        let body = notification.to_string().into_bytes();
        let mut request = Request::post("/v1/webhooks/ccpayment");
        for (name, value) in ccpayment_headers(CC_APP_ID, CC_SECRET, self.now_seconds(), &body) {
            request = request.header(name, value);
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    async fn balance(&self, account: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/accounts/{account}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["balance"].clone()
    }

    async fn shutdown(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}

fn id(text: &str) -> Id {
    Id::parse_internal(text).unwrap()
}

fn deposit_completed(deposit_id: &str, account: &str, amount: &str) -> Value {
    json!({"type": "deposit.completed", "data": {"deposit_id": deposit_id, "account": account, "amount": amount, "currency": "USD"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_whose_fact_was_lost_is_never_made_twice() {
    let harness = harness("http://127.0.0.1:9").await;
    let now = harness.now_seconds();
    assert_eq!(harness.post("/v1/accounts", json!({"id": "alice", "currency": "USD"})).await.0, StatusCode::CREATED);
    // First delivery creates the settlement account; this one is credited normally.
    assert_eq!(harness.standard(&deposit_completed("d-0", "alice", "1.00"), now).await.1["result"], "credited");
    // A delivery of d-1 that stopped after its transfer and before its fact: the transfer is
    // there, exactly as the delivery makes it, and nothing else.
    let transfer = TransferRequest {
        id: id("dep:processor:d-1"),
        debit_account: id("settlement:processor:USD"),
        credit_account: id("alice"),
        amount: "5.00".parse().unwrap(),
        pending: false,
        timeout_seconds: 0,
        description: "deposit d-1 via processor".to_owned(),
        metadata: Default::default(),
    };
    let (_, created) = harness.app().ledger().create_transfer(transfer).await.unwrap();
    assert!(created);
    assert_eq!(harness.balance("alice").await, "6.00");
    // A failure arriving now finds the credit: nothing changes, the fact is repaired.
    let (status, body) = harness.standard(&json!({"type": "deposit.failed", "data": {"deposit_id": "d-1"}}), now).await;
    assert_eq!((status, &body["result"]), (StatusCode::OK, &json!("failed_after_success")));
    // The re-delivery of the completion is a duplicate.
    let (status, body) = harness.standard(&deposit_completed("d-1", "alice", "5.00"), now).await;
    assert_eq!((status, &body["result"]), (StatusCode::OK, &json!("duplicate")));
    assert_eq!(harness.balance("alice").await, "6.00");

    // The same gap, re-delivered as a completion first: it replays the transfer.
    let transfer = TransferRequest {
        id: id("dep:processor:d-2"),
        debit_account: id("settlement:processor:USD"),
        credit_account: id("alice"),
        amount: "2.00".parse().unwrap(),
        pending: false,
        timeout_seconds: 0,
        description: "deposit d-2 via processor".to_owned(),
        metadata: Default::default(),
    };
    harness.app().ledger().create_transfer(transfer).await.unwrap();
    let (status, body) = harness.standard(&deposit_completed("d-2", "alice", "2.00"), now).await;
    assert_eq!(
        (status, &body["result"], &body["transfer_id"]),
        (StatusCode::OK, &json!("duplicate"), &json!("dep:processor:d-2"))
    );
    assert_eq!(harness.balance("alice").await, "8.00");
    assert_eq!(harness.balance("settlement:processor:USD").await, "-8.00");
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_whose_withdrawal_fact_was_lost_settles_once() {
    let harness = harness("http://127.0.0.1:9").await;
    let now = harness.now_seconds();
    harness.post("/v1/accounts", json!({"id": "alice", "currency": "USD"})).await;
    harness.standard(&deposit_completed("d-0", "alice", "10.00"), now).await;
    // `POST /v1/withdrawals` stopped after the hold and before its fact.
    let hold = TransferRequest {
        id: id("wd:processor:w-1"),
        debit_account: id("alice"),
        credit_account: id("settlement:processor:USD"),
        amount: "4.00".parse().unwrap(),
        pending: true,
        timeout_seconds: 0,
        description: "withdrawal w-1 via processor".to_owned(),
        metadata: Default::default(),
    };
    harness.app().ledger().create_transfer(hold).await.unwrap();
    // The client retries: the hold is replayed, not made twice.
    let request = json!({"id": "w-1", "account": "alice", "amount": "4.00", "provider": "processor"});
    let (status, body) = harness.post("/v1/withdrawals", request).await;
    assert_eq!((status, &body["status"]), (StatusCode::CREATED, &json!("pending")), "{body}");
    let (_, account) = harness.get("/v1/accounts/alice").await;
    assert_eq!((&account["balance"], &account["available"]), (&json!("10.00"), &json!("6.00")));

    // Another hold without its fact, completed by the provider before the client retried.
    let hold = TransferRequest {
        id: id("wd:processor:w-2"),
        debit_account: id("alice"),
        credit_account: id("settlement:processor:USD"),
        amount: "1.00".parse().unwrap(),
        pending: true,
        timeout_seconds: 0,
        description: "withdrawal w-2 via processor".to_owned(),
        metadata: Default::default(),
    };
    harness.app().ledger().create_transfer(hold).await.unwrap();
    let completed = json!({"type": "withdrawal.completed", "data": {"withdrawal_id": "w-2"}});
    let (status, body) = harness.standard(&completed, now).await;
    assert_eq!((status, &body["result"]), (StatusCode::OK, &json!("posted")), "{body}");
    let (status, body) = harness.get("/v1/withdrawals/w-2").await;
    assert_eq!((status, &body["status"], &body["amount"]), (StatusCode::OK, &json!("completed"), &json!("1.00")));
    assert_eq!(harness.standard(&completed, now).await.1["result"], "duplicate");
    let (_, account) = harness.get("/v1/accounts/alice").await;
    assert_eq!((&account["balance"], &account["available"]), (&json!("9.00"), &json!("5.00")));
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_one_event_act_once() {
    let stand_in = StandIn::start().await;
    let harness = Arc::new(harness(&stand_in.base_url()).await);
    harness.post("/v1/accounts", json!({"id": "user_42:USDT", "currency": "USDT"})).await;
    harness.post("/v1/accounts", json!({"id": "alice", "currency": "USD"})).await;
    stand_in.put(
        APP_DEPOSIT,
        json!({"recordId": "r-1", "referenceId": "user_42", "coinSymbol": "USDT", "amount": "1.5", "status": "Success", "isFlaggedAsRisky": false}),
    );
    let cc = json!({"type": "DirectDeposit", "msg": {"recordId": "r-1", "referenceId": "user_42", "coinSymbol": "USDT", "status": "Success"}});
    let standard = deposit_completed("d-1", "alice", "3.00");
    let now = harness.now_seconds();
    let mut deliveries = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (harness, cc, standard) = (harness.clone(), cc.clone(), standard.clone());
        deliveries.spawn(async move {
            let (status, body) = harness.ccpayment(&cc).await;
            assert_eq!((status, body), (StatusCode::OK, json!("success")));
            let (status, body) = harness.standard(&standard, now).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["result"].as_str().unwrap().to_owned()
        });
    }
    let mut credited = 0;
    while let Some(result) = deliveries.join_next().await {
        if result.unwrap() == "credited" {
            credited += 1;
        }
    }
    assert_eq!(credited, 1);
    assert_eq!(harness.balance("user_42:USDT").await, "1.500000");
    assert_eq!(harness.balance("settlement:ccpayment:USDT").await, "-1.500000");
    assert_eq!(harness.balance("alice").await, "3.00");
    assert_eq!(stand_in.bad_signatures(), 0);
    let harness = Arc::into_inner(harness).unwrap();
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_window_follows_the_ledgers_clock() {
    let harness = harness("http://127.0.0.1:9").await;
    harness.post("/v1/accounts", json!({"id": "alice", "currency": "USD"})).await;
    let signed_at = harness.now_seconds();
    let event = deposit_completed("d-1", "alice", "1.00");
    harness.clock_ms.fetch_add(301_000, Ordering::SeqCst);
    let (status, body) = harness.standard(&event, signed_at).await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::UNAUTHORIZED, &json!("stale_webhook")));
    harness.clock_ms.fetch_sub(2_000, Ordering::SeqCst);
    let (status, body) = harness.standard(&event, signed_at).await;
    assert_eq!((status, &body["result"]), (StatusCode::OK, &json!("credited")));
    harness.shutdown().await;
}
