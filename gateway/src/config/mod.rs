//! Configuration: raw files → compiled config.
//!
//! `load` reads every YAML file of the config directory into [`raw`] structs (shape only);
//! `compile` resolves references, compiles schemas and mappings and builds the route
//! index, reporting every problem it finds with its file, line and column. Startup, reload
//! and `qiao check` all take this same path.

mod compile;
mod effective;
pub mod env;
mod kind;
pub(crate) mod load;
mod model;
pub mod raw;

pub use crate::diag::{Diagnostic, Place, Severity, nearest, suggest};
pub use crate::yaml::parse_yaml;
pub use compile::compile;
pub use effective::effective;
pub use env::{EnvSource, OfflineEnv, Overlay, ProcessEnv};
pub use kind::SystemKind;
pub use load::{hash_dir, load_dir};
pub use model::{
    AmqpSettings, AmqpSource, Config, Destination, JournalSettings, ProxyTarget, Route, RouteJournal, RouteKind,
    ServerSettings, Source, System, Via,
};

use std::path::Path;

/// Loads and compiles the config directory. On success, also returns the warnings.
pub fn load(dir: &Path, env: &dyn EnvSource) -> Result<Config, Vec<Diagnostic>> {
    let (files, mut diags) = load_dir(dir);
    match compile(dir, &files, env) {
        Ok(mut config) => {
            // A file's unknown keys fail the config; its other findings are said as well.
            diags.append(&mut config.warnings);
            if diags.iter().any(Diagnostic::is_error) {
                return Err(diags);
            }
            config.warnings = diags;
            Ok(config)
        }
        Err(mut more) => {
            diags.append(&mut more);
            Err(diags)
        }
    }
}
