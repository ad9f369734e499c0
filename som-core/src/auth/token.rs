//! HS256 JWTs. Access and refresh tokens carry different `aud` and `typ` claims and each is
//! decoded only with its own validation, so one can never be used as the other.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

use crate::domain::UserId;
use crate::error::{Error, Result};

const ISSUER: &str = "som";
const ACCESS_AUDIENCE: &str = "som-access";
const REFRESH_AUDIENCE: &str = "som-refresh";
/// Clock skew tolerated on `exp` and `iat`, in seconds.
const LEEWAY_SECS: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    exp: i64,
    iat: i64,
    jti: String,
    typ: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fam: Option<String>,
    /// When the session began (unix seconds), on refresh tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sst: Option<i64>,
}

/// A freshly issued access + refresh token pair.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPair {
    /// Bearer token for API calls.
    pub access: String,
    /// Token to obtain the next pair; single use.
    pub refresh: String,
    /// Seconds until `access` expires.
    pub access_expires_in: i64,
    /// Seconds until `refresh` expires.
    pub refresh_expires_in: i64,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair").field("access", &"<redacted>").field("refresh", &"<redacted>").finish()
    }
}

/// What a verified access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    /// The user the token stands for.
    pub user_id: UserId,
    /// The session (login) it was issued in.
    pub session: String,
}

/// What a verified refresh token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshClaims {
    /// Whose token it is.
    pub user_id: UserId,
    /// This token's unique id.
    pub jti: String,
    /// The login session (token family) it belongs to.
    pub family: String,
    /// When its session began; the session ends [`TokenKeys`]' maximum age after this.
    pub session_started_at: DateTime<Utc>,
}

/// Signing keys and lifetimes.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    access_ttl: Duration,
    refresh_ttl: Duration,
    session_max_age: Duration,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("secret", &"<redacted>")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish()
    }
}

impl TokenKeys {
    /// Keys from a secret of at least 32 bytes.
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration, session_max_age: Duration) -> Result<Self> {
        if secret.len() < 32 {
            return Err(Error::invalid("SOM_JWT_SECRET", "must be at least 32 bytes"));
        }
        let bad = |e: jsonwebtoken::errors::Error| Error::Internal(format!("JWT key: {e}"));
        Ok(TokenKeys {
            encoding: EncodingKey::from_secret(secret).map_err(bad)?,
            decoding: DecodingKey::from_secret(secret).map_err(bad)?,
            access_ttl,
            refresh_ttl,
            session_max_age,
        })
    }

    /// Issues an access token and a refresh token (with id `refresh_jti` in `family`).
    pub fn issue_pair(
        &self,
        user: UserId,
        family: &str,
        session_started_at: DateTime<Utc>,
        refresh_jti: &str,
        now: DateTime<Utc>,
    ) -> Result<TokenPair> {
        let refresh_expires_at = self.refresh_expiry(now, session_started_at);
        let access = self.sign(Claims {
            iss: ISSUER.into(),
            aud: ACCESS_AUDIENCE.into(),
            sub: user.to_string(),
            exp: later(now, self.access_ttl).timestamp(),
            iat: now.timestamp(),
            jti: crate::util::random_token(16),
            typ: "access".into(),
            fam: Some(family.into()),
            sst: None,
        })?;
        let refresh = self.sign(Claims {
            iss: ISSUER.into(),
            aud: REFRESH_AUDIENCE.into(),
            sub: user.to_string(),
            exp: refresh_expires_at.timestamp(),
            iat: now.timestamp(),
            jti: refresh_jti.into(),
            typ: "refresh".into(),
            fam: Some(family.into()),
            sst: Some(session_started_at.timestamp()),
        })?;
        Ok(TokenPair {
            access,
            refresh,
            access_expires_in: self.access_ttl.num_seconds(),
            refresh_expires_in: (refresh_expires_at - now).num_seconds(),
        })
    }

    /// When the session begun at `session_started_at` ends for good.
    pub fn session_end(&self, session_started_at: DateTime<Utc>) -> DateTime<Utc> {
        later(session_started_at, self.session_max_age)
    }

    /// When a refresh token issued at `now` in a session begun at `session_started_at` expires:
    /// the refresh lifetime, never past the session's end.
    pub fn refresh_expiry(&self, now: DateTime<Utc>, session_started_at: DateTime<Utc>) -> DateTime<Utc> {
        later(now, self.refresh_ttl).min(self.session_end(session_started_at))
    }

    /// The user and session of a valid access token, unexpired at `now` (whether the session
    /// is still live is storage's to say).
    pub fn verify_access(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims> {
        let claims = self.verify(token, ACCESS_AUDIENCE, "access", now)?;
        let session = claims.fam.ok_or_else(invalid_token)?;
        Ok(AccessClaims { user_id: parse_sub(&claims.sub)?, session })
    }

    /// The claims of a valid refresh token, unexpired at `now` (its single use is checked in
    /// storage).
    pub fn verify_refresh(&self, token: &str, now: DateTime<Utc>) -> Result<RefreshClaims> {
        let claims = self.verify(token, REFRESH_AUDIENCE, "refresh", now)?;
        let family = claims.fam.ok_or_else(invalid_token)?;
        let session_started_at = claims.sst.and_then(|t| DateTime::from_timestamp(t, 0)).ok_or_else(invalid_token)?;
        Ok(RefreshClaims { user_id: parse_sub(&claims.sub)?, jti: claims.jti, family, session_started_at })
    }

    fn sign(&self, claims: Claims) -> Result<String> {
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing token: {e}")))
    }

    fn verify(&self, token: &str, audience: &str, typ: &str, now: DateTime<Utc>) -> Result<Claims> {
        if token.len() > 4096 {
            return Err(invalid_token());
        }
        let mut v = Validation::new(Algorithm::HS256);
        // Times are checked below against `now`, the system's clock (or the one it was built
        // with), not the library's reading of the system clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let data = decode::<Claims>(token, &self.decoding, &v).map_err(|_| invalid_token())?;
        let now = now.timestamp();
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
        if data.claims.typ != typ || data.claims.iat > now + leeway {
            return Err(invalid_token());
        }
        if data.claims.exp.saturating_add(leeway) < now {
            return Err(Error::Unauthorized("token has expired".into()));
        }
        Ok(data.claims)
    }
}

/// `t + d`, or the latest representable time when that overflows (a lifetime configured as
/// "forever").
fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn invalid_token() -> Error {
    Error::Unauthorized("token is invalid".into())
}

fn parse_sub(sub: &str) -> Result<UserId> {
    sub.parse::<i64>().ok().filter(|id| *id > 0).map(UserId::new).ok_or_else(invalid_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&[7u8; 32], Duration::minutes(60), Duration::days(1), Duration::days(30)).unwrap()
    }

    #[test]
    fn access_and_refresh_tokens_verify_only_as_their_own_kind() {
        let k = keys();
        let pair = k.issue_pair(UserId::new(9), "fam", Utc::now(), "jti-1", Utc::now()).unwrap();
        assert_eq!(
            k.verify_access(&pair.access, Utc::now()).unwrap(),
            AccessClaims { user_id: UserId::new(9), session: "fam".into() }
        );
        let r = k.verify_refresh(&pair.refresh, Utc::now()).unwrap();
        assert_eq!((r.user_id, r.jti.as_str(), r.family.as_str()), (UserId::new(9), "jti-1", "fam"));
        assert!(matches!(k.verify_access(&pair.refresh, Utc::now()), Err(Error::Unauthorized(_))));
        assert!(matches!(k.verify_refresh(&pair.access, Utc::now()), Err(Error::Unauthorized(_))));
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_rejected() {
        let k = keys();
        let old = k
            .issue_pair(UserId::new(1), "f", Utc::now() - Duration::days(2), "j", Utc::now() - Duration::days(2))
            .unwrap();
        assert!(
            matches!(k.verify_access(&old.access, Utc::now()), Err(Error::Unauthorized(m)) if m.contains("expired"))
        );
        assert!(k.verify_refresh(&old.refresh, Utc::now()).is_err());
        let pair = k.issue_pair(UserId::new(1), "f", Utc::now(), "j", Utc::now()).unwrap();
        let mut tampered = pair.access.clone();
        tampered.pop();
        assert!(k.verify_access(&tampered, Utc::now()).is_err());
        let other = TokenKeys::new(&[8u8; 32], Duration::minutes(1), Duration::minutes(1), Duration::days(1)).unwrap();
        assert!(other.verify_access(&pair.access, Utc::now()).is_err());
        assert!(k.verify_access("", Utc::now()).is_err());
        assert!(k.verify_access(&"a".repeat(10_000), Utc::now()).is_err());
    }

    #[test]
    fn just_expired_tokens_get_only_the_small_leeway() {
        let k = TokenKeys::new(&[7u8; 32], Duration::seconds(60), Duration::days(1), Duration::days(30)).unwrap();
        let pair = k.issue_pair(UserId::new(1), "f", Utc::now(), "j", Utc::now() - Duration::seconds(80)).unwrap();
        assert!(k.verify_access(&pair.access, Utc::now()).is_err());
        // Expiry is judged at the time given, not the system's.
        let issued = Utc::now();
        let fresh = k.issue_pair(UserId::new(1), "f", issued, "j", issued).unwrap();
        let leeway = i64::try_from(LEEWAY_SECS).unwrap();
        assert!(k.verify_access(&fresh.access, issued + Duration::seconds(60 + leeway)).is_ok());
        let late = k.verify_access(&fresh.access, issued + Duration::seconds(61 + leeway));
        assert!(matches!(late, Err(Error::Unauthorized(m)) if m.contains("expired")));
    }

    #[test]
    fn refresh_tokens_never_outlive_their_session() {
        let k = TokenKeys::new(&[7u8; 32], Duration::minutes(60), Duration::days(1), Duration::days(30)).unwrap();
        let started = Utc::now() - Duration::days(29) - Duration::hours(23);
        let now = Utc::now();
        let pair = k.issue_pair(UserId::new(1), "f", started, "j", now).unwrap();
        assert!(pair.refresh_expires_in <= 3600, "{}", pair.refresh_expires_in);
        let claims = k.verify_refresh(&pair.refresh, Utc::now()).unwrap();
        assert_eq!(claims.session_started_at.timestamp(), started.timestamp());
    }

    #[test]
    fn lifetimes_configured_as_forever_do_not_overflow() {
        let k = TokenKeys::new(&[7u8; 32], Duration::MAX, Duration::MAX, Duration::MAX).unwrap();
        let pair = k.issue_pair(UserId::new(1), "f", Utc::now(), "j", Utc::now());
        assert!(pair.is_ok_and(|p| k.verify_access(&p.access, Utc::now()).is_ok()));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenKeys::new(b"short", Duration::minutes(1), Duration::minutes(1), Duration::days(1)).is_err());
    }
}
