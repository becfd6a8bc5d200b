//! The dependency rules between the workspace's crates: a pure function ([`check`]) over a parsed dependency
//! graph, tested on synthetic graphs where an arrow is turned around, and applied to the real graph from
//! `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::Command;

use serde_json::Value;

use super::workspace_root;

// ---------------------------------------------------------------------------------------------------------------
// The policy
// ---------------------------------------------------------------------------------------------------------------

/// The workspace's internal crates, lowest layer first. An internal dependency (of any kind, dev included) must
/// point to a strictly lower layer: `token-model ← fake-cloud ← login-flow, token-proxy, token-agent ← att-tokend,
/// att-token ← fuzz-checks, gen-assets ← tests`. token-proxy (the HTTP proxy of `att-token proxy`) sits beside
/// login-flow: both may test against the fake, neither knows the other. token-agent (the D-Bus contract) sits
/// beside them too, and the two programs beside each other: the daemon and the client share the contract, and
/// neither builds the other ([`FORBIDDEN`]). gen-assets (man pages and completions) reads both programs'
/// command-line definitions.
/// fake-cloud sits below login-flow so login-flow's tests may run against it, while the fake never sees the
/// client code, nor the model's parsers (it depends on no internal crate: [`FORBIDDEN`]), and stays an independent
/// implementation of the protocol. fuzz-checks (what the fuzz targets
/// assert) sits above the parsers it checks.
const LAYERS: &[(&str, u32)] = &[
    ("token-model", 0),
    ("fake-cloud", 1),
    ("login-flow", 2),
    ("token-proxy", 2),
    ("token-agent", 2),
    ("att-tokend", 3),
    ("att-token", 3),
    ("fuzz-checks", 4),
    ("gen-assets", 4),
    ("tests", 5),
];

/// Internal crates that are tools, not the product: they depend on no internal crate but the dev-only ones, and
/// no internal crate depends on them.
const STANDALONE: &[&str] = &["xtask"];

/// Dev-only internal crates (the process harness): they depend on no internal crate, and the other crates reach
/// them only through dev-dependencies, except the tools in [`STANDALONE`], so nothing that ships ever builds them.
const DEV_ONLY: &[&str] = &["testbed"];

/// The crate that must stay free of I/O.
const PURE: &str = "token-model";

/// Crates that do I/O, read the clock or the OS's randomness: never in what token-model ships (normal
/// dependencies, transitively).
const PURE_DENIED: &[&str] = &[
    "async-io",
    "async-net",
    "async-process",
    "async-std",
    "axum",
    "axum-core",
    "fastrand",
    "getrandom",
    "h2",
    "hyper",
    "hyper-util",
    "iana-time-zone",
    "libc",
    "mio",
    "nix",
    "polling",
    "rand",
    "reqwest",
    "ring",
    "rustix",
    "rustls",
    "sd-notify",
    "smol",
    "socket2",
    "tempfile",
    "tokio",
    "tokio-cron-scheduler",
    "tokio-stream",
    "tokio-util",
    "tower",
    "tower-http",
    "tracing-subscriber",
    "winapi",
    "windows",
    "windows-sys",
    "zbus",
];

/// token-model's reviewed direct dependencies (normal and build). A new one must be looked at and added here.
const PURE_ALLOWED_DIRECT: &[&str] = &["httpdate", "serde", "serde_json", "thiserror", "zeroize"];

/// token-model's reviewed direct dev-dependencies.
const PURE_ALLOWED_DEV: &[&str] = &["proptest"];

/// `(from, to)`: `from` must never build `to`, directly or through other crates.
const FORBIDDEN: &[(&str, &str)] = &[
    ("token-model", "login-flow"),
    ("token-model", "att-tokend"),
    ("token-model", "fake-cloud"),
    ("login-flow", "zbus"),
    ("login-flow", "att-tokend"),
    // The fake implements the protocol on its own: not even the model's reply parsers.
    ("fake-cloud", "token-model"),
    ("fake-cloud", "att-tokend"),
    ("fake-cloud", "login-flow"),
    ("fake-cloud", "token-proxy"),
    ("token-proxy", "zbus"),
    ("token-proxy", "att-tokend"),
    ("token-proxy", "login-flow"),
    // The daemon holds only the daemon: none of the client's code or dependencies.
    ("att-tokend", "att-token"),
    ("att-tokend", "token-proxy"),
    ("att-tokend", "rpassword"),
    ("att-token", "att-tokend"),
    // The D-Bus contract knows neither side's internals, nor the cloud's protocol.
    ("token-agent", "att-tokend"),
    ("token-agent", "att-token"),
    ("token-agent", "login-flow"),
    ("token-agent", "token-proxy"),
];

/// Packages no workspace member may build, by any path: the fuzzing runtime lives in `fuzz/`, a workspace of
/// its own built on nightly, so stable builds and CI never compile it.
const NOWHERE: &[&str] = &["libfuzzer-sys"];

/// Everything [`check`] enforces.
struct Policy<'a> {
    layers: &'a [(&'a str, u32)],
    standalone: &'a [&'a str],
    dev_only: &'a [&'a str],
    pure: &'a str,
    pure_denied: &'a [&'a str],
    pure_allowed_direct: &'a [&'a str],
    pure_allowed_dev: &'a [&'a str],
    forbidden: &'a [(&'a str, &'a str)],
    nowhere: &'a [&'a str],
}

const POLICY: Policy<'static> = Policy {
    layers: LAYERS,
    standalone: STANDALONE,
    dev_only: DEV_ONLY,
    pure: PURE,
    pure_denied: PURE_DENIED,
    pure_allowed_direct: PURE_ALLOWED_DIRECT,
    pure_allowed_dev: PURE_ALLOWED_DEV,
    forbidden: FORBIDDEN,
    nowhere: NOWHERE,
};

// ---------------------------------------------------------------------------------------------------------------
// The dependency graph
// ---------------------------------------------------------------------------------------------------------------

/// How a package depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Normal,
    Build,
    Dev,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Build => "build",
            Kind::Dev => "dev",
        }
    }
}

#[derive(Debug, Default)]
struct Package {
    name: String,
    member: bool,
    deps: BTreeSet<(usize, Kind)>,
}

/// A resolved dependency graph. Packages are indexed, since one name may come in several versions.
#[derive(Debug, Default)]
struct Graph {
    packages: Vec<Package>,
}

impl Graph {
    /// Reads the output of `cargo metadata --format-version 1` (which must include `resolve`).
    fn from_metadata(metadata: &Value) -> Result<Self, String> {
        let mut graph = Graph::default();
        let mut index = BTreeMap::new();
        let packages = metadata["packages"].as_array().ok_or("cargo metadata has no `packages` array")?;
        for package in packages {
            let id = package["id"].as_str().ok_or("a package without `id`")?;
            let name = package["name"].as_str().ok_or_else(|| format!("package {id} has no `name`"))?;
            index.insert(id.to_owned(), graph.packages.len());
            graph.packages.push(Package { name: name.to_owned(), ..Package::default() });
        }
        let lookup = |id: &Value| {
            let id = id.as_str().ok_or("a package id that is not a string")?;
            index.get(id).copied().ok_or_else(|| format!("unknown package id {id}"))
        };
        for member in metadata["workspace_members"].as_array().ok_or("cargo metadata has no `workspace_members`")? {
            let at = lookup(member)?;
            graph.packages[at].member = true;
        }
        let nodes = metadata["resolve"]["nodes"]
            .as_array()
            .ok_or("cargo metadata has no `resolve.nodes`: run it without --no-deps")?;
        for node in nodes {
            let from = lookup(&node["id"])?;
            for dep in node["deps"].as_array().ok_or("a resolve node without `deps`")? {
                let to = lookup(&dep["pkg"])?;
                for dep_kind in dep["dep_kinds"].as_array().ok_or("a dependency without `dep_kinds`")? {
                    let kind = match dep_kind["kind"].as_str() {
                        None => Kind::Normal,
                        Some("build") => Kind::Build,
                        Some("dev") => Kind::Dev,
                        Some(other) => return Err(format!("unknown dependency kind {other:?}")),
                    };
                    graph.packages[from].deps.insert((to, kind));
                }
            }
        }
        Ok(graph)
    }

    /// The index of the package `name`, adding it if absent (for synthetic graphs, where names are unique).
    fn node(&mut self, name: &str) -> usize {
        if let Some(at) = self.packages.iter().position(|p| p.name == name) {
            return at;
        }
        self.packages.push(Package { name: name.to_owned(), ..Package::default() });
        self.packages.len() - 1
    }

    /// Adds a workspace member (synthetic graphs).
    fn member(mut self, name: &str) -> Self {
        let at = self.node(name);
        self.packages[at].member = true;
        self
    }

    /// Adds a dependency edge (synthetic graphs).
    fn edge(mut self, from: &str, to: &str, kind: Kind) -> Self {
        let (from, to) = (self.node(from), self.node(to));
        self.packages[from].deps.insert((to, kind));
        self
    }

    fn named<'g>(&'g self, name: &'g str) -> impl Iterator<Item = usize> + 'g {
        self.packages.iter().enumerate().filter(move |(_, p)| p.name == name).map(|(at, _)| at)
    }

    /// Every package reachable from `root`, with the parent it was first reached from.
    ///
    /// `shipped` follows normal dependencies only (what ends up in `root`'s library); otherwise the search
    /// follows what building and testing `root` compiles: `root`'s normal, build and dev dependencies, then
    /// their normal and build dependencies (dev-dependencies of dependencies are never built).
    fn reach(&self, root: usize, shipped: bool) -> BTreeMap<usize, usize> {
        let mut parent = BTreeMap::from([(root, root)]);
        let mut queue = VecDeque::from([root]);
        while let Some(at) = queue.pop_front() {
            for &(to, kind) in &self.packages[at].deps {
                let follow = match kind {
                    Kind::Normal => true,
                    Kind::Build => !shipped,
                    Kind::Dev => !shipped && at == root,
                };
                if follow && !parent.contains_key(&to) {
                    parent.insert(to, at);
                    queue.push_back(to);
                }
            }
        }
        parent
    }

    /// `a → b → c`, from the root of `parents` to `to`.
    fn path(&self, parents: &BTreeMap<usize, usize>, mut to: usize) -> String {
        let mut names = vec![self.packages[to].name.as_str()];
        while parents[&to] != to {
            to = parents[&to];
            names.push(&self.packages[to].name);
        }
        names.reverse();
        names.join(" → ")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------------------------------

/// Every way `graph` breaks `policy`, one message per problem saying what is wrong and what to do; empty if none.
fn check(graph: &Graph, policy: &Policy<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let layer = |name: &str| policy.layers.iter().find(|(n, _)| *n == name).map(|&(_, l)| l);
    let standalone = |name: &str| policy.standalone.contains(&name);
    let dev_only = |name: &str| policy.dev_only.contains(&name);
    let order = policy.layers.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ← ");

    // Every internal crate is placed, and internal arrows point to a strictly lower layer.
    for package in graph.packages.iter().filter(|p| p.member) {
        let from = package.name.as_str();
        if layer(from).is_none() && !standalone(from) && !dev_only(from) {
            problems.push(format!(
                "workspace crate {from} has no place in the architecture: add it to LAYERS, STANDALONE or DEV_ONLY \
                 in tests/it/architecture.rs (and to ARCHITECTURE.md's codemap)"
            ));
        }
        for &(to, kind) in &package.deps {
            let target = &graph.packages[to];
            if !target.member {
                continue;
            }
            let to = target.name.as_str();
            let dev = kind == Kind::Dev;
            let kind = kind.as_str();
            if dev_only(from) {
                problems.push(format!(
                    "{from} is dev-only and must depend on no internal crate, but has a {kind} dependency on {to}: \
                     run the programs as processes (built with cargo) instead"
                ));
            } else if dev_only(to) {
                if !dev && !standalone(from) {
                    problems.push(format!(
                        "{from} has a {kind} dependency on {to}, which is dev-only: what ships must never build it; \
                         make it a [dev-dependencies] entry"
                    ));
                }
            } else if standalone(from) {
                problems.push(format!(
                    "{from} must depend on no internal crate but the dev-only ones, but has a {kind} dependency on \
                     {to}: keep {from} standalone (run other crates as processes instead)"
                ));
            } else if standalone(to) {
                problems.push(format!(
                    "{from} has a {kind} dependency on {to}, which no crate may depend on: move the shared code \
                     into a library crate"
                ));
            } else if let (Some(lf), Some(lt)) = (layer(from), layer(to))
                && lt >= lf
            {
                problems.push(format!(
                    "dependency arrow turned around: {from} (layer {lf}) has a {kind} dependency on {to} \
                     (layer {lt}); arrows point {order}: move the shared code down into the lower crate"
                ));
            }
        }
    }

    // Forbidden pairs, transitively, over everything building or testing the crate compiles.
    for &(from, to) in policy.forbidden {
        for root in graph.named(from) {
            let reached = graph.reach(root, false);
            for target in graph.named(to).filter(|t| reached.contains_key(t)) {
                problems.push(format!(
                    "{from} must not depend on {to}, but does: {}; remove that dependency",
                    graph.path(&reached, target)
                ));
            }
        }
    }

    // Packages that no member may build.
    for root in graph.packages.iter().enumerate().filter(|(_, p)| p.member).map(|(at, _)| at) {
        let reached = graph.reach(root, false);
        for &target in reached.keys() {
            let name = graph.packages[target].name.as_str();
            if policy.nowhere.contains(&name) {
                problems.push(format!(
                    "workspace crate {} builds {name}: {}; fuzzing code belongs in fuzz/ (its own workspace, on \
                     nightly), with the assertions in fuzz-checks",
                    graph.packages[root].name,
                    graph.path(&reached, target)
                ));
            }
        }
    }

    // The pure crate: reviewed direct dependencies, and nothing that does I/O in what it ships.
    for root in graph.named(policy.pure) {
        for &(to, kind) in &graph.packages[root].deps {
            let name = graph.packages[to].name.as_str();
            let allowed = match kind {
                Kind::Dev => policy.pure_allowed_dev,
                Kind::Normal | Kind::Build => policy.pure_allowed_direct,
            };
            if !allowed.contains(&name) {
                problems.push(format!(
                    "{} has a new {} dependency {name} that nobody has reviewed: if it does no I/O and reads no \
                     clock, add it to PURE_ALLOWED_{} in tests/it/architecture.rs, otherwise move the code that \
                     needs it to login-flow or att-tokend",
                    policy.pure,
                    kind.as_str(),
                    if kind == Kind::Dev { "DEV" } else { "DIRECT" },
                ));
            }
        }
        let shipped = graph.reach(root, true);
        for &target in shipped.keys() {
            let name = graph.packages[target].name.as_str();
            if policy.pure_denied.contains(&name) {
                problems.push(format!(
                    "{} must stay free of I/O, but ships {name}: {}; move the code that needs it to login-flow \
                     or att-tokend and pass values (like `now`) in as parameters",
                    policy.pure,
                    graph.path(&shipped, target)
                ));
            }
        }
    }
    problems
}

fn real_graph() -> Graph {
    Graph::from_metadata(&metadata()).unwrap_or_else(|e| panic!("cannot read cargo metadata: {e}"))
}

/// `cargo metadata` of the workspace, as JSON.
fn metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = workspace_root().join("Cargo.toml");
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} metadata: {e}; is cargo on PATH?"));
    assert!(
        output.status.success(),
        "cargo metadata failed ({}): {}; fix the workspace manifests first",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// The features `package` asks of its normal (shipped) dependency `dependency`, from `cargo metadata`.
fn normal_dependency_features(metadata: &Value, package: &str, dependency: &str) -> Vec<String> {
    let packages = metadata["packages"].as_array().expect("cargo metadata lists packages");
    let package = packages.iter().find(|p| p["name"] == package).unwrap_or_else(|| panic!("no package {package}"));
    let dependencies = package["dependencies"].as_array().expect("a package lists its dependencies");
    let normal = dependencies
        .iter()
        .find(|d| d["name"] == dependency && d["kind"].is_null())
        .unwrap_or_else(|| panic!("{package} has no normal dependency on {dependency}", package = package["name"]));
    normal["features"].as_array().into_iter().flatten().filter_map(|f| f.as_str().map(str::to_owned)).collect()
}

#[test]
fn the_daemon_ships_the_contract_without_its_client_side() {
    // The proxies and `connect` cost the shipped daemon about 16 KiB though it never calls them.
    let metadata = metadata();
    let features = normal_dependency_features(&metadata, "att-tokend", "token-agent");
    assert!(
        !features.iter().any(|f| f == "client"),
        "att-tokend must not turn on token-agent's `client` feature in [dependencies] (only in [dev-dependencies]): \
         {features:?}"
    );
    let client = normal_dependency_features(&metadata, "att-token", "token-agent");
    assert!(client.iter().any(|f| f == "client"), "att-token uses the proxies, so the check above is real");
}

#[test]
fn real_dependency_graph_points_one_way_and_keeps_token_model_free_of_io() {
    let graph = real_graph();
    let members: BTreeSet<_> = graph.packages.iter().filter(|p| p.member).map(|p| p.name.as_str()).collect();
    for expected in [
        "token-model",
        "login-flow",
        "fake-cloud",
        "token-proxy",
        "token-agent",
        "att-tokend",
        "att-token",
        "gen-assets",
        "fuzz-checks",
        "xtask",
        "tests",
        "testbed",
    ] {
        assert!(members.contains(expected), "workspace member {expected} not found in cargo metadata: {members:?}");
    }
    let problems = check(&graph, &POLICY);
    assert!(problems.is_empty(), "the dependency graph breaks the architecture:\n- {}", problems.join("\n- "));
}

/// The intended architecture as a small synthetic graph, close to the real one.
fn intended() -> Graph {
    Graph::default()
        .member("token-model")
        .member("fake-cloud")
        .member("login-flow")
        .member("att-tokend")
        .member("tests")
        .member("xtask")
        .edge("token-model", "serde", Kind::Normal)
        .edge("token-model", "serde_json", Kind::Normal)
        .edge("serde_json", "serde", Kind::Normal)
        .edge("token-model", "proptest", Kind::Dev)
        .edge("proptest", "rand", Kind::Normal)
        .edge("rand", "getrandom", Kind::Normal)
        .edge("getrandom", "libc", Kind::Normal)
        .edge("fake-cloud", "axum", Kind::Normal)
        .edge("axum", "tokio", Kind::Normal)
        .edge("tokio", "mio", Kind::Normal)
        .edge("login-flow", "token-model", Kind::Normal)
        .edge("login-flow", "reqwest", Kind::Normal)
        .edge("reqwest", "tokio", Kind::Normal)
        .edge("login-flow", "fake-cloud", Kind::Dev)
        .edge("att-tokend", "login-flow", Kind::Normal)
        .edge("att-tokend", "token-model", Kind::Normal)
        .edge("att-tokend", "zbus", Kind::Normal)
        .edge("zbus", "tokio", Kind::Normal)
        .edge("zbus", "zbus-dev-only", Kind::Dev)
        .edge("att-tokend", "fake-cloud", Kind::Dev)
        .edge("tests", "att-tokend", Kind::Dev)
        .edge("tests", "serde_json", Kind::Dev)
        .edge("xtask", "anyhow", Kind::Normal)
        .member("testbed")
        .edge("testbed", "nix", Kind::Normal)
        .edge("xtask", "testbed", Kind::Normal)
        .edge("tests", "testbed", Kind::Dev)
        .edge("att-tokend", "testbed", Kind::Dev)
        .member("token-proxy")
        .member("token-agent")
        .member("att-token")
        .member("gen-assets")
        .edge("token-proxy", "reqwest", Kind::Normal)
        .edge("token-proxy", "fake-cloud", Kind::Dev)
        .edge("token-agent", "zbus", Kind::Normal)
        .edge("att-tokend", "token-agent", Kind::Normal)
        .edge("att-token", "token-agent", Kind::Normal)
        .edge("att-token", "token-proxy", Kind::Normal)
        .edge("att-token", "login-flow", Kind::Normal)
        .edge("att-token", "rpassword", Kind::Normal)
        .edge("att-token", "testbed", Kind::Dev)
        .edge("gen-assets", "att-tokend", Kind::Normal)
        .edge("gen-assets", "att-token", Kind::Normal)
        .edge("tests", "token-agent", Kind::Dev)
}

fn assert_one_problem(graph: &Graph, expected: &[&str]) {
    let problems = check(graph, &POLICY);
    assert!(!problems.is_empty(), "the checker accepted a graph that breaks the architecture");
    assert!(
        problems.iter().any(|p| expected.iter().all(|e| p.contains(e))),
        "no problem mentions {expected:?}: {problems:#?}"
    );
}

#[test]
fn checker_accepts_the_intended_graph() {
    assert_eq!(check(&intended(), &POLICY), Vec::<String>::new());
}

#[test]
fn checker_fails_when_token_model_arrow_turns_around() {
    let reversed = intended().edge("token-model", "login-flow", Kind::Normal);
    assert_one_problem(&reversed, &["arrow turned around", "token-model", "login-flow"]);
    assert_one_problem(&reversed, &["token-model must not depend on login-flow", "token-model → login-flow"]);
}

#[test]
fn checker_fails_when_login_flow_arrow_turns_around() {
    let reversed = intended().edge("login-flow", "att-tokend", Kind::Dev);
    assert_one_problem(&reversed, &["arrow turned around", "login-flow", "dev dependency on att-tokend"]);
}

#[test]
fn checker_fails_when_fake_cloud_depends_on_the_client_side() {
    let reversed = intended().edge("fake-cloud", "login-flow", Kind::Normal);
    assert_one_problem(&reversed, &["arrow turned around", "fake-cloud", "login-flow"]);
    assert_one_problem(&reversed, &["fake-cloud must not depend on login-flow"]);
    let reversed = intended().edge("fake-cloud", "att-tokend", Kind::Dev);
    assert_one_problem(&reversed, &["fake-cloud must not depend on att-tokend"]);
    let shared = intended().edge("fake-cloud", "token-model", Kind::Normal);
    assert_one_problem(&shared, &["fake-cloud must not depend on token-model"]);
}

#[test]
fn checker_fails_when_login_flow_reaches_zbus_transitively() {
    let graph = intended().edge("login-flow", "some-helper", Kind::Normal).edge("some-helper", "zbus", Kind::Normal);
    assert_one_problem(&graph, &["login-flow must not depend on zbus", "login-flow → some-helper → zbus"]);
}

#[test]
fn checker_fails_when_token_model_grows_tokio_through_a_reviewed_dependency() {
    let graph = intended().edge("serde_json", "tokio", Kind::Normal);
    assert_one_problem(&graph, &["token-model must stay free of I/O", "token-model → serde_json → tokio"]);
    assert_one_problem(&graph, &["ships mio", "tokio → mio"]);
}

#[test]
fn checker_fails_when_token_model_gets_an_unreviewed_dependency() {
    let graph = intended().edge("token-model", "chrono", Kind::Normal);
    assert_one_problem(&graph, &["new normal dependency chrono", "PURE_ALLOWED_DIRECT"]);
    let graph = intended().edge("token-model", "tempfile", Kind::Dev);
    assert_one_problem(&graph, &["new dev dependency tempfile", "PURE_ALLOWED_DEV"]);
}

#[test]
fn checker_fails_when_xtask_depends_on_an_internal_crate_or_is_depended_on() {
    let graph = intended().edge("xtask", "token-model", Kind::Normal);
    assert_one_problem(&graph, &["xtask must depend on no internal crate", "token-model"]);
    let graph = intended().edge("att-tokend", "xtask", Kind::Build);
    assert_one_problem(&graph, &["att-tokend has a build dependency on xtask"]);
}

#[test]
fn checker_fails_when_the_dev_only_harness_ships_or_depends_on_the_product() {
    let graph = intended().edge("att-tokend", "testbed", Kind::Normal);
    assert_one_problem(&graph, &["att-tokend has a normal dependency on testbed, which is dev-only"]);
    let graph = intended().edge("login-flow", "testbed", Kind::Build);
    assert_one_problem(&graph, &["login-flow has a build dependency on testbed"]);
    let graph = intended().edge("testbed", "att-tokend", Kind::Normal);
    assert_one_problem(&graph, &["testbed is dev-only and must depend on no internal crate", "att-tokend"]);
    let graph = intended().edge("testbed", "fake-cloud", Kind::Dev);
    assert_one_problem(&graph, &["testbed is dev-only", "dev dependency on fake-cloud"]);
}

#[test]
fn checker_fails_when_token_proxy_learns_d_bus() {
    let graph = intended().member("token-proxy").edge("token-proxy", "zbus", Kind::Normal);
    assert_one_problem(&graph, &["token-proxy", "zbus"]);
}

#[test]
fn checker_fails_when_a_member_builds_the_fuzzing_runtime() {
    let graph = intended().member("fuzz-checks").edge("fuzz-checks", "att-tokend", Kind::Normal);
    assert_eq!(check(&graph, &POLICY), Vec::<String>::new());
    let graph = graph.edge("fuzz-checks", "libfuzzer-sys", Kind::Normal);
    assert_one_problem(&graph, &["fuzz-checks builds libfuzzer-sys", "fuzz-checks → libfuzzer-sys"]);
    let graph = intended().edge("tests", "helper", Kind::Dev).edge("helper", "libfuzzer-sys", Kind::Normal);
    assert_one_problem(&graph, &["tests builds libfuzzer-sys", "tests → helper → libfuzzer-sys"]);
}

#[test]
fn the_fuzz_targets_are_not_a_workspace_member() {
    let graph = real_graph();
    let members: Vec<_> = graph.packages.iter().filter(|p| p.member).map(|p| p.name.as_str()).collect();
    assert!(members.contains(&"fuzz-checks"), "fuzz-checks is a member, so stable tests replay the corpora");
    assert!(!members.contains(&"att-tokend-fuzz"), "fuzz/ must stay out of the workspace: {members:?}");
    let fuzz_manifest = std::fs::read_to_string(workspace_root().join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
    assert!(fuzz_manifest.contains("\n[workspace]"), "fuzz/Cargo.toml declares a workspace of its own");
}

#[test]
fn checker_fails_on_a_workspace_crate_without_a_place() {
    let graph = intended().member("shiny-new-crate");
    assert_one_problem(&graph, &["shiny-new-crate has no place", "LAYERS"]);
}

#[test]
fn checker_ignores_what_is_never_built_or_shipped() {
    // The dev-dependency of a dependency is never built, and token-model's own dev-dependencies (proptest →
    // rand → getrandom → libc, in `intended`) never ship.
    let graph = intended().edge("token-model", "zeroize", Kind::Normal).edge("zeroize", "tokio", Kind::Dev);
    assert_eq!(check(&graph, &POLICY), Vec::<String>::new());
}

#[test]
fn metadata_parser_reads_members_and_dependency_kinds() {
    let metadata = serde_json::json!({
        "packages": [
            {"id": "path+file:///w/crates/token-model#0.1.0", "name": "token-model"},
            {"id": "path+file:///w/crates/login-flow#0.1.0", "name": "login-flow"},
            {"id": "registry+x#tokio@1.0.0", "name": "tokio"},
        ],
        "workspace_members": ["path+file:///w/crates/token-model#0.1.0", "path+file:///w/crates/login-flow#0.1.0"],
        "resolve": {"nodes": [
            {"id": "path+file:///w/crates/token-model#0.1.0", "deps": [
                {"name": "login_flow", "pkg": "path+file:///w/crates/login-flow#0.1.0",
                 "dep_kinds": [{"kind": null, "target": null}]},
                {"name": "tokio", "pkg": "registry+x#tokio@1.0.0",
                 "dep_kinds": [{"kind": "dev", "target": null}, {"kind": "build", "target": null}]},
            ]},
            {"id": "path+file:///w/crates/login-flow#0.1.0", "deps": []},
            {"id": "registry+x#tokio@1.0.0", "deps": []},
        ]},
    });
    let graph = Graph::from_metadata(&metadata).unwrap();
    let names: Vec<_> = graph.packages.iter().map(|p| (p.name.as_str(), p.member)).collect();
    assert_eq!(names, [("token-model", true), ("login-flow", true), ("tokio", false)]);
    let deps: Vec<_> = graph.packages[0].deps.iter().copied().collect();
    assert_eq!(deps, [(1, Kind::Normal), (2, Kind::Build), (2, Kind::Dev)]);
    let problems = check(&graph, &POLICY);
    assert!(problems.iter().any(|p| p.contains("arrow turned around")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("new build dependency tokio")), "{problems:#?}");

    let err = Graph::from_metadata(&serde_json::json!({"packages": []})).unwrap_err();
    assert!(err.contains("workspace_members"), "{err}");
}

#[test]
fn checker_fails_when_the_daemon_builds_the_client() {
    let graph = intended().edge("att-tokend", "att-token", Kind::Dev);
    let problems = check(&graph, &POLICY);
    assert!(problems.iter().any(|p| p.contains("att-tokend must not depend on att-token")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("att-tokend must not depend on token-proxy")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("att-tokend must not depend on rpassword")), "{problems:#?}");
    let graph = intended().edge("att-tokend", "token-proxy", Kind::Normal);
    assert_one_problem(&graph, &["att-tokend must not depend on token-proxy"]);
    let graph = intended().edge("att-token", "att-tokend", Kind::Normal);
    assert_one_problem(&graph, &["att-token must not depend on att-tokend"]);
}

#[test]
fn checker_fails_when_the_contract_learns_a_side() {
    let graph = intended().edge("token-agent", "login-flow", Kind::Normal);
    assert_one_problem(&graph, &["token-agent must not depend on login-flow"]);
    let graph = intended().edge("token-agent", "att-tokend", Kind::Dev);
    let problems = check(&graph, &POLICY);
    assert!(problems.iter().any(|p| p.contains("token-agent must not depend on att-tokend")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("arrow turned around")), "{problems:#?}");
}
