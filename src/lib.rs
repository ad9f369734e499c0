//! Shared helpers for the workspace examples and end-to-end tests.
