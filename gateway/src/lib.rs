//! Qiao (桥): an integration gateway between ERP, CRM, OA, WMS and MES systems.
//!
//! The path of one message: ingress → route lookup → admit → parse → validate → map →
//! dispatch → deliver → answer. docs/architecture.md draws it; each step is a plain
//! function in [`pipeline`], each testable alone.

pub mod config;
pub mod error;
pub mod mapping;
pub mod routing;
pub mod schema;
