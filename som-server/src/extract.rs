//! Extractors whose rejections are problem documents: JSON bodies, bearer authentication,
//! idempotency keys, client addresses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;
use som_core::Caller;

use crate::AppState;
use crate::error::ApiError;

/// A JSON body that may be left out: a request with neither a body nor a content type, or
/// with the body `null`, gets `T::default()`; otherwise as [`JsonBody`].
#[derive(Debug, Clone)]
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers();
        let empty = !headers.contains_key(header::CONTENT_TYPE)
            && !headers.contains_key(header::TRANSFER_ENCODING)
            && headers.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0");
        if empty {
            return Ok(OptionalJsonBody(T::default()));
        }
        JsonBody::<Option<T>>::from_request(req, state)
            .await
            .map(|JsonBody(value)| OptionalJsonBody(value.unwrap_or_default()))
    }
}

/// A JSON body: 415 without a JSON content type, 413 over the body limit, 400 with field
/// errors when it does not parse or does not fit the expected shape.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Payload too large",
                    "the request body is too large",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "Bad request",
                    "the request body could not be read",
                )
            }
        })?;
        // Every request body of the API is a JSON object; serde would also read a struct from an
        // array of its fields in order, which no client means.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'[') {
            return Err(ApiError::field("non_field_errors", "expected a JSON object"));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(&e))?;
        de.end().map_err(|_| ApiError::field("non_field_errors", "trailing characters after the JSON document"))?;
        Ok(JsonBody(value))
    }
}

fn json_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::field("non_field_errors", format!("malformed JSON: {inner}"));
    }
    let path = e.path().to_string();
    let message = inner.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
    let (field, message) = match message.strip_prefix("missing field `").and_then(|m| m.split_once('`')) {
        Some((name, _)) if path == "." => (name.to_owned(), "This field is required.".to_owned()),
        Some((name, _)) => (format!("{path}.{name}"), "This field is required.".to_owned()),
        None if path == "." => ("non_field_errors".to_owned(), message),
        None => (path, message),
    };
    ApiError::validation(BTreeMap::from([(field, vec![message])]))
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
}

/// The bearer token, or the 401 for a request without one.
pub fn required_bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    bearer_token(headers)
        .ok_or_else(|| som_core::Error::Unauthorized("authentication credentials were not provided".into()).into())
}

/// The raw access token of `Authorization: Bearer <token>`, for the operations that act on the
/// session presenting it (not only on its caller); 401 when there is none.
#[derive(Debug, Clone)]
pub struct Bearer(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        required_bearer_token(&parts.headers).map(|t| Bearer(t.to_owned()))
    }
}

/// The authenticated caller, from `Authorization: Bearer <access token>`.
#[derive(Debug, Clone, Copy)]
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = required_bearer_token(&parts.headers)?;
        let caller = state.som.authenticate(token).await?;
        crate::consistency::authenticated(parts, state, caller);
        Ok(Auth(caller))
    }
}

/// The optional `Idempotency-Key` header.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("idempotency-key") {
            None => Ok(IdempotencyKey(None)),
            Some(v) => v
                .to_str()
                .map(|s| IdempotencyKey(Some(s.to_owned())))
                .map_err(|_| ApiError::field("idempotency_key", "must be visible ASCII text")),
        }
    }
}

/// The client's address: the TCP peer (loopback when unknown, in-process tests), or — when the
/// peer is a trusted proxy (`SOM_TRUSTED_PROXIES`) — the nearest address in `X-Forwarded-For`
/// that is not itself a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The client address behind `peer`, believing `X-Forwarded-For` only from `trusted` proxies.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[(IpAddr, u8)]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| som_core::net::cidr_contains(*net, ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Right to left: each trusted hop vouches for the address before it; the first untrusted
    // (or unparsable) entry is as far as the chain can be believed.
    let mut client = peer;
    for hop in forwarded_for.unwrap_or("").rsplit(',').map(str::trim).filter(|h| !h.is_empty()) {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |ConnectInfo(addr)| addr.ip());
        let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Ok(ClientIp(client_ip(peer, forwarded, &state.trusted_proxies)))
    }
}

/// An id from the path, parsed by som-core's own `FromStr`; anything else names nothing (404).
pub(crate) fn path_id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse::<T>().map_err(|_| ApiError::not_found(format!("{what} {raw} not found")))
}

/// The `Idempotency-Key` header (documentation).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyHeader {
    /// Makes the request safe to repeat: the same key with the same request within 24 h returns
    /// the original response without a second effect.
    #[serde(rename = "Idempotency-Key")]
    #[param(value_type = String, required = false, min_length = 1, max_length = 255, pattern = "^[!-~]([ -~]*[!-~])?$")]
    pub idempotency_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::client_ip;

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted = [som_core::net::parse_cidr("10.0.0.0/8").unwrap()];
        let peer = "10.0.0.5".parse().unwrap();
        let outsider = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(outsider, Some("1.2.3.4"), &trusted), outsider);
        assert_eq!(client_ip(peer, Some("1.2.3.4"), &trusted), "1.2.3.4".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(
            client_ip(peer, Some("6.6.6.6, 1.2.3.4, 10.0.0.7"), &trusted),
            "1.2.3.4".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, None, &trusted), peer);
        assert_eq!(client_ip(peer, Some("1.2.3.4"), &[]), peer);
        assert_eq!(client_ip(peer, Some("garbage"), &trusted), peer);
    }
}
