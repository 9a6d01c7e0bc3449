//! Deposits and withdrawals from signed provider webhooks: the service that carries out the
//! `payments` crate's decisions.
//!
//! This module owns [`Webhooks`], the service behind `POST /v1/webhooks/{provider}`,
//! `/v1/withdrawals` and `/v1/deposits`: verification of the raw bytes ([`signature`]), event
//! parsing ([`events`]), the CCPayment record look-ups over HTTP ([`records`]), the view of the
//! recorded facts ([`store`]), and the interpretation of each decision of the pure state
//! machines in `payments` (`deposit`, `withdrawal`, `order`, `ccpayment`): under the key's lock,
//! read the fact (and, for a fact that is not final, the transfer with the derived id), ask
//! for a decision, move the money through the ledger first, write the facts second, answer.
//!
//! # Exactly once
//!
//! - Every movement has a derived id (`payments::ids`): a deposit credits with the plain
//!   transfer `dep:{provider}:{deposit_id}` from `settlement:{provider}:{currency}` (created on
//!   first use, overdraft unlimited); a withdrawal holds with the pending transfer
//!   `wd:{provider}:{id}` towards the same settlement account, then posts or voids it. The
//!   ledger's transfers are idempotent by id and serialized by their owning actor, so a second
//!   creation of the same id is a replay and never moves money again, and post and void of a
//!   hold happen at most once.
//! - Everything done for one deposit (`deposit:{provider}:{id}`), withdrawal
//!   (`withdrawal:{id}`) or order (`order:{id}`) runs under that key's lock ([`KeyLocks`]); a
//!   deposit of an order also takes the order's lock, after its own. Two deliveries of the same
//!   event arriving together decide one after the other: the second sees what the first wrote.
//! - Order of writes: the money first (the transfer, durable when the ledger answers), then the
//!   facts saying so (one log submission, durable before the delivery is acknowledged). A crash
//!   between the two leaves the transfer without its fact; the decisions on a fact that is not
//!   final look at the transfer and repair the fact from it.
//! - The work of a delivery runs in its own task, so a client that hangs up (or a request
//!   timeout) cannot cut it between the money and the fact.
//!
//! # CCPayment
//!
//! A notification only says which record changed: the record is fetched from the provider's
//! API and decides. A notification for a deposit or withdrawal already final is answered from
//! the fact without a look-up; when the API is unreachable the delivery is answered 503 (the
//! provider retries) and nothing is credited. A delivery refused as stale writes nothing, so
//! the provider's next attempt is acted on normally.

pub mod events;
pub mod providers;
pub mod records;
pub mod signature;
pub mod store;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::{AccountRequest, Clock, LedgerError, LedgerHandle};
use bytes::Bytes;
use config::ProviderScheme;
use engine::{Account, Amount, Currency, CurrencyTable, Id, Metadata, Overdraft, Rejection, Transfer, TransferRequest};
use http::{HeaderMap, StatusCode};
use payments::deposit::{self, Credit, Decision, Uncredited, UncreditedOutcome};
use payments::order::{self, OrderRequest};
use payments::withdrawal::{self, CreateRefusal, HoldAction, WithdrawalRequest};
use payments::{DepositFact, DepositOrderFact, Fact, Refusal, RefusalKind, WithdrawalFact};
use payments::{ccpayment, ids};

use crate::http::error::{ApiError, ErrorCode};
use crate::webhooks::events::{Event, Notification, NotificationKind};
use crate::webhooks::providers::{Provider, Providers};
use crate::webhooks::records::{FetchError, RecordClient, RecordKind};
use crate::webhooks::signature::SignatureError;
use crate::webhooks::store::{KeyLocks, Store, StoreError};

/// Deliveries, withdrawals and orders being worked on at once (distinct keys).
pub const KEYS_IN_PROGRESS_MAX: usize = 4096;
/// Verified deliveries being worked on at once; beyond, 503 `overloaded` (the provider retries).
pub const DELIVERIES_IN_FLIGHT_MAX: usize = 1024;

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

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Ledger(error) => error.into(),
            other => {
                tracing::error!(error = %other, "a payment fact cannot be read");
                Refused::new("unavailable", ApiError::unavailable(other.to_string()))
            }
        }
    }
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        Refused { result: refusal.result, error: refusal_error(&refusal) }
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        refused.error
    }
}

/// The HTTP answer of a payment flow's refusal.
fn refusal_error(refusal: &Refusal) -> ApiError {
    let unprocessable =
        |code: ErrorCode| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, refusal.message.clone());
    match refusal.kind {
        RefusalKind::AccountNotFound => unprocessable(ErrorCode::AccountNotFound),
        RefusalKind::CurrencyMismatch => unprocessable(ErrorCode::CurrencyMismatch),
        RefusalKind::UnknownCurrency => unprocessable(ErrorCode::UnknownCurrency),
        RefusalKind::InvalidAmount => unprocessable(ErrorCode::InvalidAmount),
        RefusalKind::DepositNotFound => unprocessable(ErrorCode::DepositNotFound),
        RefusalKind::WithdrawalNotFound => unprocessable(ErrorCode::WithdrawalNotFound),
        RefusalKind::RecordMismatch => unprocessable(ErrorCode::RecordMismatch),
        RefusalKind::UnsupportedStatus => unprocessable(ErrorCode::UnsupportedEvent),
        RefusalKind::Conflict => {
            ApiError::rejection(Rejection::ExistsWithDifferentFields).with_message(refusal.message.clone())
        }
        RefusalKind::Internal => {
            tracing::error!(message = %refusal.message, "a payment flow met an id it derived that is not valid");
            ApiError::internal()
        }
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
}

/// What [`Webhooks::start`] needs besides the ledger.
pub struct WebhookSettings {
    pub providers: Providers,
    pub currencies: CurrencyTable,
    /// `limits.amount_max`, in whole units.
    pub amount_max: u128,
    pub clock: Clock,
    /// The server's request timeout: record look-ups of one delivery stop well before it.
    pub request_timeout: Duration,
}

/// Why the webhook service could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookStartError {
    #[error(transparent)]
    Client(#[from] FetchError),
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
    /// The service over `ledger`, whose history holds the recorded facts.
    pub fn start(settings: WebhookSettings, ledger: LedgerHandle) -> Result<Arc<Webhooks>, WebhookStartError> {
        let store = Store::new(ledger.history().clone());
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

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    /// Every configured provider.
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter()
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
        let name = provider.name.to_string();
        match event {
            Event::DepositCompleted { deposit_id, account, amount, currency } => {
                let credit = Credit {
                    provider: name,
                    deposit_id: deposit_id.to_string(),
                    account,
                    amount,
                    currency,
                    order_id: None,
                    provider_status: "completed".to_owned(),
                };
                self.credit(credit).await
            }
            Event::DepositFailed { deposit_id } => {
                let report = Uncredited {
                    provider: name,
                    deposit_id: deposit_id.to_string(),
                    outcome: UncreditedOutcome::Failed,
                    provider_status: "failed".to_owned(),
                    reported: payments::ReportedDetails::default(),
                    order_id: None,
                };
                self.uncredited(report).await
            }
            Event::WithdrawalCompleted { withdrawal_id } => {
                let report = withdrawal::Report {
                    status: payments::WithdrawalStatus::Completed,
                    provider_status: "completed".to_owned(),
                    record: None,
                };
                self.settle_withdrawal(&name, withdrawal_id, report).await
            }
            Event::WithdrawalFailed { withdrawal_id } => {
                let report = withdrawal::Report {
                    status: payments::WithdrawalStatus::Failed,
                    provider_status: "failed".to_owned(),
                    record: None,
                };
                self.settle_withdrawal(&name, withdrawal_id, report).await
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
    async fn credit(&self, credit: Credit) -> Result<Handled, Refused> {
        let _guard = self.lock(format!("deposit:{}:{}", credit.provider, credit.deposit_id)).await?;
        let fact = self.store.deposit(&credit.provider, &credit.deposit_id).await?;
        if let Some(result) = deposit::before_credit(fact.as_ref(), &credit)? {
            return Ok(Handled::plain(result));
        }
        let account = self.existing_account(&credit.account).await?;
        let settlement = self.settlement(&credit.provider, &credit.currency).await?;
        let request = deposit::credit_request(&credit, &account, settlement)?;
        let (transfer, created) = self.create_derived_transfer(request).await?;
        let decision = deposit::credited(&credit, &transfer, created, self.now_ms());
        let result = self.save_deposit(decision, credit.order_id.as_deref()).await?;
        Ok(Handled { result, transfer: Some(transfer), created })
    }

    /// A delivery that credits nothing (processing, failed, risky).
    async fn uncredited(&self, report: Uncredited) -> Result<Handled, Refused> {
        let _guard = self.lock(format!("deposit:{}:{}", report.provider, report.deposit_id)).await?;
        let fact = self.store.deposit(&report.provider, &report.deposit_id).await?;
        let credit_transfer = match &fact {
            Some(fact) if fact.status.is_final() => None,
            _ => {
                let id = ids::deposit_transfer(&report.provider, &report.deposit_id)
                    .map_err(|_| Refusal::internal("a deposit transfer id"))?;
                self.existing_transfer(&id).await?
            }
        };
        if report.outcome == UncreditedOutcome::Risky && credit_transfer.is_none() {
            tracing::warn!(provider = %report.provider, deposit_id = %report.deposit_id, "a deposit flagged as risky is recorded, not credited");
        }
        let decision = deposit::uncredited(fact.as_ref(), &report, credit_transfer.as_deref(), self.now_ms());
        if credit_transfer.is_some() && !decision.writes.is_empty() {
            tracing::info!(provider = %report.provider, deposit_id = %report.deposit_id, "deposit fact repaired from its transfer");
        }
        let result = self.save_deposit(decision, report.order_id.as_deref()).await?;
        Ok(Handled::plain(result))
    }

    /// Writes a deposit decision's facts, listing the deposit in its order (under the order's
    /// lock, taken after the deposit's) when it belongs to one.
    async fn save_deposit(&self, mut decision: Decision, order_id: Option<&str>) -> Result<&'static str, Refused> {
        let _order_guard = match (order_id, decision.writes.first()) {
            (Some(order_id), Some(Fact::Deposit(deposit))) => {
                let guard = self.lock(format!("order:{order_id}")).await?;
                let order = self.store.order(order_id).await?;
                if let Some(listed) = order.and_then(|order| order::with_deposit(&order, &deposit.deposit_id)) {
                    decision.writes.push(Fact::DepositOrder(listed));
                }
                Some(guard)
            }
            _ => None,
        };
        self.store.save(&self.ledger, decision.writes).await?;
        Ok(decision.result)
    }

    async fn ccpayment_deposit(&self, provider: &Provider, notification: Notification) -> Result<Handled, Refused> {
        let deposit_id = notification.record_id.as_str();
        // A final deposit is answered from its fact, without asking the provider again.
        let fact = self.store.deposit(&provider.name, deposit_id).await?;
        if let Some(result) = deposit::answer_final(fact.as_ref(), notification.reported()) {
            return Ok(Handled::plain(result));
        }
        let kind = match notification.kind {
            NotificationKind::UserDeposit => RecordKind::UserDeposit,
            _ => RecordKind::AppDeposit,
        };
        let record = self.fetch(provider, kind, deposit_id).await?.provider_record();
        let order = match ccpayment::order_id_of(&notification, &record) {
            Some(order_id) => self.store.order(&order_id).await?,
            None => None,
        };
        let report = ccpayment::deposit_report(
            &provider.name,
            &notification,
            &record,
            order.as_ref(),
            &self.currencies,
            self.amount_max,
        )?;
        match report {
            ccpayment::DepositReport::Credit(credit) => self.credit(credit).await,
            ccpayment::DepositReport::Uncredited(report) => self.uncredited(report).await,
        }
    }

    // ---- withdrawals -----------------------------------------------------------------------

    async fn ccpayment_withdrawal(&self, provider: &Provider, notification: Notification) -> Result<Handled, Refused> {
        let withdrawal_id = ccpayment::withdrawal_id_of(&notification)?;
        let fact = self.store.withdrawal(withdrawal_id.as_str()).await?;
        if let Some(result) = withdrawal::answer_final(fact.as_ref(), &provider.name, notification.reported()) {
            return Ok(Handled::plain(result));
        }
        let kind = match notification.kind {
            NotificationKind::UserWithdrawal => RecordKind::UserWithdrawal,
            _ => RecordKind::AppWithdrawal,
        };
        let record = self.fetch(provider, kind, notification.record_id.as_str()).await?.provider_record();
        let report = ccpayment::withdrawal_report(&notification, &record)?;
        self.settle_withdrawal(&provider.name, withdrawal_id, report).await
    }

    /// Moves a withdrawal forward as `report` says: posts or voids its hold once.
    async fn settle_withdrawal(&self, provider: &str, id: Id, report: withdrawal::Report) -> Result<Handled, Refused> {
        let _guard = self.lock(format!("withdrawal:{id}")).await?;
        let fact = match self.store.withdrawal(id.as_str()).await? {
            Some(fact) => fact,
            None => self.repair_withdrawal(provider, id).await?,
        };
        let hold = self.ledger.transfer(&fact.transfer).await?;
        let settlement = withdrawal::settle(&fact, provider, &report, hold.status, self.now_ms())?;
        if report.status == payments::WithdrawalStatus::Failed && settlement.result == "failed_after_success" {
            tracing::warn!(provider, withdrawal = %fact.id, "a failure after success changes nothing");
        } else if settlement.result == "success_after_failure" {
            tracing::warn!(provider, withdrawal = %fact.id, "a success after failure changes nothing");
        }
        let moved = match settlement.action {
            Some(HoldAction::Post) => Some(self.ledger.post_transfer(&fact.transfer, None).await?),
            Some(HoldAction::Void) => Some(self.ledger.void_transfer(&fact.transfer).await?),
            None => None,
        };
        if let Some(write) = settlement.write {
            self.store.save(&self.ledger, vec![Fact::Withdrawal(write)]).await?;
        }
        Ok(Handled { result: settlement.result, created: moved.is_some(), transfer: moved })
    }

    /// The fact of a withdrawal whose hold exists without it (a crash between the two).
    async fn repair_withdrawal(&self, provider: &str, id: Id) -> Result<WithdrawalFact, Refused> {
        let transfer_id = ids::withdrawal_transfer(provider, id.as_str())
            .map_err(|_| Refusal::internal("a withdrawal transfer id"))?;
        let Some(hold) = self.existing_transfer(&transfer_id).await? else {
            return Err(Refusal::withdrawal_not_found(id.as_str()).into());
        };
        let fact = withdrawal::rebuilt(id, provider, &hold, self.now_ms());
        tracing::info!(provider, withdrawal = %fact.id, "withdrawal fact rebuilt from its hold");
        self.store.save(&self.ledger, vec![Fact::Withdrawal(fact.clone())]).await?;
        Ok(fact)
    }

    /// `POST /v1/withdrawals`: holds the amount; `Ok((view, false))` for a replay.
    pub async fn create_withdrawal(&self, request: WithdrawalRequest) -> Result<(WithdrawalView, bool), ApiError> {
        let provider = self.known_provider(&request.provider)?.clone();
        let _guard = self.lock(format!("withdrawal:{}", request.id)).await?;
        let fact = self.store.withdrawal(request.id.as_str()).await.map_err(Refused::from)?;
        let replay = withdrawal::before_create(fact.as_ref(), &request).map_err(create_refusal)?;
        if let (true, Some(fact)) = (replay, fact) {
            return Ok((self.withdrawal_view(fact).await?, false));
        }
        let account = self.client_account(&request.account).await?;
        let settlement = self.settlement(&provider.name, &account.currency).await?;
        let hold = withdrawal::hold_request(&request, &account, settlement).map_err(create_refusal)?;
        let (transfer, _) = self.create_derived_transfer(hold).await?;
        let fact = withdrawal::created(&request, &transfer, self.now_ms());
        self.store.save(&self.ledger, vec![Fact::Withdrawal(fact.clone())]).await.map_err(Refused::from)?;
        Ok((WithdrawalView { fact, transfer }, true))
    }

    /// `GET /v1/withdrawals/{id}`.
    pub async fn withdrawal(&self, id: &Id) -> Result<WithdrawalView, ApiError> {
        let fact = self.store.withdrawal(id.as_str()).await.map_err(Refused::from)?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::WithdrawalNotFound, format!("no withdrawal {id}"))
        })?;
        self.withdrawal_view(fact).await
    }

    async fn withdrawal_view(&self, fact: WithdrawalFact) -> Result<WithdrawalView, ApiError> {
        let transfer = self.ledger.transfer(&fact.transfer).await?;
        Ok(WithdrawalView { fact, transfer })
    }

    // ---- deposit orders --------------------------------------------------------------------

    /// `POST /v1/deposits`: registers an expected deposit; `Ok((view, false))` for a replay.
    pub async fn create_order(&self, request: OrderRequest) -> Result<(OrderView, bool), ApiError> {
        self.known_provider(&request.provider)?;
        let _guard = self.lock(format!("order:{}", request.id)).await?;
        let fact = self.store.order(request.id.as_str()).await.map_err(Refused::from)?;
        if let (true, Some(fact)) = (order::before_create(fact.as_ref(), &request).map_err(Refused::from)?, fact) {
            return Ok((self.order_view(fact).await?, false));
        }
        let account = self.client_account(&request.account).await?;
        let fact = order::created(&request, &account, self.now_ms());
        self.store.save(&self.ledger, vec![Fact::DepositOrder(fact.clone())]).await.map_err(Refused::from)?;
        Ok((self.order_view(fact).await?, true))
    }

    /// `GET /v1/deposits/{id}`.
    pub async fn order(&self, id: &Id) -> Result<OrderView, ApiError> {
        let fact = self.store.order(id.as_str()).await.map_err(Refused::from)?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::DepositNotFound, format!("no deposit order {id}"))
        })?;
        self.order_view(fact).await
    }

    async fn order_view(&self, fact: DepositOrderFact) -> Result<OrderView, ApiError> {
        let mut deposits: Vec<DepositFact> = Vec::with_capacity(fact.deposits.len());
        for deposit_id in &fact.deposits {
            deposits.extend(self.store.deposit(&fact.provider, deposit_id).await.map_err(Refused::from)?);
        }
        let mut credited_amount = Amount::ZERO;
        for credit in deposits.iter().filter_map(|deposit| deposit.credit.as_ref()) {
            credited_amount = fact
                .currency
                .add_total(credited_amount, credit.amount)
                .ok_or_else(|| Refused::from(Refusal::internal("an order's total")).error)?;
        }
        Ok(OrderView { fact, deposits, credited_amount })
    }

    // ---- plumbing --------------------------------------------------------------------------

    fn known_provider(&self, name: &str) -> Result<&Provider, ApiError> {
        self.providers.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::ProviderNotFound,
                format!("no webhook provider `{}` is configured", payments::facts::bounded_text(name)),
            )
            .with_field("provider")
        })
    }

    async fn lock(&self, key: String) -> Result<store::KeyGuard, Refused> {
        self.locks.lock(key).await.map_err(|_| Refused::new("overloaded", ApiError::overloaded()))
    }

    /// The account a delivery credits: it must exist.
    async fn existing_account(&self, id: &Id) -> Result<Account, Refused> {
        match self.ledger.account(id).await {
            Ok(account) => Ok(account),
            Err(LedgerError::Rejected(Rejection::AccountNotFound)) => {
                Err(Refusal::account_not_found(id.as_str()).into())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The account a client request names: it must exist (422 naming the field).
    async fn client_account(&self, id: &Id) -> Result<Account, ApiError> {
        self.existing_account(id).await.map_err(|refused| match refused.result {
            "account_not_found" => refused.error.with_field("account"),
            _ => refused.error,
        })
    }

    /// The transfer with this id, if it exists.
    async fn existing_transfer(&self, id: &Id) -> Result<Option<Arc<Transfer>>, Refused> {
        match self.ledger.transfer(id).await {
            Ok(transfer) => Ok(Some(transfer)),
            Err(LedgerError::Rejected(Rejection::TransferNotFound)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Creates (or finds, on a replay) a transfer with a derived id.
    async fn create_derived_transfer(&self, request: TransferRequest) -> Result<(Arc<Transfer>, bool), Refused> {
        let id = request.id.clone();
        self.ledger.create_transfer(request).await.map_err(|error| match error {
            LedgerError::Rejected(Rejection::ExistsWithDifferentFields) => Refusal::new(
                RefusalKind::Conflict,
                "conflict",
                format!("transfer {id} exists already with other fields; nothing is moved again"),
            )
            .into(),
            other => other.into(),
        })
    }

    async fn fetch(&self, provider: &Provider, kind: RecordKind, record_id: &str) -> Result<records::Record, Refused> {
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
        let id =
            ids::settlement_account(provider, currency).map_err(|_| Refusal::internal("a settlement account id"))?;
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
                    return Err(Refusal::new(
                        RefusalKind::Conflict,
                        "settlement_misconfigured",
                        format!(
                            "settlement account {id} exists but is not in {} with an unlimited overdraft",
                            currency.code
                        ),
                    )
                    .into());
                }
            }
            Err(error) => return Err(error.into()),
        }
        self.settlements.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone());
        Ok(id)
    }
}

/// The HTTP answer of a refused withdrawal request.
fn create_refusal(refusal: CreateRefusal) -> ApiError {
    match refusal {
        CreateRefusal::Conflict(message) => {
            ApiError::rejection(Rejection::ExistsWithDifferentFields).with_message(message)
        }
        CreateRefusal::InvalidAmount(error) => crate::http::json::amount_error("amount", &error),
        CreateRefusal::Internal(refusal) => Refused::from(refusal).error,
    }
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
