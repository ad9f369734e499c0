//! A deterministic payment provider for development, tests and demos.
//!
//! The payment method chooses the outcome, like a card processor's test cards:
//! `mock_success` (the default), `mock_decline`, `mock_insufficient_funds`, and
//! `mock_transient_error` (confirmation fails transiently a set number of times, then
//! succeeds), `mock_refund_decline` (the payment succeeds; its refunds are declined) and
//! `mock_capture_decline` (authorised with manual capture; capturing it is declined).
//! Refunds and captures succeed otherwise. The outcome is encoded in the provider payment id, so another process (the CLI
//! confirming what the server initiated) gets the same answer.

use crate::util::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::domain::CaptureMethod;

use super::{
    Cancellation, CaptureRequest, Confirmation, PaymentProvider, PaymentRequest, ProviderCapture, ProviderError,
    ProviderPayment, ProviderRefund, RefundRequest,
};

/// What the mock does with a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockOutcome {
    /// Confirmation succeeds.
    Success,
    /// Confirmation is declined (`card_declined`).
    Decline,
    /// Confirmation is declined (`insufficient_funds`).
    InsufficientFunds,
    /// Confirmation fails transiently, then succeeds.
    TransientError,
    /// Confirmation succeeds; refunds of the payment are declined.
    RefundDecline,
    /// Confirmation succeeds; a later capture of the payment is declined.
    CaptureDecline,
}

impl MockOutcome {
    /// The payment method names, in the order of [`MockOutcome`]'s variants.
    pub const METHODS: [&'static str; 6] = [
        "mock_success",
        "mock_decline",
        "mock_insufficient_funds",
        "mock_transient_error",
        "mock_refund_decline",
        "mock_capture_decline",
    ];

    /// The outcome a method name selects.
    pub fn from_method(method: &str) -> Option<MockOutcome> {
        match method {
            "mock_success" => Some(MockOutcome::Success),
            "mock_decline" => Some(MockOutcome::Decline),
            "mock_insufficient_funds" => Some(MockOutcome::InsufficientFunds),
            "mock_transient_error" => Some(MockOutcome::TransientError),
            "mock_refund_decline" => Some(MockOutcome::RefundDecline),
            "mock_capture_decline" => Some(MockOutcome::CaptureDecline),
            _ => None,
        }
    }

    fn code(self) -> &'static str {
        match self {
            MockOutcome::Success => "s",
            MockOutcome::Decline => "d",
            MockOutcome::InsufficientFunds => "i",
            MockOutcome::TransientError => "t",
            MockOutcome::RefundDecline => "r",
            MockOutcome::CaptureDecline => "c",
        }
    }

    fn from_code(code: &str) -> Option<MockOutcome> {
        [
            MockOutcome::Success,
            MockOutcome::Decline,
            MockOutcome::InsufficientFunds,
            MockOutcome::TransientError,
            MockOutcome::RefundDecline,
            MockOutcome::CaptureDecline,
        ]
        .into_iter()
        .find(|o| o.code() == code)
    }

    /// The outcome and capture method a mock payment id (`mock_pi_{code}[m]_{key}`) encodes.
    fn of_payment(provider_payment_id: &str) -> Result<(MockOutcome, CaptureMethod), ProviderError> {
        let code = provider_payment_id
            .strip_prefix("mock_pi_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(code, _)| code)
            .ok_or_else(|| ProviderError::InvalidRequest("unknown mock payment".into()))?;
        let (code, capture) = match code.strip_suffix('m') {
            Some(code) => (code, CaptureMethod::Manual),
            None => (code, CaptureMethod::Automatic),
        };
        let outcome =
            MockOutcome::from_code(code).ok_or_else(|| ProviderError::InvalidRequest("unknown mock payment".into()))?;
        Ok((outcome, capture))
    }
}

/// The mock provider. Counts its calls so tests can check how often SOM reached the provider.
#[derive(Debug)]
pub struct MockProvider {
    transient_failures: u32,
    failures_seen: Mutex<HashMap<String, u32>>,
    scripted_initiate: Mutex<Vec<ProviderError>>,
    scripted_confirm: Mutex<Vec<ProviderError>>,
    scripted_refund: Mutex<Vec<ProviderError>>,
    refunds: Mutex<HashMap<String, (String, i64)>>,
    scripted_cancel: Mutex<Vec<ProviderError>>,
    scripted_capture: Mutex<Vec<ProviderError>>,
    captures: Mutex<HashMap<String, (String, i64)>>,
    capture_calls: AtomicU64,
    pending_refund_answers: AtomicU64,
    closed: Mutex<Vec<String>>,
    initiate_calls: AtomicU64,
    confirm_calls: AtomicU64,
    refund_calls: AtomicU64,
}

impl Default for MockProvider {
    fn default() -> Self {
        MockProvider::new(2)
    }
}

impl MockProvider {
    /// A mock whose `mock_transient_error` payments fail `transient_failures` confirmations
    /// (per payment, per process) before succeeding.
    pub fn new(transient_failures: u32) -> Self {
        MockProvider {
            transient_failures,
            failures_seen: Mutex::new(HashMap::new()),
            scripted_initiate: Mutex::new(Vec::new()),
            scripted_confirm: Mutex::new(Vec::new()),
            scripted_refund: Mutex::new(Vec::new()),
            refunds: Mutex::new(HashMap::new()),
            scripted_cancel: Mutex::new(Vec::new()),
            scripted_capture: Mutex::new(Vec::new()),
            captures: Mutex::new(HashMap::new()),
            capture_calls: AtomicU64::new(0),
            pending_refund_answers: AtomicU64::new(0),
            closed: Mutex::new(Vec::new()),
            initiate_calls: AtomicU64::new(0),
            confirm_calls: AtomicU64::new(0),
            refund_calls: AtomicU64::new(0),
        }
    }

    /// Makes the next `initiate` calls fail with these errors, in order, whatever the method.
    pub fn script_initiate(&self, errors: impl IntoIterator<Item = ProviderError>) {
        push_front(&mut lock(&self.scripted_initiate), errors);
    }

    /// Makes the next `confirm` calls fail with these errors, in order, whatever the method.
    pub fn script_confirm(&self, errors: impl IntoIterator<Item = ProviderError>) {
        push_front(&mut lock(&self.scripted_confirm), errors);
    }

    /// Makes the next `refund` (or `refund_status`) calls fail with these errors, in order,
    /// whatever the payment.
    pub fn script_refund(&self, errors: impl IntoIterator<Item = ProviderError>) {
        push_front(&mut lock(&self.scripted_refund), errors);
    }

    /// Makes the next `cancel` calls fail with these errors, in order, whatever the payment.
    pub fn script_cancel(&self, errors: impl IntoIterator<Item = ProviderError>) {
        push_front(&mut lock(&self.scripted_cancel), errors);
    }

    /// Makes the next `capture` calls fail with these errors, in order, whatever the payment.
    pub fn script_capture(&self, errors: impl IntoIterator<Item = ProviderError>) {
        push_front(&mut lock(&self.scripted_capture), errors);
    }

    /// How many times `capture` was called.
    pub fn capture_calls(&self) -> u64 {
        self.capture_calls.load(Ordering::SeqCst)
    }

    /// The captures this mock made (one per payment, however often it was asked), and their
    /// total in minor units.
    pub fn captures_made(&self) -> (usize, i64) {
        let captures = lock(&self.captures);
        (captures.len(), captures.values().map(|(_, minor)| minor).sum())
    }

    /// Makes the next `answers` answers about refunds (to `refund` or `refund_status`) say the
    /// refund is still pending, as a provider that takes days to return money does.
    pub fn script_pending_refunds(&self, answers: u64) {
        self.pending_refund_answers.fetch_add(answers, Ordering::SeqCst);
    }

    /// The provider payment ids this mock cancelled, in order (each once).
    pub fn cancelled(&self) -> Vec<String> {
        lock(&self.closed).clone()
    }

    /// How many times `refund` was called.
    pub fn refund_calls(&self) -> u64 {
        self.refund_calls.load(Ordering::SeqCst)
    }

    /// The refunds this mock made (one per idempotency key, however often it was asked), and
    /// their total in minor units.
    pub fn refunds_made(&self) -> (usize, i64) {
        let refunds = lock(&self.refunds);
        (refunds.len(), refunds.values().map(|(_, minor)| minor).sum())
    }

    /// How many times `initiate` was called.
    pub fn initiate_calls(&self) -> u64 {
        self.initiate_calls.load(Ordering::SeqCst)
    }

    /// How many times `confirm` was called.
    pub fn confirm_calls(&self) -> u64 {
        self.confirm_calls.load(Ordering::SeqCst)
    }
}

/// Takes one from `counter` if it is above zero; whether it did.
fn take_one(counter: &AtomicU64) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// Queues `errors` to be popped (from the back) after everything already queued, first first.
fn push_front(queue: &mut Vec<ProviderError>, errors: impl IntoIterator<Item = ProviderError>) {
    let mut new: Vec<ProviderError> = errors.into_iter().collect();
    new.reverse();
    new.append(queue);
    *queue = new;
}

impl MockProvider {
    /// The provider name the mock reports (and payments made with it carry).
    pub const NAME: &'static str = "mock";
}

#[async_trait]
impl PaymentProvider for MockProvider {
    fn name(&self) -> &str {
        MockProvider::NAME
    }

    fn methods(&self) -> Vec<String> {
        MockOutcome::METHODS.iter().map(|m| (*m).to_owned()).collect()
    }

    fn default_method(&self) -> Option<&str> {
        Some(MockOutcome::METHODS[0])
    }

    fn check_method(&self, method: &str) -> Result<(), String> {
        MockOutcome::from_method(method)
            .map(|_| ())
            .ok_or_else(|| format!("unknown payment method; use one of {}", MockOutcome::METHODS.join(", ")))
    }

    async fn initiate(&self, request: &PaymentRequest) -> Result<ProviderPayment, ProviderError> {
        self.initiate_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = lock(&self.scripted_initiate).pop() {
            return Err(e);
        }
        let method = request.method.as_deref().unwrap_or(MockOutcome::METHODS[0]);
        let outcome = MockOutcome::from_method(method).ok_or_else(|| {
            ProviderError::InvalidRequest(format!(
                "unknown payment method; use one of {}",
                MockOutcome::METHODS.join(", ")
            ))
        })?;
        let manual = if request.capture == CaptureMethod::Manual { "m" } else { "" };
        // Derived from the idempotency key alone: the same key always yields the same payment.
        Ok(ProviderPayment {
            provider_payment_id: format!("mock_pi_{}{manual}_{}", outcome.code(), request.idempotency_key),
            client_secret: None,
        })
    }

    async fn confirm(&self, provider_payment_id: &str) -> Result<Confirmation, ProviderError> {
        // Without SOM's stored count, this process's own count of failures stands in.
        let seen = lock(&self.failures_seen).get(provider_payment_id).copied().unwrap_or(0);
        self.confirm_attempt(provider_payment_id, seen).await
    }

    async fn confirm_attempt(
        &self,
        provider_payment_id: &str,
        transient_failures: u32,
    ) -> Result<Confirmation, ProviderError> {
        self.confirm_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = lock(&self.scripted_confirm).pop() {
            return Err(e);
        }
        if lock(&self.closed).iter().any(|id| id == provider_payment_id) {
            return Err(ProviderError::Declined {
                code: "canceled".into(),
                message: "the payment was cancelled".into(),
            });
        }
        let (outcome, method) = MockOutcome::of_payment(provider_payment_id)?;
        let capture = || {
            Ok(match method {
                CaptureMethod::Manual => Confirmation::Authorized,
                CaptureMethod::Automatic => {
                    Confirmation::Captured(ProviderCapture { capture_id: format!("mock_ch_{provider_payment_id}") })
                }
            })
        };
        match outcome {
            MockOutcome::Success => capture(),
            MockOutcome::Decline => {
                Err(ProviderError::Declined { code: "card_declined".into(), message: "the card was declined".into() })
            }
            MockOutcome::InsufficientFunds => Err(ProviderError::Declined {
                code: "insufficient_funds".into(),
                message: "the card has insufficient funds".into(),
            }),
            MockOutcome::RefundDecline | MockOutcome::CaptureDecline => capture(),
            MockOutcome::TransientError => {
                if transient_failures < self.transient_failures {
                    let mut seen = lock(&self.failures_seen);
                    let count = seen.entry(provider_payment_id.to_owned()).or_insert(0);
                    *count = (*count).max(transient_failures) + 1;
                    Err(ProviderError::Transient("the mock processor timed out".into()))
                } else {
                    capture()
                }
            }
        }
    }

    async fn refund_status(&self, provider_refund_id: &str) -> Result<ProviderRefund, ProviderError> {
        if let Some(e) = lock(&self.scripted_refund).pop() {
            return Err(e);
        }
        let known = lock(&self.refunds).values().any(|(id, _)| id == provider_refund_id);
        if !known && provider_refund_id.starts_with("mock_re_") {
            return Err(ProviderError::InvalidRequest(format!("no refund {provider_refund_id}")));
        }
        let pending = take_one(&self.pending_refund_answers);
        Ok(ProviderRefund { provider_refund_id: provider_refund_id.to_owned(), pending })
    }

    async fn cancel(&self, provider_payment_id: &str) -> Result<Cancellation, ProviderError> {
        if let Some(e) = lock(&self.scripted_cancel).pop() {
            return Err(e);
        }
        if lock(&self.captures).contains_key(provider_payment_id) {
            return Ok(Cancellation::Captured);
        }
        let mut closed = lock(&self.closed);
        if !closed.iter().any(|id| id == provider_payment_id) {
            closed.push(provider_payment_id.to_owned());
        }
        Ok(Cancellation::Cancelled)
    }

    fn supports_manual_capture(&self) -> bool {
        true
    }

    async fn capture(&self, request: &CaptureRequest) -> Result<ProviderCapture, ProviderError> {
        self.capture_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = lock(&self.scripted_capture).pop() {
            return Err(e);
        }
        let id = &request.provider_payment_id;
        let (outcome, method) = MockOutcome::of_payment(id)?;
        if method != CaptureMethod::Manual {
            return Err(ProviderError::InvalidRequest("the payment was not authorised for a later capture".into()));
        }
        if lock(&self.closed).iter().any(|closed| closed == id) {
            return Err(ProviderError::InvalidRequest("the authorisation was released".into()));
        }
        if outcome == MockOutcome::CaptureDecline {
            return Err(ProviderError::Declined {
                code: "capture_declined".into(),
                message: "the card issuer refused the capture".into(),
            });
        }
        let mut captures = lock(&self.captures);
        let (key, _) =
            captures.entry(id.clone()).or_insert_with(|| (request.idempotency_key.clone(), request.amount.minor()));
        if *key != request.idempotency_key {
            return Err(ProviderError::InvalidRequest("the payment was captured already".into()));
        }
        Ok(ProviderCapture { capture_id: format!("mock_ch_{id}") })
    }

    async fn refund(&self, request: &RefundRequest) -> Result<ProviderRefund, ProviderError> {
        self.refund_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = lock(&self.scripted_refund).pop() {
            return Err(e);
        }
        let (outcome, _) = MockOutcome::of_payment(&request.provider_payment_id)?;
        if outcome == MockOutcome::RefundDecline {
            return Err(ProviderError::Declined {
                code: "refund_declined".into(),
                message: "the card issuer refused the refund".into(),
            });
        }
        let mut refunds = lock(&self.refunds);
        let (id, _) = refunds
            .entry(request.idempotency_key.clone())
            .or_insert_with(|| (format!("mock_re_{}", request.idempotency_key), request.amount.minor()));
        let pending = take_one(&self.pending_refund_answers);
        Ok(ProviderRefund { provider_refund_id: id.clone(), pending })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, Money, OrderId};

    fn request(method: &str, key: &str) -> PaymentRequest {
        PaymentRequest {
            order_id: OrderId::new(1),
            amount: Money::from_minor(100, Currency::USD),
            attempt: 1,
            idempotency_key: key.into(),
            reference: format!("txn_{key}"),
            method: Some(method.into()),
            capture: CaptureMethod::Automatic,
        }
    }

    #[tokio::test]
    async fn manual_payments_authorise_then_capture_once_or_release() {
        let mock = MockProvider::default();
        let manual =
            |method: &str, key: &str| PaymentRequest { capture: CaptureMethod::Manual, ..request(method, key) };
        let p = mock.initiate(&manual("mock_success", "m1")).await.unwrap();
        assert_eq!(mock.confirm(&p.provider_payment_id).await, Ok(Confirmation::Authorized));
        let capture = |key: &str| CaptureRequest {
            provider_payment_id: p.provider_payment_id.clone(),
            amount: Money::from_minor(60, Currency::USD),
            idempotency_key: key.into(),
        };
        let first = mock.capture(&capture("som-capture-1")).await.unwrap();
        assert_eq!(mock.capture(&capture("som-capture-1")).await, Ok(first));
        assert!(matches!(mock.capture(&capture("other")).await, Err(ProviderError::InvalidRequest(_))));
        assert_eq!(mock.captures_made(), (1, 60));
        assert_eq!(mock.cancel(&p.provider_payment_id).await, Ok(Cancellation::Captured));
        let v = mock.initiate(&manual("mock_success", "m2")).await.unwrap();
        assert_eq!(mock.cancel(&v.provider_payment_id).await, Ok(Cancellation::Cancelled));
        let released = CaptureRequest { provider_payment_id: v.provider_payment_id.clone(), ..capture("k") };
        assert!(matches!(mock.capture(&released).await, Err(ProviderError::InvalidRequest(_))));
        let d = mock.initiate(&manual("mock_capture_decline", "m3")).await.unwrap();
        let declined = CaptureRequest { provider_payment_id: d.provider_payment_id.clone(), ..capture("k") };
        assert!(matches!(mock.capture(&declined).await, Err(ProviderError::Declined { .. })));
        let auto = mock.initiate(&request("mock_success", "a1")).await.unwrap();
        let automatic = CaptureRequest { provider_payment_id: auto.provider_payment_id, ..capture("k") };
        assert!(matches!(mock.capture(&automatic).await, Err(ProviderError::InvalidRequest(_))));
    }

    #[tokio::test]
    async fn the_method_chooses_the_outcome() {
        let mock = MockProvider::new(2);
        let ok = mock.initiate(&request("mock_success", "k1")).await.unwrap();
        assert!(mock.confirm(&ok.provider_payment_id).await.is_ok());
        let declined = mock.initiate(&request("mock_decline", "k2")).await.unwrap();
        assert!(
            matches!(mock.confirm(&declined.provider_payment_id).await, Err(ProviderError::Declined { code, .. }) if code == "card_declined")
        );
        let poor = mock.initiate(&request("mock_insufficient_funds", "k3")).await.unwrap();
        assert!(
            matches!(mock.confirm(&poor.provider_payment_id).await, Err(ProviderError::Declined { code, .. }) if code == "insufficient_funds")
        );
        assert!(matches!(mock.initiate(&request("visa", "k4")).await, Err(ProviderError::InvalidRequest(_))));
    }

    #[tokio::test]
    async fn transient_errors_clear_after_the_configured_count() {
        let mock = MockProvider::new(2);
        let p = mock.initiate(&request("mock_transient_error", "k")).await.unwrap();
        assert!(matches!(mock.confirm(&p.provider_payment_id).await, Err(ProviderError::Transient(_))));
        assert!(matches!(mock.confirm(&p.provider_payment_id).await, Err(ProviderError::Transient(_))));
        assert!(mock.confirm(&p.provider_payment_id).await.is_ok());
        assert_eq!(mock.confirm_calls(), 3);
    }

    #[tokio::test]
    async fn the_same_idempotency_key_yields_the_same_payment() {
        let mock = MockProvider::default();
        let a = mock.initiate(&request("mock_success", "som-order-1-attempt-1")).await.unwrap();
        let b = mock.initiate(&request("mock_success", "som-order-1-attempt-1")).await.unwrap();
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn refunds_are_idempotent_on_their_key_and_can_be_declined() {
        let mock = MockProvider::default();
        let p = mock.initiate(&request("mock_success", "k")).await.unwrap();
        let refund = |key: &str| RefundRequest {
            provider_payment_id: p.provider_payment_id.clone(),
            amount: Money::from_minor(50, Currency::USD),
            idempotency_key: key.into(),
            reason: None,
        };
        let a = mock.refund(&refund("som-refund-1")).await.unwrap();
        assert_eq!(mock.refund(&refund("som-refund-1")).await.unwrap(), a);
        mock.refund(&refund("som-refund-2")).await.unwrap();
        assert_eq!(mock.refunds_made(), (2, 100));
        let d = mock.initiate(&request("mock_refund_decline", "k2")).await.unwrap();
        assert!(mock.confirm(&d.provider_payment_id).await.is_ok());
        let declined = RefundRequest { provider_payment_id: d.provider_payment_id, ..refund("som-refund-3") };
        assert!(matches!(mock.refund(&declined).await, Err(ProviderError::Declined { .. })));
        assert_eq!(mock.refund_calls(), 4);
    }

    #[tokio::test]
    async fn scripted_failures_come_first() {
        let mock = MockProvider::default();
        mock.script_confirm([ProviderError::Transient("one".into())]);
        let p = mock.initiate(&request("mock_success", "k")).await.unwrap();
        assert!(mock.confirm(&p.provider_payment_id).await.is_err());
        assert!(mock.confirm(&p.provider_payment_id).await.is_ok());
    }
}
