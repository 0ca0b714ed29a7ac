//! The mapping engine: a declarative field map compiled once into a tree of operations.
//!
//! A map says, for each target field, where its value comes from (a source path, a constant,
//! a template, a nested map, an array built with `each`) and what happens to it on the way
//! (default, lookup, coercion, required). `compile` checks all of it when the config loads;
//! `Mapping::apply` then only walks the tree. docs/mapping.md is the user's page.

pub mod coerce;
pub mod jq;
pub mod jq_native;
mod jq_value;
pub mod path;
pub mod raw;
pub mod template;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Place, suggest};
pub use coerce::Coerce;
use coerce::{DateParse, DateSpec};
pub use path::{Root, Scope, SourcePath};
use raw::{RawFieldOps, RawFieldSpec, RawLookup, RawLookupRef, RawMap};
pub use template::Template;

/// A compiled field map.
#[derive(Clone, Debug)]
pub struct Mapping {
    root: ObjectMap,
    /// Which `$` roots the map reads, so the pipeline builds only what is needed.
    pub uses: Uses,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uses {
    pub params: bool,
    pub headers: bool,
    pub meta: bool,
}

impl Uses {
    pub fn note(&mut self, path: &SourcePath) {
        match path.root {
            Root::Params => self.params = true,
            Root::Headers => self.headers = true,
            Root::Meta => self.meta = true,
            Root::Current | Root::Document => {}
        }
    }

    pub fn any(&self) -> bool {
        self.params || self.headers || self.meta
    }

    pub fn merge(&mut self, other: Uses) {
        self.params |= other.params;
        self.headers |= other.headers;
        self.meta |= other.meta;
    }
}

#[derive(Clone, Debug, Default)]
pub struct ObjectMap {
    pub fields: Vec<Field>,
    /// Target keys (dotted, relative to this object) written in the config whose value did
    /// not compile, and where: empty in a map that compiled, set in what
    /// [`compile_partial`] returns.
    pub skipped: Vec<(Box<str>, Place)>,
}

/// One target key of an object, and where the config wrote it.
#[derive(Clone, Debug)]
pub struct Field {
    pub key: Box<str>,
    pub node: Node,
    pub place: Place,
}

#[derive(Clone, Debug)]
pub enum Node {
    /// An object built from several target keys (`data.Model.FID`, `data.Model.FDate`).
    Object(ObjectMap),
    Value(Box<Expr>),
}

/// How one value is computed: a source, then default → lookup → coercion → required.
#[derive(Clone, Debug)]
pub struct Expr {
    pub source: Source,
    pub default: Option<Value>,
    pub lookup: Option<Arc<Lookup>>,
    pub coerce: Option<Coerce>,
    pub required: bool,
    pub omit_null: bool,
    /// Where the config wrote it, for the static checks.
    pub place: Place,
    /// Where its source is written: the path of `from` or `each`, the template; the same
    /// as `place` for a path written as the whole field.
    pub source_place: Place,
}

#[derive(Clone, Debug)]
pub enum Source {
    Path(SourcePath),
    Const(Value),
    Template(Template),
    /// An object with its own field map, read relative to `context` when given.
    Object {
        context: Option<SourcePath>,
        map: ObjectMap,
    },
    /// An array with one element per element of `over`.
    Each {
        over: SourcePath,
        item: Box<EachItem>,
    },
    /// An array of computed values, in order; absent values are left out.
    List(Vec<Expr>),
    /// A jq expression; no output leaves the field out.
    Jq(Arc<jq::JqProgram>),
}

#[derive(Clone, Debug)]
pub enum EachItem {
    Object(ObjectMap),
    Value(Box<Expr>),
}

/// A value translation table.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub name: String,
    pub values: HashMap<String, Value>,
    pub default: Option<Value>,
}

impl Lookup {
    pub fn from_raw(name: &str, raw: &RawLookup) -> Self {
        Self {
            name: name.to_string(),
            values: raw.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            default: raw.default.clone(),
        }
    }

    fn translate(&self, value: &Value) -> Result<Value, String> {
        let number;
        let key: &str = match value {
            Value::String(s) => s,
            Value::Number(n) => {
                number = n.to_string();
                &number
            }
            Value::Bool(true) => "true",
            Value::Bool(false) => "false",
            other => {
                return Err(format!("lookup `{}` cannot use {} as a key", self.name, coerce::kind_of(other)));
            }
        };
        match self.values.get(key).or(self.default.as_ref()) {
            Some(v) => Ok(v.clone()),
            None => Err(format!("lookup `{}` has no entry for {value} and no default", self.name)),
        }
    }
}

/// A mapping failure at run time, naming the target field and the source it read.
#[derive(Clone, Debug, PartialEq)]
pub struct MapError {
    /// The target field, e.g. `data.Model.FSaleOrderEntry[1].FQty`.
    pub target: String,
    /// The source as written in the map, e.g. `Quantity`.
    pub source: String,
    pub reason: String,
}

impl std::fmt::Display for MapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "target `{}` (from `{}`): {}", self.target, self.source, self.reason)
    }
}

/// The target path being built, kept as borrowed pieces so that it costs nothing unless an
/// error needs to print it.
#[derive(Default)]
struct Trail<'m> {
    segs: Vec<TrailSeg<'m>>,
}

enum TrailSeg<'m> {
    Key(&'m str),
    Index(usize),
}

impl Trail<'_> {
    fn render(&self) -> String {
        let mut out = String::new();
        for seg in &self.segs {
            match seg {
                TrailSeg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                TrailSeg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

impl Mapping {
    /// Maps `input` to the receiver's shape. `vars` holds `params`, `headers` and `meta`
    /// when [`Mapping::uses`] says the map reads them (otherwise `Value::Null` is fine).
    pub fn apply(&self, input: &Value, vars: &Value) -> Result<Value, MapError> {
        let scope = Scope { current: input, document: input, vars };
        let mut trail = Trail::default();
        self.root.eval(&scope, &mut trail).map(Value::Object)
    }

    pub fn root(&self) -> &ObjectMap {
        &self.root
    }
}

impl ObjectMap {
    fn eval<'m>(&'m self, scope: &Scope<'_>, trail: &mut Trail<'m>) -> Result<Map<String, Value>, MapError> {
        let mut out = Map::with_capacity(self.fields.len());
        // `String::from(&**key)`, not `key.to_string()`: `Box<str>` has no fast `ToString`,
        // so that went through `Display` and a growing buffer (3% of a message's instructions).
        for Field { key, node, .. } in &self.fields {
            trail.segs.push(TrailSeg::Key(key));
            match node {
                Node::Object(map) => {
                    out.insert(String::from(&**key), Value::Object(map.eval(scope, trail)?));
                }
                Node::Value(expr) => {
                    if let Some(v) = expr.eval(scope, trail)? {
                        out.insert(String::from(&**key), v);
                    }
                }
            }
            trail.segs.pop();
        }
        Ok(out)
    }
}

impl Expr {
    /// `None` means the target field is left out.
    fn eval<'m>(&'m self, scope: &Scope<'_>, trail: &mut Trail<'m>) -> Result<Option<Value>, MapError> {
        let fail =
            |trail: &Trail<'_>, reason: String| MapError { target: trail.render(), source: self.origin(), reason };
        let mut value = match &self.source {
            Source::Path(p) => p.resolve(scope).cloned(),
            Source::Const(v) => Some(v.clone()),
            Source::Template(t) => match t.render(scope) {
                Ok(s) => Some(Value::String(s)),
                Err(e) => {
                    return Err(MapError { target: trail.render(), source: e.path, reason: e.reason });
                }
            },
            Source::Object { context, map } => {
                let current = match context {
                    None => Some(scope.current),
                    Some(p) => p.resolve(scope).filter(|v| !v.is_null()),
                };
                match current {
                    Some(current) => {
                        let inner = Scope { current, ..*scope };
                        Some(Value::Object(map.eval(&inner, trail)?))
                    }
                    None => None,
                }
            }
            Source::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    trail.segs.push(TrailSeg::Index(i));
                    if let Some(v) = item.eval(scope, trail)? {
                        out.push(v);
                    }
                    trail.segs.pop();
                }
                Some(Value::Array(out))
            }
            Source::Jq(program) => program
                .run(scope.current, scope.document, scope.vars)
                .map_err(|reason| MapError { target: trail.render(), source: self.origin(), reason })?,
            Source::Each { over, item } => match over.resolve(scope) {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, element) in items.iter().enumerate() {
                        trail.segs.push(TrailSeg::Index(i));
                        let inner = Scope { current: element, ..*scope };
                        match item.as_ref() {
                            EachItem::Object(map) => out.push(Value::Object(map.eval(&inner, trail)?)),
                            EachItem::Value(expr) => {
                                out.push(expr.eval(&inner, trail)?.unwrap_or(Value::Null));
                            }
                        }
                        trail.segs.pop();
                    }
                    Some(Value::Array(out))
                }
                Some(other) => {
                    return Err(fail(trail, format!("`each` needs an array but found {}", coerce::kind_of(other))));
                }
            },
        };
        if value.as_ref().is_none_or(Value::is_null)
            && let Some(d) = &self.default
        {
            value = Some(d.clone());
        }
        if let (Some(lookup), Some(v)) = (&self.lookup, &value)
            && !v.is_null()
        {
            value = Some(lookup.translate(v).map_err(|r| fail(trail, r))?);
        }
        if let Some(c) = &self.coerce
            && let Some(v) = value.take()
        {
            value = Some(c.apply(v).map_err(|r| fail(trail, r))?);
        }
        if self.required && value.as_ref().is_none_or(Value::is_null) {
            return Err(fail(trail, "required, but the message has no value there".into()));
        }
        if self.omit_null && value.as_ref().is_some_and(Value::is_null) {
            return Ok(None);
        }
        Ok(value)
    }

    /// What the user wrote as the source, for error messages.
    pub fn origin(&self) -> String {
        match &self.source {
            Source::Path(p) => p.to_string(),
            Source::Const(v) => format!("const {v}"),
            Source::Template(t) => format!("template \"{}\"", t.text),
            Source::Object { context: Some(p), .. } => p.to_string(),
            Source::Object { context: None, .. } => "map".into(),
            Source::Each { over, .. } => over.to_string(),
            Source::List(_) => "list".into(),
            Source::Jq(p) => format!("jq `{}`", p.text),
        }
    }
}

/// What `compile` needs to know besides the map itself.
pub struct CompileEnv<'a> {
    pub file: &'a Path,
    /// Lookup tables visible to the route: its own, then the shared ones.
    pub lookups: &'a HashMap<String, Arc<Lookup>>,
}

/// Compiles a field map, adding every problem to `diags`. Returns `None` when there was
/// any error.
pub fn compile(map: &RawMap, env: &CompileEnv<'_>, diags: &mut Vec<Diagnostic>) -> Option<Mapping> {
    let (mapping, complete) = compile_partial(map, env, diags);
    complete.then_some(mapping)
}

/// Compiles a field map like [`compile`], but returns what compiled even when there were
/// errors, with `true` when nothing was left out. An incomplete map is for the static
/// checks only: the fields whose value did not compile are missing from it, and
/// [`ObjectMap::skipped`] names them.
pub fn compile_partial(map: &RawMap, env: &CompileEnv<'_>, diags: &mut Vec<Diagnostic>) -> (Mapping, bool) {
    let before = diags.iter().filter(|d| d.is_error()).count();
    let mut uses = Uses::default();
    let root = compile_object(map, env, diags, &mut uses);
    let complete = diags.iter().filter(|d| d.is_error()).count() == before;
    (Mapping { root, uses }, complete)
}

const OPS: [&str; 16] = [
    "from",
    "const",
    "template",
    "jq",
    "default",
    "as",
    "format",
    "parse",
    "timezone",
    "lookup",
    "required",
    "omit_null",
    "map",
    "each",
    "item",
    "list",
];

fn compile_object(map: &RawMap, env: &CompileEnv<'_>, diags: &mut Vec<Diagnostic>, uses: &mut Uses) -> ObjectMap {
    let mut root = ObjectMap::default();
    for (key, spec) in map {
        let place = Place::at(env.file, &key.referenced);
        let parts: Vec<&str> = key.value.split('.').collect();
        if parts.iter().any(|p| p.trim().is_empty()) {
            diags.push(
                Diagnostic::error(place, format!("target field `{}` has an empty name between dots", key.value))
                    .hint("write target fields as `a.b.c`; see docs/mapping.md#targets"),
            );
            continue;
        }
        // `{ map: {...} }` alone is a plain nested object: merge it with dotted siblings.
        let node = match &spec.value {
            RawFieldSpec::Full(ops) if is_plain_object(ops) => {
                Some(Node::Object(compile_object(ops.map.as_ref().expect("checked"), env, diags, uses)))
            }
            _ => compile_expr(spec, env, diags, uses).map(|e| Node::Value(Box::new(e))),
        };
        let Some(node) = node else {
            root.skipped.push((key.value.as_str().into(), place));
            continue;
        };
        if let Err(msg) = insert(&mut root, &parts, node, &place) {
            diags.push(
                Diagnostic::error(place, msg).hint("each target field may be set once; see docs/mapping.md#targets"),
            );
        }
    }
    root
}

fn is_plain_object(ops: &RawFieldOps) -> bool {
    ops.map.is_some()
        && ops.from.is_none()
        && ops.default.is_none()
        && ops.required.is_none()
        && ops.each.is_none()
        && ops.constant.is_none()
        && ops.template.is_none()
        && ops.lookup.is_none()
        && ops.coerce.is_none()
        && ops.list.is_none()
        && ops.jq.is_none()
        && ops.omit_null.is_none()
        && ops.item.is_none()
        && ops.format.is_none()
        && ops.parse.is_none()
        && ops.timezone.is_none()
}

fn insert(obj: &mut ObjectMap, parts: &[&str], node: Node, place: &Place) -> Result<(), String> {
    let (first, rest) = parts.split_first().expect("at least one part");
    let existing = obj.fields.iter_mut().find(|f| &*f.key == *first);
    match (existing, rest.is_empty(), node) {
        (None, true, node) => {
            obj.fields.push(Field { key: (*first).into(), node, place: place.clone() });
            Ok(())
        }
        (None, false, node) => {
            let mut child = ObjectMap::default();
            insert(&mut child, rest, node, place)?;
            obj.fields.push(Field { key: (*first).into(), node: Node::Object(child), place: place.clone() });
            Ok(())
        }
        (Some(Field { node: Node::Object(child), .. }), false, node) => insert(child, rest, node, place),
        (Some(Field { node: Node::Object(child), .. }), true, Node::Object(more)) => {
            for f in more.fields {
                insert(child, &[&f.key], f.node, &f.place)?;
            }
            child.skipped.extend(more.skipped);
            Ok(())
        }
        (Some(_), _, _) => Err(format!("target field `{first}` is set more than once")),
    }
}

fn compile_expr(
    spec: &Spanned<RawFieldSpec>,
    env: &CompileEnv<'_>,
    diags: &mut Vec<Diagnostic>,
    uses: &mut Uses,
) -> Option<Expr> {
    let place = Place::at(env.file, &spec.referenced);
    let ops = match &spec.value {
        RawFieldSpec::Path(p) => {
            return match SourcePath::parse(p) {
                Ok(path) => {
                    uses.note(&path);
                    Some(Expr {
                        source: Source::Path(path),
                        default: None,
                        lookup: None,
                        coerce: None,
                        required: false,
                        omit_null: false,
                        source_place: place.clone(),
                        place: place.clone(),
                    })
                }
                Err(e) => {
                    diags.push(Diagnostic::error(place, format!("bad source path `{p}`: {e}")).hint(PATH_HINT));
                    None
                }
            };
        }
        RawFieldSpec::Full(ops) => ops,
    };
    let errors_before = diags.len();
    let path =
        |text: &Spanned<String>, diags: &mut Vec<Diagnostic>, uses: &mut Uses| match SourcePath::parse(&text.value) {
            Ok(p) => {
                uses.note(&p);
                Some(p)
            }
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        Place::at(env.file, &text.referenced),
                        format!("bad source path `{}`: {e}", text.value),
                    )
                    .hint(PATH_HINT),
                );
                None
            }
        };

    // Exactly one source.
    let mut sources = Vec::new();
    if ops.from.is_some() && ops.map.is_none() && ops.each.is_none() {
        sources.push("from");
    }
    if ops.constant.is_some() {
        sources.push("const");
    }
    if ops.template.is_some() {
        sources.push("template");
    }
    if ops.each.is_some() {
        sources.push("each");
    }
    if ops.map.is_some() && ops.each.is_none() {
        sources.push("map");
    }
    if ops.list.is_some() {
        sources.push("list");
    }
    if ops.jq.is_some() {
        sources.push("jq");
    }
    if sources.len() > 1 {
        diags.push(
            Diagnostic::error(
                place.clone(),
                format!("a field takes one source, this one has {}", sources.join(" and ")),
            )
            .hint("use `from`, `const`, `template`, `jq`, `map`, `each` or `list`; see docs/mapping.md"),
        );
        return None;
    }
    if ops.from.is_some() && ops.each.is_some() {
        diags.push(
            Diagnostic::error(place.clone(), "`each` reads its own source array; `from` is not used with it")
                .hint("write the array's path in `each`, e.g. `each: OrderItems.records`"),
        );
        return None;
    }
    if ops.item.is_some() && ops.each.is_none() {
        diags.push(
            Diagnostic::error(place.clone(), "`item` only makes sense with `each`").hint("see docs/mapping.md#arrays"),
        );
    }
    if ops.each.is_some() && ops.map.is_some() == ops.item.is_some() {
        diags.push(
            Diagnostic::error(place.clone(), "`each` needs exactly one of `map` (objects) or `item` (values)")
                .hint("see docs/mapping.md#arrays"),
        );
        return None;
    }

    let source = if let Some(each) = &ops.each {
        let over = path(each, diags, uses);
        let item = if let Some(map) = &ops.map {
            Some(EachItem::Object(compile_object(map, env, diags, uses)))
        } else {
            ops.item.as_deref().and_then(|i| compile_expr(i, env, diags, uses)).map(|e| EachItem::Value(Box::new(e)))
        };
        match (over, item) {
            (Some(over), Some(item)) => Some(Source::Each { over, item: Box::new(item) }),
            _ => None,
        }
    } else if let Some(code) = &ops.jq {
        compile_jq(code, env.file, diags, uses).map(Source::Jq)
    } else if let Some(list) = &ops.list {
        let items: Vec<Option<Expr>> = list.iter().map(|i| compile_expr(i, env, diags, uses)).collect();
        items.into_iter().collect::<Option<Vec<_>>>().map(Source::List)
    } else if let Some(map) = &ops.map {
        let context = match &ops.from {
            Some(f) => path(f, diags, uses).map(Some),
            None => Some(None),
        };
        let map = compile_object(map, env, diags, uses);
        context.map(|context| Source::Object { context, map })
    } else if let Some(from) = &ops.from {
        path(from, diags, uses).map(Source::Path)
    } else if let Some(c) = &ops.constant {
        Some(Source::Const(c.clone()))
    } else if let Some(t) = &ops.template {
        match Template::parse(&t.value, Root::Current) {
            Ok(tpl) => {
                tpl.paths().for_each(|p| uses.note(p));
                Some(Source::Template(tpl))
            }
            Err(e) => {
                diags.push(
                    Diagnostic::error(Place::at(env.file, &t.referenced), e).hint("see docs/mapping.md#templates"),
                );
                None
            }
        }
    } else if ops.default.is_some() {
        // `default` alone: a constant that reads better in some maps.
        Some(Source::Const(Value::Null))
    } else {
        diags.push(Diagnostic::error(place.clone(), "this field has no source").hint(format!(
            "give it one of `from`, `const`, `template`, `map`, `each` (all operations: {})",
            OPS.join(", ")
        )));
        None
    };

    let lookup = ops.lookup.as_ref().and_then(|l| {
        let lplace = Place::at(env.file, &l.referenced);
        match &l.value {
            RawLookupRef::Named(name) => match env.lookups.get(name) {
                Some(table) => Some(table.clone()),
                None => {
                    let hint = suggest(name, env.lookups.keys().map(String::as_str));
                    diags.push(Diagnostic::error(lplace, format!("unknown lookup table `{name}`")).hint(hint));
                    None
                }
            },
            RawLookupRef::Inline(raw) => Some(Arc::new(Lookup::from_raw("inline", raw))),
        }
    });

    let coerce = compile_coerce(ops, env, diags);
    if ops.coerce.is_none() {
        for (name, value) in [("format", &ops.format), ("parse", &ops.parse), ("timezone", &ops.timezone)] {
            if let Some(v) = value {
                diags.push(
                    Diagnostic::warning(
                        Place::at(env.file, &v.referenced),
                        format!("`{name}` has no effect without `as`"),
                    )
                    .hint("add `as: date`, `as: datetime`, `as: epoch_ms` or `as: epoch_s`"),
                );
            }
        }
    }

    if diags[errors_before..].iter().any(Diagnostic::is_error) {
        return None;
    }
    let written = ops.each.as_ref().or(ops.from.as_ref()).or(ops.template.as_ref());
    Some(Expr {
        source_place: written.map_or_else(|| place.clone(), |t| Place::at(env.file, &t.referenced)),
        source: source?,
        default: ops.default.clone(),
        lookup,
        coerce,
        required: ops.required.unwrap_or(false),
        omit_null: ops.omit_null.unwrap_or(false),
        place,
    })
}

fn compile_coerce(ops: &RawFieldOps, env: &CompileEnv<'_>, diags: &mut Vec<Diagnostic>) -> Option<Coerce> {
    let name = ops.coerce.as_ref()?;
    let mut spec = DateSpec::utc();
    if let Some(tz) = &ops.timezone {
        match coerce::parse_offset(&tz.value) {
            Some(offset) => {
                spec.tz = offset;
                spec.explicit_tz = true;
            }
            None => diags.push(
                Diagnostic::error(Place::at(env.file, &tz.referenced), format!("`{}` is not a UTC offset", tz.value))
                    .hint("write it as `+08:00`, `-05:00` or `UTC`"),
            ),
        }
    }
    if let Some(p) = &ops.parse {
        spec.parse = match p.value.as_str() {
            "epoch_ms" => DateParse::EpochMs,
            "epoch_s" => DateParse::EpochS,
            other => DateParse::Pattern(other.to_string()),
        };
    }
    spec.format = ops.format.as_ref().map(|f| f.value.clone());
    for (what, text) in [("format", &ops.format), ("parse", &ops.parse)] {
        if let Some(t) = text {
            if matches!(t.value.as_str(), "epoch_ms" | "epoch_s") {
                continue;
            }
            if chrono::format::StrftimeItems::new(&t.value).any(|i| matches!(i, chrono::format::Item::Error))
                || (what == "format" && !coerce::can_format(&t.value))
            {
                diags.push(
                    Diagnostic::error(
                        Place::at(env.file, &t.referenced),
                        format!("`{}` is not a valid {what} pattern", t.value),
                    )
                    .hint("use strftime fields such as %Y-%m-%d %H:%M:%S; see docs/mapping.md#dates"),
                );
            }
        }
    }
    match Coerce::from_name(&name.value, spec) {
        Some(c) => {
            let is_date = matches!(c, Coerce::Date(_) | Coerce::DateTime(_) | Coerce::EpochMs(_) | Coerce::EpochS(_));
            if let (Coerce::EpochMs(_) | Coerce::EpochS(_), Some(f)) = (&c, &ops.format) {
                diags.push(Diagnostic::warning(
                    Place::at(env.file, &f.referenced),
                    format!("`format` has no effect with `as: {}`, which writes a number", c.name()),
                ));
            }
            if !is_date {
                for (opt, value) in [("format", &ops.format), ("parse", &ops.parse), ("timezone", &ops.timezone)] {
                    if let Some(v) = value {
                        diags.push(Diagnostic::warning(
                            Place::at(env.file, &v.referenced),
                            format!("`{opt}` has no effect with `as: {}`", c.name()),
                        ));
                    }
                }
            }
            Some(c)
        }
        None => {
            diags.push(
                Diagnostic::error(
                    Place::at(env.file, &name.referenced),
                    format!("unknown type `{}` for `as`", name.value),
                )
                .hint(suggest(&name.value, coerce::NAMES)),
            );
            None
        }
    }
}

/// Compiles a jq expression written in the config; errors point at it.
pub fn compile_jq(
    code: &Spanned<String>,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
    uses: &mut Uses,
) -> Option<Arc<jq::JqProgram>> {
    match jq::JqProgram::compile(&code.value) {
        Ok(p) => {
            // jq reads `$params` and friends as variables; bind what it names.
            uses.params |= code.value.contains("$params");
            uses.headers |= code.value.contains("$headers");
            uses.meta |= code.value.contains("$meta");
            Some(Arc::new(p))
        }
        Err(e) => {
            let col = code.value[..e.offset.min(code.value.len())].chars().count() + 1;
            diags.push(
                Diagnostic::error(
                    Place::at(file, &code.referenced),
                    format!("jq error at column {col} of `{}`: {}", code.value.trim(), e.message),
                )
                .hint("see docs/mapping.md#jq; jq's manual: https://jqlang.org/manual/"),
            );
            None
        }
    }
}

const PATH_HINT: &str = "write paths as `a.b[0].c`, `/a/b/0/c` or `$params.name`; see docs/mapping.md#paths";

#[cfg(test)]
mod tests;
