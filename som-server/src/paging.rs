//! Pages of lists: the page size a request asks for, and the headers that point at the next
//! page.

use axum::http::{HeaderMap, HeaderValue, header};

use crate::error::ApiError;

/// The `limit` parameter, when present: a whole number (its range is som-core's to check;
/// `max` names the largest page in the message).
pub(crate) fn page_limit(raw: Option<&String>, max: u32) -> Result<Option<u32>, ApiError> {
    raw.map(|l| {
        l.parse::<u32>().map_err(|_| ApiError::field("limit", format!("must be a whole number between 1 and {max}")))
    })
    .transpose()
}

/// `Link: <path?cursor=…&…>; rel="next"` and `X-Next-Cursor` for a list with more pages,
/// repeating the request's own parameters (percent-encoded).
pub(crate) fn next_page_headers<'a>(
    headers: &mut HeaderMap,
    path: &str,
    next: &str,
    params: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) {
    let mut link = format!("{path}?cursor={}", percent_encode(next));
    for (key, value) in params {
        if let Some(v) = value {
            link.push_str(&format!("&{key}={}", percent_encode(v)));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")) {
        headers.insert(header::LINK, v);
    }
    if let Ok(v) = HeaderValue::from_str(next) {
        headers.insert("x-next-cursor", v);
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
