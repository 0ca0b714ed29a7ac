//! `qiao check`: the static checks of maps against schemas, run at every load (so `qiao run`
//! refuses what `qiao check` refuses): what no other gateway checks before traffic.
//!
//! For each route, every declarative map is held against the route's (source) schema and
//! against the `schema` of each destination it serves (the receiver's). Reported:
//!
//! | finding | severity |
//! |---|---|
//! | a source path the source schema cannot have (object closed by `additionalProperties: false`) | error |
//! | a source path the source schema does not declare (object open), on a field with `required: true` and no `default` | error |
//! | a source path the source schema does not declare (object open), otherwise | warning |
//! | a path through a value the source schema says is not an object or array | error |
//! | `each` over a value the source schema says is not an array | error |
//! | a lookup table without `default` that misses values of the source `enum` | error |
//! | a required receiver field the map never sets | error |
//! | a field the receiver's schema does not allow (closed object) | error |
//! | a value whose type the receiver's schema refuses, without `as` | error |
//!
//! Where a schema says nothing (no `properties`, a remote `$ref`, a jq expression), the
//! checks say nothing. docs/checks.md has an example of each.
//!
//! The checks work on the parts of a route that compiled ([`RouteParts`]), so that they run
//! beside the route's other errors: a map with a broken field is checked without it, a
//! destination that names an unknown system still has its map held against its schema.

mod schema_view;

use serde_json::Value;

use crate::condition::Condition;
use crate::diag::{Diagnostic, Place, Severity};
use crate::mapping::coerce::Coerce;
use crate::mapping::path::Step;
use crate::mapping::{EachItem, Expr, Field, Mapping, Node, ObjectMap, Root, Source, SourcePath};
use crate::schema::Schema;
pub use schema_view::{Docs, Lookup, Node as SchemaNode, Types, compatible, type_of};

const HINT: &str = "see docs/checks.md";

/// Candidate schema nodes for a value (empty: the schema does not say).
type Nodes<'a> = Vec<schema_view::Node<'a>>;

#[derive(Clone)]
struct Scope<'a> {
    current: Nodes<'a>,
    root: Nodes<'a>,
}

/// The parts of one route that the checks read, each present when it compiled.
pub struct RouteParts<'a> {
    /// The route's `schema`: what the sender may send.
    pub schema: Option<&'a Schema>,
    /// The route's `map`.
    pub map: Option<&'a Mapping>,
    pub destinations: Vec<DestinationParts<'a>>,
}

pub struct DestinationParts<'a> {
    /// The system's name as written (it may name no system).
    pub system: &'a str,
    /// Where the destination names its system.
    pub place: Place,
    /// The destination's own `map`, used instead of the route's.
    pub map: Option<&'a Mapping>,
    pub when: Option<&'a Condition>,
    /// The destination's `schema`: what the receiver accepts.
    pub schema: Option<&'a Schema>,
}

struct Ctx<'a, 'd> {
    /// The file name of the source schema, for messages.
    source_name: &'a str,
    source: Option<&'d Docs>,
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_, '_> {
    fn report(&mut self, severity: Severity, place: &Place, message: String) {
        self.report_hint(severity, place, message, HINT.to_string());
    }

    fn report_hint(&mut self, severity: Severity, place: &Place, message: String, hint: String) {
        let d = match severity {
            Severity::Error => Diagnostic::error(place.clone(), message),
            Severity::Warning => Diagnostic::warning(place.clone(), message),
        };
        // The same finding reached twice (a map serving several destinations) is said once.
        let d = d.hint(hint);
        if !self.diags.contains(&d) {
            self.diags.push(d);
        }
    }
}

/// Checks every map of a route against its schemas; findings go to `diags`.
pub fn route(route: &RouteParts<'_>, diags: &mut Vec<Diagnostic>) {
    let source = route.schema.map(|s| Docs::load(&s.file, &s.document));
    let source_root: Nodes<'_> = match (&source, route.schema) {
        (Some(d), Some(s)) => d.root(&s.file).into_iter().collect(),
        _ => Vec::new(),
    };
    let scope = Scope { current: source_root.clone(), root: source_root };
    let source_name = route.schema.map(|s| s.file.display().to_string()).unwrap_or_default();
    let mut cx = Ctx { source_name: &source_name, source: source.as_ref(), diags };

    let mut maps: Vec<&Mapping> = route.map.into_iter().collect();
    maps.extend(route.destinations.iter().filter_map(|d| d.map));
    for m in &maps {
        walk_source(&mut cx, &scope, m.root());
    }
    for dest in &route.destinations {
        if let Some(when) = dest.when {
            check_condition_paths(&mut cx, &scope, when);
        }
        let Some(receiver) = dest.schema else { continue };
        let Some(mapping) = dest.map.or(route.map) else { continue };
        let recv = Docs::load(&receiver.file, &receiver.document);
        let Some(recv_root) = recv.root(&receiver.file) else { continue };
        let mut t = Target { recv: &recv, system: dest.system, file: receiver.file.display().to_string() };
        t.walk(&mut cx, &scope, mapping.root(), vec![recv_root], "", &dest.place, &[]);
    }
}

fn check_condition_paths<'d>(cx: &mut Ctx<'_, 'd>, scope: &Scope<'d>, c: &Condition) {
    match c {
        Condition::Compare { path, place, .. } => {
            let _ = resolve(cx, scope, path, place, false);
        }
        Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| check_condition_paths(cx, scope, c)),
        Condition::Not(c) => check_condition_paths(cx, scope, c),
        Condition::Jq(_) => {}
    }
}

/// Follows a source path through the source schema, reporting what cannot be there.
/// `needed`: a message without a value there fails (a `required` field without `default`),
/// so a field the schema does not declare is an error, not a warning.
fn resolve<'d>(cx: &mut Ctx<'_, 'd>, scope: &Scope<'d>, path: &SourcePath, place: &Place, needed: bool) -> Nodes<'d> {
    let Some(docs) = cx.source else { return Vec::new() };
    let mut nodes = match path.root {
        Root::Current => scope.current.clone(),
        Root::Document => scope.root.clone(),
        Root::Params | Root::Headers | Root::Meta => return Vec::new(),
    };
    let schema_name = cx.source_name;
    let mut walked = String::new();
    for step in &path.steps {
        if nodes.is_empty() {
            return nodes;
        }
        let types = union_types(docs, &nodes);
        let array_step =
            step.filter.is_some() || (step.index.is_some() && types.as_ref().is_some_and(|t| t.contains("array")));
        if let Some(t) = &types
            && !t.is_empty()
        {
            let wanted = if array_step { "array" } else { "object" };
            // A numeric step on an array reads an element: fine when the value may be an array.
            let reads_element = wanted == "object" && t.contains("array") && step.index.is_some();
            if !(t.contains(wanted) || reads_element) {
                cx.report(
                    Severity::Error,
                    place,
                    format!(
                        "source path `{path}` goes through `{}`, which {schema_name} says is {} — it has no {}",
                        if walked.is_empty() { "." } else { &walked },
                        describe(t),
                        if array_step { "elements" } else { "fields" }
                    ),
                );
                return Vec::new();
            }
        }
        let next = if array_step { docs_items(docs, &nodes) } else { docs_property(docs, &nodes, step) };
        match next {
            Lookup::Found(n) => nodes = n,
            Lookup::Unknown => return Vec::new(),
            Lookup::Absent { closed } => {
                let (severity, why) = if closed {
                    (Severity::Error, "allows no such field (additionalProperties: false)")
                } else if needed {
                    (
                        Severity::Error,
                        "does not declare it; the field is `required: true`, so every message without it fails",
                    )
                } else {
                    (Severity::Warning, "does not declare it")
                };
                let declared: Vec<&str> = nodes.iter().flat_map(|n| docs.declared(*n)).collect();
                let hint = match crate::diag::nearest(&step.key, declared.iter().copied()) {
                    Some(near) => format!("did you mean `{near}`? (see docs/checks.md)"),
                    None => HINT.to_string(),
                };
                cx.report_hint(
                    severity,
                    place,
                    format!("source path `{path}`: `{}` is not in {schema_name}, which {why}", step.key),
                    hint,
                );
                return Vec::new();
            }
        }
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(&step.key);
    }
    nodes
}

fn docs_items<'d>(docs: &'d Docs, nodes: &Nodes<'d>) -> Lookup<'d> {
    let mut found = Vec::new();
    for n in nodes {
        match docs.items(*n) {
            Lookup::Found(f) => found.extend(f),
            _ => return Lookup::Unknown,
        }
    }
    Lookup::Found(found)
}

fn docs_property<'d>(docs: &'d Docs, nodes: &Nodes<'d>, step: &Step) -> Lookup<'d> {
    let mut found = Vec::new();
    let mut absent_closed = true;
    let mut absent_everywhere = true;
    for n in nodes {
        match docs.property(*n, &step.key) {
            Lookup::Found(f) => {
                found.extend(f);
                absent_everywhere = false;
            }
            Lookup::Unknown => return Lookup::Unknown,
            Lookup::Absent { closed } => absent_closed &= closed,
        }
    }
    if absent_everywhere { Lookup::Absent { closed: absent_closed } } else { Lookup::Found(found) }
}

fn union_types(docs: &Docs, nodes: &Nodes<'_>) -> Option<Types> {
    let mut all = Types::new();
    for n in nodes {
        all.extend(docs.types(*n)?);
    }
    Some(all)
}

fn describe(t: &Types) -> String {
    let names: Vec<String> = t
        .iter()
        .map(|n| format!("{} {n}", if matches!(*n, "array" | "integer" | "object") { "an" } else { "a" }))
        .collect();
    names.join(" or ")
}

fn walk_source<'d>(cx: &mut Ctx<'_, 'd>, scope: &Scope<'d>, obj: &ObjectMap) {
    for Field { node, .. } in &obj.fields {
        match node {
            Node::Object(m) => walk_source(cx, scope, m),
            Node::Value(e) => walk_expr(cx, scope, e),
        }
    }
}

/// The scope inside an `each` or a `map` with `from`.
fn inner_scope<'d>(scope: &Scope<'d>, current: Nodes<'d>) -> Scope<'d> {
    Scope { current, root: scope.root.clone() }
}

fn walk_expr<'d>(cx: &mut Ctx<'_, 'd>, scope: &Scope<'d>, e: &Expr) {
    match &e.source {
        Source::Path(p) => {
            let needed = e.required && e.default.is_none();
            let nodes = resolve(cx, scope, p, &e.source_place, needed);
            check_lookup(cx, e, p, &nodes);
        }
        Source::Template(t) => {
            for p in t.paths() {
                let _ = resolve(cx, scope, p, &e.source_place, false);
            }
        }
        Source::Object { context, map } => {
            let current = match context {
                Some(p) => resolve(cx, scope, p, &e.source_place, false),
                None => scope.current.clone(),
            };
            walk_source(cx, &inner_scope(scope, current), map);
        }
        Source::Each { over, item } => {
            let items = each_items(cx, scope, over, &e.source_place);
            let inner = inner_scope(scope, items);
            match item.as_ref() {
                EachItem::Object(m) => walk_source(cx, &inner, m),
                EachItem::Value(x) => walk_expr(cx, &inner, x),
            }
        }
        Source::List(items) => items.iter().for_each(|x| walk_expr(cx, scope, x)),
        Source::Const(_) | Source::Jq(_) => {}
    }
}

/// The element schemas of an `each`, reporting an `each` over something not an array.
fn each_items<'d>(cx: &mut Ctx<'_, 'd>, scope: &Scope<'d>, over: &SourcePath, place: &Place) -> Nodes<'d> {
    let nodes = resolve(cx, scope, over, place, false);
    let Some(docs) = cx.source else { return Vec::new() };
    if nodes.is_empty() {
        return nodes;
    }
    if let Some(t) = union_types(docs, &nodes)
        && !t.is_empty()
        && !t.contains("array")
    {
        cx.report(
            Severity::Error,
            place,
            format!("`each: {over}` walks over an array, but the source schema says it is {}", describe(&t)),
        );
        return Vec::new();
    }
    match docs_items(docs, &nodes) {
        Lookup::Found(n) => n,
        _ => Vec::new(),
    }
}

/// A lookup without `default` must know every value the source `enum` allows.
fn check_lookup(cx: &mut Ctx<'_, '_>, e: &Expr, path: &SourcePath, nodes: &Nodes<'_>) {
    let (Some(table), Some(docs)) = (&e.lookup, cx.source) else { return };
    if table.default.is_some() || nodes.is_empty() {
        return;
    }
    let Some(values) = nodes.iter().map(|n| docs.enum_values(*n)).collect::<Option<Vec<_>>>() else { return };
    let key = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut missing: Vec<String> = values
        .into_iter()
        .flatten()
        .filter(|v| !v.is_null())
        .map(|v| key(&v))
        .filter(|k| !table.values.contains_key(k))
        .collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        cx.report(
            Severity::Error,
            &e.source_place,
            format!(
                "lookup `{}` has no entry and no default for {} that the source schema allows at `{path}`",
                table.name,
                missing.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ")
            ),
        );
    }
}

/// The types an expression produces, when they can be known.
fn infer(cx: &mut Ctx<'_, '_>, scope: &Scope<'_>, e: &Expr) -> Option<Types> {
    let mut t = if let Some(c) = &e.coerce {
        Types::from([match c {
            Coerce::String | Coerce::Date(_) | Coerce::DateTime(_) => "string",
            Coerce::Number => "number",
            Coerce::Integer | Coerce::EpochMs(_) | Coerce::EpochS(_) => "integer",
            Coerce::Boolean => "boolean",
        }])
    } else if let Some(l) = &e.lookup {
        l.values.values().chain(l.default.iter()).map(type_of).collect()
    } else {
        match &e.source {
            Source::Const(v) => Types::from([type_of(v)]),
            Source::Template(_) => Types::from(["string"]),
            Source::Object { .. } => Types::from(["object"]),
            Source::Each { .. } | Source::List(_) => Types::from(["array"]),
            Source::Jq(_) => return None,
            Source::Path(p) => {
                let docs = cx.source?;
                // Quietly: the source walk already reported problems with the path.
                let mut quiet = Vec::new();
                let mut qcx = Ctx { source_name: cx.source_name, source: cx.source, diags: &mut quiet };
                let nodes = resolve(&mut qcx, scope, p, &e.source_place, false);
                if nodes.is_empty() {
                    return None;
                }
                union_types(docs, &nodes)?
            }
        }
    };
    if let Some(d) = &e.default {
        t.insert(type_of(d));
    }
    Some(t)
}

/// The receiver side: the map's output against the destination's schema.
struct Target<'r> {
    recv: &'r Docs,
    system: &'r str,
    file: String,
}

impl<'r> Target<'r> {
    /// `skipped`: target keys below `obj` that the map writes but whose value did not
    /// compile (dotted, relative to `obj`), besides `obj`'s own.
    #[allow(clippy::too_many_arguments)]
    fn walk<'d>(
        &mut self,
        cx: &mut Ctx<'_, 'd>,
        scope: &Scope<'d>,
        obj: &ObjectMap,
        at: Nodes<'r>,
        path: &str,
        place: &Place,
        skipped: &[(&str, &Place)],
    ) {
        if at.is_empty() {
            return;
        }
        let skipped: Vec<(&str, &Place)> =
            skipped.iter().copied().chain(obj.skipped.iter().map(|(k, p)| (&**k, p))).collect();
        let first = |key: &str| key.split('.').next().unwrap_or_default().to_string();
        // A field whose value did not compile is set all the same: its error is said already.
        let set = |key: &str| obj.fields.iter().any(|f| &*f.key == key) || skipped.iter().any(|(s, _)| first(s) == key);
        let mut required: Vec<String> = at.iter().flat_map(|n| self.recv.required(*n)).collect();
        required.sort();
        required.dedup();
        for r in required.iter().filter(|r| !set(r)) {
            cx.report(
                Severity::Error,
                place,
                format!(
                    "{}'s schema ({}) requires `{}`, but the map never sets it",
                    self.system,
                    self.file,
                    join(path, r)
                ),
            );
        }
        // Whether the receiver takes a key at all holds whether or not its value compiled.
        let mut said: Vec<String> = Vec::new();
        for (key, key_place) in &skipped {
            let key = first(key);
            if obj.fields.iter().any(|f| *f.key == key) || said.contains(&key) {
                continue;
            }
            if self.property(&at, &key).is_none() {
                self.not_allowed(cx, key_place, &join(path, &key));
            }
            said.push(key);
        }
        for f in &obj.fields {
            let here = join(path, &f.key);
            let Some(found) = self.property(&at, &f.key) else {
                self.not_allowed(cx, &f.place, &here);
                continue;
            };
            if found.is_empty() {
                continue;
            }
            match &f.node {
                Node::Object(m) => {
                    let below: Vec<(&str, &Place)> = skipped
                        .iter()
                        .filter_map(|(s, p)| Some((s.strip_prefix(&*f.key)?.strip_prefix('.')?, *p)))
                        .collect();
                    self.walk(cx, scope, m, found, &here, &f.place, &below)
                }
                Node::Value(e) => self.value(cx, scope, e, found, &here),
            }
        }
    }

    /// The receiver's schemas for `key` in an object that any of `at` describes: empty when
    /// they do not say, `None` when none of them allows the key (all closed).
    fn property(&self, at: &Nodes<'r>, key: &str) -> Option<Nodes<'r>> {
        let mut found = Vec::new();
        let mut closed_everywhere = true;
        let mut unknown = false;
        for n in at {
            match self.recv.property(*n, key) {
                Lookup::Found(x) => {
                    found.extend(x);
                    closed_everywhere = false;
                }
                Lookup::Absent { closed } => closed_everywhere &= closed,
                Lookup::Unknown => unknown = true,
            }
        }
        if found.is_empty() && closed_everywhere && !unknown { None } else { Some(found) }
    }

    fn not_allowed(&self, cx: &mut Ctx<'_, '_>, place: &Place, here: &str) {
        cx.report(
            Severity::Error,
            place,
            format!("{}'s schema ({}) does not allow `{here}` (additionalProperties: false)", self.system, self.file),
        );
    }

    fn value<'d>(&mut self, cx: &mut Ctx<'_, 'd>, scope: &Scope<'d>, e: &Expr, at: Nodes<'r>, path: &str) {
        let want = at
            .iter()
            .map(|n| self.recv.types(*n))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.into_iter().flatten().collect::<Types>());
        if let (Some(want), Some(have)) = (want.filter(|w| !w.is_empty()), infer(cx, scope, e)) {
            let have: Types = have.into_iter().filter(|t| *t != "null").collect();
            if !have.is_empty() && !have.iter().any(|h| want.iter().any(|w| compatible(h, w))) {
                let fix = match want.iter().next() {
                    Some(&"number") | Some(&"integer") => " — add `as: number` (or `as: integer`)",
                    Some(&"string") => " — add `as: string`",
                    Some(&"boolean") => " — add `as: boolean`",
                    _ => "",
                };
                cx.report(
                    Severity::Error,
                    &e.source_place,
                    format!(
                        "`{path}` gets {} (from `{}`), but {}'s schema wants {}{fix}",
                        describe(&have),
                        e.origin(),
                        self.system,
                        describe(&want)
                    ),
                );
                return;
            }
        }
        match &e.source {
            Source::Object { context, map } => {
                let current = match context {
                    Some(p) => resolve(cx, scope, p, &e.source_place, false),
                    None => scope.current.clone(),
                };
                self.walk(cx, &inner_scope(scope, current), map, at, path, &e.place, &[]);
            }
            Source::Each { over, item } => {
                let items = each_items(cx, scope, over, &e.source_place);
                let inner = inner_scope(scope, items);
                let targets: Nodes<'r> = at
                    .iter()
                    .filter_map(|n| match self.recv.items(*n) {
                        Lookup::Found(x) => Some(x),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                match item.as_ref() {
                    EachItem::Object(m) => self.walk(cx, &inner, m, targets, &format!("{path}[]"), &e.place, &[]),
                    EachItem::Value(x) => self.value(cx, &inner, x, targets, &format!("{path}[]")),
                }
            }
            Source::List(items) => {
                let targets: Nodes<'r> = at
                    .iter()
                    .filter_map(|n| match self.recv.items(*n) {
                        Lookup::Found(x) => Some(x),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                for x in items {
                    self.value(cx, scope, x, targets.clone(), &format!("{path}[]"));
                }
            }
            _ => {}
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

#[cfg(test)]
mod tests;
