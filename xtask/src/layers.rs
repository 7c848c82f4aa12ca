//! The import rules behind README's "data flows one way", checked on the
//! source so they stay true: in copytrace/src a stage only uses the stages
//! below it, and in copytrace-ebpf/src no module uses one that uses it back.
//!
//! Only `crate::` paths in code count (comments are left out); `super::`
//! stays inside a folder, so it cannot cross a stage.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// copytrace's top-level modules, lowest first: each may use those before
/// it, never one after it. A new module must be placed here.
pub const STAGES: &[&str] = &[
    "model", "bpf", "enrich", "sink", "tail", "pipeline", "service", "cli", "commands",
];

/// Checks both crates under the workspace root `root`.
pub fn check(root: &Path) -> Result<()> {
    let mut problems = upward_uses(&sources(&root.join("copytrace/src"))?);
    let ebpf = sources(&root.join("copytrace-ebpf/src"))?;
    if let Some(cycle) = find_cycle(&graph(&ebpf)) {
        problems.push(format!(
            "copytrace-ebpf: a module cycle: {}",
            cycle.join(" -> ")
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "imports break the layering (xtask/src/layers.rs):\n  {}",
        problems.join("\n  ")
    )
}

/// Every `.rs` file under `dir`, keyed by the top-level module it belongs
/// to (`bpf/ringbuf.rs` → `bpf`), with its text; the crate root is left out.
fn sources(dir: &Path) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            let first = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.push((module, rel.display().to_string(), text));
        }
    }
    out.sort();
    Ok(out)
}

/// The top-level modules `text` names through `crate::`, outside comments.
fn uses(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for part in code.split("crate::").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// "file uses X" for each use of a later stage than the file's own.
fn upward_uses(files: &[(String, String, String)]) -> Vec<String> {
    let rank = |m: &str| STAGES.iter().position(|s| *s == m);
    let mut problems = Vec::new();
    for (module, file, text) in files {
        let Some(own) = rank(module) else {
            problems.push(format!(
                "copytrace/src/{file}: module {module} has no place in STAGES"
            ));
            continue;
        };
        for used in uses(text) {
            if rank(&used).is_some_and(|r| r > own) {
                problems.push(format!(
                    "copytrace/src/{file}: {module} uses {used}, a later stage"
                ));
            }
        }
    }
    problems
}

/// Module → the other modules it uses.
fn graph(files: &[(String, String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _, text) in files {
        let edges = g.entry(module.clone()).or_default();
        edges.extend(uses(text).into_iter().filter(|u| u != module));
    }
    g
}

/// One cycle of `g`, as the modules around it, if there is any.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(module: &str, text: &str) -> (String, String, String) {
        (module.into(), format!("{module}.rs"), text.into())
    }

    #[test]
    fn a_use_of_a_later_stage_is_found_and_comments_are_not() {
        let files = [
            file(
                "model",
                "use crate::sink::Demand;\n/// see [`crate::cli`]\n",
            ),
            file("sink", "use crate::model::x;\nfn f() { crate::bpf::g() }\n"),
        ];
        let problems = upward_uses(&files);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("model uses sink"), "{problems:?}");
    }

    #[test]
    fn a_module_without_a_stage_is_named() {
        let problems = upward_uses(&[file("utils", "")]);
        assert!(problems[0].contains("no place in STAGES"), "{problems:?}");
    }

    #[test]
    fn cycles_are_found_and_chains_are_not() {
        let chain = [
            file("a", "use crate::b::x;"),
            file("b", "use crate::c::x;"),
            file("c", ""),
        ];
        assert_eq!(find_cycle(&graph(&chain)), None);
        let ring = [
            file("a", "use crate::b::x;"),
            file("b", "use crate::c::x;"),
            file("c", "fn f() { crate::a::y() }"),
        ];
        let cycle = find_cycle(&graph(&ring)).expect("a cycle");
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4, "{cycle:?}");
    }

    /// The tree as committed keeps the rules (the same check `cargo xtask
    /// test` runs before its lints).
    #[test]
    fn this_workspace_keeps_them() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let copytrace = sources(&root.join("copytrace/src")).expect("sources");
        assert!(copytrace.len() > 40, "found {} files", copytrace.len());
        let problems = upward_uses(&copytrace);
        assert!(problems.is_empty(), "{problems:#?}");
        let ebpf = sources(&root.join("copytrace-ebpf/src")).expect("sources");
        assert!(ebpf.len() > 5, "found {} files", ebpf.len());
        assert_eq!(find_cycle(&graph(&ebpf)), None);
    }
}
