//! The crate's shape, checked: no cycle between its top-level modules. A cycle makes two
//! modules one in all but name (neither can be read, tested or changed alone); the
//! diagnostics (`diag`) and YAML (`yaml`) modules depend on nothing so that everything else
//! can report problems without depending on `config`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code (not its tests, not its comments) names.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top =
                rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let used = edges.entry(top.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for part in line.split("crate::").skip(1) {
                    let module: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if !module.is_empty() && module != top {
                        used.insert(module);
                    }
                }
            }
        }
    }
    edges
}

/// A path from `from` back to itself, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in edges.get(last).into_iter().flatten() {
            if next == from {
                return Some([path.clone(), vec![from.to_string()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push([path.clone(), vec![next.clone()]].concat());
            }
        }
    }
    None
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let edges = edges();
    assert!(edges.len() > 20, "the crate's modules were not found: {edges:?}");
    assert!(edges["config"].contains("mapping"), "the scan sees `crate::` paths");
    for module in edges.keys() {
        if let Some(path) = cycle(&edges, module) {
            panic!("module cycle: {}", path.join(" -> "));
        }
    }
    for leaf in ["diag", "yaml", "headers"] {
        assert!(edges[leaf].is_empty(), "`{leaf}` must depend on no other module: {:?}", edges[leaf]);
    }
}
