//! The house's structure, checked: no module imports a module that imports it (directly or
//! around a longer loop), in any crate of the workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module of `crate_src` → the top-level modules its non-test code names through
/// `crate::`.
fn imports(crate_src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![crate_src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(crate_src).unwrap().with_extension("");
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .to_string();
            let top = top.trim_end_matches("_test").to_string();
            if top == "lib" || top == "main" || top.ends_with("test") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let deps = graph.entry(top.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    group
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|p| p.trim().split("::").next().unwrap_or("").trim())
                        .collect()
                } else {
                    vec![rest
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or("")]
                };
                for n in names {
                    if !n.is_empty() && n != top && n.chars().next().unwrap().is_lowercase() {
                        deps.insert(n.to_string());
                    }
                }
            }
        }
    }
    graph
}

/// Every cycle in `graph`, each as the modules around it.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        let last = path.last().unwrap().clone();
        for next in graph.get(&last).into_iter().flatten() {
            if next == start {
                let mut c = path.clone();
                let min = c.iter().enumerate().min_by_key(|(_, m)| *m).unwrap().0;
                c.rotate_left(min);
                found.insert(c);
            } else if graph.contains_key(next) && !path.contains(next) && next.as_str() > start {
                path.push(next.clone());
                walk(graph, start, path, found);
                path.pop();
            }
        }
    }
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        walk(graph, start, &mut vec![start.clone()], &mut found);
    }
    found.into_iter().collect()
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for krate in [
        "runtime/src",
        "actors/src",
        "gateway/src",
        "bridge/src",
        "chaos/src",
        "src",
    ] {
        for c in cycles(&imports(&root.join(krate))) {
            all.push(format!("{krate}: {}", c.join(" -> ")));
        }
    }
    assert!(all.is_empty(), "module cycles:\n{}", all.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycles(&g),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
}
