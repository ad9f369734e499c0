//! # som-core
//!
//! Smart Order Management as a library: accounts with JWT sessions, orders with exact totals,
//! payments through a replaceable provider, and notifications that cannot be lost (a
//! transactional outbox). Everything goes through one facade, [`OrderSystem`].
//!
//! ```
//! use som_core::{Config, OrderSystem, Registration};
//! use som_core::domain::{ItemInput, OrderInput};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> som_core::Result<()> {
//! let config = Config { database_url: "sqlite::memory:".into(), ..Config::default() };
//! let som = OrderSystem::builder().config(config).build().await?;
//!
//! som.register(Registration {
//!     username: "alice".into(),
//!     email: Some("alice@example.com".into()),
//!     password: "correct horse battery".into(),
//! })
//! .await?;
//! let tokens = som.login("alice", "correct horse battery").await?;
//! let alice = som.authenticate(&tokens.access).await?;
//!
//! let order = som
//!     .create_order(
//!         alice,
//!         OrderInput {
//!             items: vec![
//!                 ItemInput { name: "Widget".into(), quantity: 2, price: "100.00".into() },
//!                 ItemInput { name: "Gadget".into(), quantity: 1, price: "50.00".into() },
//!             ],
//!             currency: None,
//!         },
//!     )
//!     .idempotency_key("order-0001") // optional: a repeat returns this order, nothing twice
//!     .await?;
//! assert_eq!(order.total.to_string(), "250.00 USD");
//!
//! let payment = som.initiate_payment(alice, order.id).await?;
//! let payment = som.confirm_payment(alice, payment.id).await?;
//! assert_eq!(som.order(alice, order.id).await?.status.as_str(), "PAID");
//! assert_eq!(som.dispatch_once().await?, 2); // order created + payment succeeded
//! # let _ = payment;
//! # Ok(())
//! # }
//! ```
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | yes | the embedded SQLite backend (`sqlite://…`, `sqlite::memory:`; rusqlite, bundled) |
//! | `postgres` | no | the PostgreSQL backend (`postgres://…`; sqlx) for many processes on one database |
//! | `smtp` | no | email notifications (`SOM_NOTIFIER=smtp`; lettre) |
//! | `webhook` | no | signed webhook notifications (`SOM_NOTIFIER=webhook`; reqwest) |
//! | `stripe` | no | the Stripe payment provider (`SOM_PAYMENT_PROVIDER=stripe`; reqwest) and Stripe's signed events |
//! | `test-support` | no | the storage conformance suite, a recording notifier, and with `postgres` throwaway databases |
//!
//! An app that embeds only SQLite builds none of sqlx, lettre or reqwest:
//! `som-core = { version = "0.1", default-features = false, features = ["sqlite"] }`. The `som`
//! binary and `som-server` enable all five. Naming a backend or channel the build lacks is a
//! configuration error that says which feature to enable.
//!
//! A tour of the crate:

/// Passwords (argon2id) and JWT access / refresh tokens.
pub mod auth;
/// Time, read in one place (a manual clock in tests).
pub mod clock;
/// Configuration from `SOM_*` environment variables.
pub mod config;
/// Pure domain types and rules: ids, money, users, orders, payments, events.
pub mod domain;
/// The one error type, with a kind for front ends.
pub mod error;
/// Network addresses: CIDR ranges.
pub mod net;
/// The Notifier trait, its implementations and the outbox dispatcher.
pub mod notify;
/// The PaymentProvider trait and the mock provider.
pub mod payment;
/// Stripe-style request signatures (SOM's own webhooks and Stripe's events).
#[cfg(any(feature = "webhook", feature = "stripe"))]
pub mod signature;
/// The Storage trait and its backends.
pub mod storage;
/// The OrderSystem facade.
pub mod system;
/// Small helpers every layer may use: random tokens, hex, secrets, redacted URLs.
pub mod util;

/// Helpers for tests of SOM and of code built on it: the backend matrix, fixtures,
/// throwaway PostgreSQL databases and a local Stripe-compatible server.
#[cfg(feature = "test-support")]
pub mod testing;

pub use auth::TokenPair;
pub use config::Config;
pub use domain::Caller;
pub use error::{Error, ErrorKind, Result, ValidationErrors};
pub use system::{
    Activity, CurrencyActivity, EventOutcome, EventReceipt, FulfillmentInput, MAX_ADMIN_PAGE_SIZE,
    NotificationListQuery, OrderListQuery, OrderSystem, OrderSystemBuilder, Overview, Page, Registration, ReturnInput,
    ShipInput, UserListQuery,
};
#[cfg(feature = "webhook")]
pub use system::{DeliveryListQuery, EndpointInput, EndpointPatch, Redelivery};
pub use system::{ExportFormat, OrderExport, OrderExportQuery};
