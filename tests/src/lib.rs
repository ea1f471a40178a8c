//! Fixtures for mcp-delegate's integration tests: throwaway PostgreSQL
//! clusters ([`pg`]), the real host binary as a child process ([`host`]),
//! and plugin directories holding the real plugin libraries ([`paths`]).
//! Nothing here mocks the host or the database; [`fake_pg`] is an
//! attacker's server (and a man in the middle) for the tests of the
//! module's authentication.

pub mod audit_sweep;
pub mod bench;
pub mod fake_pg;
pub mod function_rules;
pub mod function_table;
pub mod generation;
pub mod host;
pub mod idp;
pub mod load;
pub mod nginx;
pub mod paths;
pub mod pg;
pub mod pgbouncer;
pub mod pgfixture;
pub mod sweep;
