//! Webhooks, deposits and withdrawals end to end: the real `ledgerd` binary on `127.0.0.1:0`,
//! deliveries signed here the way providers sign them, and a local stand-in of CCPayment's
//! record API that answers only to correctly signed look-ups. Every test ends with exact
//! balances and totals that balance (the balances of every account of the currency sum to
//! zero), and checks the `ledger_webhooks_total` counts of what it did.

mod common;

use hyper::StatusCode;
use serde_json::{Value, json};

use common::{
    APP_DEPOSIT, APP_WITHDRAW, CC_APP_ID, CC_SECRET_VARIABLE, Http, Mode, Server, StandIn, USER_DEPOSIT,
    ccpayment_headers, serve_command, start, unix_seconds, write_config,
};

const SETTLEMENT_USD: &str = "settlement:processor:USD";
const SETTLEMENT_USDT: &str = "settlement:ccpayment:USDT";

fn deposit_completed(deposit_id: &str, account: &str, amount: &str, currency: &str) -> Value {
    json!({"type": "deposit.completed",
           "data": {"deposit_id": deposit_id, "account": account, "amount": amount, "currency": currency}})
}

fn deposit_failed(deposit_id: &str) -> Value {
    json!({"type": "deposit.failed", "data": {"deposit_id": deposit_id}})
}

fn withdrawal_event(kind: &str, withdrawal_id: &str) -> Value {
    json!({"type": kind, "data": {"withdrawal_id": withdrawal_id}})
}

fn notification(kind: &str, msg: Value) -> Value {
    json!({"type": kind, "msg": msg})
}

fn deposit_record(record_id: &str, user_field: &str, user: &str, coin: &str, amount: &str, status: &str) -> Value {
    json!({"recordId": record_id, user_field: user, "coinId": 1280, "coinSymbol": coin, "chain": "TRX",
           "amount": amount, "serviceFee": "0", "txId": format!("tx-{record_id}"), "status": status,
           "isFlaggedAsRisky": false, "arrivedAt": 1_677_152_490})
}

/// A server with both providers, the CCPayment one at `stand_in`.
struct Ledger {
    server: Option<Server>,
    http: Http,
    config: std::path::PathBuf,
    data_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Ledger {
    fn start(stand_in: &StandIn, extra: &str) -> Ledger {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &stand_in.base_url(), extra);
        let data_dir = dir.path().join("data");
        let server = start(serve_command(&config, &data_dir)).unwrap_or_else(|failure| panic!("{}", failure.stderr));
        let http = Http::new(server.address);
        Ledger { server: Some(server), http, config, data_dir, _dir: dir }
    }

    /// Stops the server with `signal` and starts it again on the same data dir.
    fn restart(&mut self, signal: &str) {
        let status = self.server.take().unwrap().stop_with(signal);
        if signal == "TERM" {
            assert!(status.success(), "exit {status:?}");
        }
        let server =
            start(serve_command(&self.config, &self.data_dir)).unwrap_or_else(|failure| panic!("{}", failure.stderr));
        self.http = Http::new(server.address);
        self.server = Some(server);
    }

    async fn account(&self, id: &str, currency: &str) {
        self.http
            .post("/v1/accounts", json!({"id": id, "currency": currency}))
            .await
            .assert_status(StatusCode::CREATED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_deposits_are_credited_exactly_once() {
    let stand_in = StandIn::start().await;
    let ledger = Ledger::start(&stand_in, "");
    let http = &ledger.http;
    ledger.account("alice", "USD").await;

    let event = deposit_completed("d-1", "alice", "5.00", "USD");
    let first = http.standard("processor", "msg_1", &event).await.assert_status(StatusCode::OK);
    assert_eq!(first, json!({"result": "credited", "transfer_id": "dep:processor:d-1"}));
    // Re-deliveries (same message id, fresh timestamp and signature) change nothing.
    for _ in 0..2 {
        let again = http.standard("processor", "msg_1", &event).await.assert_status(StatusCode::OK);
        assert_eq!(again["result"], "duplicate");
    }
    assert_eq!(http.balance("alice").await, "5.00");
    assert_eq!(http.balance(SETTLEMENT_USD).await, "-5.00");
    let settlement = http.get(&format!("/v1/accounts/{SETTLEMENT_USD}")).await.assert_status(StatusCode::OK);
    assert_eq!(settlement["overdraft_limit"], "unlimited");
    let transfer = http.get("/v1/transfers/dep:processor:d-1").await.assert_status(StatusCode::OK);
    assert_eq!(
        (&transfer["debit_account"], &transfer["credit_account"], &transfer["amount"], &transfer["status"]),
        (&json!(SETTLEMENT_USD), &json!("alice"), &json!("5.00"), &json!("posted"))
    );

    // Twelve deliveries of one event at the same moment: one credit.
    let event = deposit_completed("d-2", "alice", "2.50", "USD");
    let mut deliveries = tokio::task::JoinSet::new();
    for index in 0..12 {
        let (http, event) = (http.clone(), event.clone());
        deliveries.spawn(async move { http.standard("processor", &format!("msg_2_{index}"), &event).await });
    }
    let mut results = Vec::new();
    while let Some(reply) = deliveries.join_next().await {
        results.push(reply.unwrap().assert_status(StatusCode::OK)["result"].as_str().unwrap().to_owned());
    }
    results.sort();
    let mut expected = vec!["duplicate".to_owned(); 11];
    expected.insert(0, "credited".to_owned());
    assert_eq!(results, expected);
    assert_eq!(http.balance("alice").await, "7.50");

    // The same deposit id saying something else: refused, nothing moves.
    let conflicting = deposit_completed("d-2", "alice", "9.00", "USD");
    http.standard("processor", "msg_3", &conflicting)
        .await
        .assert_error(StatusCode::CONFLICT, "exists_with_different_fields");
    // An account that does not exist: 422, nothing moves (the provider retries).
    let nobody = deposit_completed("d-3", "nobody", "1.00", "USD");
    http.standard("processor", "msg_4", &nobody)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_not_found");
    assert_eq!(http.get("/v1/transfers/dep:processor:d-3").await.status, StatusCode::NOT_FOUND);
    // Amounts follow the currency: more decimals than USD has is refused.
    let precise = deposit_completed("d-4", "alice", "1.001", "USD");
    http.standard("processor", "msg_5", &precise).await.assert_error(StatusCode::BAD_REQUEST, "invalid_amount");
    let unknown = deposit_completed("d-5", "alice", "1", "XXX");
    http.standard("processor", "msg_6", &unknown)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_currency");
    // Another event type is acknowledged and ignored.
    let other = json!({"type": "invoice.paid", "data": {}});
    assert_eq!(http.standard("processor", "msg_7", &other).await.assert_status(StatusCode::OK)["result"], "ignored");

    assert_eq!(http.balance("alice").await, "7.50");
    http.assert_totals_balance(&["alice", SETTLEMENT_USD]).await;
    for (event_type, result, count) in [
        ("deposit.completed", "credited", 2),
        ("deposit.completed", "duplicate", 13),
        ("deposit.completed", "conflict", 1),
        ("deposit.completed", "account_not_found", 1),
        ("deposit.completed", "invalid_event", 2),
        ("other", "ignored", 1),
    ] {
        assert_eq!(http.webhook_count("processor", event_type, result).await, count, "{event_type} {result}");
    }
    let metrics = http.get("/metrics").await.text;
    assert!(metrics.contains("ledger_transfer_amount_total{currency=\"USD\"} 7.5"), "{metrics}");
}

/// Every outcome of every type a provider sends, and a refused signature, is a series at 0
/// before its first event, so that `rate()` sees that first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_series_start_at_zero_for_every_configured_provider() {
    let stand_in = StandIn::start().await;
    let ledger = Ledger::start(&stand_in, "");
    let http = &ledger.http;
    let text = http.get("/metrics").await.text;
    let series = [
        ("processor", "deposit.completed", "credited"),
        ("processor", "deposit.completed", "duplicate"),
        ("processor", "deposit.failed", "failed"),
        ("processor", "withdrawal.completed", "posted"),
        ("processor", "withdrawal.failed", "voided"),
        ("processor", "other", "ignored"),
        ("processor", "unverified", "invalid_signature"),
        ("processor", "unverified", "stale_webhook"),
        ("ccpayment", "DirectDeposit", "credited"),
        ("ccpayment", "ApiWithdrawal", "posted"),
        ("ccpayment", "unverified", "invalid_signature"),
    ];
    for (provider, event_type, result) in series {
        let labels = [("provider", provider), ("type", event_type), ("result", result)];
        assert_eq!(
            common::metric_text(&text, "ledger_webhooks_total", &labels),
            Some("0"),
            "{provider} {event_type} {result} is not at 0 before any delivery"
        );
    }
    // A type the ledger does not know is not a series until a delivery brings it (no client
    // picks series), and the registered ones count from 0.
    assert!(!text.contains("type=\"invented\""));
    ledger.account("alice", "USD").await;
    let event = deposit_completed("d-1", "alice", "5.00", "USD");
    http.standard("processor", "msg_1", &event).await.assert_status(StatusCode::OK);
    assert_eq!(http.webhook_count("processor", "deposit.completed", "credited").await, 1);
    assert_eq!(http.webhook_count("processor", "deposit.completed", "duplicate").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_first_and_stale_deliveries_can_come_back() {
    let stand_in = StandIn::start().await;
    let ledger = Ledger::start(&stand_in, "");
    let http = &ledger.http;
    ledger.account("alice", "USD").await;
    let event = deposit_completed("d-1", "alice", "4.00", "USD");
    let body = event.to_string().into_bytes();
    let now = unix_seconds();
    let path = "/v1/webhooks/processor";
    let send = |headers: Vec<(String, String)>, body: Vec<u8>| {
        let http = http.clone();
        async move { http.send(hyper::Method::POST, path, &headers, body).await }
    };

    // Signed with another secret.
    let forged = common::standard_headers("whsec_c2VjcmV0LWtleS1vZi1hbm90aGVyLXNlbmRlcg==", "m", now, &body);
    send(forged, body.clone()).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_signature");
    // Signed, then altered.
    let signed = common::standard_headers(common::STANDARD_SECRET, "m", now, &body);
    let altered = deposit_completed("d-1", "alice", "400.00", "USD").to_string().into_bytes();
    send(signed.clone(), altered).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_signature");
    // No signature at all.
    send(signed[..2].to_vec(), body.clone()).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_signature");
    // A body that is not even JSON is refused for its signature, not parsed.
    let garbage = b"{not json".to_vec();
    let forged = common::standard_headers("whsec_c2VjcmV0LWtleS1vZi1hbm90aGVyLXNlbmRlcg==", "m", now, &garbage);
    send(forged, garbage).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_signature");
    // Genuine but outside the 300 s window, either way.
    for timestamp in [now - 400, now + 400] {
        http.standard_at("processor", "m", &event, timestamp)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "stale_webhook");
    }
    assert_eq!(http.balance("alice").await, "0.00");
    // The stale delivery, sent again in time, is acted on.
    assert_eq!(http.standard("processor", "m", &event).await.assert_status(StatusCode::OK)["result"], "credited");
    // CCPayment deliveries are refused the same way.
    let cc = notification(
        "DirectDeposit",
        json!({"recordId": "r-1", "referenceId": "alice", "coinSymbol": "USDT", "status": "Success"}),
    );
    let cc_body = cc.to_string().into_bytes();
    let wrong = ccpayment_headers(CC_APP_ID, "not_the_secret", now, &cc_body);
    http.send(hyper::Method::POST, "/v1/webhooks/ccpayment", &wrong, cc_body.clone())
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_signature");
    let other_app = ccpayment_headers("1", common::CC_SECRET, now, &cc_body);
    http.send(hyper::Method::POST, "/v1/webhooks/ccpayment", &other_app, cc_body.clone())
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_signature");
    http.ccpayment_at(&cc, now - 121).await.assert_error(StatusCode::UNAUTHORIZED, "stale_webhook");
    assert_eq!(stand_in.requests(), 0, "nothing unverified reaches the provider's API");
    // An unknown provider.
    let reply = http.standard("nobody", "m", &event).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");

    assert_eq!(http.balance("alice").await, "4.00");
    http.assert_totals_balance(&["alice", SETTLEMENT_USD]).await;
    assert_eq!(http.webhook_count("processor", "unverified", "invalid_signature").await, 4);
    assert_eq!(http.webhook_count("processor", "unverified", "stale_webhook").await, 2);
    assert_eq!(http.webhook_count("ccpayment", "unverified", "invalid_signature").await, 2);
    assert_eq!(http.webhook_count("ccpayment", "unverified", "stale_webhook").await, 1);
    assert_eq!(http.webhook_count("processor", "deposit.completed", "credited").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_statuses_only_move_forward() {
    let stand_in = StandIn::start().await;
    let ledger = Ledger::start(&stand_in, "");
    let http = &ledger.http;
    ledger.account("alice", "USD").await;

    // Failed first, completed later (out of order): nothing is credited.
    assert_eq!(
        http.standard("processor", "a", &deposit_failed("d-1")).await.assert_status(StatusCode::OK)["result"],
        "failed"
    );
    let late = http.standard("processor", "b", &deposit_completed("d-1", "alice", "3.00", "USD")).await;
    assert_eq!(late.assert_status(StatusCode::OK)["result"], "success_after_failure");
    assert_eq!(
        http.standard("processor", "c", &deposit_failed("d-1")).await.assert_status(StatusCode::OK)["result"],
        "duplicate"
    );
    assert_eq!(http.balance("alice").await, "0.00");
    assert_eq!(http.get("/v1/transfers/dep:processor:d-1").await.status, StatusCode::NOT_FOUND);

    // Completed, then failed: the failure changes nothing and is counted.
    let credited = http.standard("processor", "d", &deposit_completed("d-2", "alice", "6.00", "USD")).await;
    assert_eq!(credited.assert_status(StatusCode::OK)["result"], "credited");
    for _ in 0..2 {
        let failed = http.standard("processor", "e", &deposit_failed("d-2")).await;
        assert_eq!(failed.assert_status(StatusCode::OK)["result"], "failed_after_success");
    }
    assert_eq!(http.balance("alice").await, "6.00");
    http.assert_totals_balance(&["alice", SETTLEMENT_USD]).await;
    assert_eq!(http.webhook_count("processor", "deposit.failed", "failed_after_success").await, 2);
    assert_eq!(http.webhook_count("processor", "deposit.completed", "success_after_failure").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_hold_then_post_or_void_exactly_once() {
    let stand_in = StandIn::start().await;
    let ledger = Ledger::start(&stand_in, "");
    let http = &ledger.http;
    ledger.account("alice", "USD").await;
    http.standard("processor", "fund", &deposit_completed("d-1", "alice", "10.00", "USD"))
        .await
        .assert_status(StatusCode::OK);

    let request = json!({"id": "w-1", "account": "alice", "amount": "3", "provider": "processor"});
    let created = http.post("/v1/withdrawals", request.clone()).await.assert_status(StatusCode::CREATED);
    assert_eq!(
        (&created["status"], &created["amount"], &created["currency"]),
        (&json!("pending"), &json!("3.00"), &json!("USD"))
    );
    assert_eq!(
        (&created["transfer"]["id"], &created["transfer"]["status"]),
        (&json!("wd:processor:w-1"), &json!("pending"))
    );
    assert_eq!(created["transfer"]["credit_account"], SETTLEMENT_USD);
    let alice = http.get("/v1/accounts/alice").await.assert_status(StatusCode::OK);
    assert_eq!((&alice["balance"], &alice["available"]), (&json!("10.00"), &json!("7.00")));
    // Idempotent by id, like transfers.
    let replay = http
        .post("/v1/withdrawals", json!({"id": "w-1", "account": "alice", "amount": "3.00", "provider": "processor"}))
        .await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let other = json!({"id": "w-1", "account": "alice", "amount": "4", "provider": "processor"});
    http.post("/v1/withdrawals", other).await.assert_error(StatusCode::CONFLICT, "exists_with_different_fields");
    // Bad requests.
    let bad = |id: &str, account: &str, amount: &str, provider: &str| json!({"id": id, "account": account, "amount": amount, "provider": provider});
    http.post("/v1/withdrawals", bad("w-9", "alice", "1", "nobody"))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "provider_not_found");
    http.post("/v1/withdrawals", bad("w-9", "nobody", "1", "processor"))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_not_found");
    http.post("/v1/withdrawals", bad("w-9", "alice", "1.001", "processor"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_amount");
    http.post("/v1/withdrawals", bad("w-9", "alice", "100", "processor"))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    let reply = http.post("/v1/withdrawals", json!({"id": "w-9", "account": "alice", "amount": "1"})).await;
    assert_eq!((reply.status, reply.json()["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("provider")));
    http.get("/v1/withdrawals/w-9").await.assert_error(StatusCode::NOT_FOUND, "withdrawal_not_found");

    // Completed: the hold is posted, once.
    let posted = http.standard("processor", "c1", &withdrawal_event("withdrawal.completed", "w-1")).await;
    assert_eq!(posted.assert_status(StatusCode::OK), json!({"result": "posted", "transfer_id": "wd:processor:w-1"}));
    let again = http.standard("processor", "c1", &withdrawal_event("withdrawal.completed", "w-1")).await;
    assert_eq!(again.assert_status(StatusCode::OK)["result"], "duplicate");
    let failed = http.standard("processor", "f1", &withdrawal_event("withdrawal.failed", "w-1")).await;
    assert_eq!(failed.assert_status(StatusCode::OK)["result"], "failed_after_success");
    let shown = http.get("/v1/withdrawals/w-1").await.assert_status(StatusCode::OK);
    assert_eq!((&shown["status"], &shown["transfer"]["status"]), (&json!("completed"), &json!("posted")));
    let alice = http.get("/v1/accounts/alice").await.assert_status(StatusCode::OK);
    assert_eq!((&alice["balance"], &alice["available"]), (&json!("7.00"), &json!("7.00")));

    // Failed: the hold is voided and the money is back.
    http.post("/v1/withdrawals", bad("w-2", "alice", "2", "processor")).await.assert_status(StatusCode::CREATED);
    assert_eq!(http.get("/v1/accounts/alice").await.json()["available"], "5.00");
    let voided = http.standard("processor", "f2", &withdrawal_event("withdrawal.failed", "w-2")).await;
    assert_eq!(voided.assert_status(StatusCode::OK)["result"], "voided");
    let late = http.standard("processor", "c2", &withdrawal_event("withdrawal.completed", "w-2")).await;
    assert_eq!(late.assert_status(StatusCode::OK)["result"], "success_after_failure");
    let shown = http.get("/v1/withdrawals/w-2").await.assert_status(StatusCode::OK);
    assert_eq!((&shown["status"], &shown["transfer"]["status"]), (&json!("failed"), &json!("voided")));
    let alice = http.get("/v1/accounts/alice").await.assert_status(StatusCode::OK);
    assert_eq!((&alice["balance"], &alice["available"]), (&json!("7.00"), &json!("7.00")));
    // A withdrawal the ledger never held.
    let unknown = http.standard("processor", "u", &withdrawal_event("withdrawal.completed", "w-404")).await;
    unknown.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "withdrawal_not_found");

    assert_eq!(http.balance(SETTLEMENT_USD).await, "-7.00");
    http.assert_totals_balance(&["alice", SETTLEMENT_USD]).await;
    assert_eq!(http.webhook_count("processor", "withdrawal.completed", "posted").await, 1);
    assert_eq!(http.webhook_count("processor", "withdrawal.failed", "voided").await, 1);
    assert_eq!(http.webhook_count("processor", "withdrawal.failed", "failed_after_success").await, 1);
    assert_eq!(http.webhook_count("processor", "withdrawal.completed", "withdrawal_not_found").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccpayment_deposits_credit_what_the_record_says() {
    let stand_in = StandIn::start().await;
    let ledger = Ledger::start(&stand_in, "");
    let http = &ledger.http;
    for account in ["user_42:USDT", "u-7:USDT", "shop"] {
        ledger.account(account, "USDT").await;
    }

    // DirectDeposit: Processing, then Success; the amount comes from the record.
    stand_in.put(APP_DEPOSIT, deposit_record("r-1", "referenceId", "user_42", "USDT", "0.5", "Processing"));
    let msg = |status: &str| json!({"recordId": "r-1", "referenceId": "user_42", "coinId": 1280, "coinSymbol": "USDT", "status": status, "isFlaggedAsRisky": false});
    http.ccpayment(&notification("DirectDeposit", msg("Processing"))).await.assert_ccpayment_success();
    assert_eq!(http.balance("user_42:USDT").await, "0.000000");
    stand_in.put(APP_DEPOSIT, deposit_record("r-1", "referenceId", "user_42", "USDT", "0.5", "Success"));
    http.ccpayment(&notification("DirectDeposit", msg("Success"))).await.assert_ccpayment_success();
    assert_eq!(http.balance("user_42:USDT").await, "0.500000");
    // Final: answered from the ledger's own record, without another look-up.
    let looked_up = stand_in.requests();
    for status in ["Success", "Processing", "Failed"] {
        http.ccpayment(&notification("DirectDeposit", msg(status))).await.assert_ccpayment_success();
    }
    assert_eq!(stand_in.requests(), looked_up);
    assert_eq!(http.balance("user_42:USDT").await, "0.500000");

    // UserDeposit: an amount in the notification is not believed.
    stand_in.put(USER_DEPOSIT, deposit_record("r-2", "userId", "u-7", "USDT", "1.25", "Success"));
    let claim =
        json!({"recordId": "r-2", "userId": "u-7", "coinSymbol": "USDT", "status": "Success", "amount": "1000"});
    http.ccpayment(&notification("UserDeposit", claim)).await.assert_ccpayment_success();
    assert_eq!(http.balance("u-7:USDT").await, "1.250000");

    // A risky deposit is recorded and counted, not credited.
    let mut risky = deposit_record("r-3", "referenceId", "user_42", "USDT", "7", "Success");
    risky["isFlaggedAsRisky"] = json!(true);
    stand_in.put(APP_DEPOSIT, risky);
    let risky_msg = json!({"recordId": "r-3", "referenceId": "user_42", "coinSymbol": "USDT", "status": "Success", "isFlaggedAsRisky": true});
    for _ in 0..2 {
        http.ccpayment(&notification("DirectDeposit", risky_msg.clone())).await.assert_ccpayment_success();
    }
    assert_eq!(http.balance("user_42:USDT").await, "0.500000");
    assert_eq!(http.get("/v1/transfers/dep:ccpayment:r-3").await.status, StatusCode::NOT_FOUND);

    // ApiDeposit: credits the account of the order registered under its orderId.
    let order = json!({"id": "o-1", "account": "shop", "provider": "ccpayment"});
    let registered = http.post("/v1/deposits", order.clone()).await.assert_status(StatusCode::CREATED);
    assert_eq!((&registered["currency"], &registered["credited_amount"]), (&json!("USDT"), &json!("0.000000")));
    assert_eq!(http.post("/v1/deposits", order).await.status, StatusCode::OK);
    let moved = json!({"id": "o-1", "account": "u-7:USDT", "provider": "ccpayment"});
    http.post("/v1/deposits", moved).await.assert_error(StatusCode::CONFLICT, "exists_with_different_fields");
    stand_in.put(APP_DEPOSIT, deposit_record("r-4", "orderId", "o-1", "USDT", "2.000000", "Success"));
    let api_msg = json!({"recordId": "r-4", "orderId": "o-1", "coinSymbol": "USDT", "status": "Success", "isFlaggedAsRisky": false});
    http.ccpayment(&notification("ApiDeposit", api_msg)).await.assert_ccpayment_success();
    assert_eq!(http.balance("shop").await, "2.000000");
    let shown = http.get("/v1/deposits/o-1").await.assert_status(StatusCode::OK);
    assert_eq!(shown["credited_amount"], "2.000000");
    assert_eq!(
        shown["deposits"],
        json!([{"deposit_id": "r-4", "status": "credited", "amount": "2.000000", "transfer_id": "dep:ccpayment:r-4"}])
    );
    http.get("/v1/deposits/o-404").await.assert_error(StatusCode::NOT_FOUND, "deposit_not_found");

    // What is not credited, each with a clear answer (the provider retries) and a count.
    stand_in.put(APP_DEPOSIT, deposit_record("r-5", "orderId", "o-404", "USDT", "1", "Success"));
    let unknown_order = json!({"recordId": "r-5", "orderId": "o-404", "coinSymbol": "USDT", "status": "Success"});
    http.ccpayment(&notification("ApiDeposit", unknown_order))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "deposit_not_found");
    let refused = [
        ("r-6", "user_42", "DOGE", "1", "unknown_currency"),
        ("r-7", "user_42", "USDT", "0.1234567", "invalid_amount"),
        ("r-8", "nobody", "USDT", "1", "account_not_found"),
    ];
    for (record_id, user, coin, amount, code) in refused {
        stand_in.put(APP_DEPOSIT, deposit_record(record_id, "referenceId", user, coin, amount, "Success"));
        let msg = json!({"recordId": record_id, "referenceId": user, "coinSymbol": coin, "status": "Success"});
        http.ccpayment(&notification("DirectDeposit", msg)).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, code);
        assert_eq!(http.get(&format!("/v1/transfers/dep:ccpayment:{record_id}")).await.status, StatusCode::NOT_FOUND);
    }
    // The URL activation CCPayment sends is acknowledged.
    http.ccpayment(&json!({"type": "ActivateWebhookURL", "msg": {}})).await.assert_ccpayment_success();

    assert_eq!(stand_in.bad_signatures(), 0, "every look-up was signed correctly");
    assert!(stand_in.requests() >= 8);
    assert_eq!(http.balance(SETTLEMENT_USDT).await, "-3.750000");
    http.assert_totals_balance(&["user_42:USDT", "u-7:USDT", "shop", SETTLEMENT_USDT]).await;
    for (event_type, result, count) in [
        ("DirectDeposit", "recorded", 1),
        ("DirectDeposit", "credited", 1),
        // r-1 once and the risky r-3 once.
        ("DirectDeposit", "duplicate", 2),
        ("DirectDeposit", "late_status", 1),
        ("DirectDeposit", "failed_after_success", 1),
        ("DirectDeposit", "risky", 1),
        ("UserDeposit", "credited", 1),
        ("ApiDeposit", "credited", 1),
        ("ApiDeposit", "deposit_not_found", 1),
        ("DirectDeposit", "unknown_currency", 1),
        ("DirectDeposit", "invalid_amount", 1),
        ("DirectDeposit", "account_not_found", 1),
        ("other", "ignored", 1),
    ] {
        assert_eq!(http.webhook_count("ccpayment", event_type, result).await, count, "{event_type} {result}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_gets_503_and_nothing_is_credited() {
    let stand_in = StandIn::start().await;
    let ledger = Ledger::start(&stand_in, "");
    let http = &ledger.http;
    ledger.account("user_42:USDT", "USDT").await;
    stand_in.put(APP_DEPOSIT, deposit_record("r-1", "referenceId", "user_42", "USDT", "3", "Success"));
    let delivery = notification(
        "DirectDeposit",
        json!({"recordId": "r-1", "referenceId": "user_42", "coinSymbol": "USDT", "status": "Success"}),
    );

    stand_in.set_mode(Mode::Down);
    let reply = http.ccpayment(&delivery).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable");
    assert!(reply.headers.contains_key("retry-after"));
    // One attempt and `fetch_retries` (2) more.
    assert_eq!(stand_in.requests(), 3);
    assert_eq!(http.balance("user_42:USDT").await, "0.000000");
    assert_eq!(http.get("/v1/transfers/dep:ccpayment:r-1").await.status, StatusCode::NOT_FOUND);

    // The provider's next attempt, once it is back, is credited once.
    stand_in.set_mode(Mode::Up);
    http.ccpayment(&delivery).await.assert_ccpayment_success();
    http.ccpayment(&delivery).await.assert_ccpayment_success();
    assert_eq!(http.balance("user_42:USDT").await, "3.000000");
    http.assert_totals_balance(&["user_42:USDT", SETTLEMENT_USDT]).await;
    assert_eq!(http.webhook_count("ccpayment", "DirectDeposit", "provider_unavailable").await, 1);
    assert_eq!(http.webhook_count("ccpayment", "DirectDeposit", "credited").await, 1);
    let metrics = http.get("/metrics").await.text;
    let attempts = |outcome: &str| {
        common::metric_value(
            &metrics,
            "ledger_webhook_fetch_duration_seconds_count",
            &[("provider", "ccpayment"), ("outcome", outcome)],
        )
    };
    assert_eq!((attempts("unreachable"), attempts("ok")), (Some(3.0), Some(1.0)), "{metrics}");
    common::check_with_promtool(&metrics);

    // A ledger whose look-ups the provider does not accept (a stale app secret): 503 too.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &stand_in.base_url(), "");
    let mut command = serve_command(&config, &dir.path().join("data"));
    command.env(CC_SECRET_VARIABLE, "rotated_secret");
    let server = start(command).unwrap_or_else(|failure| panic!("{}", failure.stderr));
    let other = Http::new(server.address);
    other
        .post("/v1/accounts", json!({"id": "user_42:USDT", "currency": "USDT"}))
        .await
        .assert_status(StatusCode::CREATED);
    let body = delivery.to_string().into_bytes();
    let headers = ccpayment_headers(CC_APP_ID, "rotated_secret", unix_seconds(), &body);
    let reply = other.send(hyper::Method::POST, "/v1/webhooks/ccpayment", &headers, body).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable");
    assert_eq!(stand_in.bad_signatures(), 1, "the stand-in checks the ledger's signatures");
    assert_eq!(other.balance("user_42:USDT").await, "0.000000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccpayment_withdrawals_follow_the_record() {
    let stand_in = StandIn::start().await;
    let ledger = Ledger::start(&stand_in, "");
    let http = &ledger.http;
    ledger.account("bob:USDT", "USDT").await;
    stand_in.put(APP_DEPOSIT, deposit_record("r-1", "referenceId", "bob", "USDT", "10", "Success"));
    let fund = json!({"recordId": "r-1", "referenceId": "bob", "coinSymbol": "USDT", "status": "Success"});
    http.ccpayment(&notification("DirectDeposit", fund)).await.assert_ccpayment_success();

    let withdraw =
        |id: &str, amount: &str| json!({"id": id, "account": "bob:USDT", "amount": amount, "provider": "ccpayment"});
    let record = |record_id: &str, order: &str, amount: &str, status: &str| {
        json!({"recordId": record_id, "orderId": order, "coinId": 1280, "coinSymbol": "USDT", "chain": "TRX",
               "amount": amount, "fee": {"coinSymbol": "USDT", "amount": "0.1"}, "txId": "tx", "status": status})
    };
    let msg = |record_id: &str, order: &str, status: &str| {
        notification(
            "ApiWithdrawal",
            json!({"recordId": record_id, "orderId": order, "coinSymbol": "USDT", "status": status}),
        )
    };
    http.post("/v1/withdrawals", withdraw("w-1", "4")).await.assert_status(StatusCode::CREATED);
    stand_in.put(APP_WITHDRAW, record("r-10", "w-1", "4", "Processing"));
    http.ccpayment(&msg("r-10", "w-1", "Processing")).await.assert_ccpayment_success();
    let shown = http.get("/v1/withdrawals/w-1").await.assert_status(StatusCode::OK);
    assert_eq!(
        (&shown["status"], &shown["provider_status"], &shown["record_id"]),
        (&json!("pending"), &json!("Processing"), &json!("r-10"))
    );
    stand_in.put(APP_WITHDRAW, record("r-10", "w-1", "4", "Success"));
    http.ccpayment(&msg("r-10", "w-1", "Success")).await.assert_ccpayment_success();
    let looked_up = stand_in.requests();
    http.ccpayment(&msg("r-10", "w-1", "Success")).await.assert_ccpayment_success();
    http.ccpayment(&msg("r-10", "w-1", "Failed")).await.assert_ccpayment_success();
    http.ccpayment(&msg("r-10", "w-1", "Processing")).await.assert_ccpayment_success();
    assert_eq!(stand_in.requests(), looked_up, "final withdrawals need no look-up");
    assert_eq!(http.get("/v1/withdrawals/w-1").await.json()["status"], "completed");
    assert_eq!(http.balance("bob:USDT").await, "6.000000");

    // Rejected: the hold is voided.
    http.post("/v1/withdrawals", withdraw("w-2", "1")).await.assert_status(StatusCode::CREATED);
    stand_in.put(APP_WITHDRAW, record("r-11", "w-2", "1", "Rejected"));
    http.ccpayment(&msg("r-11", "w-2", "Rejected")).await.assert_ccpayment_success();
    assert_eq!(http.get("/v1/withdrawals/w-2").await.json()["status"], "failed");
    // A record that does not match the withdrawal moves nothing.
    http.post("/v1/withdrawals", withdraw("w-3", "1")).await.assert_status(StatusCode::CREATED);
    stand_in.put(APP_WITHDRAW, record("r-12", "w-3", "2", "Success"));
    http.ccpayment(&msg("r-12", "w-3", "Success"))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "record_mismatch");
    assert_eq!(http.get("/v1/withdrawals/w-3").await.json()["status"], "pending");
    let bob = http.get("/v1/accounts/bob:USDT").await.assert_status(StatusCode::OK);
    assert_eq!((&bob["balance"], &bob["available"]), (&json!("6.000000"), &json!("5.000000")));

    http.assert_totals_balance(&["bob:USDT", SETTLEMENT_USDT]).await;
    assert_eq!(stand_in.bad_signatures(), 0);
    for (result, count) in [
        ("recorded", 1),
        ("posted", 1),
        ("duplicate", 1),
        ("failed_after_success", 1),
        ("late_status", 1),
        ("voided", 1),
        ("record_mismatch", 1),
    ] {
        assert_eq!(http.webhook_count("ccpayment", "ApiWithdrawal", result).await, count, "{result}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_two_deliveries_moves_money_once() {
    let stand_in = StandIn::start().await;
    let mut ledger = Ledger::start(&stand_in, "");
    ledger.account("alice", "USD").await;
    ledger.account("user_42:USDT", "USDT").await;
    let standard = deposit_completed("d-1", "alice", "8.00", "USD");
    stand_in.put(APP_DEPOSIT, deposit_record("r-1", "referenceId", "user_42", "USDT", "0.5", "Success"));
    let cc = notification(
        "DirectDeposit",
        json!({"recordId": "r-1", "referenceId": "user_42", "coinSymbol": "USDT", "status": "Success"}),
    );
    let http = ledger.http.clone();
    assert_eq!(http.standard("processor", "m1", &standard).await.assert_status(StatusCode::OK)["result"], "credited");
    http.ccpayment(&cc).await.assert_ccpayment_success();
    http.post("/v1/withdrawals", json!({"id": "w-1", "account": "alice", "amount": "2", "provider": "processor"}))
        .await
        .assert_status(StatusCode::CREATED);
    http.standard("processor", "m2", &withdrawal_event("withdrawal.completed", "w-1"))
        .await
        .assert_status(StatusCode::OK);
    http.post("/v1/withdrawals", json!({"id": "w-2", "account": "alice", "amount": "1", "provider": "processor"}))
        .await
        .assert_status(StatusCode::CREATED);

    for signal in ["TERM", "KILL"] {
        ledger.restart(signal);
        let http = ledger.http.clone();
        assert_eq!(
            http.standard("processor", "m1", &standard).await.assert_status(StatusCode::OK)["result"],
            "duplicate"
        );
        let failed = http.standard("processor", "m3", &deposit_failed("d-1")).await;
        assert_eq!(failed.assert_status(StatusCode::OK)["result"], "failed_after_success");
        let looked_up = stand_in.requests();
        http.ccpayment(&cc).await.assert_ccpayment_success();
        assert_eq!(stand_in.requests(), looked_up, "the credit's record survived the restart");
        let completed = http.standard("processor", "m2", &withdrawal_event("withdrawal.completed", "w-1")).await;
        assert_eq!(completed.assert_status(StatusCode::OK)["result"], "duplicate");
        assert_eq!(http.get("/v1/withdrawals/w-2").await.assert_status(StatusCode::OK)["status"], "pending");
        assert_eq!(http.balance("alice").await, "6.00");
        assert_eq!(http.get("/v1/accounts/alice").await.json()["available"], "5.00");
        assert_eq!(http.balance("user_42:USDT").await, "0.500000");
        http.assert_totals_balance(&["alice", SETTLEMENT_USD]).await;
        http.assert_totals_balance(&["user_42:USDT", SETTLEMENT_USDT]).await;
    }
    // After both restarts the held withdrawal still settles, once.
    let http = ledger.http.clone();
    let voided = http.standard("processor", "m4", &withdrawal_event("withdrawal.failed", "w-2")).await;
    assert_eq!(voided.assert_status(StatusCode::OK)["result"], "voided");
    assert_eq!(http.get("/v1/accounts/alice").await.json()["available"], "6.00");
    assert_eq!(http.webhook_count("processor", "deposit.completed", "duplicate").await, 1, "counts restart at zero");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_need_no_token_when_auth_is_on() {
    use sha2::Digest as _;
    let stand_in = StandIn::start().await;
    let token = "client-token-for-webhook-tests";
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let ledger = Ledger::start(&stand_in, &format!("[[auth.tokens]]\nsha256 = \"{digest}\"\nrole = \"client\"\n"));
    let anonymous = ledger.http.clone();
    let client = ledger.http.clone().with_token(token);
    client.post("/v1/accounts", json!({"id": "alice", "currency": "USD"})).await.assert_status(StatusCode::CREATED);
    let credited = anonymous.standard("processor", "m", &deposit_completed("d-1", "alice", "1.00", "USD")).await;
    assert_eq!(credited.assert_status(StatusCode::OK)["result"], "credited");
    let withdrawal = json!({"id": "w-1", "account": "alice", "amount": "1", "provider": "processor"});
    anonymous.post("/v1/withdrawals", withdrawal.clone()).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    anonymous.get("/v1/deposits/o-1").await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    client.post("/v1/withdrawals", withdrawal).await.assert_status(StatusCode::CREATED);
    assert_eq!(client.balance("alice").await, "1.00");
}

#[test]
fn a_missing_secret_variable_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    let data_dir = dir.path().join("data");
    let mut command = serve_command(&config, &data_dir);
    command.env_remove(CC_SECRET_VARIABLE);
    let Err(failure) = start(command) else { panic!("ledgerd started without its webhook secret") };
    assert!(!failure.status.success());
    let lines: Vec<&str> = failure.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", failure.stderr);
    assert!(lines[0].contains("\"ccpayment\"") && lines[0].contains(CC_SECRET_VARIABLE), "{}", lines[0]);
    assert!(!failure.stderr.contains("panicked"));
    assert!(!data_dir.exists(), "refused before touching the data dir");
}
