//! Qiao (桥): an integration gateway between ERP, CRM, OA, WMS and MES systems.
//!
//! The path of one message: ingress → route lookup → admit → parse → validate → map →
//! dispatch → deliver → answer. docs/architecture.md draws it; each step is a plain
//! function in [`pipeline`], each testable alone.

pub mod admin;
pub mod auth;
pub mod check;
pub mod cli;
pub mod condition;
pub mod config;
pub mod diag;
pub mod dlq;
pub mod error;
pub mod headers;
pub mod ingress;
pub mod journal;
pub mod json;
pub mod limits;
pub mod logging;
pub mod mapping;
pub mod pipeline;
pub mod redact;
pub mod replay;
pub mod routing;
pub mod runtime;
pub mod schema;
pub mod server;
pub mod simulate;
pub mod stub;
pub mod success;
pub mod telemetry;
pub mod testing;
pub mod yaml;

#[cfg(test)]
mod layout_tests;
