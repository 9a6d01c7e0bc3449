//! Deposits and withdrawals from signed provider webhooks: exactly-once money.
//!
//! This module owns [`Webhooks`], the service behind `POST /v1/webhooks/{provider}`,
//! `/v1/withdrawals` and `/v1/deposits`: verification ([`signature`]), event parsing
//! ([`events`]), the CCPayment record look-ups ([`records`]), the persisted state machine
//! ([`store`]) and the money movements on the ledger.
//!
//! # Exactly once
//!
//! - Every movement has a derived id: a deposit credits with the plain transfer
//!   `dep:{provider}:{deposit_id}` from `settlement:{provider}:{currency}` (created on first
//!   use, overdraft unlimited); a withdrawal holds with the pending transfer
//!   `wd:{provider}:{id}` towards the same settlement account, then posts or voids it. The
//!   ledger's transfers are idempotent by id and serialized by their owning actor, so a second
//!   creation of the same id is a replay and never moves money again, and post and void of a
//!   hold happen at most once.
//! - Everything done for one deposit (`deposit:{provider}:{id}`), withdrawal
//!   (`withdrawal:{id}`) or order (`order:{id}`) runs under that key's lock ([`KeyLocks`]), so
//!   two deliveries of the same event arriving together decide one after the other: the second
//!   sees what the first wrote.
//! - Order of writes: the money first (the transfer, durable when the ledger answers), then the
//!   fact saying so (`append_external`, durable before the delivery is acknowledged). A crash
//!   between the two leaves the transfer without its fact; every path that would act on a
//!   deposit or withdrawal whose fact is not final looks at the transfer first and repairs the
//!   fact from it, so a re-delivery after a restart converges on the one movement (a
//!   `completed` replays the transfer; a `failed` finds the credit and counts a failed after
//!   success; a withdrawal fact missing next to its hold is rebuilt from the hold).
//! - The work of a delivery runs in its own task, so a client that hangs up (or a request
//!   timeout) cannot cut it between the money and the fact.
//!
//! # The state machine
//!
//! A deposit goes Processing → Credited | Failed | Risky, and never back; a withdrawal's
//! provider status goes Pending → WaitingApproval → Processing → Completed | Failed. A late
//! Processing is a no-op; a failure after a success changes nothing and is counted
//! (`failed_after_success`); a success after a failure likewise (`success_after_failure`).
//! For withdrawals the hold is the truth: posted is completed, voided is failed.
//!
//! # CCPayment
//!
//! A notification only says which record changed: the record is fetched from the provider's
//! API and its `status`, `amount` and `coinSymbol` decide. Risky deposits are recorded and
//! counted, not credited. A notification for a deposit already final is answered from the
//! fact without a look-up; when the API is unreachable the delivery is answered 503 (the
//! provider retries) and nothing is credited. A delivery refused as stale writes nothing, so
//! the provider's next attempt is acted on normally.

pub mod events;
pub mod providers;
pub mod records;
pub mod signature;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::{AccountRequest, Clock, LedgerError, LedgerHandle};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use config::ProviderScheme;
use engine::TransferStatus;
use engine::amount::{WrittenAmount, parse_amount};
use engine::{Account, Amount, Currency, CurrencyTable, Id, Metadata, Overdraft, Rejection, Transfer, TransferRequest};

use crate::http::error::{ApiError, ErrorCode};
use crate::webhooks::events::{Event, Notification, NotificationKind};
use crate::webhooks::providers::{Provider, Providers};
use crate::webhooks::records::{FetchError, Record, RecordClient, RecordKind};
use crate::webhooks::signature::SignatureError;
use crate::webhooks::store::{
    DepositFact, DepositOrderFact, DepositStatus, Fact, FactDecodeError, KeyLocks, Store, WithdrawalFact,
    WithdrawalStatus,
};

/// Deliveries, withdrawals and orders being worked on at once (distinct keys).
pub const KEYS_IN_PROGRESS_MAX: usize = 4096;
/// Verified deliveries being worked on at once; beyond, 503 `overloaded` (the provider retries).
pub const DELIVERIES_IN_FLIGHT_MAX: usize = 1024;
/// Most deposits of one order listed by `GET /v1/deposits/{id}`.
pub const ORDER_DEPOSITS_SHOWN_MAX: usize = 1000;

/// What a verified delivery did: its `result` (the metric's label) and the transfer it
/// created or found.
#[derive(Debug, Clone)]
pub struct Handled {
    pub result: &'static str,
    pub transfer: Option<Arc<Transfer>>,
    /// Whether `transfer` was created by this delivery.
    pub created: bool,
}

impl Handled {
    fn plain(result: &'static str) -> Handled {
        Handled { result, transfer: None, created: false }
    }
}

/// Why a request was refused, with the metric's `result` label.
#[derive(Debug, Clone)]
pub struct Refused {
    pub result: &'static str,
    pub error: ApiError,
}

impl Refused {
    fn new(result: &'static str, error: ApiError) -> Refused {
        Refused { result, error }
    }
}

impl From<LedgerError> for Refused {
    fn from(error: LedgerError) -> Self {
        let result = match &error {
            LedgerError::Rejected(rejection) => rejection.code(),
            LedgerError::Overloaded => "overloaded",
            LedgerError::Unavailable(_) => "unavailable",
        };
        Refused { result, error: ApiError::from(error) }
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        refused.error
    }
}

/// One delivery's outcome, with the `type` label of its event.
#[derive(Debug)]
pub struct Delivery {
    pub event_type: &'static str,
    pub outcome: Result<Handled, Refused>,
}

/// A withdrawal and its hold.
#[derive(Debug, Clone)]
pub struct WithdrawalView {
    pub fact: WithdrawalFact,
    pub transfer: Arc<Transfer>,
}

/// A deposit order and its deposits.
#[derive(Debug, Clone)]
pub struct OrderView {
    pub fact: DepositOrderFact,
    pub deposits: Vec<DepositFact>,
    /// Sum of the credited deposits.
    pub credited_amount: Amount,
    pub currency: Currency,
}

/// `POST /v1/withdrawals`, checked for syntax.
#[derive(Debug, Clone)]
pub struct WithdrawalRequest {
    pub id: Id,
    pub account: Id,
    /// As written; checked against the account's currency here.
    pub amount: WrittenAmount,
    pub provider: String,
}

/// `POST /v1/deposits`, checked for syntax.
#[derive(Debug, Clone)]
pub struct DepositOrderRequest {
    pub id: Id,
    pub account: Id,
    pub provider: String,
}

/// What [`Webhooks::start`] needs besides the ledger.
pub struct WebhookSettings {
    pub providers: Providers,
    pub currencies: CurrencyTable,
    pub amount_max: u128,
    pub clock: Clock,
    /// The server's request timeout: record look-ups of one delivery stop well before it.
    pub request_timeout: Duration,
}

/// Why the webhook service could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookStartError {
    #[error(transparent)]
    Decode(#[from] FactDecodeError),
    #[error(transparent)]
    Client(#[from] FetchError),
}

/// How a deposit ends without a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uncredited {
    /// The provider reports it failed.
    Failed,
    /// The provider reports success but flags it as risky.
    Risky,
}

/// How a deposit ended, as a delivery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    Processing,
    Success,
    Failed,
}

/// The webhook, deposit and withdrawal service. One per server, shared.
pub struct Webhooks {
    providers: Providers,
    store: Store,
    locks: KeyLocks,
    client: RecordClient,
    ledger: LedgerHandle,
    currencies: CurrencyTable,
    amount_max: u128,
    clock: Clock,
    fetch_budget: Duration,
    /// Bounds the delivery tasks (which outlive a request that is dropped).
    deliveries: Arc<tokio::sync::Semaphore>,
    /// Settlement accounts known to exist.
    settlements: Mutex<HashSet<Id>>,
}

impl Webhooks {
    /// The service over `ledger`, with the facts recovered from the log (`external`).
    pub fn start(
        settings: WebhookSettings,
        ledger: LedgerHandle,
        external: &BTreeMap<(String, String), Vec<u8>>,
    ) -> Result<Arc<Webhooks>, WebhookStartError> {
        let store = Store::load(external)?;
        let clock = settings.clock.clone();
        let client = RecordClient::new(Arc::new(move || clock().div_euclid(1000)))?;
        let fetch_budget = (settings.request_timeout * 3 / 4).max(Duration::from_millis(100));
        Ok(Arc::new(Webhooks {
            providers: settings.providers,
            store,
            locks: KeyLocks::new(KEYS_IN_PROGRESS_MAX),
            client,
            ledger,
            currencies: settings.currencies,
            amount_max: settings.amount_max,
            clock: settings.clock,
            fetch_budget,
            deliveries: Arc::new(tokio::sync::Semaphore::new(DELIVERIES_IN_FLIGHT_MAX)),
            settlements: Mutex::new(HashSet::new()),
        }))
    }

    /// The webhook facts as `External` records (what a snapshot of live state must carry in
    /// `engine::Ledger.external`, since the actors do not hold them).
    pub fn external(&self) -> BTreeMap<(String, String), Vec<u8>> {
        self.store.external()
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    // ---- deliveries ------------------------------------------------------------------------

    /// Verifies and acts on one delivery to `provider`. The body is not looked at before its
    /// signature is verified.
    pub async fn receive(self: &Arc<Self>, provider: &Provider, headers: &HeaderMap, body: Bytes) -> Delivery {
        let now_seconds = self.now_ms().div_euclid(1000);
        let verified = match provider.scheme {
            ProviderScheme::Standard => {
                signature::standard_verify(provider.key(), headers, &body, now_seconds, provider.replay_window_seconds)
            }
            ProviderScheme::Ccpayment => signature::ccpayment_verify(
                provider.key(),
                &provider.app_id,
                headers,
                &body,
                now_seconds,
                provider.replay_window_seconds,
            ),
        };
        if let Err(error) = verified {
            return Delivery { event_type: "unverified", outcome: Err(signature_refusal(&error)) };
        }
        let event_type = events::type_label(&body);
        let event = match provider.scheme {
            ProviderScheme::Standard => events::parse_standard(&body, &self.currencies, self.amount_max),
            ProviderScheme::Ccpayment => events::parse_ccpayment(&body),
        };
        let event = match event {
            Ok(event) => event,
            Err(error) => return Delivery { event_type, outcome: Err(Refused::new("invalid_event", error)) },
        };
        // Run the work in its own task: if the request is dropped, the work still finishes,
        // so it is never cut between a money movement and the fact that records it.
        let Ok(permit) = self.deliveries.clone().try_acquire_owned() else {
            return Delivery { event_type, outcome: Err(Refused::new("overloaded", ApiError::overloaded())) };
        };
        let this = self.clone();
        let provider = provider.clone();
        let work = tokio::spawn(async move {
            let outcome = this.act(&provider, event).await;
            drop(permit);
            outcome
        });
        let outcome = match work.await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(%error, "a webhook delivery's task failed");
                Err(Refused::new("internal", ApiError::internal()))
            }
        };
        Delivery { event_type, outcome }
    }

    async fn act(&self, provider: &Provider, event: Event) -> Result<Handled, Refused> {
        match event {
            Event::DepositCompleted { deposit_id, account, amount, currency } => {
                let credit = Credit {
                    deposit_id: deposit_id.to_string(),
                    account,
                    amount,
                    currency,
                    order_id: None,
                    provider_status: "completed".to_owned(),
                };
                self.credit(provider, credit).await
            }
            Event::DepositFailed { deposit_id } => {
                self.deposit_uncredited(
                    provider,
                    deposit_id.as_str(),
                    "failed",
                    DepositDetails::default(),
                    Uncredited::Failed,
                )
                .await
            }
            Event::WithdrawalCompleted { withdrawal_id } => {
                let report = WithdrawalReport { outcome: WithdrawalStatus::Completed, provider_status: "completed" };
                self.settle_withdrawal(provider, withdrawal_id.as_str(), report, None).await
            }
            Event::WithdrawalFailed { withdrawal_id } => {
                let report = WithdrawalReport { outcome: WithdrawalStatus::Failed, provider_status: "failed" };
                self.settle_withdrawal(provider, withdrawal_id.as_str(), report, None).await
            }
            Event::Ccpayment(notification) if notification.kind.is_deposit() => {
                self.ccpayment_deposit(provider, notification).await
            }
            Event::Ccpayment(notification) => self.ccpayment_withdrawal(provider, notification).await,
            Event::Other => Ok(Handled::plain("ignored")),
        }
    }

    // ---- deposits --------------------------------------------------------------------------

    /// Credits a deposit once.
    async fn credit(&self, provider: &Provider, credit: Credit) -> Result<Handled, Refused> {
        let _guard = self.lock(format!("deposit:{}:{}", provider.name, credit.deposit_id)).await?;
        let transfer_id = deposit_transfer_id(&provider.name, &credit.deposit_id)?;
        let formatted_amount = credit.currency.format(credit.amount);
        if let Some(fact) = self.store.deposit(&provider.name, &credit.deposit_id) {
            match fact.status {
                DepositStatus::Credited => {
                    let same = fact.account.as_deref() == Some(credit.account.as_str())
                        && fact.amount.as_deref() == Some(formatted_amount.as_str())
                        && fact.currency.as_deref() == Some(&*credit.currency.code);
                    if !same {
                        return Err(conflict(&credit.deposit_id, &fact));
                    }
                    return Ok(Handled::plain("duplicate"));
                }
                DepositStatus::Failed => return Ok(Handled::plain("success_after_failure")),
                DepositStatus::Risky => return Ok(Handled::plain("duplicate")),
                DepositStatus::Processing => {}
            }
        }
        let account = self.deposit_account(&credit.account, &credit.currency).await?;
        let settlement = self.settlement(&provider.name, &credit.currency).await?;
        let request = TransferRequest {
            id: transfer_id.clone(),
            debit_account: settlement,
            credit_account: account.id.clone(),
            amount: WrittenAmount::from_minor_units(credit.amount.minor_units().unsigned_abs(), credit.currency.scale),
            pending: false,
            timeout_seconds: 0,
            description: format!("deposit {} via {}", credit.deposit_id, provider.name),
            metadata: Metadata::new(),
        };
        let (transfer, created) = match self.ledger.create_transfer(request).await {
            Ok(done) => done,
            Err(LedgerError::Rejected(Rejection::ExistsWithDifferentFields)) => {
                return Err(Refused::new(
                    "conflict",
                    ApiError::rejection(Rejection::ExistsWithDifferentFields).with_message(format!(
                        "transfer {transfer_id} exists already with other fields; deposit {} is not credited again",
                        credit.deposit_id
                    )),
                ));
            }
            Err(error) => return Err(error.into()),
        };
        let mut fact = DepositFact::new(
            &provider.name,
            &credit.deposit_id,
            DepositStatus::Credited,
            &credit.provider_status,
            self.now_ms(),
        );
        fact.account = Some(account.id.to_string());
        fact.amount = Some(formatted_amount);
        fact.currency = Some(credit.currency.code.to_string());
        fact.order_id = credit.order_id;
        fact.transfer_id = Some(transfer_id.to_string());
        self.store.save(&self.ledger, Fact::Deposit(fact)).await?;
        // Not created: the transfer was made by a delivery that stopped before its fact.
        let result = if created { "credited" } else { "duplicate" };
        Ok(Handled { result, transfer: Some(transfer), created })
    }

    /// The account to credit: it must exist and be in `currency`.
    async fn deposit_account(&self, id: &Id, currency: &Currency) -> Result<Account, Refused> {
        let account = match self.ledger.account(id).await {
            Ok(account) => account,
            Err(LedgerError::Rejected(Rejection::AccountNotFound)) => {
                return Err(Refused::new(
                    "account_not_found",
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        ErrorCode::AccountNotFound,
                        format!("account {id} does not exist"),
                    ),
                ));
            }
            Err(error) => return Err(error.into()),
        };
        if account.currency != *currency {
            return Err(Refused::new(
                "currency_mismatch",
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::CurrencyMismatch,
                    format!("account {id} is in {}, the deposit in {}", account.currency.code, currency.code),
                ),
            ));
        }
        Ok(account)
    }

    /// Records a deposit that ends without a credit: `Failed`, or `Risky` (a success the
    /// provider flagged, never credited). Unless it was credited already: then nothing changes
    /// (a failure after success is counted as such; a risky flag after a credit is a duplicate).
    async fn deposit_uncredited(
        &self,
        provider: &Provider,
        deposit_id: &str,
        provider_status: &str,
        details: DepositDetails,
        outcome: Uncredited,
    ) -> Result<Handled, Refused> {
        let (status, reported, after_credit, result) = match outcome {
            Uncredited::Failed => (DepositStatus::Failed, Reported::Failed, "failed_after_success", "failed"),
            Uncredited::Risky => (DepositStatus::Risky, Reported::Success, "duplicate", "risky"),
        };
        let _guard = self.lock(format!("deposit:{}:{deposit_id}", provider.name)).await?;
        if let Some(fact) = self.store.deposit(&provider.name, deposit_id)
            && fact.status.is_final()
        {
            return Ok(Handled::plain(classify_final(fact.status, reported)));
        }
        if self.repair_credited(provider, deposit_id, provider_status).await? {
            return Ok(Handled::plain(after_credit));
        }
        if outcome == Uncredited::Risky {
            tracing::warn!(provider = %provider.name, deposit_id, "a deposit flagged as risky is recorded, not credited");
        }
        let fact = details.fact(provider, deposit_id, status, provider_status, self.now_ms());
        self.store.save(&self.ledger, Fact::Deposit(fact)).await?;
        Ok(Handled::plain(result))
    }

    /// Records a deposit that is not final yet (a late one changes nothing).
    async fn deposit_processing(
        &self,
        provider: &Provider,
        deposit_id: &str,
        provider_status: &str,
        details: DepositDetails,
    ) -> Result<Handled, Refused> {
        let _guard = self.lock(format!("deposit:{}:{deposit_id}", provider.name)).await?;
        match self.store.deposit(&provider.name, deposit_id) {
            Some(fact) if fact.status.is_final() => {
                Ok(Handled::plain(classify_final(fact.status, Reported::Processing)))
            }
            Some(_) => Ok(Handled::plain("duplicate")),
            None => {
                let fact =
                    details.fact(provider, deposit_id, DepositStatus::Processing, provider_status, self.now_ms());
                self.store.save(&self.ledger, Fact::Deposit(fact)).await?;
                Ok(Handled::plain("recorded"))
            }
        }
    }

    /// When the deposit's transfer exists but its fact does not say so (a crash between the
    /// two), writes the fact from the transfer. Returns whether it was credited.
    async fn repair_credited(
        &self,
        provider: &Provider,
        deposit_id: &str,
        provider_status: &str,
    ) -> Result<bool, Refused> {
        let transfer_id = deposit_transfer_id(&provider.name, deposit_id)?;
        let transfer = match self.ledger.transfer(&transfer_id).await {
            Ok(transfer) => transfer,
            Err(LedgerError::Rejected(Rejection::TransferNotFound)) => return Ok(false),
            Err(error) => return Err(error.into()),
        };
        let previous = self.store.deposit(&provider.name, deposit_id);
        let mut fact =
            DepositFact::new(&provider.name, deposit_id, DepositStatus::Credited, provider_status, self.now_ms());
        fact.account = Some(transfer.credit_account.to_string());
        fact.amount = Some(transfer.currency.format(transfer.amount));
        fact.currency = Some(transfer.currency.code.to_string());
        fact.order_id = previous.and_then(|previous| previous.order_id);
        fact.transfer_id = Some(transfer_id.to_string());
        tracing::info!(provider = %provider.name, deposit_id, "deposit fact repaired from its transfer");
        self.store.save(&self.ledger, Fact::Deposit(fact)).await?;
        Ok(true)
    }

    async fn ccpayment_deposit(&self, provider: &Provider, notification: Notification) -> Result<Handled, Refused> {
        let deposit_id = notification.record_id.as_str();
        // A final deposit is answered from its fact, without asking the provider again.
        if let Some(fact) = self.store.deposit(&provider.name, deposit_id)
            && fact.status.is_final()
        {
            return Ok(Handled::plain(classify_final(fact.status, reported_of(&notification.status))));
        }
        let kind = match notification.kind {
            NotificationKind::UserDeposit => RecordKind::UserDeposit,
            _ => RecordKind::AppDeposit,
        };
        let record = self.fetch(provider, kind, deposit_id).await?;
        let status = record_status(&record, &notification)?;
        let coin = record.text("coinSymbol").unwrap_or_default();
        let mut details =
            DepositDetails { amount: record.text("amount"), currency: Some(coin.clone()), ..Default::default() };
        let order = match notification.kind {
            NotificationKind::ApiDeposit => {
                let order_id = record.text("orderId").or(notification.order_id.clone()).unwrap_or_default();
                details.order_id = Some(order_id.clone());
                Some(order_id)
            }
            _ => None,
        };
        match status.as_str() {
            "Processing" => return self.deposit_processing(provider, deposit_id, &status, details).await,
            "Failed" => {
                return self.deposit_uncredited(provider, deposit_id, &status, details, Uncredited::Failed).await;
            }
            "Success" => {}
            other => {
                return Err(Refused::new(
                    "unsupported_status",
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        ErrorCode::UnsupportedEvent,
                        format!("deposit record status `{}` is not one the ledger knows", truncate(other)),
                    ),
                ));
            }
        }
        let account_text = match &order {
            Some(order_id) => match self.store.order(order_id) {
                Some(order) if order.provider == *provider.name => order.account,
                _ => {
                    return Err(Refused::new(
                        "deposit_not_found",
                        ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            ErrorCode::DepositNotFound,
                            format!("no deposit order `{}` is registered for {}", truncate(order_id), provider.name),
                        ),
                    ));
                }
            },
            None => {
                let field = if notification.kind == NotificationKind::UserDeposit { "userId" } else { "referenceId" };
                let user = record.text(field).or(notification.user.clone()).unwrap_or_default();
                format!("{user}:{coin}")
            }
        };
        details.account = Some(account_text.clone());
        if record.flag("isFlaggedAsRisky") {
            return self.deposit_uncredited(provider, deposit_id, &status, details, Uncredited::Risky).await;
        }
        let currency = self.currencies.get(&coin).cloned().ok_or_else(|| {
            Refused::new(
                "unknown_currency",
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::UnknownCurrency,
                    format!("the record's coin `{}` is not a configured currency", truncate(&coin)),
                ),
            )
        })?;
        let amount = record_amount(record.text("amount").as_deref(), &currency, self.amount_max)?;
        // An account id that cannot be valid cannot exist.
        let account = Id::parse(&account_text).map_err(|_| {
            Refused::new(
                "account_not_found",
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::AccountNotFound,
                    format!("account {} does not exist", truncate(&account_text)),
                ),
            )
        })?;
        let credit = Credit {
            deposit_id: deposit_id.to_owned(),
            account,
            amount,
            currency,
            order_id: order,
            provider_status: status,
        };
        self.credit(provider, credit).await
    }

    // ---- withdrawals -----------------------------------------------------------------------

    async fn ccpayment_withdrawal(&self, provider: &Provider, notification: Notification) -> Result<Handled, Refused> {
        let order_id = notification.order_id.clone().unwrap_or_default();
        let withdrawal_id = Id::parse(&order_id).map_err(|_| withdrawal_not_found(&order_id))?;
        if let Some(fact) = self.store.withdrawal(withdrawal_id.as_str())
            && fact.status.is_final()
            && fact.provider == *provider.name
        {
            let result = match (fact.status, reported_of(&notification.status)) {
                (WithdrawalStatus::Completed, Reported::Success) | (WithdrawalStatus::Failed, Reported::Failed) => {
                    "duplicate"
                }
                (WithdrawalStatus::Completed, Reported::Failed) => "failed_after_success",
                (WithdrawalStatus::Failed, Reported::Success) => "success_after_failure",
                _ => "late_status",
            };
            return Ok(Handled::plain(result));
        }
        let kind = match notification.kind {
            NotificationKind::UserWithdrawal => RecordKind::UserWithdrawal,
            _ => RecordKind::AppWithdrawal,
        };
        let record = self.fetch(provider, kind, notification.record_id.as_str()).await?;
        let status = record_status(&record, &notification)?;
        if let Some(record_order) = record.text("orderId")
            && record_order != order_id
        {
            return Err(record_mismatch(format!(
                "the record belongs to order `{}`, the notification names `{}`",
                truncate(&record_order),
                truncate(&order_id)
            )));
        }
        let outcome = match status.as_str() {
            "Success" => WithdrawalStatus::Completed,
            "Failed" | "Rejected" => WithdrawalStatus::Failed,
            "Processing" => WithdrawalStatus::Processing,
            "WaitingApproval" => WithdrawalStatus::WaitingApproval,
            other => {
                return Err(Refused::new(
                    "unsupported_status",
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        ErrorCode::UnsupportedEvent,
                        format!("withdrawal record status `{}` is not one the ledger knows", truncate(other)),
                    ),
                ));
            }
        };
        let checked = RecordCheck {
            record_id: notification.record_id.to_string(),
            coin: record.text("coinSymbol").unwrap_or_default(),
            amount: record.text("amount"),
        };
        let report = WithdrawalReport { outcome, provider_status: static_status(&status) };
        self.settle_withdrawal(provider, withdrawal_id.as_str(), report, Some(checked)).await
    }

    /// Moves a withdrawal forward as `report` says: posts or voids its hold once.
    async fn settle_withdrawal(
        &self,
        provider: &Provider,
        id: &str,
        report: WithdrawalReport,
        record: Option<RecordCheck>,
    ) -> Result<Handled, Refused> {
        let _guard = self.lock(format!("withdrawal:{id}")).await?;
        let mut fact = match self.store.withdrawal(id) {
            Some(fact) => fact,
            None => self.repair_withdrawal(provider, id).await?,
        };
        if fact.provider != *provider.name {
            return Err(withdrawal_not_found(id));
        }
        if let Some(record) = &record {
            if record.coin != fact.currency {
                return Err(record_mismatch(format!(
                    "the record is in `{}`, withdrawal {id} in {}",
                    truncate(&record.coin),
                    fact.currency
                )));
            }
            let currency = self.currencies.get(&fact.currency);
            let stored = currency.and_then(|currency| currency.parse_printed(&fact.amount));
            let reported = record.amount.as_deref().and_then(|text| parse_amount(text, u128::MAX).ok());
            let same_amount = match (currency, stored, reported) {
                (Some(currency), Some(stored), Some(reported)) => reported.same_value(stored, currency.scale),
                _ => false,
            };
            if !same_amount {
                return Err(record_mismatch(format!(
                    "the record's amount {} is not withdrawal {id}'s {}",
                    truncate(record.amount.as_deref().unwrap_or("(none)")),
                    fact.amount
                )));
            }
        }
        let transfer_id = Id::parse_internal(&fact.transfer_id).map_err(|_| internal("a stored transfer id"))?;
        let transfer = self.ledger.transfer(&transfer_id).await?;
        let record_id = record.map(|record| record.record_id);
        let (result, moved, status) = match (report.outcome, transfer.status) {
            (WithdrawalStatus::Completed, TransferStatus::Pending) => {
                ("posted", Some(self.ledger.post_transfer(&transfer_id, None).await?), WithdrawalStatus::Completed)
            }
            (WithdrawalStatus::Failed, TransferStatus::Pending) => {
                ("voided", Some(self.ledger.void_transfer(&transfer_id).await?), WithdrawalStatus::Failed)
            }
            (WithdrawalStatus::Completed, TransferStatus::Posted) => ("duplicate", None, WithdrawalStatus::Completed),
            (WithdrawalStatus::Failed, TransferStatus::Posted) => {
                tracing::warn!(provider = %provider.name, withdrawal = id, "a failure after success changes nothing");
                ("failed_after_success", None, WithdrawalStatus::Completed)
            }
            (WithdrawalStatus::Completed, _) => {
                tracing::warn!(provider = %provider.name, withdrawal = id, "a success after failure changes nothing");
                ("success_after_failure", None, WithdrawalStatus::Failed)
            }
            (WithdrawalStatus::Failed, _) => ("duplicate", None, WithdrawalStatus::Failed),
            (progress, TransferStatus::Pending) => {
                if progress > fact.status {
                    ("recorded", None, progress)
                } else if progress == fact.status {
                    ("duplicate", None, progress)
                } else {
                    ("late_status", None, fact.status)
                }
            }
            (_, TransferStatus::Posted) => ("late_status", None, WithdrawalStatus::Completed),
            (_, _) => ("late_status", None, WithdrawalStatus::Failed),
        };
        let changed = status != fact.status
            || (moved.is_some() && fact.provider_status.as_deref() != Some(report.provider_status))
            || (record_id.is_some() && fact.record_id.is_none());
        if changed {
            fact.status = status;
            if status == report.outcome {
                fact.provider_status = Some(report.provider_status.to_owned());
            }
            if fact.record_id.is_none() {
                fact.record_id = record_id;
            }
            fact.updated_at_ms = self.now_ms();
            self.store.save(&self.ledger, Fact::Withdrawal(fact)).await?;
        }
        Ok(Handled { result, created: moved.is_some(), transfer: moved })
    }

    /// The fact of a withdrawal whose hold exists without it (a crash between the two).
    async fn repair_withdrawal(&self, provider: &Provider, id: &str) -> Result<WithdrawalFact, Refused> {
        let transfer_id = withdrawal_transfer_id(&provider.name, id)?;
        let transfer = match self.ledger.transfer(&transfer_id).await {
            Ok(transfer) => transfer,
            Err(LedgerError::Rejected(Rejection::TransferNotFound)) => return Err(withdrawal_not_found(id)),
            Err(error) => return Err(error.into()),
        };
        let fact = WithdrawalFact {
            version: WithdrawalFact::format_version(),
            id: id.to_owned(),
            provider: provider.name.to_string(),
            account: transfer.debit_account.to_string(),
            amount: transfer.currency.format(transfer.amount),
            currency: transfer.currency.code.to_string(),
            transfer_id: transfer_id.to_string(),
            status: WithdrawalStatus::Pending,
            provider_status: None,
            record_id: None,
            created_at_ms: transfer.created_at_ms,
            updated_at_ms: self.now_ms(),
        };
        tracing::info!(provider = %provider.name, withdrawal = id, "withdrawal fact rebuilt from its hold");
        self.store.save(&self.ledger, Fact::Withdrawal(fact.clone())).await?;
        Ok(fact)
    }

    /// `POST /v1/withdrawals`: holds the amount; `Ok((view, false))` for a replay.
    pub async fn create_withdrawal(&self, request: WithdrawalRequest) -> Result<(WithdrawalView, bool), ApiError> {
        let provider = self.known_provider(&request.provider)?.clone();
        let id = request.id.as_str();
        let _guard = self.lock(format!("withdrawal:{id}")).await?;
        if let Some(fact) = self.store.withdrawal(id) {
            let stored = self
                .currencies
                .get(&fact.currency)
                .and_then(|currency| Some((currency, currency.parse_printed(&fact.amount)?)));
            let same = fact.account == request.account.as_str()
                && fact.provider == request.provider
                && stored.is_some_and(|(currency, stored)| request.amount.same_value(stored, currency.scale));
            if !same {
                return Err(ApiError::rejection(Rejection::ExistsWithDifferentFields)
                    .with_message(format!("withdrawal {id} exists with other fields")));
            }
            return Ok((self.withdrawal_view(fact).await?, false));
        }
        let account = match self.ledger.account(&request.account).await {
            Ok(account) => account,
            Err(LedgerError::Rejected(Rejection::AccountNotFound)) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::AccountNotFound,
                    format!("account {} does not exist", request.account),
                )
                .with_field("account"));
            }
            Err(error) => return Err(error.into()),
        };
        let amount = account
            .currency
            .normalize(&request.amount)
            .map_err(|error| crate::http::json::amount_error("amount", &error))?;
        let settlement = self.settlement(&provider.name, &account.currency).await?;
        let transfer_id = withdrawal_transfer_id(&provider.name, id)?;
        let hold = TransferRequest {
            id: transfer_id.clone(),
            debit_account: account.id.clone(),
            credit_account: settlement,
            amount: request.amount,
            pending: true,
            timeout_seconds: 0,
            description: format!("withdrawal {id} via {}", provider.name),
            metadata: Metadata::new(),
        };
        let (transfer, _) = self.ledger.create_transfer(hold).await.map_err(|error| match error {
            LedgerError::Rejected(Rejection::ExistsWithDifferentFields) => {
                ApiError::rejection(Rejection::ExistsWithDifferentFields)
                    .with_message(format!("transfer {transfer_id} exists already with other fields"))
            }
            other => ApiError::from(other),
        })?;
        let now_ms = self.now_ms();
        let fact = WithdrawalFact {
            version: WithdrawalFact::format_version(),
            id: id.to_owned(),
            provider: provider.name.to_string(),
            account: account.id.to_string(),
            amount: account.currency.format(amount),
            currency: account.currency.code.to_string(),
            transfer_id: transfer_id.to_string(),
            status: WithdrawalStatus::Pending,
            provider_status: None,
            record_id: None,
            created_at_ms: transfer.created_at_ms,
            updated_at_ms: now_ms,
        };
        self.store.save(&self.ledger, Fact::Withdrawal(fact.clone())).await?;
        Ok((WithdrawalView { fact, transfer }, true))
    }

    /// `GET /v1/withdrawals/{id}`.
    pub async fn withdrawal(&self, id: &Id) -> Result<WithdrawalView, ApiError> {
        let fact = self.store.withdrawal(id.as_str()).ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::WithdrawalNotFound, format!("no withdrawal {id}"))
        })?;
        self.withdrawal_view(fact).await
    }

    async fn withdrawal_view(&self, fact: WithdrawalFact) -> Result<WithdrawalView, ApiError> {
        let transfer_id = Id::parse_internal(&fact.transfer_id).map_err(|_| internal("a stored transfer id").error)?;
        let transfer = self.ledger.transfer(&transfer_id).await?;
        Ok(WithdrawalView { fact, transfer })
    }

    // ---- deposit orders --------------------------------------------------------------------

    /// `POST /v1/deposits`: registers an expected deposit; `Ok((view, false))` for a replay.
    pub async fn create_order(&self, request: DepositOrderRequest) -> Result<(OrderView, bool), ApiError> {
        self.known_provider(&request.provider)?;
        let id = request.id.as_str();
        let _guard = self.lock(format!("order:{id}")).await?;
        if let Some(fact) = self.store.order(id) {
            if fact.account != request.account.as_str() || fact.provider != request.provider {
                return Err(ApiError::rejection(Rejection::ExistsWithDifferentFields)
                    .with_message(format!("deposit order {id} exists with other fields")));
            }
            return Ok((self.order_view(fact)?, false));
        }
        let account = match self.ledger.account(&request.account).await {
            Ok(account) => account,
            Err(LedgerError::Rejected(Rejection::AccountNotFound)) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::AccountNotFound,
                    format!("account {} does not exist", request.account),
                )
                .with_field("account"));
            }
            Err(error) => return Err(error.into()),
        };
        let fact = DepositOrderFact {
            version: DepositOrderFact::format_version(),
            id: id.to_owned(),
            account: account.id.to_string(),
            provider: request.provider.clone(),
            currency: account.currency.code.to_string(),
            created_at_ms: self.now_ms(),
        };
        self.store.save(&self.ledger, Fact::DepositOrder(fact.clone())).await?;
        Ok((self.order_view(fact)?, true))
    }

    /// `GET /v1/deposits/{id}`.
    pub fn order(&self, id: &Id) -> Result<OrderView, ApiError> {
        let fact = self.store.order(id.as_str()).ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::DepositNotFound, format!("no deposit order {id}"))
        })?;
        self.order_view(fact)
    }

    fn order_view(&self, fact: DepositOrderFact) -> Result<OrderView, ApiError> {
        let currency = self.currencies.get(&fact.currency).cloned().unwrap_or_else(|| Currency::new(&fact.currency, 0));
        let deposits = self.store.order_deposits(&fact.id, ORDER_DEPOSITS_SHOWN_MAX);
        let mut credited_amount = Amount::ZERO;
        for deposit in deposits.iter().filter(|deposit| deposit.status == DepositStatus::Credited) {
            let amount = deposit.amount.as_deref().and_then(|text| currency.parse_printed(text)).unwrap_or_default();
            credited_amount =
                currency.add_total(credited_amount, amount).ok_or_else(|| internal("an order total").error)?;
        }
        Ok(OrderView { fact, deposits, credited_amount, currency })
    }

    // ---- plumbing --------------------------------------------------------------------------

    fn known_provider(&self, name: &str) -> Result<&Provider, ApiError> {
        self.providers.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::ProviderNotFound,
                format!("no webhook provider `{}` is configured", truncate(name)),
            )
            .with_field("provider")
        })
    }

    async fn lock(&self, key: String) -> Result<store::KeyGuard, Refused> {
        self.locks.lock(key).await.map_err(|_| Refused::new("overloaded", ApiError::overloaded()))
    }

    async fn fetch(&self, provider: &Provider, kind: RecordKind, record_id: &str) -> Result<Record, Refused> {
        let deadline = Instant::now() + self.fetch_budget;
        self.client.fetch(provider, kind, record_id, deadline).await.map_err(|error| {
            tracing::warn!(provider = %provider.name, record_id, %error, "record look-up failed; nothing is credited");
            let result = match &error {
                FetchError::Refused(_) => "provider_error",
                FetchError::Busy => return Refused::new("overloaded", ApiError::overloaded()),
                FetchError::Unreachable { .. } | FetchError::Setup(_) => "provider_unavailable",
            };
            Refused::new(
                result,
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::ProviderUnavailable,
                    format!("the provider's record could not be read ({error}); nothing was credited, retry later"),
                )
                .with_retry_after(30),
            )
        })
    }

    /// The settlement account of `provider` in `currency`, created on first use.
    async fn settlement(&self, provider: &str, currency: &Currency) -> Result<Id, Refused> {
        let id = Id::parse_internal(&format!("settlement:{provider}:{}", currency.code))
            .map_err(|_| internal("a settlement account id"))?;
        if self.settlements.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&id) {
            return Ok(id);
        }
        let request = AccountRequest {
            id: id.clone(),
            currency: currency.clone(),
            overdraft: Overdraft::Unlimited,
            metadata: Metadata::new(),
        };
        match self.ledger.create_account(request).await {
            Ok(_) => {}
            Err(LedgerError::Rejected(Rejection::ExistsWithDifferentFields)) => {
                // Opened by an operator with other metadata: fine if it can settle.
                let account = self.ledger.account(&id).await?;
                if account.currency != *currency || account.overdraft != Overdraft::Unlimited {
                    return Err(Refused::new(
                        "settlement_misconfigured",
                        ApiError::rejection(Rejection::ExistsWithDifferentFields).with_message(format!(
                            "settlement account {id} exists but is not in {} with an unlimited overdraft",
                            currency.code
                        )),
                    ));
                }
            }
            Err(error) => return Err(error.into()),
        }
        self.settlements.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone());
        Ok(id)
    }
}

/// A deposit to credit.
struct Credit {
    deposit_id: String,
    account: Id,
    /// In minor units of `currency`.
    amount: Amount,
    currency: Currency,
    order_id: Option<String>,
    provider_status: String,
}

/// What is known of a deposit that is not credited (for its fact).
#[derive(Default)]
struct DepositDetails {
    account: Option<String>,
    amount: Option<String>,
    currency: Option<String>,
    order_id: Option<String>,
}

impl DepositDetails {
    fn fact(
        self,
        provider: &Provider,
        deposit_id: &str,
        status: DepositStatus,
        provider_status: &str,
        now_ms: i64,
    ) -> DepositFact {
        let mut fact = DepositFact::new(&provider.name, deposit_id, status, provider_status, now_ms);
        fact.account = self.account.map(|text| truncate(&text));
        fact.amount = self.amount.map(|text| truncate(&text));
        fact.currency = self.currency.map(|text| truncate(&text));
        fact.order_id = self.order_id.map(|text| truncate(&text));
        fact
    }
}

/// A withdrawal's new status as a delivery reports it.
struct WithdrawalReport {
    outcome: WithdrawalStatus,
    provider_status: &'static str,
}

/// What a withdrawal record says, to compare with the withdrawal.
struct RecordCheck {
    record_id: String,
    coin: String,
    amount: Option<String>,
}

/// The result of a delivery for a deposit already final.
fn classify_final(status: DepositStatus, reported: Reported) -> &'static str {
    match (status, reported) {
        (_, Reported::Processing) => "late_status",
        (DepositStatus::Credited, Reported::Failed) => "failed_after_success",
        (DepositStatus::Failed, Reported::Success) => "success_after_failure",
        (DepositStatus::Risky, Reported::Failed) => "late_status",
        _ => "duplicate",
    }
}

fn reported_of(status: &str) -> Reported {
    match status {
        "Success" => Reported::Success,
        "Failed" | "Rejected" => Reported::Failed,
        _ => Reported::Processing,
    }
}

fn static_status(status: &str) -> &'static str {
    match status {
        "Success" => "Success",
        "Failed" => "Failed",
        "Rejected" => "Rejected",
        "Processing" => "Processing",
        "WaitingApproval" => "WaitingApproval",
        _ => "other",
    }
}

/// The record's status, after checking that it is the notification's record.
fn record_status(record: &Record, notification: &Notification) -> Result<String, Refused> {
    if record.text("recordId").as_deref() != Some(notification.record_id.as_str()) {
        return Err(record_mismatch(format!(
            "the provider answered with record `{}` for `{}`",
            truncate(&record.text("recordId").unwrap_or_default()),
            notification.record_id
        )));
    }
    record.text("status").ok_or_else(|| record_mismatch("the record has no status".to_owned()))
}

/// A record's amount at the currency's scale. Trailing zeros beyond the scale are accepted
/// (`"0.50000000"` is 0.5); a value with more decimals than the currency has is refused.
fn record_amount(text: Option<&str>, currency: &Currency, amount_max: u128) -> Result<Amount, Refused> {
    let refuse = |message: String| {
        Refused::new(
            "invalid_amount",
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidAmount, message),
        )
    };
    let text = text.ok_or_else(|| refuse("the record has no amount".to_owned()))?;
    let amount = parse_amount(text, amount_max)
        .map_err(|error| refuse(format!("the record's amount `{}` is not acceptable: {error}", truncate(text))))?;
    currency.normalize(&amount.without_trailing_zeros()).map_err(|error| {
        refuse(format!("the record's amount {} does not fit {}: {error}", truncate(text), currency.code))
    })
}

/// `dep:{provider}:{deposit_id}`.
pub fn deposit_transfer_id(provider: &str, deposit_id: &str) -> Result<Id, Refused> {
    Id::parse_internal(&format!("dep:{provider}:{deposit_id}")).map_err(|_| internal("a deposit transfer id"))
}

/// `wd:{provider}:{id}`.
pub fn withdrawal_transfer_id(provider: &str, id: &str) -> Result<Id, Refused> {
    Id::parse_internal(&format!("wd:{provider}:{id}")).map_err(|_| internal("a withdrawal transfer id"))
}

fn signature_refusal(error: &SignatureError) -> Refused {
    if error.is_stale() {
        return Refused::new(
            "stale_webhook",
            ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::StaleWebhook, error.to_string()),
        );
    }
    Refused::new(
        "invalid_signature",
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidSignature, error.to_string()),
    )
}

fn conflict(deposit_id: &str, fact: &DepositFact) -> Refused {
    Refused::new(
        "conflict",
        ApiError::rejection(Rejection::ExistsWithDifferentFields).with_message(format!(
            "deposit {deposit_id} was credited already as {} {} to {}; this delivery says otherwise and changes nothing",
            fact.amount.as_deref().unwrap_or("?"),
            fact.currency.as_deref().unwrap_or("?"),
            fact.account.as_deref().unwrap_or("?"),
        )),
    )
}

fn withdrawal_not_found(id: &str) -> Refused {
    Refused::new(
        "withdrawal_not_found",
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::WithdrawalNotFound,
            format!("no withdrawal {} for this provider", truncate(id)),
        ),
    )
}

fn record_mismatch(message: String) -> Refused {
    Refused::new("record_mismatch", ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::RecordMismatch, message))
}

fn internal(what: &str) -> Refused {
    tracing::error!(what, "an id derived by the webhook service is invalid");
    Refused::new("internal", ApiError::internal())
}

/// At most 64 characters of provider-sent text, for messages and facts.
fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_amounts_fit_the_currency_by_value() {
        let usdt = Currency::new("USDT", 6);
        let max = 1_000_000;
        assert_eq!(usdt.format(record_amount(Some("0.5"), &usdt, max).unwrap()), "0.500000");
        assert_eq!(usdt.format(record_amount(Some("0.50000000"), &usdt, max).unwrap()), "0.500000");
        for bad in ["0.1234567", "-1", "0", "1e3", "abc", "2000000"] {
            let refused = record_amount(Some(bad), &usdt, max).unwrap_err();
            assert_eq!(refused.result, "invalid_amount", "{bad}");
            assert_eq!(refused.error.status, StatusCode::UNPROCESSABLE_ENTITY);
        }
        assert!(record_amount(None, &usdt, max).is_err());
    }

    #[test]
    fn final_deposits_classify_late_deliveries() {
        assert_eq!(classify_final(DepositStatus::Credited, Reported::Failed), "failed_after_success");
        assert_eq!(classify_final(DepositStatus::Credited, Reported::Success), "duplicate");
        assert_eq!(classify_final(DepositStatus::Credited, Reported::Processing), "late_status");
        assert_eq!(classify_final(DepositStatus::Failed, Reported::Success), "success_after_failure");
        assert_eq!(classify_final(DepositStatus::Failed, Reported::Failed), "duplicate");
        assert_eq!(classify_final(DepositStatus::Risky, Reported::Success), "duplicate");
    }
}
