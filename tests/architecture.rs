//! The architecture invariants of ARCHITECTURE.md that a test can check, read from the source
//! itself: the top-level modules import each other without cycles, nothing below `agent`
//! imports it, the pure modules use no runtime, disk or network crate, only `store` touches sled,
//! and the door's decision path never awaits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Modules that may import `agent`: the layers above it.
const ABOVE_AGENT: [&str; 2] = ["demo", "testing"];

/// Pure logic: decided from arguments alone, unit-tested without hardware, disks or networks.
const PURE: [&str; 14] = [
    "access.rs",
    "error_chain.rs",
    "queue_table.rs",
    "config/strings.rs",
    "credential.rs",
    "door.rs",
    "snapshot.rs",
    "snapshot/index.rs",
    "sync/plan.rs",
    "status/progress.rs",
    "wiegand.rs",
    "uplink/policy.rs",
    "doorflow/error.rs",
    "config/values.rs",
];

/// Crates that do I/O (or schedule it).
const IO_CRATES: [&str; 4] = ["tokio", "sled", "reqwest", "axum"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file, keyed by its path under `src/`, without comments (a module named in a
/// doc comment is not an import) and without its unit tests (a `#[cfg(test)] mod` at the end of
/// the file: tests may use helpers from any layer).
fn sources() -> BTreeMap<String, String> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(SRC).unwrap().to_string_lossy().to_string();
            let mut text = std::fs::read_to_string(&path).unwrap();
            if let Some(tests) = text.find("#[cfg(test)]\nmod ") {
                text.truncate(tests);
            }
            let code: Vec<&str> = text
                .lines()
                .map(|line| match line.find("//") {
                    Some(at) if !line[..at].contains('"') => &line[..at],
                    _ => line,
                })
                .collect();
            (relative, code.join("\n"))
        })
        .collect()
}

/// The top-level module a file belongs to (`hw/mock.rs` → `hw`, `agent.rs` → `agent`);
/// binaries and the crate root are not modules.
fn top_module(file: &str) -> Option<&str> {
    match file {
        "lib.rs" | "main.rs" => None,
        _ if file.starts_with("bin/") => None,
        _ => Some(file.split('/').next().unwrap().trim_end_matches(".rs")),
    }
}

/// Top-level modules named after `crate::` in `code`, including those in `use crate::{a, b}`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Top-level module → the other top-level modules it imports.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let sources = sources();
    let modules: BTreeSet<String> = sources
        .keys()
        .filter_map(|f| top_module(f).map(str::to_string))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, code) in &sources {
        let Some(module) = top_module(file) else { continue };
        let edges = graph.entry(module.to_string()).or_default();
        for import in crate_imports(code) {
            if import != module && modules.contains(&import) {
                edges.insert(import);
            }
        }
    }
    graph
}

/// A cycle through `start`, if any (depth-first search).
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        node: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    visit(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_import_parser_reads_paths_and_groups() {
    let imports = crate_imports(
        "use crate::config::{Config, Bias};\nuse crate::{store::Store, snapshot::{self, Shift}};\nlet x = crate::mutex::lock(&m);",
    );
    let expected: BTreeSet<String> = ["config", "mutex", "snapshot", "store"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(imports, expected);
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(
        cycle_from(&graph, "a"),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = module_graph();
    assert!(graph.len() > 15, "the source tree was not found: {graph:?}");
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|module| cycle_from(&graph, module))
        .map(|cycle| cycle.join(" → "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn nothing_below_the_agent_imports_it() {
    let offenders: Vec<String> = module_graph()
        .into_iter()
        .filter(|(module, imports)| imports.contains("agent") && !ABOVE_AGENT.contains(&module.as_str()))
        .map(|(module, _)| module)
        .collect();
    assert!(
        offenders.is_empty(),
        "modules below `agent` that import it: {offenders:?}"
    );
}

#[test]
fn pure_modules_use_no_runtime_disk_or_network_crate() {
    let sources = sources();
    for file in PURE {
        let code = sources
            .get(file)
            .unwrap_or_else(|| panic!("src/{file} is listed as pure but does not exist"));
        for krate in IO_CRATES {
            assert!(
                !code.contains(&format!("{krate}::")),
                "src/{file} is pure but uses `{krate}`"
            );
        }
    }
}

#[test]
fn only_the_store_touches_sled() {
    for (file, code) in sources() {
        if !file.starts_with("store") {
            assert!(!code.contains("sled::"), "src/{file} uses sled directly");
        }
    }
}

#[test]
fn the_door_decision_path_never_awaits() {
    let sources = sources();
    let code = &sources["door_task.rs"];
    // Only the task's loop and its wait for a reader's input may be async. `.await` compiles
    // only inside async code, so the decoding, deciding, relay and hand-off functions, being
    // plain functions, cannot wait for anything.
    let async_fns: Vec<&str> = code
        .match_indices("async fn ")
        .map(|(at, _)| {
            let name = &code[at + "async fn ".len()..];
            &name[..name.find(['(', '<']).unwrap_or(name.len())]
        })
        .collect();
    for name in &async_fns {
        assert!(
            ["run", "next_reader_input"].contains(name),
            "door_task's `{name}` is async: the door's decision path must not await"
        );
    }
}
