//! The console's session: a SOM login session carried in a `__Host-` cookie, its CSRF token,
//! and flash messages carried across a redirect.

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use som_core::Caller;
use som_core::domain::User;

use super::layout;
use crate::AppState;

/// The session cookie: the session's refresh token, which the console never uses up.
pub const SESSION_COOKIE: &str = "__Host-som_console";
/// A message for the next page, hex-encoded.
pub const FLASH_COOKIE: &str = "__Host-som_flash";
/// The form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// The CSRF token of the session whose cookie is `session_token`: a digest only the holder of
/// the (HttpOnly) cookie can know, different for every session.
pub fn csrf_token(session_token: &str) -> String {
    let digest = Sha256::new().chain_update(b"som-console-csrf\0").chain_update(session_token.as_bytes()).finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Whether two strings are equal, in time that depends only on their lengths.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// A `Set-Cookie` value for the console: host-only, whole site, script cannot read it, sent
/// only on same-site navigation, and only over HTTPS (browsers allow plain HTTP to loopback).
pub(super) fn set_cookie(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let cookie = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value that removes cookie `name`.
pub(super) fn clear_cookie(name: &str) -> HeaderValue {
    set_cookie(name, "", 0)
}

/// A signed-in staff member, from the session cookie. Anyone else is refused: with no live
/// session, a page request is sent to sign in and a form post gets 401; a session of an
/// account that is not staff gets 403. Either way nothing is done.
#[derive(Debug, Clone)]
pub struct Staff {
    /// Their account.
    pub user: User,
    /// Who the facade is told is calling.
    pub caller: Caller,
    /// The token every form of theirs must carry.
    pub csrf: String,
    /// The session's token (to sign out).
    pub(super) token: String,
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).filter(|t| !t.is_empty()).map(str::to_owned) else {
            // Nothing to clear: a request without the cookie (another site's, say) never
            // touches the browser's session.
            return Err(signed_out(parts, "Sign in to use the console.", false));
        };
        let user = match state.som.session_user(&token).await {
            Ok(user) => user,
            Err(e) if e.kind() == som_core::ErrorKind::Unauthorized => {
                return Err(signed_out(parts, "Your session has ended; sign in again.", true));
            }
            Err(e) => return Err(layout::error_page(None, &e.into())),
        };
        if !user.is_staff {
            return Err(staff_only());
        }
        let caller = Caller::User { id: user.id, is_staff: true };
        crate::consistency::authenticated(parts, state, caller);
        let csrf = csrf_token(&token);
        Ok(Staff { user, caller, csrf, token })
    }
}

/// A form post from a signed-in staff member, checked: it came from the console itself and
/// carries the session's CSRF token. Refused (and nothing done) otherwise: see [`Staff`] for
/// who is refused, 403 for a foreign or token-less post.
#[derive(Debug)]
pub struct Checked<T> {
    /// Who posted it.
    pub staff: Staff,
    /// The form's other fields.
    pub form: T,
}

/// A form with nothing but its CSRF token.
#[derive(Debug, serde::Deserialize)]
pub struct NoFields {}

#[derive(serde::Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: T,
}

impl<T: serde::de::DeserializeOwned + Send> FromRequest<AppState> for Checked<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let staff = Staff::from_request_parts(&mut parts, state).await?;
        let headers = parts.headers.clone();
        let Form(WithCsrf { csrf, form }) = Form::<WithCsrf<T>>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if let Some(refused) = check_form(&staff, &headers, &csrf) {
            return Err(refused);
        }
        Ok(Checked { staff, form })
    }
}

/// No live session: pages lead to the sign-in form (and back); form posts are refused.
/// `clear` removes the cookie that was presented.
fn signed_out(parts: &Parts, message: &str, clear: bool) -> Response {
    let mut response = if parts.method == Method::GET || parts.method == Method::HEAD {
        let path = parts.uri.path_and_query().map_or("/console/", |p| p.as_str());
        let next = if path == "/console/" { String::new() } else { format!("?next={}", encode_query(path)) };
        let mut r = Redirect::to(&format!("/console/sign-in{next}")).into_response();
        r.headers_mut().append(header::SET_COOKIE, set_cookie(FLASH_COOKIE, &hex(&format!("error:{message}")), 60));
        r
    } else {
        layout::message_page(StatusCode::UNAUTHORIZED, "Signed out", message, Some(("/console/sign-in", "Sign in")))
    };
    if clear {
        response.headers_mut().append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE));
    }
    response
}

/// The page a signed-in account that is not staff gets.
pub(super) fn staff_only() -> Response {
    layout::message_page(
        StatusCode::FORBIDDEN,
        "Staff only",
        "The console is for staff accounts only. Customers use the shop's own site and the API.",
        None,
    )
}

/// Whether a form post may act: its CSRF token is the session's, and it came from the console
/// itself (a browser's `Origin` / `Sec-Fetch-Site`, when sent, say so); otherwise the 403 page
/// to answer with.
pub(super) fn check_form(staff: &Staff, headers: &HeaderMap, csrf: &str) -> Option<Response> {
    if let Some(refused) = same_origin(headers) {
        return Some(refused);
    }
    if csrf.is_empty() || !same(csrf, &staff.csrf) {
        return Some(layout::message_page(
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form did not carry this session's security token (it may be from an earlier \
             session or another site). Nothing was changed; reload the page and try again.",
            None,
        ));
    }
    None
}

/// Refuses a post that a browser says came from another site.
pub(super) fn same_origin(headers: &HeaderMap) -> Option<Response> {
    let cross_site = headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site");
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let foreign_origin = match (headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()), host) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, rest)| rest) != Some(host),
        _ => false,
    };
    if cross_site || foreign_origin {
        return Some(layout::message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This request came from another site. Nothing was changed.",
            None,
        ));
    }
    None
}

/// Whether the flash is good news or bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKind {
    /// Something was done.
    Done,
    /// Something was refused.
    Error,
}

/// A message from the previous request, shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash(pub FlashKind, pub String);

/// The flash message the request carries, if any.
#[derive(Debug, Clone, Default)]
pub struct IncomingFlash(pub Option<Flash>);

impl<S: Send + Sync> FromRequestParts<S> for IncomingFlash {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let text = cookie(&parts.headers, FLASH_COOKIE).and_then(unhex);
        let flash = text.and_then(|t| {
            let (kind, message) = t.split_once(':')?;
            let kind = if kind == "done" { FlashKind::Done } else { FlashKind::Error };
            Some(Flash(kind, message.chars().take(1000).collect()))
        });
        Ok(IncomingFlash(flash))
    }
}

/// A redirect after a form post (303: the browser fetches `to` with GET), with a message for
/// the page it lands on.
pub(super) fn redirect_with(to: &str, flash: Flash) -> Response {
    let kind = match flash.0 {
        FlashKind::Done => "done",
        FlashKind::Error => "error",
    };
    let text: String = flash.1.chars().take(1000).collect();
    let mut response = Redirect::to(to).into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(FLASH_COOKIE, &hex(&format!("{kind}:{text}")), 60));
    response
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(raw: &str) -> Option<String> {
    if !raw.len().is_multiple_of(2) || raw.len() > 8192 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..raw.len()).step_by(2).map(|i| raw.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    String::from_utf8(bytes?).ok()
}

/// `raw` when it is a page of the console (never another site: no `//`, no backslash), else
/// `fallback`: where a form may send the browser on.
pub(super) fn console_path<'a>(raw: &'a str, fallback: &'a str) -> &'a str {
    let safe = raw.starts_with("/console/") && !raw.contains("//") && !raw.contains('\\');
    if safe { raw } else { fallback }
}

/// Percent-encodes `text` for a query string (everything but unreserved characters and `/`).
pub(super) fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_text_survives_the_cookie() {
        let text = "done:Refund of 5.00 USD <issued> ✓; again";
        assert_eq!(unhex(&hex(text)).as_deref(), Some(text));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let (a, b) = (csrf_token("session-a"), csrf_token("session-b"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(same(&a, &csrf_token("session-a")));
        assert!(!same(&a, &b));
        assert!(!same(&a, &a[..31]));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; __Host-som_console=tok; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn posts_from_other_sites_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example:8000"));
        assert!(same_origin(&h).is_none());
        h.insert(header::ORIGIN, HeaderValue::from_static("https://shop.example:8000"));
        assert!(same_origin(&h).is_none());
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(same_origin(&h).is_some());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&h).is_some());
    }
}
