//! The `som` binary: operator commands, SIGKILL crash tests, deployment files.
//!
//! One test binary per crate: each file below is a module, so the crate's integration tests
//! link once.

mod cli;
mod crash;
mod deploy;
mod fulfilment;
