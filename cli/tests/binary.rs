//! The `keyserver` command as a user runs it: a server process, its client
//! commands, configuration, principals and audit, hostile connections, and
//! several servers on one PostgreSQL database.
//! - `cli`: the client commands end to end against a server process;
//! - `auth`: principals, tokens and permissions, SIGHUP reloads;
//! - `audit`: the audit log of a server process, its restarts and `verify`;
//! - `custody`: a KEK and an audit key in custodian shares;
//! - `seal`: records sealed under a master key in SoftHSM2;
//! - `hostile`: connections that never finish, more of them than the
//!   server may hold, bodies that would pin its memory, web pages, and
//!   SIGTERM with CPU work in flight;
//! - `postgres`: several servers on one PostgreSQL database, a server
//!   killed and the database crashed under load, copies and backups;
//! - `partition`: the database and three servers on hosts of their own
//!   (network namespaces), cut apart and healed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// The helpers the library's tests use too (fixtures, vectors, servers).
#[path = "../../tests/conformance/common.rs"]
mod common;

#[path = "binary/audit.rs"]
mod audit;
#[path = "binary/auth.rs"]
mod auth;
#[path = "binary/cli.rs"]
mod cli;
#[path = "binary/custody.rs"]
mod custody;
#[path = "binary/hostile.rs"]
mod hostile;
#[path = "binary/partition.rs"]
mod partition;
#[path = "binary/postgres.rs"]
mod postgres;
#[path = "binary/seal.rs"]
mod seal;
