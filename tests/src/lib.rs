//! Fixtures for mcp-delegate's integration tests: throwaway PostgreSQL
//! clusters ([`pg`]), the real host binary as a child process ([`host`]),
//! and plugin directories holding the real plugin libraries ([`paths`]).
//! Nothing here mocks the host or the database.

pub mod bench;
pub mod function_rules;
pub mod function_table;
pub mod host;
pub mod idp;
pub mod paths;
pub mod pg;
pub mod pgfixture;
