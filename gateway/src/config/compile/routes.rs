//! Routes: their source (HTTP path or AMQP queue), schema, map and destinations.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::HeaderName;
use indexmap::IndexMap;
use qiao_connectors::RetryPolicy;
use qiao_connectors::amqp::{Binding, Queue, Topology};

use super::super::model::{AmqpSource, Destination, Route, RouteKind, ServerSettings, Source, System, Via};
use super::super::raw::{
    RawAmqpSource, RawDestination, RawFieldSpec, RawHttpSource, RawLookupRef, RawMap, RawRoute, Text,
};
use super::super::{Place, suggest};
use super::{Ctx, METHODS, parse_method, system_names};
use crate::check;
use crate::mapping::{self, Lookup, Mapping, Root, Template, Uses};
use crate::routing::Router;
use crate::schema::Schema;

/// Is this a message route (schema or map somewhere, or an AMQP source)?
fn is_message_route(raw: &RawRoute) -> bool {
    raw.schema.is_some()
        || raw.map.is_some()
        || raw.to.0.iter().any(|d| d.map.is_some() || d.schema.is_some())
        || raw.from.value.amqp.is_some()
}

/// The path and methods an HTTP route takes, read from the raw config without reporting
/// anything: paths are checked against each other even when a route has other errors, so
/// that `qiao check` shows a clash at once. `None` when the source or a method is invalid
/// (compiling the route reports that).
pub(super) fn http_key(raw: &RawRoute) -> Option<(String, Vec<Option<Method>>)> {
    let http = raw.from.value.http.as_ref().filter(|_| raw.from.value.amqp.is_none())?;
    let path = http.path.value.trim().to_string();
    if !path.starts_with('/') {
        return None;
    }
    let methods = match &http.methods {
        None if is_message_route(raw) => vec![Some(Method::POST)],
        None => vec![None],
        Some(list) => list
            .iter()
            .map(|m| {
                let upper = m.value.trim().to_ascii_uppercase();
                match upper.as_str() {
                    "ANY" | "*" => Some(None),
                    _ if METHODS.contains(&upper.as_str()) => Method::from_bytes(upper.as_bytes()).ok().map(Some),
                    _ => None,
                }
            })
            .collect::<Option<Vec<_>>>()?,
    };
    (!methods.is_empty()).then_some((path, methods))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn compile_route(
    cx: &mut Ctx<'_>,
    file: &Path,
    name: &str,
    raw: &RawRoute,
    server: &ServerSettings,
    systems: &IndexMap<String, Arc<System>>,
    shared_lookups: &HashMap<String, Arc<Lookup>>,
) -> Option<Route> {
    let errors_before = cx.error_count();
    let from_place = Place::at(file, &raw.from.referenced);
    let is_message = is_message_route(raw);
    let kind = if is_message { RouteKind::Message } else { RouteKind::Proxy };

    let source = match (&raw.from.value.http, &raw.from.value.amqp) {
        (Some(http), None) => compile_http_source(cx, file, http, is_message),
        (None, Some(amqp)) => compile_amqp_source(cx, file, name, amqp, raw, systems),
        (Some(_), Some(_)) => {
            cx.error(
                from_place.clone(),
                format!("route `{name}` has two sources"),
                Some("a route reads either `http` or `amqp`; make two routes".into()),
            );
            None
        }
        (None, None) => {
            cx.error(
                from_place.clone(),
                format!("route `{name}` has no source"),
                Some("add `from: { http: { path: /... } }` or `from: { amqp: { system: ..., queue: ... } }`".into()),
            );
            None
        }
    };
    if raw.failure.is_some() && raw.from.value.amqp.is_none() {
        cx.warning(
            from_place.clone(),
            "`failure` has no effect on a route that does not consume from AMQP",
            Some("an HTTP sender gets the error and decides whether to retry".into()),
        );
    }

    let validate_formats = raw.validate_formats.unwrap_or(server.validate_formats);
    let schema = raw.schema.as_ref().and_then(|s| compile_schema(cx, file, s, validate_formats));

    // The route's own lookup tables shadow the shared ones.
    let mut lookups = shared_lookups.clone();
    for (lname, table) in &raw.lookups {
        lookups.insert(lname.value.clone(), Arc::new(Lookup::from_raw(&lname.value, table)));
    }
    let mut uses = Uses::default();
    // A map with errors keeps the fields that compiled, for the static checks below; the
    // route itself is not built then.
    let mut compile_map = |m: &RawMap, cx: &mut Ctx<'_>| -> Mapping {
        let env = mapping::CompileEnv { file, lookups: &lookups };
        let (compiled, _) = mapping::compile_partial(m, &env, &mut cx.diags);
        uses.merge(compiled.uses);
        compiled
    };
    let mapping = raw.map.as_ref().map(|m| compile_map(m, cx));
    let dest_maps: Vec<Option<Mapping>> = raw.to.0.iter().map(|d| d.map.as_ref().map(|m| compile_map(m, cx))).collect();
    warn_unused_lookups(cx, file, raw);

    let params = match &source {
        Some(Source::Http { path, .. }) => Router::param_names(path),
        _ => Vec::new(),
    };
    // Each destination's condition and schema are compiled even when the destination is
    // not (an unknown system), for their own errors and for the static checks.
    let mut dest_parts = Vec::new();
    for (dest, map) in raw.to.0.iter().zip(dest_maps) {
        let compiled = compile_destination(cx, file, dest, kind, systems, &params, &mut uses);
        let when = dest.when.as_ref().and_then(|when| {
            if kind == RouteKind::Proxy {
                cx.error(
                    Place::at(file, &when.referenced),
                    "a proxy route streams the body unread and cannot test it with `when`",
                    Some("give the route a `schema` to make it a message route".into()),
                );
            }
            crate::condition::compile(when, file, &mut cx.diags, &mut uses)
        });
        let schema = dest.schema.as_ref().and_then(|s| compile_schema(cx, file, s, validate_formats));
        dest_parts.push((compiled, map, when, schema));
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
            from_place.clone(),
            format!("proxy route `{name}` has {} destinations; a streamed request can go to one", raw.to.0.len()),
            Some("give the route a `schema` or a `map` to make it a message route, which may fan out".into()),
        );
    }

    // The maps against the schemas, on whatever compiled of them.
    let parts = check::RouteParts {
        schema: schema.as_deref(),
        map: mapping.as_ref(),
        destinations: raw
            .to
            .0
            .iter()
            .zip(&dest_parts)
            .map(|(dest, (_, map, when, schema))| check::DestinationParts {
                system: &dest.system.value,
                place: Place::at(file, &dest.system.referenced),
                map: map.as_ref(),
                when: when.as_ref(),
                schema: schema.as_deref(),
            })
            .collect(),
    };
    check::route(&parts, &mut cx.diags);

    if cx.error_count() > errors_before {
        return None;
    }
    // A destination whose system is broken is left out; that system's error fails the config.
    let destinations = dest_parts
        .into_iter()
        .filter_map(|(d, map, when, schema)| {
            let mut d = d?;
            d.mapping = map;
            d.when = when;
            if schema.is_some() {
                d.redactor = crate::redact::Redactor::new(schema.as_deref(), &[]);
            }
            d.schema = schema;
            Some(d)
        })
        .collect();
    let redactor = crate::redact::Redactor::new(
        schema.as_deref(),
        &raw.redact.iter().map(|p| p.value.clone()).collect::<Vec<_>>(),
    );
    let rate_limit = match &raw.rate_limit {
        None => None,
        Some(r) => Some(super::limits::inbound(cx, file, r, matches!(source, Some(Source::Amqp(_)))).ok()?),
    };
    let concurrency = match raw.concurrency_limit {
        None => None,
        Some(_) if matches!(source, Some(Source::Amqp(_))) => {
            cx.error(
                from_place.clone(),
                "`concurrency_limit` is for HTTP routes",
                Some("a route that consumes from AMQP sets `from.amqp.concurrency`".into()),
            );
            return None;
        }
        // A route that takes nothing is a mistake.
        Some(0) => {
            cx.error(from_place.clone(), "`concurrency_limit` must be at least 1", None);
            return None;
        }
        Some(n) => Some(n),
    };
    let auth = match &raw.auth {
        None => crate::auth::Mode::None,
        Some(text) => match crate::auth::Mode::parse(&text.value) {
            None => {
                cx.error(
                    Place::at(file, &text.referenced),
                    format!("`auth: {}`: a route's auth is `required`, `optional` or `none`", text.value),
                    None,
                );
                return None;
            }
            Some(mode) if mode != crate::auth::Mode::None && matches!(source, Some(Source::Amqp(_))) => {
                cx.error(
                    Place::at(file, &text.referenced),
                    "`auth` is for HTTP routes",
                    Some("who may publish to a queue is the broker's to decide (its users and permissions)".into()),
                );
                return None;
            }
            Some(mode) => mode,
        },
    };
    let journal = raw.journal.as_ref().map_or_else(crate::config::model::RouteJournal::default, |j| {
        let d = crate::config::model::RouteJournal::default();
        let sample = j.sample.unwrap_or(d.sample);
        if !(0.0..=1.0).contains(&sample) {
            cx.error(from_place.clone(), format!("`journal.sample: {sample}` is not between 0.0 and 1.0"), None);
        }
        crate::config::model::RouteJournal {
            enabled: j.enabled.unwrap_or(d.enabled),
            sample: sample.clamp(0.0, 1.0),
            bodies: j.bodies.unwrap_or(d.bodies),
            answers: j.answers.unwrap_or(d.answers),
        }
    });
    let mut replay_ignore = Vec::new();
    for p in raw.replay.iter().flat_map(|r| &r.ignore) {
        if p.value.is_empty() || p.value.starts_with('/') {
            replay_ignore.push(p.value.clone());
        } else {
            cx.error(
                Place::at(file, &p.referenced),
                format!("`replay.ignore`: `{}` is not a JSON Pointer pattern", p.value),
                Some("write it from the output's root, e.g. `/data/Model/FDate` or `/**/timestamp`".into()),
            );
        }
    }
    Some(Route {
        index: 0,
        auth,
        redactor,
        journal,
        rate_limit,
        concurrency,
        replay_ignore,
        name: Arc::from(name),
        description: raw.description.clone(),
        file: file.to_path_buf(),
        kind,
        source: source?,
        schema,
        mapping,
        max_body_bytes: raw.max_body_bytes.unwrap_or(server.max_body_bytes),
        destinations,
        uses,
    })
}

fn compile_http_source(cx: &mut Ctx<'_>, file: &Path, http: &RawHttpSource, is_message: bool) -> Option<Source> {
    let path = http.path.value.trim().to_string();
    let path_place = Place::at(file, &http.path.referenced);
    if !path.starts_with('/') {
        cx.error(path_place.clone(), format!("route path `{path}` must start with `/`"), None);
    }
    let methods: Vec<Option<Method>> = match &http.methods {
        None if is_message => vec![Some(Method::POST)],
        None => vec![None],
        Some(list) => list
            .iter()
            .filter_map(|m| {
                let upper = m.value.trim().to_ascii_uppercase();
                if upper == "ANY" || upper == "*" { Some(None) } else { parse_method(cx, file, m).map(Some) }
            })
            .collect(),
    };
    if methods.is_empty() {
        cx.error(path_place, "`methods` is empty", Some("list at least one method, e.g. [POST]".into()));
    }
    Some(Source::Http { methods, path })
}

fn compile_amqp_source(
    cx: &mut Ctx<'_>,
    file: &Path,
    route: &str,
    raw: &RawAmqpSource,
    route_raw: &RawRoute,
    systems: &IndexMap<String, Arc<System>>,
) -> Option<Source> {
    let place = Place::at(file, &raw.system.referenced);
    let Some(system) = systems.get(&raw.system.value) else {
        let hint = suggest(&raw.system.value, system_names(systems));
        cx.error(place, format!("unknown system `{}`", raw.system.value), Some(hint));
        return None;
    };
    if cx.broken.contains(&system.name) {
        return None;
    }
    let Some(amqp) = &system.amqp else {
        cx.error(
            place,
            format!("system `{}` has no `amqp` block to consume from", system.name),
            Some("give the system `amqp: { url: ... }`".into()),
        );
        return None;
    };
    let queue = cx.env_value(file, &raw.queue)?;
    if queue.is_empty() || queue.starts_with("amq.") {
        cx.error(
            Place::at(file, &raw.queue.referenced),
            format!("`{queue}` cannot be a queue name"),
            Some("names starting with amq. are reserved by the broker".into()),
        );
    }
    let failure = route_raw.failure.as_ref();
    let policy = RetryPolicy {
        max_attempts: failure.and_then(|f| f.max_attempts).unwrap_or(5).max(1),
        initial_backoff: Duration::from_millis(failure.and_then(|f| f.initial_backoff_ms).unwrap_or(1_000)),
        max_backoff: Duration::from_millis(failure.and_then(|f| f.max_backoff_ms).unwrap_or(60_000)),
        retry_statuses: Vec::new(),
    };
    let dead_letter_queue = match failure.and_then(|f| f.dead_letter_queue.as_ref()) {
        Some(t) => cx.env_value(file, t)?,
        None => format!("{queue}.dlq"),
    };
    let retry_queues: Vec<String> = (1..policy.max_attempts).map(|n| format!("{queue}.retry.{n}")).collect();
    let circuit_queue = (policy.max_attempts > 1).then(|| format!("{queue}.retry.circuit"));

    // The queue, its retry queues (which send messages back to it when their time is up)
    // and its dead-letter queue, declared or verified like the system's exchange.
    let passive = !amqp.declare;
    let mut topology = Topology::default();
    topology.queues.push(Queue { name: queue.clone(), dead_letter_to: None, passive });
    for rq in retry_queues.iter().chain(&circuit_queue) {
        topology.queues.push(Queue { name: rq.clone(), dead_letter_to: Some((String::new(), queue.clone())), passive });
    }
    topology.queues.push(Queue { name: dead_letter_queue.clone(), dead_letter_to: None, passive });
    for key in &raw.bindings {
        if amqp.exchange.is_empty() {
            cx.error(
                Place::at(file, &key.referenced),
                "a queue cannot be bound to the default exchange",
                Some(format!("give system `{}` an `exchange`", system.name)),
            );
            continue;
        }
        topology.bindings.push(Binding {
            queue: queue.clone(),
            exchange: amqp.exchange.clone(),
            routing_key: key.value.clone(),
            passive,
        });
    }
    cx.brokers.entry(amqp.url.clone()).or_default().merge(topology);
    let _ = route;
    Some(Source::Amqp(AmqpSource {
        system: system.clone(),
        broker: amqp.url.clone(),
        queue,
        prefetch: raw.prefetch.unwrap_or(64).max(1),
        concurrency: raw.concurrency.unwrap_or(16).max(1),
        stall_after: match raw.stall_after_ms.unwrap_or(120_000) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        },
        policy,
        retry_queues,
        circuit_queue,
        dead_letter_queue,
    }))
}

fn compile_schema(cx: &mut Ctx<'_>, file: &Path, s: &Text, validate_formats: bool) -> Option<Arc<Schema>> {
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
}

/// Whether any map of the route (its own or a destination's) names lookup table `name`.
pub(super) fn route_names_lookup(raw: &RawRoute, name: &str) -> bool {
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
    raw.map.as_ref().is_some_and(|m| map_uses(m, name))
        || raw.to.0.iter().any(|d| d.map.as_ref().is_some_and(|m| map_uses(m, name)))
}

fn warn_unused_lookups(cx: &mut Ctx<'_>, file: &Path, raw: &RawRoute) {
    for lname in raw.lookups.keys() {
        if !route_names_lookup(raw, &lname.value) {
            cx.warning(
                Place::at(file, &lname.referenced),
                format!("lookup table `{}` is never used", lname.value),
                None,
            );
        }
    }
}

/// Which transport a destination uses: said outright, implied by its keys, or the only one
/// its system has.
fn pick_transport(cx: &mut Ctx<'_>, file: &Path, raw: &RawDestination, system: &System) -> Option<&'static str> {
    let place = Place::at(file, &raw.system.referenced);
    let http_keys = raw.path.is_some() || raw.method.is_some();
    let amqp_keys = raw.routing_key.is_some() || raw.exchange.is_some();
    let said = match &raw.transport {
        Some(t) => match t.value.as_str() {
            "http" => Some("http"),
            "amqp" => Some("amqp"),
            other => {
                cx.error(
                    Place::at(file, &t.referenced),
                    format!("unknown transport `{other}`"),
                    Some("`http` or `amqp`".into()),
                );
                return None;
            }
        },
        None => None,
    };
    if http_keys && amqp_keys {
        cx.error(
            place,
            "a destination takes `path`/`method` (HTTP) or `routing_key`/`exchange` (AMQP), not both",
            None,
        );
        return None;
    }
    let transport = said
        .or(if http_keys {
            Some("http")
        } else if amqp_keys {
            Some("amqp")
        } else {
            None
        })
        .or(match (system.http.is_some(), system.amqp.is_some()) {
            (true, false) => Some("http"),
            (false, true) => Some("amqp"),
            _ => None,
        });
    match transport {
        Some("http") if system.http.is_none() => {
            cx.error(
                place,
                format!("system `{}` cannot be reached over HTTP", system.name),
                Some("give the system an `http:` block".into()),
            );
            None
        }
        Some("amqp") if system.amqp.is_none() => {
            cx.error(
                place,
                format!("system `{}` cannot be reached over AMQP", system.name),
                Some("give the system an `amqp:` block".into()),
            );
            None
        }
        Some(t) => Some(t),
        None => {
            cx.error(
                place,
                format!("system `{}` has both `http` and `amqp`: which one?", system.name),
                Some("add `transport: http` or `transport: amqp`".into()),
            );
            None
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
        let hint = suggest(&raw.system.value, system_names(systems));
        cx.error(place, format!("unknown system `{}`", raw.system.value), Some(hint));
        return None;
    };
    if cx.broken.contains(&system.name) {
        return None;
    }
    let transport = pick_transport(cx, file, raw, system)?;
    if kind == RouteKind::Proxy && transport == "amqp" {
        cx.error(
            place,
            "a proxy route streams over HTTP and cannot publish to AMQP",
            Some("give the route a `schema` or a `map`".into()),
        );
        return None;
    }
    if kind == RouteKind::Proxy && raw.map.is_some() {
        cx.error(place.clone(), "a proxy route does not map; its destination cannot have a `map`", None);
    }
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
                                "the route has no path parameters; `$`-paths such as {$body.code} or {$meta.message_id} read message data"
                                    .to_string()
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
    let via = if transport == "http" {
        let method = raw.method.as_ref().and_then(|m| parse_method(cx, file, m));
        let path = match &raw.path {
            Some(p) => {
                let t = template(p, "path", cx)?;
                if !(p.value.starts_with('/') || p.value.starts_with('?') || p.value.is_empty()) {
                    cx.error(
                        Place::at(file, &p.referenced),
                        format!("destination path `{}` must start with `/`", p.value),
                        None,
                    );
                } else if let Some(problem) = t.literal().and_then(crate::routing::path_problem) {
                    // Checked here once rather than for every message (`pipeline::destination_path`).
                    cx.error(Place::at(file, &p.referenced), problem.for_literal(&p.value), None);
                }
                Some(t)
            }
            None => None,
        };
        Via::Http { method, path }
    } else {
        let Some(key) = &raw.routing_key else {
            cx.error(
                place,
                format!("the AMQP destination `{}` needs a `routing_key`", system.name),
                Some("e.g. routing_key: wms.stockout.create".into()),
            );
            return None;
        };
        let routing_key = template(key, "routing_key", cx)?;
        let exchange = match &raw.exchange {
            Some(e) => Some(cx.env_value(file, e)?),
            None => None,
        };
        Via::Amqp { exchange, routing_key }
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
        via,
        headers,
        timeout: raw.timeout_ms.map(Duration::from_millis),
        mapping: None,
        when: None,
        schema: None,
        redactor: crate::redact::Redactor::default(),
        place: Place::at(file, &raw.system.referenced),
    })
}
