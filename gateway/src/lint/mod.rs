//! Static checks of maps against schemas: what no other gateway checks before traffic.
//!
//! For each route, every declarative map is held against the route's (source) schema and
//! against the `schema` of each destination it serves (the receiver's). Reported:
//!
//! | finding | severity |
//! |---|---|
//! | a source path the source schema cannot have (object closed by `additionalProperties: false`) | error |
//! | a source path the source schema does not declare (object open) | warning |
//! | a path through a value the source schema says is not an object or array | error |
//! | `each` over a value the source schema says is not an array | error |
//! | a lookup table without `default` that misses values of the source `enum` | error |
//! | a required receiver field the map never sets | error |
//! | a field the receiver's schema does not allow (closed object) | error |
//! | a value whose type the receiver's schema refuses, without `as` | error |
//!
//! Where a schema says nothing (no `properties`, a remote `$ref`, a jq expression), the
//! checks say nothing. docs/checks.md has an example of each.

mod schema_view;

use serde_json::Value;

use crate::config::{Diagnostic, Place, Route, Severity};
use crate::mapping::coerce::Coerce;
use crate::mapping::path::Step;
use crate::mapping::{EachItem, Expr, Field, Mapping, Node, ObjectMap, Root, Source, SourcePath};
pub use schema_view::{Docs, Lookup, Node as SchemaNode, Types, compatible, type_of};

const HINT: &str = "see docs/checks.md";

/// Candidate schema nodes for a value (empty: the schema does not say).
type Nodes<'a> = Vec<schema_view::Node<'a>>;

#[derive(Clone)]
struct Scope<'a> {
    current: Nodes<'a>,
    root: Nodes<'a>,
}

struct Ctx<'a, 'd> {
    route: &'a Route,
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

/// Checks every map of `route`; findings go to `diags`.
pub fn check_route(route: &Route, diags: &mut Vec<Diagnostic>) {
    let source = route.schema.as_ref().map(|s| Docs::load(&s.file, &s.document));
    let source_root: Nodes<'_> = match (&source, &route.schema) {
        (Some(d), Some(s)) => d.root(&s.file).into_iter().collect(),
        _ => Vec::new(),
    };
    let scope = Scope { current: source_root.clone(), root: source_root };
    let mut cx = Ctx { route, source: source.as_ref(), diags };

    let mut maps: Vec<&Mapping> = route.mapping.iter().collect();
    maps.extend(route.destinations.iter().filter_map(|d| d.mapping.as_ref()));
    for m in &maps {
        walk_source(&mut cx, &scope, m.root());
    }
    for dest in &route.destinations {
        if let Some(when) = &dest.when {
            check_condition_paths(&mut cx, &scope, when);
        }
        let Some(receiver) = &dest.schema else { continue };
        let Some(mapping) = dest.mapping.as_ref().or(route.mapping.as_ref()) else { continue };
        let recv = Docs::load(&receiver.file, &receiver.document);
        let Some(recv_root) = recv.root(&receiver.file) else { continue };
        let mut t = Target { recv: &recv, system: &dest.system.name, file: receiver.file.display().to_string() };
        t.walk(&mut cx, &scope, mapping.root(), vec![recv_root], "", &dest.place);
    }
}

fn check_condition_paths<'d>(cx: &mut Ctx<'_, 'd>, scope: &Scope<'d>, c: &crate::condition::Condition) {
    use crate::condition::Condition;
    match c {
        Condition::Compare { path, place, .. } => {
            let _ = resolve(cx, scope, path, place);
        }
        Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| check_condition_paths(cx, scope, c)),
        Condition::Not(c) => check_condition_paths(cx, scope, c),
        Condition::Jq(_) => {}
    }
}

/// Follows a source path through the source schema, reporting what cannot be there.
fn resolve<'d>(cx: &mut Ctx<'_, 'd>, scope: &Scope<'d>, path: &SourcePath, place: &Place) -> Nodes<'d> {
    let Some(docs) = cx.source else { return Vec::new() };
    let mut nodes = match path.root {
        Root::Current => scope.current.clone(),
        Root::Document => scope.root.clone(),
        Root::Params | Root::Headers | Root::Meta => return Vec::new(),
    };
    let schema_name = cx.route.schema.as_ref().map(|s| s.file.display().to_string()).unwrap_or_default();
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
                } else {
                    (Severity::Warning, "does not declare it")
                };
                let declared: Vec<&str> = nodes.iter().flat_map(|n| docs.declared(*n)).collect();
                let hint = match crate::config::nearest(&step.key, declared.iter().copied()) {
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
            let nodes = resolve(cx, scope, p, &e.place);
            check_lookup(cx, e, p, &nodes);
        }
        Source::Template(t) => {
            for p in t.paths() {
                let _ = resolve(cx, scope, p, &e.place);
            }
        }
        Source::Object { context, map } => {
            let current = match context {
                Some(p) => resolve(cx, scope, p, &e.place),
                None => scope.current.clone(),
            };
            walk_source(cx, &inner_scope(scope, current), map);
        }
        Source::Each { over, item } => {
            let items = each_items(cx, scope, over, &e.place);
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
    let nodes = resolve(cx, scope, over, place);
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
            &e.place,
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
                let mut qcx = Ctx { route: cx.route, source: cx.source, diags: &mut quiet };
                let nodes = resolve(&mut qcx, scope, p, &e.place);
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
    #[allow(clippy::too_many_arguments)]
    fn walk<'d>(
        &mut self,
        cx: &mut Ctx<'_, 'd>,
        scope: &Scope<'d>,
        obj: &ObjectMap,
        at: Nodes<'r>,
        path: &str,
        place: &Place,
    ) {
        if at.is_empty() {
            return;
        }
        let set: Vec<&str> = obj.fields.iter().map(|f| &*f.key).collect();
        let mut required: Vec<String> = at.iter().flat_map(|n| self.recv.required(*n)).collect();
        required.sort();
        required.dedup();
        for r in required.iter().filter(|r| !set.contains(&r.as_str())) {
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
        for f in &obj.fields {
            let here = join(path, &f.key);
            let mut found = Vec::new();
            let mut closed_everywhere = true;
            let mut unknown = false;
            for n in &at {
                match self.recv.property(*n, &f.key) {
                    Lookup::Found(x) => {
                        found.extend(x);
                        closed_everywhere = false;
                    }
                    Lookup::Absent { closed } => closed_everywhere &= closed,
                    Lookup::Unknown => unknown = true,
                }
            }
            if found.is_empty() {
                if closed_everywhere && !unknown {
                    cx.report(
                        Severity::Error,
                        &f.place,
                        format!(
                            "{}'s schema ({}) does not allow `{here}` (additionalProperties: false)",
                            self.system, self.file
                        ),
                    );
                }
                continue;
            }
            match &f.node {
                Node::Object(m) => self.walk(cx, scope, m, found, &here, &f.place),
                Node::Value(e) => self.value(cx, scope, e, found, &here),
            }
        }
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
                    &e.place,
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
                    Some(p) => resolve(cx, scope, p, &e.place),
                    None => scope.current.clone(),
                };
                self.walk(cx, &inner_scope(scope, current), map, at, path, &e.place);
            }
            Source::Each { over, item } => {
                let items = each_items(cx, scope, over, &e.place);
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
                    EachItem::Object(m) => self.walk(cx, &inner, m, targets, &format!("{path}[]"), &e.place),
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
