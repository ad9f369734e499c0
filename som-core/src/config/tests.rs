use super::*;
use std::collections::HashMap;

fn with(vars: &[(&str, &str)]) -> Result<Config> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_match_the_documented_table() {
    let c = with(&[]).unwrap();
    assert_eq!(c.database_url, "sqlite://som.db");
    assert_eq!(c.access_token_ttl, Duration::from_secs(3600));
    assert_eq!(c.refresh_token_ttl, Duration::from_secs(86_400));
    assert_eq!(c.listen, "127.0.0.1:8000");
    assert_eq!(c.auth_rate_limit, 60);
    assert_eq!(c.notifiers, vec!["log"]);
    assert!(c.jwt_secret.is_none());
}

#[test]
fn every_bad_variable_is_named() {
    let err = with(&[("SOM_ACCESS_TOKEN_TTL", "soon"), ("SOM_CURRENCY", "XYZ"), ("SOM_JWT_SECRET", "short")])
        .err()
        .and_then(|e| e.validation_errors().cloned())
        .unwrap_or_default();
    let names: Vec<&str> = err.fields().keys().map(String::as_str).collect();
    assert_eq!(names, vec!["SOM_ACCESS_TOKEN_TTL", "SOM_CURRENCY", "SOM_JWT_SECRET"]);
}

#[test]
fn the_session_cache_is_trusted_at_most_a_minute() {
    assert_eq!(with(&[("SOM_SESSION_CACHE_TTL", "60s")]).unwrap().session_cache_ttl, MAX_SESSION_CACHE_TTL);
    assert_eq!(with(&[("SOM_SESSION_CACHE_TTL", "0")]).unwrap().session_cache_ttl, Duration::ZERO);
    for long in ["61s", "2m", "3650d"] {
        let err = with(&[("SOM_SESSION_CACHE_TTL", long)]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("SOM_SESSION_CACHE_TTL") && err.contains("60s"), "{long} was accepted: {err}");
    }
}

#[test]
fn one_address_gets_a_quarter_of_the_connections_unless_told() {
    assert_eq!(with(&[]).unwrap().connections_per_address(), 256);
    assert_eq!(with(&[("SOM_MAX_CONNECTIONS", "3")]).unwrap().connections_per_address(), 1);
    let set = with(&[("SOM_MAX_CONNECTIONS", "10"), ("SOM_MAX_CONNECTIONS_PER_ADDRESS", "4")]).unwrap();
    assert_eq!(set.connections_per_address(), 4);
    let over = with(&[("SOM_MAX_CONNECTIONS", "10"), ("SOM_MAX_CONNECTIONS_PER_ADDRESS", "40")]).unwrap();
    assert_eq!(over.connections_per_address(), 10);
}

#[test]
fn misspelled_settings_are_found_with_the_name_meant() {
    let names = ["SOM_DATABSE_URL", "SOM_NOTIFER", "SOM_LISTEN", "SOM_TEST_PYTHON", "SOM_WHATEVER_ELSE", "PATH"];
    let unknown = unknown_variables(names.iter().map(|n| (*n).to_owned()));
    assert_eq!(
        unknown,
        vec![
            ("SOM_DATABSE_URL".to_owned(), Some("SOM_DATABASE_URL")),
            ("SOM_NOTIFER".to_owned(), Some("SOM_NOTIFIER")),
            ("SOM_WHATEVER_ELSE".to_owned(), None),
        ]
    );
}

#[test]
fn durations_take_units() {
    assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("1w"), None);
    assert_eq!(parse_duration(""), None);
}

#[test]
fn secrets_and_passwords_in_urls_are_redacted() {
    assert_eq!(format!("{:?}", Secret::new("hunter2")), "<redacted>");
    assert_eq!(redact_url("postgres://som:pw@db:5432/som"), "postgres://som:***@db:5432/som");
    assert_eq!(redact_url("postgres://som:pw@db/som#frag"), "postgres://som:***@db/som#frag");
    assert_eq!(redact_url("sqlite://som.db"), "sqlite://som.db");
    assert_eq!(redact_url("postgres://som:p@ss:w@rd@db:5432/som?x=@"), "postgres://som:***@db:5432/som?x=@");
    assert_eq!(redact_url("postgres://som@db/som"), "postgres://som@db/som");
    assert_eq!(
        redact_url("postgres://db/som?user=som&password=hunter2&sslmode=require"),
        "postgres://db/som?user=som&password=***&sslmode=require"
    );
    assert_eq!(
        redact_url("postgres://a:b@db/som?sslpassword=x&SSLKEY=/k&passfile=/p&application_name=som#f"),
        "postgres://a:***@db/som?sslpassword=***&SSLKEY=***&passfile=***&application_name=som#f"
    );
    assert_eq!(redact_url("smtp://mail:25?tls=none&auth_token=t"), "smtp://mail:25?tls=none&auth_token=***");
}

#[test]
fn weak_and_placeholder_jwt_secrets_are_refused() {
    for bad in [
        "short",
        &"a".repeat(64),
        "change-me-to-a-long-random-secret-of-32-bytes",
        "please-CHANGE-ME-before-production-0123456789",
    ] {
        let err = with(&[("SOM_JWT_SECRET", bad)]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("SOM_JWT_SECRET"), "{bad:?} was accepted");
    }
    assert!(with(&[("SOM_JWT_SECRET", "0123456789abcdef0123456789abcdef")]).is_ok());
}

#[test]
fn a_wildcard_cors_origin_is_a_configuration_error() {
    let err = with(&[("SOM_CORS_ORIGINS", "*")]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("SOM_CORS_ORIGINS"), "{err}");
    assert!(with(&[("SOM_CORS_ORIGINS", "https://app.example.com")]).is_ok());
}

#[test]
fn trusted_proxies_are_addresses_or_ranges() {
    let c = with(&[("SOM_TRUSTED_PROXIES", "10.0.0.0/8, ::1")]).unwrap();
    assert_eq!(c.trusted_proxies, vec!["10.0.0.0/8".to_owned(), "::1".to_owned()]);
    assert!(with(&[("SOM_TRUSTED_PROXIES", "proxy.local")]).is_err());
}

#[test]
fn urls_name_relative_absolute_and_memory_databases() {
    assert_eq!(sqlite_file("sqlite://som.db").unwrap(), Some(std::path::PathBuf::from("som.db")));
    assert_eq!(sqlite_file("sqlite:///tmp/x/som.db").unwrap(), Some(std::path::PathBuf::from("/tmp/x/som.db")));
    assert_eq!(sqlite_file("sqlite:som.db?mode=rwc").unwrap(), Some(std::path::PathBuf::from("som.db")));
    assert_eq!(sqlite_file("sqlite::memory:").unwrap(), None);
    assert_eq!(sqlite_file("sqlite://:memory:").unwrap(), None);
    assert!(sqlite_file("sqlite://").is_err());
    assert!(sqlite_file("postgres://x").is_err());
}
