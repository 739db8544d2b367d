//! monsys: a self-hosted, highly available hub cluster for fleet monitoring and emergency access.
//!
//! One binary, several roles (`monsys hub`, `monsys ctl`). Reading order, following a request:
//! - [`cli`] / [`config`]: what the operator asked for;
//! - [`node`]: wiring and lifecycle of a hub node (Raft, gossip, HTTP server, bootstrap/join),
//!   with [`lifecycle`] (every task tracked, one stop signal);
//! - [`api`]: the one route table; handlers extract, call a service, map errors once
//!   ([`error`]); [`hub`] is the router state made of those services;
//! - [`auth`]: who is calling (sessions, API keys, break-glass token) and what they may do;
//! - [`routing`]: every node accepts every request and forwards it (one hop) to the Raft leader
//!   or to an actor's owner;
//! - [`ingest`]: the agent plane: the ingest service, per-agent actors on the owner, group
//!   commit, background jobs;
//! - [`replica`]: this node's handle on the replicated state (`monsys-raft`): propose, commit,
//!   barriers, index waits, one write error; [`batch`] shares entries between writers;
//! - [`cluster`]: gossip, membership changes, status, the Raft transport over HTTP, the link
//!   seam for fault injection; [`audit`]: audit events recorded after the fact;
//! - [`metrics`], [`secrets`], [`clock`]: Prometheus registry per node; node id, cluster
//!   secret, tokens; the wall clock.
//!
//! See ARCHITECTURE.md for the invariants.

pub mod api;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod error;
pub mod hub;
pub mod ingest;
pub mod lifecycle;
pub mod mail;
pub mod metrics;
pub mod node;
pub mod ratelimit;
pub mod replica;
pub mod routing;
pub mod secrets;
pub mod server;
