//! som-core's integration tests: the storage conformance suite on each backend, OrderSystem end to end, and a model-based property test.
//!
//! One test binary per crate: each file below is a module, so the crate's integration tests
//! link once.

mod capture;
mod model;
#[cfg(feature = "postgres")]
mod postgres_conformance;
#[cfg(feature = "postgres")]
mod postgres_replicas;
#[cfg(feature = "postgres")]
mod postgres_system;
mod shape;
mod sqlite_conformance;
mod system;
