//! Stripe-style request signatures: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<unix>.<body>")>`.
//! SOM signs its own webhook calls this way (`SOM-Signature`) and checks Stripe's
//! (`Stripe-Signature`) with the same code.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<unix>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", crate::util::hex(&mac(secret, timestamp, body).finalize().into_bytes()))
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=…,v1=…`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is further from now than the tolerance (either way).
    #[error("timestamp outside the tolerance")]
    Stale,
    /// No `v1` signature matches the body.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a `SOM-Signature` header against the raw request body: the timestamp must be within
/// `tolerance` of now (in the past or the future) and one `v1` value must equal the HMAC,
/// compared in constant time.
pub fn verify_signature(secret: &[u8], header: &str, body: &[u8], tolerance: Duration) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => signatures.push(decode_hex(v).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age = chrono::Utc::now().timestamp().checked_sub(timestamp).map(i64::unsigned_abs);
    if age.is_none_or(|age| age > tolerance.as_secs()) {
        return Err(SignatureError::Stale);
    }
    if signatures.iter().any(|sig| mac(secret, timestamp, body).verify_slice(sig).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering_and_old_timestamps() {
        let secret = b"whsec_0123456789abcdef";
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"id":"order_created:order:1"}"#;
        let header = sign(secret, now, body);
        let tol = Duration::from_secs(300);
        assert_eq!(verify_signature(secret, &header, body, tol), Ok(()));
        assert_eq!(verify_signature(secret, &header, b"{\"id\":\"tampered\"}", tol), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(b"other secret", &header, body, tol), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(secret, &sign(secret, now - 600, body), body, tol), Err(SignatureError::Stale));
        assert_eq!(verify_signature(secret, &sign(secret, now + 600, body), body, tol), Err(SignatureError::Stale));
        assert_eq!(verify_signature(secret, "v1=abcd", body, tol), Err(SignatureError::Malformed));
        assert_eq!(verify_signature(secret, "t=1", body, tol), Err(SignatureError::Malformed));
        assert_eq!(verify_signature(secret, "t=x,v1=zz", body, tol), Err(SignatureError::Malformed));
        // Timestamps at the ends of the range are stale, never an arithmetic overflow.
        for t in [i64::MIN, i64::MIN + 1, i64::MAX] {
            assert_eq!(
                verify_signature(secret, &format!("t={t},v1=abcd"), body, tol),
                Err(SignatureError::Stale),
                "t={t}"
            );
        }
        let rotated = format!("{header},v1={}", "00".repeat(32));
        assert_eq!(verify_signature(secret, &rotated, body, tol), Ok(()), "any matching v1 is accepted");
    }
}
