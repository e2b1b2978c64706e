//! Issue #13: the configuration compiler's stages import one way. No import cycle between
//! `config` modules, and nothing below `config` (the plan, the model, secrets, templates,
//! JSONPaths, pagination, the store) imports it.
//!
//! Read from the `use` lines and the `crate::` paths of `src/` as text: no build needed,
//! cheap enough for every CI run. Test modules (`#[cfg(test)]` to the end of a file) are
//! left out: a test may load a whole configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that `config` compiles into or reads through; none may import `config`.
const BELOW_CONFIG: &[&str] = &[
    "plan",
    "model",
    "secret",
    "template",
    "jsonpath",
    "duration",
    "timeformat",
    "engine::paginate",
    "store",
];

/// Module path (`config::load`) -> source text, for every `.rs` file below `dir`.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            out.insert(parts.join("::"), std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

/// The code of a file without its test module and without comments.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let line = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every path a `use` tree names: `use crate::a::{b::C, d};` gives `crate::a::b::C` and
/// `crate::a::d`.
fn expand_use(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    match tree.find('{') {
        None => {
            let path = tree.split(" as ").next().unwrap_or("").trim();
            if !path.is_empty() {
                out.push(format!("{prefix}{path}"));
            }
        }
        Some(open) => {
            let head = &tree[..open];
            let close = tree.rfind('}').filter(|c| *c > open).unwrap_or(tree.len());
            let inner = &tree[open + 1..close];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand_use(&inner[start..i], &format!("{prefix}{head}"), out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand_use(&inner[start..], &format!("{prefix}{head}"), out);
        }
    }
}

/// The modules `module` refers to, from its `use` statements and inline `crate::` or
/// `super::` paths, resolved to the longest known module prefix.
fn references(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let code = code(text);
    let mut paths = Vec::new();
    // `use` statements, possibly spanning lines.
    let mut rest = code.as_str();
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        let tree = rest[..end].trim();
        // Only this crate's paths matter (and "use" in prose is not a statement).
        if tree.starts_with("crate::") || tree.starts_with("super::") {
            expand_use(&tree.replace('\n', " "), "", &mut paths);
        }
        rest = &rest[end..];
    }
    // Inline paths.
    for root in ["crate::", "super::"] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(root) {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            // A `use` group (`crate::a::{b, c}`) is expanded above.
            if !tail[end..].starts_with('{') {
                paths.push(tail[..end].trim_end_matches(':').to_string());
            }
            rest = &rest[at + root.len()..];
        }
    }
    let parent: Vec<&str> = module.split("::").collect();
    let absolute = |path: &str| -> Option<Vec<String>> {
        if let Some(rest) = path.strip_prefix("crate::") {
            return Some(rest.split("::").map(str::to_string).collect());
        }
        if !path.starts_with("super::") {
            return None;
        }
        // `super` of a file module is its parent module (this crate has no inline
        // non-test modules that import).
        let mut base: Vec<String> = parent[..parent.len().saturating_sub(1)]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut rest = path;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
        }
        base.extend(rest.split("::").map(str::to_string));
        Some(base)
    };
    let resolve = |segments: &[String]| -> Option<String> {
        (1..=segments.len())
            .rev()
            .map(|len| segments[..len].join("::"))
            .find(|candidate| known.contains(candidate))
    };
    // Names that stand for a module in this file: its child modules (`mod x;`) and
    // modules it imports by name (`use crate::config::{check, compile};`).
    let mut aliases: BTreeMap<String, String> = BTreeMap::new();
    for line in code.lines() {
        let line = line.trim();
        let line = line.strip_prefix("pub ").unwrap_or(line);
        if let Some(name) = line.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            let child = format!("{module}::{name}");
            if known.contains(&child) {
                aliases.insert(name.to_string(), child);
            }
        }
    }
    let mut found = BTreeSet::new();
    for path in &paths {
        let Some(segments) = absolute(path) else {
            continue;
        };
        if let Some(target) = resolve(&segments) {
            if segments.join("::") == target {
                let name = segments.last().cloned().unwrap_or_default();
                aliases.insert(name, target.clone());
            }
            found.insert(target);
        }
    }
    // `alias::item` paths in code (`compile::daemon::compile(...)`).
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(found_at) = code[at..].find("::") {
        let end = at + found_at;
        let start = code[..end]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let before = start.checked_sub(1).map(|i| bytes[i]);
        let name = &code[start..end];
        if before != Some(b':')
            && let Some(base) = aliases.get(name)
        {
            let tail = &code[end + 2..];
            let stop = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            let mut segments: Vec<String> = base.split("::").map(str::to_string).collect();
            segments.extend(tail[..stop].split("::").map(str::to_string));
            if let Some(target) = resolve(&segments) {
                found.insert(target);
            }
        }
        at = end + 2;
    }
    found.remove(module);
    found
}

/// The import graph of `src/`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(module, text)| (module.clone(), references(module, text, &known)))
        .collect()
}

fn is_config(module: &str) -> bool {
    module == "config" || module.starts_with("config::")
}

/// A cycle among `nodes` (following only edges between them), as a path, if any.
fn find_cycle(
    edges: &BTreeMap<String, BTreeSet<String>>,
    nodes: &BTreeSet<String>,
) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        nodes: &BTreeSet<String>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if !nodes.contains(next) {
                continue;
            }
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let from = path.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, edges, nodes, state, path) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in nodes {
        if state.get(node).copied().unwrap_or(0) == 0 {
            let mut path = Vec::new();
            if let Some(cycle) = visit(node, edges, nodes, &mut state, &mut path) {
                return Some(cycle);
            }
        }
    }
    None
}

/// What breaks the layering: a cycle inside `config`, or a lower module importing it.
fn violations(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    let config: BTreeSet<String> = edges.keys().filter(|m| is_config(m)).cloned().collect();
    if let Some(cycle) = find_cycle(edges, &config) {
        out.push(format!(
            "import cycle inside config: {}",
            cycle.join(" -> ")
        ));
    }
    for (module, targets) in edges {
        let below = BELOW_CONFIG
            .iter()
            .any(|b| module == b || module.starts_with(&format!("{b}::")));
        if !below {
            continue;
        }
        for target in targets.iter().filter(|t| is_config(t)) {
            out.push(format!("{module} imports {target}, a layer above it"));
        }
    }
    out
}

#[test]
fn config_stages_import_one_way_and_lower_layers_never_import_config() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.contains_key("config::spec") && edges.contains_key("plan"));
    // The stages depend on each other in pipeline order.
    assert!(
        edges["config::read"].contains("config::locate"),
        "the reader no longer uses the locator? {:?}",
        edges["config::read"]
    );
    let problems = violations(&edges);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker itself finds what it must find, so the test above cannot pass vacuously.
#[test]
fn the_layer_check_finds_a_cycle_and_an_upward_import() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("config")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod config;\npub mod plan;\n").unwrap();
    std::fs::write(
        src.join("config/mod.rs"),
        "pub mod load;\npub mod compile;\npub mod read;\nfn f() { read::x(); }\n",
    )
    .unwrap();
    std::fs::write(src.join("config/read.rs"), "").unwrap();
    std::fs::write(
        src.join("config/load.rs"),
        "use crate::config::{compile, spec::X};\n// use crate::plan;\nfn g() { compile::build(); }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("config/compile.rs"),
        "use std::fmt;\nfn f() { super::load::g(); }\n#[cfg(test)]\nmod tests { use crate::plan; }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("plan.rs"),
        "pub use crate::config::load::LoadOptions;\nfn f() -> crate::config::Thing {}\n",
    )
    .unwrap();
    let edges = graph(src);
    assert_eq!(
        edges["config"],
        BTreeSet::from(["config::read".to_string()]),
        "a child module named by a relative path"
    );
    assert_eq!(
        edges["config::load"],
        BTreeSet::from(["config::compile".to_string(), "config".to_string()]),
        "`spec` is unknown here, so `config::spec::X` resolves to `config`"
    );
    assert_eq!(
        edges["config::compile"],
        BTreeSet::from(["config::load".to_string()]),
        "test modules and comments are not imports"
    );
    let problems = violations(&edges);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].starts_with("import cycle inside config: "),
        "{problems:?}"
    );
    assert!(problems.contains(&"plan imports config, a layer above it".to_string()));
    assert!(problems.contains(&"plan imports config::load, a layer above it".to_string()));
}
