//! The house's structure, checked: no module imports a module that imports it (directly or
//! around a longer loop), in any crate of the workspace, at every level of its module tree:
//! between top-level modules (a folder counts as one module), and between the modules inside
//! each folder (`a::b` and `a::c`).
//!
//! A module's imports are the paths its non-test code names through `crate::`, `super::` and
//! `self::`. A path into a parent's own items (its code or re-exports) is no edge: a parent
//! declares its children, and a child may use what its parent offers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module's path inside its crate, e.g. `["consensus", "planning"]`.
type ModPath = Vec<String>;

/// The graph at one level of the tree: the modules in one folder (by name) → the sibling
/// modules they import.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every module file of `crate_src` with its module path and its non-test code. Test files
/// (`*_test.rs`, `tests.rs`) and the crate root are left out.
fn modules(crate_src: &Path) -> BTreeMap<ModPath, String> {
    let mut found = BTreeMap::new();
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
            let module: ModPath = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            let stem = module.last().unwrap();
            if stem.ends_with("test") || stem.ends_with("tests") {
                continue;
            }
            if module.len() == 1 && (stem == "lib" || stem == "main") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            found.insert(module, code);
        }
    }
    found
}

/// The paths of a use tree starting at `s` (just after `crate::` or the like): `a::b`,
/// `a::{b, c::{d, self}}`. Returns them and how many bytes were read.
fn use_tree(s: &str) -> (Vec<ModPath>, usize) {
    let mut segments = ModPath::new();
    let mut i = 0;
    let bytes = s.as_bytes();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            let mut paths = Vec::new();
            loop {
                let (inner, used) = use_tree(&s[i..]);
                i += used;
                for p in inner {
                    paths.push(segments.iter().cloned().chain(p).collect());
                }
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => return (paths, i + 1),
                    _ => return (paths, i),
                }
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                if bytes.get(i) == Some(&b'}') {
                    return (paths, i + 1);
                }
            }
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let ident = &s[start..i];
        if !ident.is_empty() && ident != "self" {
            segments.push(ident.to_string());
        }
        if s[i..].starts_with("::") && !ident.is_empty() {
            i += 2;
            continue;
        }
        return (vec![segments], i);
    }
}

/// The absolute paths `code` (the code of module `me`) names.
fn named_paths(me: &ModPath, code: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    let starts_ident = |i: usize| {
        i == 0 || {
            let c = code.as_bytes()[i - 1];
            !(c.is_ascii_alphanumeric() || c == b'_' || c == b':')
        }
    };
    for anchor in ["crate::", "super::", "self::"] {
        for (i, _) in code.match_indices(anchor) {
            if !starts_ident(i) {
                continue;
            }
            let mut base: ModPath = match anchor {
                "crate::" => ModPath::new(),
                "self::" => me.clone(),
                _ => me[..me.len().saturating_sub(1)].to_vec(),
            };
            let mut rest = &code[i + anchor.len()..];
            while let Some(r) = rest.strip_prefix("super::").filter(|_| anchor == "super::") {
                base.pop();
                rest = r;
            }
            for p in use_tree(rest).0 {
                out.push(base.iter().cloned().chain(p).collect());
            }
        }
    }
    out
}

/// For every folder of the tree (the crate root is `[]`), the graph between its modules.
fn imports(crate_src: &Path) -> BTreeMap<ModPath, Graph> {
    let modules = modules(crate_src);
    let is_module = |p: &[String]| {
        modules.contains_key(p)
            || modules
                .keys()
                .any(|m| m.len() > p.len() && m.starts_with(p))
    };
    let mut levels: BTreeMap<ModPath, Graph> = BTreeMap::new();
    for me in modules.keys() {
        for depth in 0..me.len() {
            levels
                .entry(me[..depth].to_vec())
                .or_default()
                .entry(me[depth].clone())
                .or_default();
        }
    }
    for (me, code) in &modules {
        for mut target in named_paths(me, code) {
            while !target.is_empty() && !is_module(&target) {
                target.pop();
            }
            let common = me.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common >= me.len() || common >= target.len() {
                continue; // itself, an ancestor's own items, or its own child
            }
            levels
                .entry(me[..common].to_vec())
                .or_default()
                .entry(me[common].clone())
                .or_default()
                .insert(target[common].clone());
        }
    }
    levels
}

/// Every cycle in `graph`, each as the modules around it.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn walk(graph: &Graph, start: &str, path: &mut Vec<String>, found: &mut BTreeSet<Vec<String>>) {
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
        "rules/src",
        "actors/src",
        "gateway/src",
        "bridge/src",
        "chaos/src",
        "src",
    ] {
        for (level, graph) in imports(&root.join(krate)) {
            let at = if level.is_empty() {
                String::new()
            } else {
                format!(" (in {})", level.join("::"))
            };
            for c in cycles(&graph) {
                all.push(format!("{krate}{at}: {}", c.join(" -> ")));
            }
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

#[test]
fn imports_are_read_at_every_level() {
    let me: ModPath = vec!["host".into(), "shard_host".into()];
    let code = "use crate::{cluster::lease::Lease, wire::{self, frame_check}};\n\
                use super::entity::{Entity, EntityKinds};\nfn f() { self::g(); }";
    assert_eq!(
        named_paths(&me, code),
        vec![
            vec!["cluster".to_string(), "lease".into(), "Lease".into()],
            vec!["wire".to_string()],
            vec!["wire".to_string(), "frame_check".into()],
            vec!["host".to_string(), "entity".into(), "Entity".into()],
            vec!["host".to_string(), "entity".into(), "EntityKinds".into()],
            vec!["host".to_string(), "shard_host".into(), "g".into()],
        ]
    );
}

#[test]
fn a_cycle_inside_a_folder_is_found() {
    let dir = std::env::temp_dir().join(format!("keelson-structure-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("a.rs"), "mod b; mod c;").unwrap();
    std::fs::write(dir.join("a/b.rs"), "use super::c::X;").unwrap();
    std::fs::write(dir.join("a/c.rs"), "use crate::a::b::Y;").unwrap();
    std::fs::write(dir.join("d.rs"), "use crate::a::X;").unwrap();
    let levels = imports(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        cycles(&levels[&vec!["a".to_string()]]),
        vec![vec!["b".to_string(), "c".into()]]
    );
    assert!(cycles(&levels[&vec![]]).is_empty(), "d -> a only");
}
