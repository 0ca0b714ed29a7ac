//! The route table's path index: method + path → route, with path parameters.

use http::Method;

/// What a request's method and path lead to.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Route {
        /// Index into the config's route list.
        index: usize,
        /// Path parameters as they appear in the URL (still percent-encoded).
        params: Vec<(String, String)>,
    },
    /// The path exists with other methods (answer 405 with `Allow`).
    MethodNotAllowed {
        allow: Vec<Method>,
    },
    NotFound,
}

#[derive(Default)]
pub struct Router {
    paths: matchit::Router<usize>,
    entries: Vec<Entry>,
}

struct Entry {
    pattern: String,
    /// (method, route index); `None` accepts every method.
    methods: Vec<(Option<Method>, usize)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|e| &e.pattern)).finish()
    }
}

/// Why a route could not be added.
#[derive(Debug, PartialEq, Eq)]
pub enum AddError {
    /// Another route already takes this method on this path.
    Duplicate { other: usize },
    /// The pattern overlaps another pattern in a way matching cannot tell apart.
    Conflict { detail: String },
    /// The pattern itself is malformed (a catch-all not at the end, two parameters in
    /// one segment).
    Invalid { detail: String },
}

impl Router {
    /// Adds route `index` for `methods` (`None` = all methods) on `pattern`.
    pub fn add(&mut self, pattern: &str, methods: &[Option<Method>], index: usize) -> Result<(), AddError> {
        let entry = match self.entries.iter().position(|e| e.pattern == pattern) {
            Some(i) => i,
            None => {
                let i = self.entries.len();
                self.paths.insert(pattern, i).map_err(|e| match e {
                    matchit::InsertError::Conflict { .. } => AddError::Conflict { detail: e.to_string() },
                    other => AddError::Invalid { detail: other.to_string() },
                })?;
                self.entries.push(Entry { pattern: pattern.to_string(), methods: Vec::new() });
                i
            }
        };
        let taken = &mut self.entries[entry].methods;
        for m in methods {
            if let Some((_, other)) = taken.iter().find(|(t, _)| t.is_none() || m.is_none() || t == m) {
                return Err(AddError::Duplicate { other: *other });
            }
        }
        for m in methods {
            taken.push((m.clone(), index));
        }
        Ok(())
    }

    pub fn find(&self, method: &Method, path: &str) -> Found {
        let Ok(m) = self.paths.at(path) else {
            return Found::NotFound;
        };
        let entry = &self.entries[*m.value];
        let hit = entry.methods.iter().find(|(accepted, _)| {
            accepted.as_ref().is_none_or(|a| a == method || (method == Method::HEAD && a == Method::GET))
        });
        match hit {
            Some((_, index)) => Found::Route {
                index: *index,
                params: m.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            },
            None => {
                let mut allow: Vec<Method> = entry.methods.iter().filter_map(|(m, _)| m.clone()).collect();
                if allow.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
                    allow.push(Method::HEAD);
                }
                Found::MethodNotAllowed { allow }
            }
        }
    }

    /// The parameter names a pattern declares, catch-all included.
    pub fn param_names(pattern: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = pattern;
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            let name = &rest[start + 1..start + len];
            if !name.starts_with('{') {
                names.push(name.trim_start_matches('*').to_string());
            }
            rest = &rest[start + len + 1..];
        }
        names
    }
}

/// Why a destination path cannot be sent as it is.
#[derive(Debug, PartialEq)]
pub enum PathProblem {
    DotSegment,
    NotAUrlPath,
}

impl PathProblem {
    /// The detail of a rendered path's failure; the rendered path is not shown, as the
    /// values in it may be anyone's.
    pub fn for_rendered(&self, template: &str) -> String {
        match self {
            PathProblem::DotSegment => format!(
                "destination path `{template}`: a value inserted into it makes a dot segment (`.` or `..`), \
                 which would lead elsewhere on the system"
            ),
            PathProblem::NotAUrlPath => format!(
                "destination path `{template}`: a value inserted into it makes it an invalid URL path \
                 (a space, a `#`, a control or non-ASCII character)"
            ),
        }
    }

    /// The error of a literal path in the config.
    pub fn for_literal(&self, path: &str) -> String {
        match self {
            PathProblem::DotSegment => {
                format!(
                    "destination path `{path}` has a dot segment (`.` or `..`), which would lead elsewhere on the system"
                )
            }
            PathProblem::NotAUrlPath => format!(
                "destination path `{path}` is not a valid URL path (a space, a `#`, a control or non-ASCII character: \
                 percent-encode it)"
            ),
        }
    }
}

/// What is wrong with `path` as a destination's path and query, if anything.
pub fn path_problem(path: &str) -> Option<PathProblem> {
    if path.is_empty() {
        return None;
    }
    // Values are percent-encoded, so none can add a `/`; a value that is a whole segment
    // can still be `..` (`/orders/{$body.id}` with `"id": ".."`).
    if has_dot_segment(path.split('?').next().unwrap_or_default()) {
        return Some(PathProblem::DotSegment);
    }
    match path.parse::<http::uri::PathAndQuery>() {
        // The parser drops a `#fragment`: a path that reads back different is refused too.
        Ok(p) if p.as_str() == path => None,
        _ => Some(PathProblem::NotAUrlPath),
    }
}

/// Whether a path parameter, as it came in the URL, holds a dot segment (`.` or `..`):
/// spelled out or percent-encoded (`%2e%2E`), between `/`, `%2F` or `\\` (which some servers,
/// IIS among them, also take as a separator). Inserted into a destination path, such a
/// segment would take the request somewhere else on the system (`/k3cloud/a/../../admin`),
/// or out of the system's base path. A segment's `;parameters` are left out first: Java
/// servlet containers (Tomcat, Jetty) read `..;x` as `..`.
pub fn has_dot_segment(raw: &str) -> bool {
    // Without a `%` nothing decodes, so the decoder's pass and its UTF-8 check are skipped:
    // this runs on every delivery's path (2% of a message-route request's instructions).
    let decoded = if raw.contains('%') {
        percent_encoding::percent_decode_str(raw).decode_utf8_lossy()
    } else {
        std::borrow::Cow::Borrowed(raw)
    };
    // Bytes, not chars: the separators are ASCII, which no byte of a multi-byte character is.
    decoded
        .as_bytes()
        .split(|&b| b == b'/' || b == b'\\')
        .map(|segment| segment.split(|&b| b == b';').next().unwrap_or_default())
        .any(|s| s == b"." || s == b"..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_however_they_are_spelled() {
        for bad in [
            "..",
            ".",
            "a/../../x",
            "a/./x",
            "a/%2e%2e/x",
            "a/%2E%2e/x",
            "a/.%2e/x",
            "%2e%2e%2fx",
            "a%2F..%2Fx",
            "a\\..\\x",
            "a%5C..%5Cx",
            "x/..",
            "a/..;/x",
            "a/..;jsessionid=1/x",
            "a/.%3B/x",
        ] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for fine in ["a..b/x", "...", "a/.b/x", "v1.2/x", "%2e%2e%2e", "Save.common.kdsvc", "", "a;v=1/x", "..x;/y"] {
            assert!(!has_dot_segment(fine), "{fine}");
        }
    }

    /// The check as it was first written (decode, then split on chars), against which the
    /// faster one is compared.
    fn has_dot_segment_reference(raw: &str) -> bool {
        let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        decoded
            .split(['/', '\\'])
            .map(|segment| segment.split(';').next().unwrap_or_default())
            .any(|s| s == "." || s == "..")
    }

    #[test]
    fn the_dot_segment_check_agrees_with_the_reference() {
        // Every string of up to 4 pieces from an alphabet of separators, dots and their
        // encodings; then longer ones from a fixed-seed generator.
        let pieces =
            ["", ".", "..", "/", "\\", ";", ";x", "%2e", "%2E", "%2f", "%5C", "%3B", "%", "%e", "a", "é", "x.y"];
        let mut checked = 0;
        let mut check = |s: &str| {
            assert_eq!(has_dot_segment(s), has_dot_segment_reference(s), "{s:?}");
            checked += 1;
        };
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for d in pieces {
                        check(&[a, b, c, d].concat());
                    }
                }
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..12 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            check(&s);
        }
        assert_eq!(checked, 17usize.pow(4) + 20_000);
    }

    #[test]
    fn methods_and_params_are_matched() {
        let mut r = Router::default();
        r.add("/crm/orders/{order_id}", &[Some(Method::POST)], 0).unwrap();
        r.add("/crm/orders/{order_id}", &[Some(Method::PUT)], 1).unwrap();
        r.add("/wms/{*rest}", &[None], 2).unwrap();
        assert_eq!(
            r.find(&Method::POST, "/crm/orders/801J"),
            Found::Route { index: 0, params: vec![("order_id".into(), "801J".into())] }
        );
        assert!(matches!(r.find(&Method::PUT, "/crm/orders/801J"), Found::Route { index: 1, .. }));
        assert_eq!(
            r.find(&Method::DELETE, "/crm/orders/801J"),
            Found::MethodNotAllowed { allow: vec![Method::POST, Method::PUT] }
        );
        assert_eq!(r.find(&Method::GET, "/nope"), Found::NotFound);
        assert_eq!(
            r.find(&Method::PATCH, "/wms/api/v1/stock"),
            Found::Route { index: 2, params: vec![("rest".into(), "api/v1/stock".into())] }
        );
    }

    #[test]
    fn head_is_served_by_get_routes() {
        let mut r = Router::default();
        r.add("/x", &[Some(Method::GET)], 0).unwrap();
        assert!(matches!(r.find(&Method::HEAD, "/x"), Found::Route { index: 0, .. }));
        assert_eq!(r.find(&Method::POST, "/x"), Found::MethodNotAllowed { allow: vec![Method::GET, Method::HEAD] });
    }

    #[test]
    fn duplicates_and_conflicts_are_refused() {
        let mut r = Router::default();
        r.add("/a/{x}", &[Some(Method::POST)], 0).unwrap();
        assert_eq!(r.add("/a/{x}", &[Some(Method::POST)], 1), Err(AddError::Duplicate { other: 0 }));
        assert_eq!(r.add("/a/{x}", &[None], 1), Err(AddError::Duplicate { other: 0 }));
        assert!(matches!(r.add("/a/{y}", &[Some(Method::GET)], 2), Err(AddError::Conflict { .. })));
    }

    #[test]
    fn param_names_are_listed() {
        assert_eq!(Router::param_names("/a/{id}/b/{*rest}"), vec!["id", "rest"]);
        assert!(Router::param_names("/plain").is_empty());
    }
}
