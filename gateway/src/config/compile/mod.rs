//! Raw config → compiled config, reporting every problem with its place.
//!
//! `systems.rs` compiles the server section and the systems (HTTP clients, AMQP brokers);
//! `routes.rs` compiles routes: sources, schemas, maps and destinations.

mod clients;
mod limits;
mod routes;
mod systems;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::Method;
use indexmap::IndexMap;
use qiao_connectors::amqp::Topology;

use super::env::{EnvSource, interpolate};
use super::model::{Config, Route, System};
use super::raw::{RawFile, Text};
use super::{Diagnostic, Place};
use crate::mapping::Lookup;
use crate::routing::{AddError, Router};

const METHODS: [&str; 9] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE"];

struct Ctx<'a> {
    dir: &'a Path,
    env: &'a dyn EnvSource,
    diags: Vec<Diagnostic>,
    /// What each broker (by URL) must have declared, gathered from systems and routes.
    brokers: IndexMap<String, Topology>,
    /// Systems whose transport failed to compile: their error is reported once, not again
    /// for every destination that names them.
    broken: std::collections::HashSet<String>,
}

impl Ctx<'_> {
    fn error(&mut self, place: Place, message: impl Into<String>, hint: Option<String>) {
        let mut d = Diagnostic::error(place, message);
        d.hint = hint;
        self.diags.push(d);
    }

    fn warning(&mut self, place: Place, message: impl Into<String>, hint: Option<String>) {
        let mut d = Diagnostic::warning(place, message);
        d.hint = hint;
        self.diags.push(d);
    }

    fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }

    /// `${ENV}` interpolation of a field that accepts it.
    fn env_value(&mut self, file: &Path, text: &Text) -> Option<String> {
        match interpolate(&text.value, self.env) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut place = Place::at(file, &text.referenced);
                // Point at the `${` itself when the value sits on one line.
                if !text.value[..e.offset].contains('\n') {
                    place.column += text.value[..e.offset].chars().count() as u64;
                }
                self.error(place, e.message, Some(e.hint.into()));
                None
            }
        }
    }
}

/// Compiles the parsed files of config directory `dir`.
pub fn compile(dir: &Path, files: &[(PathBuf, RawFile)], env: &dyn EnvSource) -> Result<Config, Vec<Diagnostic>> {
    let mut cx = Ctx { dir, env, diags: Vec::new(), brokers: IndexMap::new(), broken: Default::default() };

    let server = systems::compile_server(&mut cx, files);
    let lookups = compile_lookups(&mut cx, files);
    let systems = systems::compile_systems(&mut cx, files);

    let mut routes: Vec<Arc<Route>> = Vec::new();
    let mut route_places: HashMap<String, Place> = HashMap::new();
    // Paths are registered from the raw config, before (and whether or not) each route
    // compiles, so that a clash is reported together with the routes' other errors. With
    // no error at all, every route compiled and `owners` lines up with `routes`, which is
    // what the router's values index.
    let mut router = Router::default();
    let mut owners: Vec<(String, PathBuf)> = Vec::new();
    for (file, raw) in files {
        for (name, route) in &raw.routes {
            let place = Place::at(file, &name.referenced);
            if let Some(first) = route_places.get(&name.value) {
                cx.error(
                    place,
                    format!("route `{}` is defined twice", name.value),
                    Some(format!("first defined at {first}")),
                );
                continue;
            }
            route_places.insert(name.value.clone(), place.clone());
            check_name(&mut cx, &place, "route", &name.value);
            // Every route takes a slot, HTTP or not: router values index `routes`.
            let slot = owners.len();
            owners.push((name.value.clone(), file.clone()));
            let path_ok = match routes::http_key(route) {
                Some((path, methods)) => {
                    let path_text = &route.from.value.http.as_ref().expect("an HTTP source").path;
                    let place = Place::at(file, &path_text.referenced);
                    let added = router.add(&path, &methods, slot);
                    report_path_clash(&mut cx, place, &path, &methods, added, &owners)
                }
                None => true,
            };
            let Some(compiled) = routes::compile_route(&mut cx, file, &name.value, route, &server, &systems, &lookups)
            else {
                continue;
            };
            if !path_ok {
                continue;
            }
            let mut compiled = compiled;
            compiled.index = routes.len();
            routes.push(Arc::new(compiled));
        }
    }

    warn_unused_shared_lookups(&mut cx, files);
    let auth = clients::compile_auth(&mut cx, files, &routes);
    if cx.error_count() > 0 {
        return Err(cx.diags);
    }
    assert_eq!(owners.len(), routes.len(), "router slots must index the compiled routes");
    Ok(Config {
        dir: dir.to_path_buf(),
        hash: super::load::hash_dir(dir),
        server,
        systems,
        routes,
        router,
        auth: Arc::new(auth),
        brokers: cx.brokers,
        warnings: cx.diags,
    })
}

/// Reports what [`Router::add`] refused; `true` when the path was taken.
fn report_path_clash(
    cx: &mut Ctx<'_>,
    place: Place,
    path: &str,
    methods: &[Option<Method>],
    added: Result<(), AddError>,
    owners: &[(String, PathBuf)],
) -> bool {
    match added {
        Ok(()) => true,
        Err(AddError::Duplicate { other }) => {
            let (other, other_file) = &owners[other];
            cx.error(
                place,
                format!("duplicate route path: route `{other}` already takes {} {path}", methods_text(methods)),
                Some(format!("route `{other}` is defined in {}", other_file.display())),
            );
            false
        }
        Err(AddError::Invalid { detail }) => {
            cx.error(
                place,
                format!("route path `{path}` is not a valid pattern: {detail}"),
                Some("`{name}` matches one segment, `{*name}` the rest of the path and must come last; see docs/configuration.md#paths".into()),
            );
            false
        }
        Err(AddError::Conflict { detail }) => {
            cx.error(
                place,
                format!("route path `{path}` overlaps another route's path: {detail}"),
                Some("two patterns may not differ only in a parameter name; see docs/configuration.md#paths".into()),
            );
            false
        }
    }
}

fn compile_lookups(cx: &mut Ctx<'_>, files: &[(PathBuf, RawFile)]) -> HashMap<String, Arc<Lookup>> {
    let mut lookups: HashMap<String, Arc<Lookup>> = HashMap::new();
    let mut places: HashMap<String, Place> = HashMap::new();
    for (file, raw) in files {
        for (name, table) in &raw.lookups {
            let place = Place::at(file, &name.referenced);
            if let Some(first) = places.get(&name.value) {
                cx.error(
                    place,
                    format!("lookup table `{}` is defined twice", name.value),
                    Some(format!("first defined at {first}")),
                );
                continue;
            }
            places.insert(name.value.clone(), place);
            lookups.insert(name.value.clone(), Arc::new(Lookup::from_raw(&name.value, table)));
        }
    }
    lookups
}

/// A shared lookup table that no route's map names is probably a typo or left over.
fn warn_unused_shared_lookups(cx: &mut Ctx<'_>, files: &[(PathBuf, RawFile)]) {
    for (file, raw) in files {
        for name in raw.lookups.keys() {
            let used = files.iter().any(|(_, f)| f.routes.values().any(|r| routes::route_names_lookup(r, &name.value)));
            if !used {
                cx.warning(
                    Place::at(file, &name.referenced),
                    format!("lookup table `{}` is never used", name.value),
                    None,
                );
            }
        }
    }
}

fn methods_text(methods: &[Option<Method>]) -> String {
    if methods.iter().any(Option::is_none) {
        return "every method on".into();
    }
    methods.iter().flatten().map(Method::as_str).collect::<Vec<_>>().join(",")
}

fn check_name(cx: &mut Ctx<'_>, place: &Place, what: &str, name: &str) {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        cx.error(
            place.clone(),
            format!("{what} name `{name}` may only use ASCII letters, digits, `-`, `_` and `.`"),
            Some("names appear in metrics, logs and queue names; put free text in `description`".into()),
        );
    }
}

fn parse_method(cx: &mut Ctx<'_>, file: &Path, m: &Text) -> Option<Method> {
    let upper = m.value.trim().to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        Some(Method::from_bytes(upper.as_bytes()).expect("known method"))
    } else {
        cx.error(
            Place::at(file, &m.referenced),
            format!("unknown HTTP method `{}`", m.value),
            Some(super::suggest(&upper, METHODS)),
        );
        None
    }
}

/// Names of systems for hints.
fn system_names(systems: &IndexMap<String, Arc<System>>) -> impl Iterator<Item = &str> + Clone {
    systems.keys().map(String::as_str)
}
