//! Cross-crate tests: the HTTP API end to end, hang-ups, outages, email and webhooks, the browser.
//!
//! One test binary per crate: each file below is a module, so the crate's integration tests
//! link once.

mod browser;
mod cancellation;
mod capture;
mod console;
mod console_fulfilment;
mod export;
mod fulfillment;
mod http;
mod notifications;
mod outage;
mod scale;
mod stream;
mod stripe;
mod webhooks;
