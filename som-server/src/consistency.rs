//! Reading your own writes across processes, with read replicas (`SOM_DATABASE_READ_URLS`).
//!
//! Each process knows when a user last wrote through it, and serves that user's reads from a
//! replica only once the replica has replayed that write (see `som_core::storage::freshness`).
//! When several `som serve` share the load, the next request may reach a process that did not
//! see the write; so every authenticated response tells the client when the caller last wrote
//! (`SOM-Last-Write`, microseconds since the Unix epoch, and a cookie of the same name that
//! browsers send back by themselves), and a request that carries it has its reads wait for that
//! write too. Clients that drop it read their writes only from the process that took them.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use som_core::Caller;

use crate::AppState;

/// The header and the cookie that carry a caller's last write.
pub const LAST_WRITE: &str = "som-last-write";

/// Who a request turned out to be from, filled in by the extractors that authenticate it.
#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<Option<Caller>>>);

/// Called by every extractor that authenticates a request: notes the last write the client
/// says it made through another process, and who is calling, for the response.
pub fn authenticated(parts: &Parts, state: &AppState, caller: Caller) {
    let Some(seen) = parts.extensions.get::<Seen>() else { return };
    *seen.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(caller);
    let told = parts
        .headers
        .get(LAST_WRITE)
        .and_then(|v| v.to_str().ok())
        .or_else(|| crate::console::cookie(&parts.headers, LAST_WRITE))
        .and_then(|v| v.trim().parse::<i64>().ok());
    if let Some(at) = told {
        state.som.note_write(caller, at);
    }
}

/// The middleware (installed only with read replicas): after an authenticated request, tells
/// the client when its caller last wrote, while that still decides where their reads go.
pub async fn last_write(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let seen = Seen::default();
    request.extensions_mut().insert(seen.clone());
    let mut response = next.run(request).await;
    let caller = *seen.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(at) = caller.and_then(|c| state.som.last_write(c)) {
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&at.to_string()) {
            headers.insert(LAST_WRITE, value);
        }
        let max_age = som_core::storage::freshness::remembered_for(state.som.config().replica_max_lag).as_secs();
        if let Ok(cookie) = HeaderValue::from_str(&format!(
            "{LAST_WRITE}={at}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
        )) {
            headers.append(header::SET_COOKIE, cookie);
        }
    }
    response
}
