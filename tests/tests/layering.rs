//! The crates' dependencies point one way (ARCHITECTURE.md, "Layers"): the core crate
//! (`daemon/core`) depends on no runtime, store, network or config format, and nothing it
//! depends on does either; the store (`daemon/store`) adds sled and nothing else of those; the
//! runtime (`daemon/runtime`) knows no edge and no plugin loading, MQTT or HTTP server; each
//! edge (`daemon/edges/*`) builds on the runtime and never on another edge; only the
//! composition root (`leitsystemd`) knows them all. Read from `cargo metadata`, so a new
//! dependency that breaks a rule fails here, not in a review.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use serde_json::Value;

/// What the core crate must never depend on, directly or through another crate.
const FORBIDDEN_IN_CORE: [&str; 6] = ["tokio", "sled", "warp", "rumqttc", "toml", "libloading"];

/// The workspace's resolved dependency graph: package name → names of its normal and build
/// dependencies (dev-dependencies do not ship).
fn dependency_graph() -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    // This machine's platform only: the crates for others need not be downloaded.
    let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &platform, "--manifest-path", manifest])
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .context("no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in metadata["resolve"]["nodes"]
        .as_array()
        .context("no resolve graph")?
    {
        let id = node["id"].as_str().context("a node without id")?;
        let name = names.get(id).context("a node without package")?;
        let deps = graph.entry((*name).to_string()).or_default();
        for dep in node["deps"].as_array().into_iter().flatten() {
            let shipped = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].as_str() != Some("dev"));
            let dep_name = dep["pkg"].as_str().and_then(|pkg| names.get(pkg));
            if let (true, Some(dep_name)) = (shipped, dep_name) {
                deps.insert((*dep_name).to_string());
            }
        }
    }
    Ok(graph)
}

/// Every crate `root` depends on, directly or not.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(name) = todo.pop() {
        for dep in graph.get(&name).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

#[test]
fn the_core_crate_depends_on_no_runtime_store_network_or_config_format() -> anyhow::Result<()> {
    let graph = dependency_graph()?;
    let core = closure(&graph, "leitsystem-core");
    let daemon = closure(&graph, "leitsystemd");
    // The walk sees through crates: the daemon reaches all of them (tokio through warp too).
    for name in FORBIDDEN_IN_CORE {
        assert!(
            daemon.contains(name),
            "the daemon does not reach {name}: {daemon:?}"
        );
    }
    assert!(
        daemon.contains("leitsystem-core"),
        "the daemon does not build on the core"
    );
    let found: Vec<&str> = FORBIDDEN_IN_CORE
        .into_iter()
        .filter(|name| core.contains(*name))
        .collect();
    assert!(
        found.is_empty(),
        "leitsystem-core depends on {found:?} (through {core:?}); move that code into the daemon"
    );
    // And nothing of the workspace: the core knows no other crate of ours.
    let ours: Vec<&String> = core
        .iter()
        .filter(|n| n.starts_with("leitsystem"))
        .collect();
    assert!(ours.is_empty(), "leitsystem-core depends on {ours:?}");
    Ok(())
}

/// What the store must never depend on: it is sled under the core's types, nothing more.
const FORBIDDEN_IN_STORE: [&str; 5] = ["tokio", "warp", "rumqttc", "toml", "libloading"];

#[test]
fn the_store_builds_on_the_core_and_sled_only() -> anyhow::Result<()> {
    let graph = dependency_graph()?;
    let store = closure(&graph, "leitsystem-store");
    assert!(
        store.contains("sled") && store.contains("leitsystem-core"),
        "{store:?}"
    );
    let found: Vec<&str> = FORBIDDEN_IN_STORE
        .into_iter()
        .filter(|name| store.contains(*name))
        .collect();
    assert!(found.is_empty(), "leitsystem-store depends on {found:?}");
    let ours: Vec<&String> = store
        .iter()
        .filter(|n| n.starts_with("leitsystem") && *n != "leitsystem-core")
        .collect();
    assert!(ours.is_empty(), "leitsystem-store depends on {ours:?}");
    // And the core does not know the store.
    assert!(!closure(&graph, "leitsystem-core").contains("leitsystem-store"));
    Ok(())
}

#[test]
fn the_website_simulator_stays_out_of_the_appliance() -> anyhow::Result<()> {
    let graph = dependency_graph()?;
    let daemon = closure(&graph, "leitsystemd");
    assert!(
        !daemon.contains("leitsystem-website-sim"),
        "the appliance ships the website simulator: {daemon:?}"
    );
    let sim = closure(&graph, "leitsystem-website-sim");
    assert!(sim.contains("leitsystem-core"), "{sim:?}");
    for appliance_only in ["leitsystemd", "leitsystem-store", "sled", "warp"] {
        assert!(
            !sim.contains(appliance_only),
            "the website simulator depends on {appliance_only}"
        );
    }
    Ok(())
}

/// The daemon's edges (`daemon/edges/*`): each builds on the runtime, none on another.
const EDGES: [&str; 4] = [
    "leitsystem-control",
    "leitsystem-devices",
    "leitsystem-sync",
    "leitsystem-web",
];

/// What the runtime must never depend on, directly or not: the edges' own technology.
const FORBIDDEN_IN_RUNTIME: [&str; 2] = ["warp", "rumqttc"];

#[test]
fn edges_build_on_the_runtime_never_on_each_other_and_only_the_root_knows_them_all()
-> anyhow::Result<()> {
    let graph = dependency_graph()?;
    let mut problems = Vec::new();
    for edge in EDGES {
        anyhow::ensure!(graph.contains_key(edge), "no crate {edge} in the workspace");
        let reaches = closure(&graph, edge);
        if !reaches.contains("leitsystem-runtime") {
            problems.push(format!("{edge} does not build on leitsystem-runtime"));
        }
        for other in EDGES.iter().filter(|o| **o != edge) {
            if reaches.contains(*other) {
                problems.push(format!("edge {edge} depends on edge {other}"));
            }
        }
    }
    let runtime = closure(&graph, "leitsystem-runtime");
    for name in EDGES.iter().chain(FORBIDDEN_IN_RUNTIME.iter()) {
        if runtime.contains(*name) {
            problems.push(format!("leitsystem-runtime depends on {name}"));
        }
    }
    // Plugin loading neither: not directly (the plugin SDK it uses for the ticket `Document`
    // has libloading behind its `testing` feature, which cargo metadata shows unified).
    if graph
        .get("leitsystem-runtime")
        .is_some_and(|deps| deps.contains("libloading"))
    {
        problems.push("leitsystem-runtime loads plugins (depends on libloading)".to_string());
    }
    let root = closure(&graph, "leitsystemd");
    for edge in EDGES {
        if !root.contains(edge) {
            problems.push(format!(
                "the composition root leitsystemd does not start {edge}"
            ));
        }
    }
    // Nobody else ships an edge: the drivers, the SDK, the store, the website simulator.
    for name in graph.keys() {
        if name == "leitsystemd" || name == "leitsystem-tests" || EDGES.contains(&name.as_str()) {
            continue;
        }
        let reaches = closure(&graph, name);
        for edge in EDGES {
            if reaches.contains(edge) {
                problems.push(format!("{name} depends on the edge {edge}"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}
