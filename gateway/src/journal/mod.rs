//! The journal: every message's journey, written as NDJSON off the hot path, read back by
//! `qiao journal` and `qiao replay`. docs/journal.md describes the files and their fields.

pub mod record;

pub use record::Record;
