//! Raw config → compiled config, reporting every problem with its place.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::{HeaderName, HeaderValue};
use indexmap::IndexMap;
use qiao_connectors::RetryPolicy;
use qiao_connectors::http::{HttpAuth, HttpSink, HttpSinkConfig};

use super::env::{EnvSource, interpolate};
use super::model::{Config, Destination, ProxyTarget, Route, RouteKind, ServerSettings, System};
use super::raw::{RawAuth, RawDestination, RawFile, RawHttpTransport, RawRoute, RawServer, Text};
use super::{Diagnostic, Place, suggest};
use crate::mapping::{self, Lookup, Root, Template, Uses};
use crate::routing::{AddError, Router};
use crate::schema::Schema;

const METHODS: [&str; 9] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE"];

struct Ctx<'a> {
    dir: &'a Path,
    env: &'a dyn EnvSource,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn error(&mut self, place: Place, message: impl Into<String>, hint: Option<String>) {
        let mut d = Diagnostic::error(place, message);
        d.hint = hint;
        self.diags.push(d);
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
                self.error(place, e.message, Some("set the variable, or give a default: `${NAME:-value}`".into()));
                None
            }
        }
    }
}

/// Compiles the parsed files of config directory `dir`.
pub fn compile(dir: &Path, files: &[(PathBuf, RawFile)], env: &dyn EnvSource) -> Result<Config, Vec<Diagnostic>> {
    let mut cx = Ctx { dir, env, diags: Vec::new() };

    let server = compile_server(&mut cx, files);

    // Shared lookup tables.
    let mut lookups: HashMap<String, Arc<Lookup>> = HashMap::new();
    let mut lookup_places: HashMap<String, Place> = HashMap::new();
    for (file, raw) in files {
        for (name, table) in &raw.lookups {
            let place = Place::at(file, &name.referenced);
            if let Some(first) = lookup_places.get(&name.value) {
                cx.error(
                    place,
                    format!("lookup table `{}` is defined twice", name.value),
                    Some(format!("first defined at {first}")),
                );
                continue;
            }
            lookup_places.insert(name.value.clone(), place);
            lookups.insert(name.value.clone(), Arc::new(Lookup::from_raw(&name.value, table)));
        }
    }

    // Systems.
    let mut systems: IndexMap<String, Arc<System>> = IndexMap::new();
    let mut system_places: HashMap<String, Place> = HashMap::new();
    for (file, raw) in files {
        for (name, sys) in &raw.systems {
            let place = Place::at(file, &name.referenced);
            if let Some(first) = system_places.get(&name.value) {
                cx.error(
                    place,
                    format!("system `{}` is defined twice", name.value),
                    Some(format!("first defined at {first}")),
                );
                continue;
            }
            system_places.insert(name.value.clone(), place.clone());
            check_name(&mut cx, &place, "system", &name.value);
            let (http, proxy) = match &sys.http {
                Some(t) => compile_http(&mut cx, file, &name.value, t).unzip(),
                None => {
                    cx.error(
                        place,
                        format!("system `{}` has no transport", name.value),
                        Some("add an `http:` block with its `base_url`".into()),
                    );
                    (None, None)
                }
            };
            systems.insert(
                name.value.clone(),
                Arc::new(System {
                    name: name.value.clone(),
                    kind: sys.kind.value,
                    description: sys.description.clone(),
                    http,
                    proxy,
                }),
            );
        }
    }

    // Routes.
    let mut routes: Vec<Arc<Route>> = Vec::new();
    let mut route_places: HashMap<String, Place> = HashMap::new();
    let mut router = Router::default();
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
            let Some(compiled) = compile_route(&mut cx, file, &name.value, route, &server, &systems, &lookups) else {
                continue;
            };
            let index = routes.len();
            let path_text = &route.from.value.http.as_ref().expect("compile_route checked").path;
            match router.add(&compiled.path, &compiled.methods, index) {
                Ok(()) => routes.push(Arc::new(compiled)),
                Err(AddError::Duplicate { other }) => {
                    let other = &routes[other];
                    cx.error(
                        Place::at(file, &path_text.referenced),
                        format!(
                            "duplicate route path: route `{}` already takes {} {}",
                            other.name,
                            methods_text(&compiled.methods),
                            compiled.path
                        ),
                        Some(format!("route `{}` is defined in {}", other.name, other.file.display())),
                    );
                }
                Err(AddError::Conflict { detail }) => cx.error(
                    Place::at(file, &path_text.referenced),
                    format!("route path `{}` overlaps another route's path: {detail}", compiled.path),
                    Some(
                        "two patterns may not differ only in a parameter name; see docs/configuration.md#paths".into(),
                    ),
                ),
            }
        }
    }

    if cx.diags.iter().any(Diagnostic::is_error) {
        return Err(cx.diags);
    }
    Ok(Config { dir: dir.to_path_buf(), server, systems, routes, router, warnings: cx.diags })
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

fn compile_server(cx: &mut Ctx<'_>, files: &[(PathBuf, RawFile)]) -> ServerSettings {
    let mut settings = ServerSettings::default();
    let mut seen: Option<Place> = None;
    for (file, raw) in files {
        let Some(server) = &raw.server else { continue };
        let place = Place::at(file, &server.referenced);
        if let Some(first) = &seen {
            cx.error(
                place,
                "the `server` section appears in more than one file",
                Some(format!("it is already in {first}")),
            );
            continue;
        }
        seen = Some(place.clone());
        let RawServer {
            listen,
            admin_listen,
            threads,
            max_body_bytes,
            validate_formats,
            grace_period_seconds,
            graceful_shutdown_timeout_seconds,
        } = &server.value;
        for (text, slot) in [(listen, &mut settings.listen), (admin_listen, &mut settings.admin_listen)] {
            if let Some(text) = text
                && let Some(v) = cx.env_value(file, text)
            {
                if v.parse::<std::net::SocketAddr>().is_err() {
                    cx.error(
                        Place::at(file, &text.referenced),
                        format!("`{v}` is not an address to listen on"),
                        Some("write it as host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080".into()),
                    );
                }
                *slot = v;
            }
        }
        if let Some(t) = threads {
            if *t == 0 {
                cx.error(place.clone(), "`threads` must be at least 1", None);
            }
            settings.threads = (*t).max(1);
        }
        if let Some(b) = max_body_bytes {
            settings.max_body_bytes = *b;
        }
        if let Some(v) = validate_formats {
            settings.validate_formats = *v;
        }
        if let Some(s) = grace_period_seconds {
            settings.grace_period_seconds = *s;
        }
        if let Some(s) = graceful_shutdown_timeout_seconds {
            settings.graceful_shutdown_timeout_seconds = *s;
        }
    }
    settings
}

fn compile_http(
    cx: &mut Ctx<'_>,
    file: &Path,
    system: &str,
    raw: &RawHttpTransport,
) -> Option<(HttpSink, ProxyTarget)> {
    let base = cx.env_value(file, &raw.base_url)?;
    let base_place = Place::at(file, &raw.base_url.referenced);
    let url = match url::Url::parse(&base) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        Ok(u) => {
            cx.error(
                base_place,
                format!("base_url `{base}` must be an http:// or https:// URL with a host (scheme is {})", u.scheme()),
                None,
            );
            return None;
        }
        Err(e) => {
            cx.error(
                base_place,
                format!("base_url `{base}` is not a URL: {e}"),
                Some("e.g. http://127.0.0.1:9101 or https://erp.example.com/k3cloud".into()),
            );
            return None;
        }
    };
    if url.query().is_some() || url.fragment().is_some() {
        cx.error(
            base_place.clone(),
            format!("base_url `{base}` may not have a query or fragment"),
            Some("put queries in the destination `path`".into()),
        );
    }

    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let place = Place::at(file, &name.referenced);
        let Ok(hname) = HeaderName::from_bytes(name.value.as_bytes()) else {
            cx.error(place, format!("`{}` is not a valid header name", name.value), None);
            continue;
        };
        let Some(v) = cx.env_value(file, value) else {
            continue;
        };
        match HeaderValue::from_str(&v) {
            Ok(hv) => headers.push((hname, hv)),
            Err(_) => cx.error(
                Place::at(file, &value.referenced),
                format!("the value of header `{}` is not a valid header value", name.value),
                None,
            ),
        }
    }

    let auth = match &raw.auth {
        None => None,
        Some(RawAuth::Basic { username, password }) => {
            let (u, p) = (cx.env_value(file, username), cx.env_value(file, password));
            Some(HttpAuth::Basic { username: u?, password: p? })
        }
        Some(RawAuth::Bearer { token }) => Some(HttpAuth::Bearer { token: cx.env_value(file, token)? }),
        Some(RawAuth::Header { name, value }) => {
            let Ok(hname) = HeaderName::from_bytes(name.value.as_bytes()) else {
                cx.error(
                    Place::at(file, &name.referenced),
                    format!("`{}` is not a valid header name", name.value),
                    None,
                );
                return None;
            };
            Some(HttpAuth::Header { name: hname, value: cx.env_value(file, value)? })
        }
    };
    let mut all_headers = headers.clone();
    if let Some(a) = &auth {
        match a.header() {
            Ok(h) => all_headers.push(h),
            Err(e) => cx.error(base_place.clone(), format!("system `{system}`: {e}"), None),
        }
    }

    let defaults = RetryPolicy::default();
    let retry = match &raw.retry {
        None => defaults,
        Some(r) => RetryPolicy {
            max_attempts: r.max_attempts.unwrap_or(defaults.max_attempts).max(1),
            initial_backoff: r.initial_backoff_ms.map(Duration::from_millis).unwrap_or(defaults.initial_backoff),
            max_backoff: r.max_backoff_ms.map(Duration::from_millis).unwrap_or(defaults.max_backoff),
            retry_statuses: r.retry_statuses.clone().unwrap_or(defaults.retry_statuses),
        },
    };
    let connect_timeout = Duration::from_millis(raw.connect_timeout_ms.unwrap_or(2_000));
    let request_timeout = Duration::from_millis(raw.request_timeout_ms.unwrap_or(10_000));
    let sink = HttpSink::new(HttpSinkConfig {
        system: system.to_string(),
        base_url: url.clone(),
        connect_timeout,
        request_timeout,
        pool_idle_timeout: Duration::from_millis(raw.pool_idle_timeout_ms.unwrap_or(90_000)),
        pool_max_idle_per_host: raw.pool_max_idle_per_host.unwrap_or(256),
        auth,
        headers,
        retry,
    });
    let sink = match sink {
        Ok(s) => s,
        Err(e) => {
            cx.error(base_place, format!("system `{system}`: {e}"), None);
            return None;
        }
    };
    let tls = url.scheme() == "https";
    let host = url.host_str().expect("checked above").to_string();
    let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let proxy = ProxyTarget {
        host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
        port,
        tls,
        base_path: url.path().trim_end_matches('/').to_string(),
        authority,
        connect_timeout,
        read_timeout: request_timeout,
        headers: all_headers,
    };
    Some((sink, proxy))
}

#[allow(clippy::too_many_arguments)]
fn compile_route(
    cx: &mut Ctx<'_>,
    file: &Path,
    name: &str,
    raw: &RawRoute,
    server: &ServerSettings,
    systems: &IndexMap<String, Arc<System>>,
    shared_lookups: &HashMap<String, Arc<Lookup>>,
) -> Option<Route> {
    let errors_before = cx.diags.iter().filter(|d| d.is_error()).count();
    let from_place = Place::at(file, &raw.from.referenced);
    let Some(http) = &raw.from.value.http else {
        cx.error(
            from_place,
            format!("route `{name}` has no source"),
            Some("add `from: { http: { path: /... } }`".into()),
        );
        return None;
    };
    let path = http.path.value.trim().to_string();
    let path_place = Place::at(file, &http.path.referenced);
    if !path.starts_with('/') {
        cx.error(path_place.clone(), format!("route path `{path}` must start with `/`"), None);
    }
    let is_message = raw.schema.is_some() || raw.map.is_some();
    let kind = if is_message { RouteKind::Message } else { RouteKind::Proxy };

    let methods: Vec<Option<Method>> = match &http.methods {
        None if is_message => vec![Some(Method::POST)],
        None => vec![None],
        Some(list) => list
            .iter()
            .filter_map(|m| {
                let upper = m.value.trim().to_ascii_uppercase();
                if upper == "ANY" || upper == "*" {
                    return Some(None);
                }
                if METHODS.contains(&upper.as_str()) {
                    Some(Some(Method::from_bytes(upper.as_bytes()).expect("known method")))
                } else {
                    let hint = suggest(&upper, METHODS);
                    cx.error(Place::at(file, &m.referenced), format!("unknown HTTP method `{}`", m.value), Some(hint));
                    None
                }
            })
            .collect(),
    };
    if methods.is_empty() {
        cx.error(path_place.clone(), "`methods` is empty", Some("list at least one method, e.g. [POST]".into()));
    }

    let validate_formats = raw.validate_formats.unwrap_or(server.validate_formats);
    let schema = raw.schema.as_ref().and_then(|s| {
        let place = Place::at(file, &s.referenced);
        let schema_path = cx.dir.join(&s.value);
        if !schema_path.is_file() {
            cx.error(
                place,
                format!("schema file `{}` not found", s.value),
                Some(format!(
                    "paths are relative to the config directory {}; schemas usually live in schemas/",
                    cx.dir.display()
                )),
            );
            return None;
        }
        match Schema::load(&schema_path, cx.dir, validate_formats) {
            Ok(schema) => Some(Arc::new(schema)),
            Err(e) => {
                cx.error(place, format!("invalid schema: {e}"), Some("see docs/schemas.md".into()));
                None
            }
        }
    });

    // The route's own lookup tables shadow the shared ones.
    let mut lookups = shared_lookups.clone();
    for (lname, table) in &raw.lookups {
        lookups.insert(lname.value.clone(), Arc::new(Lookup::from_raw(&lname.value, table)));
    }
    let mut uses = Uses::default();
    let mapping = raw.map.as_ref().and_then(|m| {
        let env = mapping::CompileEnv { file, lookups: &lookups };
        let compiled = mapping::compile(m, &env, &mut cx.diags)?;
        uses.merge(compiled.uses);
        Some(compiled)
    });
    warn_unused_lookups(cx, file, raw);

    let params = Router::param_names(&path);
    let mut destinations = Vec::new();
    for dest in &raw.to.0 {
        if let Some(d) = compile_destination(cx, file, dest, kind, systems, &params, &mut uses) {
            destinations.push(d);
        }
    }
    if raw.to.0.is_empty() {
        cx.error(
            from_place.clone(),
            format!("route `{name}` has no destination"),
            Some("add `to: { system: ..., path: ... }`".into()),
        );
    }
    if kind == RouteKind::Proxy && raw.to.0.len() > 1 {
        cx.error(
            from_place,
            format!("proxy route `{name}` has {} destinations; a streamed request can go to one", raw.to.0.len()),
            Some("give the route a `schema` or a `map` to make it a message route, which may fan out".into()),
        );
    }

    if cx.diags.iter().filter(|d| d.is_error()).count() > errors_before {
        return None;
    }
    Some(Route {
        name: Arc::from(name),
        description: raw.description.clone(),
        file: file.to_path_buf(),
        kind,
        methods,
        path,
        schema,
        mapping,
        max_body_bytes: raw.max_body_bytes.unwrap_or(server.max_body_bytes),
        destinations,
        uses,
    })
}

fn warn_unused_lookups(cx: &mut Ctx<'_>, file: &Path, raw: &RawRoute) {
    use super::raw::{RawFieldSpec, RawLookupRef, RawMap};
    fn spec_uses(spec: &RawFieldSpec, name: &str) -> bool {
        match spec {
            RawFieldSpec::Path(_) => false,
            RawFieldSpec::Full(ops) => {
                matches!(&ops.lookup, Some(l) if matches!(&l.value, RawLookupRef::Named(n) if n == name))
                    || ops.map.as_ref().is_some_and(|m| map_uses(m, name))
                    || ops.item.as_ref().is_some_and(|i| spec_uses(&i.value, name))
                    || ops.list.as_ref().is_some_and(|l| l.iter().any(|i| spec_uses(&i.value, name)))
            }
        }
    }
    fn map_uses(map: &RawMap, name: &str) -> bool {
        map.values().any(|spec| spec_uses(&spec.value, name))
    }
    for lname in raw.lookups.keys() {
        if !raw.map.as_ref().is_some_and(|m| map_uses(m, &lname.value)) {
            cx.diags.push(Diagnostic::warning(
                Place::at(file, &lname.referenced),
                format!("lookup table `{}` is never used", lname.value),
            ));
        }
    }
}

fn compile_destination(
    cx: &mut Ctx<'_>,
    file: &Path,
    raw: &RawDestination,
    kind: RouteKind,
    systems: &IndexMap<String, Arc<System>>,
    params: &[String],
    uses: &mut Uses,
) -> Option<Destination> {
    let place = Place::at(file, &raw.system.referenced);
    let Some(system) = systems.get(&raw.system.value) else {
        let hint = suggest(&raw.system.value, systems.keys().map(String::as_str));
        cx.error(place, format!("unknown system `{}`", raw.system.value), Some(hint));
        return None;
    };
    if system.http.is_none() {
        cx.error(
            place,
            format!("system `{}` cannot be reached over HTTP", raw.system.value),
            Some("give the system an `http:` block".into()),
        );
        return None;
    }
    let method = raw.method.as_ref().and_then(|m| {
        let upper = m.value.trim().to_ascii_uppercase();
        if METHODS.contains(&upper.as_str()) {
            Some(Method::from_bytes(upper.as_bytes()).expect("known method"))
        } else {
            cx.error(
                Place::at(file, &m.referenced),
                format!("unknown HTTP method `{}`", m.value),
                Some(suggest(&upper, METHODS)),
            );
            None
        }
    });
    let mut template = |text: &Text, what: &str, cx: &mut Ctx<'_>| -> Option<Template> {
        let tplace = Place::at(file, &text.referenced);
        match Template::parse(&text.value, Root::Params) {
            Ok(t) => {
                for p in t.paths() {
                    uses.note(p);
                    if p.root == Root::Params {
                        let name = p.steps.first().map(|s| s.key.to_string()).unwrap_or_default();
                        if !params.contains(&name) {
                            let hint = if params.is_empty() {
                                "the route's path has no parameters; `$`-paths such as {$meta.message_id} read message data".to_string()
                            } else {
                                suggest(&name, params.iter().map(String::as_str))
                            };
                            cx.error(
                                tplace.clone(),
                                format!("{what} uses `{{{name}}}`, which is not a parameter of the route's path"),
                                Some(hint),
                            );
                        }
                    }
                    if kind == RouteKind::Proxy && matches!(p.root, Root::Current | Root::Document) {
                        cx.error(
                            tplace.clone(),
                            format!("{what} of a proxy route cannot read the body"),
                            Some("proxy routes stream the body unread".into()),
                        );
                    }
                }
                Some(t)
            }
            Err(e) => {
                cx.error(tplace, format!("bad {what} template: {e}"), None);
                None
            }
        }
    };
    let path = match &raw.path {
        Some(p) => {
            let t = template(p, "path", cx)?;
            if !(p.value.starts_with('/') || p.value.starts_with('?') || p.value.is_empty()) {
                cx.error(
                    Place::at(file, &p.referenced),
                    format!("destination path `{}` must start with `/`", p.value),
                    None,
                );
            }
            Some(t)
        }
        None => None,
    };
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let Ok(hname) = HeaderName::from_bytes(name.value.as_bytes()) else {
            cx.error(Place::at(file, &name.referenced), format!("`{}` is not a valid header name", name.value), None);
            continue;
        };
        if let Some(t) = template(value, "header", cx) {
            headers.push((hname, t));
        }
    }
    Some(Destination {
        system: system.clone(),
        method,
        path,
        headers,
        timeout: raw.timeout_ms.map(Duration::from_millis),
    })
}
