use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Topology, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("west")).unwrap();
    std::fs::create_dir_all(dir.path().join("east")).unwrap();
    Topology::parse("t.yaml", text, dir.path()).map_err(|e| e.to_string())
}

const GOOD: &str = "\
apiVersion: strait.io/v1alpha1
kind: Topology
metadata:
  name: west-east
spec:
  isolation: loopback
  images:
    myapp:latest: strait demo server
    other:1: [\"/bin/sh\", \"-c\", \"sleep 1000\"]
  clusters:
    - name: west
      manifests: [west]
    - name: east
      trustDomain: cluster.local
      clusterDomain: east.local
      manifests: east
      images:
        myapp:latest: strait demo server --latency 5ms
  links:
    - from: west
      to: east
";

#[test]
fn a_good_topology_reads_completely() {
    let t = parse(GOOD).unwrap();
    assert_eq!(t.name, "west-east");
    assert_eq!(t.isolation, Isolation::Loopback);
    assert_eq!(t.clusters.len(), 2);
    assert_eq!(t.clusters[0].trust_domain, "cluster.local");
    assert_eq!(t.clusters[1].cluster_domain, "east.local");
    assert!(t.clusters[1].manifests[0].ends_with("east"));
    assert_eq!(
        t.links,
        vec![Link {
            from: "west".into(),
            to: "east".into()
        }]
    );
    assert_eq!(t.sidecar, vec!["strait", "proxy"]);
    assert_eq!(t.images["other:1"], vec!["/bin/sh", "-c", "sleep 1000"]);
    // A cluster's own mapping wins over the topology's.
    assert_eq!(
        t.command_for(&t.clusters[1], "myapp:latest")
            .unwrap()
            .last()
            .unwrap(),
        "5ms"
    );
    assert_eq!(t.command_for(&t.clusters[0], "myapp:latest").unwrap().len(), 3);
    assert!(t.command_for(&t.clusters[0], "nope").is_none());
}

#[test]
fn every_mistake_names_line_field_and_expectation() {
    let bad = "\
apiVersion: strait.io/v1
kind: Topology
metadata:
  name: West_East
spec:
  isolation: vm
  colour: blue
  clusters:
    - name: west
      manifests: [missing-dir]
    - name: west
      trustDomain: \"not a domain\"
  links:
    - from: west
      to: moon
    - from: west
      to: west
";
    let err = parse(bad).unwrap_err();
    for want in [
        "t.yaml:1:1: document 1 (topology): apiVersion: expected strait.io/v1alpha1, found \"strait.io/v1\"",
        "t.yaml:4:3: document 1 (topology): metadata.name: expected a DNS-1123 label",
        "t.yaml:6:3: document 1 (topology): spec.isolation: expected netns, loopback or auto, found \"vm\"",
        "t.yaml:7:3: document 1 (topology): spec.colour: unknown field; expected one of",
        "t.yaml:10:19: document 1 (topology): spec.clusters[0].manifests[0]: expected an existing file or directory, found \"missing-dir\"",
        "t.yaml:11:7: document 1 (topology): spec.clusters[1].name: expected a unique cluster name",
        "spec.clusters[1].trustDomain: expected a DNS domain",
        "t.yaml:15:7: document 1 (topology): spec.links[0].to: expected one of the clusters (west, west), found \"moon\"",
        "spec.links[1].to: expected another cluster than \"west\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn structure_mistakes_are_reported_not_panicked_on() {
    for (text, want) in [
        ("", "expected a Topology document, found an empty file"),
        (
            "- a\n- b\n",
            "t.yaml:1:1: document 1 (topology): expected a mapping, found a list",
        ),
        (
            "apiVersion: strait.io/v1alpha1\nkind: Topology\nmetadata: {name: x}\n",
            "spec: expected a spec with clusters",
        ),
        (
            "apiVersion: strait.io/v1alpha1\nkind: Topology\nmetadata: {name: x}\nspec: {clusters: []}\n",
            "spec.clusters: expected a non-empty list of clusters",
        ),
        (
            "apiVersion: strait.io/v1alpha1\nkind: Topology\nmetadata: {name: x}\nspec: {clusters: [{name: a}], images: {x: 3}}\n",
            "spec.images.x: expected a command (a string, or a list of words), found 3",
        ),
        (
            "apiVersion: strait.io/v1alpha1\nkind: Topology\nmetadata: {name: x}\nspec:\n  clusters: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e}]\n",
            "spec.clusters: expected at most 4 clusters, found 5",
        ),
        ("key: [unclosed\n", "t.yaml:"),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(want), "{text:?}: missing {want:?} in:\n{err}");
    }
}

#[test]
fn an_unreadable_file_says_so() {
    let err = Topology::load(Path::new("/nonexistent/topology.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/topology.yaml: cannot read the topology file"),
        "{err}"
    );
}

#[test]
fn isolation_auto_follows_root() {
    assert_eq!(Isolation::Auto.resolve(true), Isolation::Netns);
    assert_eq!(Isolation::Auto.resolve(false), Isolation::Loopback);
    assert_eq!(Isolation::Loopback.resolve(true), Isolation::Loopback);
}

#[test]
fn shipped_topologies_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let t = Topology::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!t.clusters.is_empty());
            n += 1;
        }
    }
    assert!(n >= 1, "no topology files in {}", dir.display());
}
