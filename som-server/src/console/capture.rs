//! Capture and void on the order page: the forms of an AUTHORIZED payment and their posts.

use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use som_core::domain::{Order, OrderId, Payment, PaymentStatus};

use super::layout::{self, csrf, refused, when};
use super::orders::order_payment;
use super::session::{Checked, Flash, FlashKind, Staff, redirect_with};
use crate::AppState;
use crate::extract::path_id;

/// The capture and void forms of `p` while it is AUTHORIZED (nothing otherwise). Each form
/// carries a fresh idempotency key, so a second click returns the first answer.
pub(super) fn forms(staff: &Staff, order: &Order, p: &Payment) -> Markup {
    if p.status != PaymentStatus::Authorized {
        return html! {};
    }
    html! {
        @if let Some(busy) = p.settlement {
            p.hint { "A " (busy.action.as_str()) " of this payment started " (when(busy.started_at)) " and is waiting for the provider; it is finished automatically." }
        } @else {
            form.action method="post" action={ "/console/orders/" (order.id) "/capture" } data-confirm="Capture this payment?" {
                (csrf(staff))
                input type="hidden" name="payment_id" value=(p.id);
                input type="hidden" name="idempotency_key" value=(som_core::util::random_token(16));
                fieldset {
                    legend { "Capture (up to " (p.amount) "; the rest is released)" }
                    label for={ "capture-" (p.id) } { "Amount in " (p.amount.currency().code()) " (empty: all " (p.amount) ")" }
                    input id={ "capture-" (p.id) } name="amount" type="text" inputmode="decimal" placeholder=(p.amount.amount_string());
                    button type="submit" { "Capture" }
                }
            }
            form.action method="post" action={ "/console/orders/" (order.id) "/void" } data-confirm="Release this authorisation and cancel the order?" {
                (csrf(staff))
                input type="hidden" name="payment_id" value=(p.id);
                input type="hidden" name="idempotency_key" value=(som_core::util::random_token(16));
                button.danger type="submit" { "Void (release the hold, cancel the order)" }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct SettleForm {
    #[serde(default)]
    payment_id: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    idempotency_key: String,
}

/// `POST /console/orders/{id}/capture`.
pub(super) async fn capture(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form: f }: Checked<SettleForm>,
) -> Response {
    settle(&s, &raw, staff, f, true).await
}

/// `POST /console/orders/{id}/void`.
pub(super) async fn void(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Checked { staff, form: f }: Checked<SettleForm>,
) -> Response {
    settle(&s, &raw, staff, f, false).await
}

async fn settle(s: &AppState, raw: &str, staff: Staff, f: SettleForm, capture: bool) -> Response {
    let id = match path_id::<OrderId>(raw, "order") {
        Ok(id) => id,
        Err(e) => return layout::error_page(Some(&staff), &e),
    };
    let back = format!("/console/orders/{id}");
    let payment = match order_payment(s, &staff, id, &f.payment_id).await {
        Ok(p) => p,
        Err(flash) => return redirect_with(&back, flash),
    };
    let key = Some(f.idempotency_key.as_str()).filter(|k| !k.is_empty());
    let amount = Some(f.amount.trim()).filter(|a| !a.is_empty());
    let result = if capture {
        s.som.capture_payment(staff.caller, payment).maybe_amount(amount).maybe_idempotency_key(key).await
    } else {
        s.som.void_payment(staff.caller, payment).maybe_idempotency_key(key).await
    };
    match result {
        Ok(p) if capture => redirect_with(
            &back,
            Flash(FlashKind::Done, format!("Payment #{} captured {} of {}.", p.id, p.captured, p.amount)),
        ),
        Ok(p) => redirect_with(
            &back,
            Flash(FlashKind::Done, format!("Payment #{} is {}; the order is cancelled.", p.id, p.status)),
        ),
        Err(e) => redirect_with(&back, refused(e)),
    }
}
