//! The `strait` binary as a user runs it: real processes, real files, exit codes and output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn strait() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strait"));
    c.env_remove("STRAIT_STATE_DIR")
        .env_remove("STRAIT_CLUSTER")
        .env_remove("STRAIT_LOG");
    c
}

fn run(args: &[&str]) -> Output {
    strait().args(args).output().expect("strait runs")
}

fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = strait()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strait runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn seed() -> String {
    repo().join("examples/linkerd-seed").display().to_string()
}

#[test]
fn help_shows_the_whole_command_tree() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in [
        "install",
        "upgrade",
        "uninstall",
        "check",
        "inject",
        "uninject",
        "apply",
        "get",
        "delete",
        "up",
        "down",
        "multicluster",
        "viz",
        "profile",
        "diagnostics",
        "version",
        "proxy",
        "controller",
        "gateway",
        "mirror",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "{cmd} missing from:\n{help}"
        );
    }
    let mc = text(&run(&["multicluster", "--help"]).stdout);
    for cmd in ["install", "link", "unlink", "gateways", "check"] {
        assert!(mc.contains(cmd), "multicluster {cmd} missing:\n{mc}");
    }
    let viz = text(&run(&["viz", "--help"]).stdout);
    for cmd in ["stat", "top", "tap", "routes", "edges", "dashboard"] {
        assert!(viz.contains(cmd), "viz {cmd} missing:\n{viz}");
    }
}

#[test]
fn the_seed_manifests_validate() {
    let out = run(&["apply", "--dry-run=client", "-f", &seed()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    assert_eq!(stdout.lines().count(), 19, "{stdout}");
    assert!(stdout.contains("namespace/production valid"));
    assert!(stdout.contains("server.policy.linkerd.io/production/all-pods valid"));
    assert!(stdout.contains("trafficsplit.split.smi-spec.io/production/myapp-canary valid"));
    // 11-service-export.yaml re-declares myapp with the export label: an update, as with kubectl.
    assert!(
        stdout.contains("service/production/myapp valid (replaces the one at"),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("19 objects in 12 files valid; nothing was applied (dry run)"));
}

#[test]
fn a_bad_manifest_fails_with_its_location_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: myapp\n  namespace: production\nspec:\n  ports:\n    - port: 70000\n",
    )
    .unwrap();
    let out = run(&[
        "--state-dir",
        state.to_str().unwrap(),
        "apply",
        "-f",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:13:7: document 2 (service/production/myapp): spec.ports[0].port: expected a port number 1-65535, found 70000", bad.display())),
        "{err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    // The valid Namespace in the same file was not applied either.
    let out = run(&["--state-dir", state.to_str().unwrap(), "get", "ns", "production"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
}

#[test]
fn stdin_works_and_the_crds_load_back() {
    let crds = run(&["install", "--crds"]);
    assert!(crds.status.success(), "{}", text(&crds.stderr));
    let yaml = text(&crds.stdout);
    assert!(yaml.contains("name: servers.policy.linkerd.io"));
    assert!(yaml.contains("name: links.multicluster.linkerd.io"));
    let out = run_stdin(&["apply", "--dry-run", "-f", "-"], &crds.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("customresourcedefinition.apiextensions.k8s.io/httproutes.policy.linkerd.io valid")
    );
}

/// Applied straight to a state directory (no controller running), a Service takes its
/// namespace's `config.linkerd.io/opaque-ports` too, as the injector would give it.
#[test]
fn a_service_applied_to_a_state_directory_takes_its_namespace_s_opaque_ports() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().to_str().unwrap();
    let out = run_stdin(
        &["--state-dir", s, "apply", "-f", "-"],
        b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: db\n  annotations: {config.linkerd.io/opaque-ports: \"5432\"}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: pg\n  namespace: db\nspec:\n  ports: [{port: 5432}]\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["--state-dir", s, "get", "svc", "pg", "-n", "db", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["metadata"]["annotations"]["config.linkerd.io/opaque-ports"],
        "5432"
    );
}

#[test]
fn apply_get_delete_on_a_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    let seed = seed();
    // The tracing overrides live in the `linkerd` namespace, which only an install creates.
    let out = run(&["--state-dir", s, "apply", "-f", &seed]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("namespace \"linkerd\" not found"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--state-dir", s, "get", "ns", "production"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused apply leaves nothing behind"
    );
    let out = run_stdin(
        &["--state-dir", s, "apply", "-f", "-"],
        b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: linkerd\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "namespace/linkerd created");

    let out = run(&["--state-dir", s, "apply", "-f", &seed]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("namespace/production created"), "{stdout}");
    assert!(stdout.contains("service/production/myapp created"), "{stdout}");

    // Applying again changes nothing.
    let again = text(&run(&["--state-dir", s, "apply", "-f", &seed]).stdout);
    assert!(again.lines().all(|l| l.ends_with("unchanged")), "{again}");

    // The later file's export label won, as kubectl would leave it.
    let out = run(&[
        "--state-dir",
        s,
        "get",
        "svc",
        "myapp",
        "-n",
        "production",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata"]["labels"]["mirror.linkerd.io/exported"], "true");

    let table = text(&run(&["--state-dir", s, "get", "services", "-n", "production"]).stdout);
    let names: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["myapp", "myapp-v1", "myapp-v2"], "{table}");
    // kubectl's columns (a state directory without `strait up` allocates no cluster IPs).
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        "{table}"
    );
    for line in table.lines().skip(1) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            &cells[1..5],
            ["ClusterIP", "<none>", "<none>", "80/TCP"],
            "{table}"
        );
    }
    let srv = text(&run(&["--state-dir", s, "get", "srv", "-A", "-o", "name"]).stdout);
    assert_eq!(srv.lines().count(), 2, "{srv}");

    let out = run(&["--state-dir", s, "delete", "svc", "myapp-v2", "-n", "production"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("service/production/myapp-v2 deleted"));
    let out = run(&["--state-dir", s, "delete", "svc", "myapp-v2", "-n", "production"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"));
    let out = run(&[
        "--state-dir",
        s,
        "delete",
        "svc",
        "myapp-v2",
        "-n",
        "production",
        "--ignore-not-found",
    ]);
    assert!(out.status.success());

    // Deleting the namespace removes what is in it.
    assert!(
        run(&["--state-dir", s, "delete", "ns", "production"])
            .status
            .success()
    );
    let out = run(&["--state-dir", s, "get", "svc", "-A"]);
    assert!(
        text(&out.stderr).contains("No services found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn commands_of_later_issues_say_so_and_fail() {
    for args in [&["viz", "stat", "deploy"][..], &["profile", "myapp"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("not available in this build"), "{args:?}: {err}");
        assert!(err.contains("Nothing was done"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed something");
    }
}

#[test]
fn multicluster_link_needs_the_target_cluster() {
    // Neither a state directory nor a Kubernetes cluster (no kubeconfig, not in a pod).
    let home = tempfile::tempdir().unwrap();
    let out = strait()
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("missing-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["multicluster", "link", "--cluster-name", "east"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("pass --state-dir DIR of the target cluster")
            && err.contains("kubeconfig's current context"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn proxy_configuration_mistakes_name_the_variable_or_flag() {
    let proxy = |envs: &[(&str, &str)], args: &[&str]| {
        let mut c = strait();
        for v in [
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            "LINKERD2_PROXY_DESTINATION_SVC_NAME",
            "LINKERD2_PROXY_IDENTITY_SVC_NAME",
            "LINKERD2_PROXY_POLICY_SVC_NAME",
            "LINKERD2_PROXY_POLICY_SVC_ADDR",
        ] {
            c.env_remove(v);
        }
        c.envs(envs.iter().copied())
            .arg("proxy")
            .args(args)
            .output()
            .expect("strait runs")
    };
    let out = proxy(&[], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("LINKERD2_PROXY_DESTINATION_SVC_ADDR: not set; expected host:port"),
        "{err}"
    );
    let out = proxy(
        &[("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "dst:8086")],
        &["--identity-addr", "identity"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("LINKERD2_PROXY_IDENTITY_SVC_ADDR (--identity-addr): \"identity\" has no port"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    // A control-plane identity that is not a mesh identity: named, with an example.
    let out = proxy(
        &[
            ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "dst:8086"),
            ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", "identity:8080"),
        ],
        &["--destination-svc-name", "linkerd-dst.linkerd.svc.cluster.local"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("LINKERD2_PROXY_DESTINATION_SVC_NAME (--destination-svc-name): ")
            && err.contains("linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local"),
        "{err}"
    );
}

#[test]
fn usage_mistakes_tell_what_to_do() {
    let out = run(&["get", "svc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--state-dir"), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().to_str().unwrap();
    let out = run(&["--state-dir", s, "get", "gizmos"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown kind \"gizmos\""),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--state-dir", s, "get", "httproute"]);
    assert!(
        text(&out.stderr).contains("qualify it with its group"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn version_prints_the_client_version() {
    let out = run(&["version", "--client"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("Client version: strait-{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_controller_serves_until_terminated() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child = strait()
        .args(["--state-dir", state.to_str().unwrap(), "controller"])
        .args([
            "--destination-addr",
            "127.0.0.1:0",
            "--identity-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--policy-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bound: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let admin = bound["admin"].as_str().unwrap();
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut rsp = String::new();
    s.read_to_string(&mut rsp).unwrap();
    assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    assert!(
        state.join("identity/ca.crt").exists(),
        "local identity material is created"
    );

    // While the controller owns the state directory, commands go through its API (mTLS,
    // admin identity), transparently.
    let s_dir = state.to_str().unwrap();
    let out = run(&["--state-dir", s_dir, "get", "ns"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("default"), "{}", text(&out.stdout));
    let out = run(&[
        "--state-dir",
        s_dir,
        "apply",
        "-f",
        &seed_file("01-namespace-injection.yaml"),
        "-f",
        &seed_file("03-services.yaml"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("service/production/myapp-v1 created"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&[
        "--state-dir",
        s_dir,
        "get",
        "svc",
        "-n",
        "production",
        "-o",
        "name",
    ]);
    assert_eq!(text(&out.stdout).lines().count(), 3, "{}", text(&out.stdout));
    let out = run(&[
        "--state-dir",
        s_dir,
        "delete",
        "svc",
        "myapp-v2",
        "-n",
        "production",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&[
        "--state-dir",
        s_dir,
        "delete",
        "svc",
        "myapp-v2",
        "-n",
        "production",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));
    // The server validates too: an object the API refuses leaves nothing behind.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: nowhere}\nspec:\n  ports: [{port: 80}]\n").unwrap();
    let out = run(&["--state-dir", s_dir, "apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("namespace \"nowhere\" not found"),
        "{}",
        text(&out.stderr)
    );
    assert!(state.join("api.json").exists());

    let out = run(&["--state-dir", s_dir, "version"]);
    assert!(
        text(&out.stdout).contains(&format!("Server version: strait-{}", env!("CARGO_PKG_VERSION"))),
        "{}",
        text(&out.stdout)
    );

    let out = run(&["--state-dir", s_dir, "check"]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
    assert!(
        report.contains("√ control plane is running and answering"),
        "{report}"
    );
    assert!(
        report.contains("√ issuer certificate is a valid CA issued by a trust anchor"),
        "{report}"
    );
    assert!(report.ends_with("Status check results are √\n"), "{report}");
    let out = run(&["--state-dir", s_dir, "check", "--pre"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a running controller fails the pre-check"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the controller stops within 10s of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        !state.join("api.json").exists(),
        "the API address is withdrawn at exit"
    );
}

#[test]
fn check_without_a_running_controller_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().to_str().unwrap();
    let out = run(&["--state-dir", s, "check"]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.contains("× control plane is running and answering"),
        "{report}"
    );
    assert!(report.contains("controller`"), "{report}");
    assert!(report.ends_with("Status check results are ×\n"), "{report}");
    let out = run(&["--state-dir", s, "check", "--pre"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn the_controller_refuses_bad_flags_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().to_str().unwrap();
    let out = run(&["--state-dir", s, "controller", "--default-inbound-policy", "open"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("expected one of all-unauthenticated"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["controller"]);
    assert!(
        text(&out.stderr).contains("pass --state-dir DIR"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[
        "--state-dir",
        s,
        "controller",
        "--identity-issuer-key-file",
        "issuer.key",
    ]);
    assert!(
        text(&out.stderr).contains("give all three"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["controller", "--kubernetes"]);
    assert!(
        text(&out.stderr).contains("Kubernetes mode needs the issuer"),
        "{}",
        text(&out.stderr)
    );
}

fn fixture(name: &str) -> String {
    repo()
        .join("identity/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn seed_file(name: &str) -> String {
    repo()
        .join("examples/linkerd-seed")
        .join(name)
        .display()
        .to_string()
}

/// Every document of a YAML stream, as JSON.
fn documents(yaml: &[u8]) -> Vec<serde_json::Value> {
    let text = String::from_utf8(yaml.to_vec()).unwrap();
    strait_api::yaml::parse(&text)
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn install_output_loads_back_through_apply() {
    let out = run(&["install"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    for name in [
        "kind: MutatingWebhookConfiguration",
        "name: linkerd-proxy-injector-webhook-config",
        "name: linkerd-identity-issuer",
        "name: linkerd-identity-trust-roots",
        "name: linkerd-config",
        "name: linkerd-dst-headless",
        "linkerd.io/is-control-plane: \"true\"",
    ] {
        assert!(yaml.contains(name), "{name} missing");
    }
    assert!(
        !yaml.contains("kind: CustomResourceDefinition"),
        "CRDs only with --crds"
    );
    let applied = run_stdin(&["apply", "--dry-run=client", "-f", "-"], &out.stdout);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let stdout = text(&applied.stdout);
    assert_eq!(stdout.lines().count(), 16, "{stdout}");
    assert!(stdout.contains("deployment/linkerd/linkerd-controller valid"));

    let ha = run(&["install", "--ha", "--set", "controllerReplicas=5"]);
    assert!(ha.status.success(), "{}", text(&ha.stderr));
    assert!(text(&ha.stdout).contains("replicas: 5"));
    assert!(text(&ha.stdout).contains("kind: PodDisruptionBudget"));
    let applied = run_stdin(&["apply", "--dry-run=client", "-f", "-"], &ha.stdout);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
}

#[test]
fn install_refuses_bad_values_and_bad_certificates() {
    let out = run(&["install", "--set", "proxyResources.cpu.limit=lots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("error: --set proxyResources.cpu.limit=lots: expected a Kubernetes quantity"),
        "{err}"
    );
    let out = run(&["install", "--set", "replicas=3"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--set replicas: unknown key; expected one of: controllerReplicas,"),
        "{err}"
    );
    let out = run(&["install", "--set", "proxyInit.runAsRoot=yes"]);
    assert!(text(&out.stderr).contains("expected true or false"));

    let mismatched = fixture("mismatched.key");
    let out = run(&[
        "install",
        "--identity-trust-anchors-file",
        &fixture("ca.crt"),
        "--identity-issuer-certificate-file",
        &fixture("issuer.crt"),
        "--identity-issuer-key-file",
        &mismatched,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{mismatched} does not match")), "{err}");

    let other = fixture("other-ca.crt");
    let out = run(&[
        "install",
        "--identity-trust-anchors-file",
        &other,
        "--identity-issuer-certificate-file",
        &fixture("issuer.crt"),
        "--identity-issuer-key-file",
        &fixture("issuer.key"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("is not signed by any trust anchor in") && err.contains(&other),
        "{err}"
    );

    let out = run(&["install", "--identity-issuer-key-file", &fixture("issuer.key")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--identity-issuer-key-file given without --identity-trust-anchors-file and --identity-issuer-certificate-file"));

    let good = run(&[
        "install",
        "--identity-trust-anchors-file",
        &fixture("ca.crt"),
        "--identity-issuer-certificate-file",
        &fixture("issuer.crt"),
        "--identity-issuer-key-file",
        &fixture("issuer.key"),
    ]);
    assert!(good.status.success(), "{}", text(&good.stderr));
}

#[test]
fn upgrade_reads_the_installed_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("state");
    let s = s.to_str().unwrap();
    let out = run(&["--state-dir", s, "upgrade"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "configmap linkerd/linkerd-config key values not found: is the control plane installed?"
        ),
        "{}",
        text(&out.stderr)
    );

    let installed = run(&["install"]);
    assert!(installed.status.success());
    let applied = run_stdin(&["--state-dir", s, "apply", "-f", "-"], &installed.stdout);
    assert!(applied.status.success(), "{}", text(&applied.stderr));

    let upgraded = run(&["--state-dir", s, "upgrade", "--set", "controllerReplicas=2"]);
    assert!(upgraded.status.success(), "{}", text(&upgraded.stderr));
    let before = text(&installed.stdout);
    let after = text(&upgraded.stdout);
    assert!(after.contains("replicas: 2") && !before.contains("replicas: 2"));
    let issuer = |yaml: &str| {
        let at = yaml.find("name: linkerd-identity-issuer").unwrap();
        let doc_start = yaml[..at].rfind("---").unwrap_or(0);
        let doc_end = yaml[at..].find("---").map_or(yaml.len(), |e| at + e);
        yaml[doc_start..doc_end].to_string()
    };
    assert_eq!(issuer(&after), issuer(&before), "the issuer is kept");
    let applied = run_stdin(&["--state-dir", s, "apply", "-f", "-"], &upgraded.stdout);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    assert!(text(&applied.stdout).contains("deployment/linkerd/linkerd-controller configured"));

    // inject --manual reads the installed configuration.
    let injected = run(&[
        "--state-dir",
        s,
        "inject",
        "--manual",
        &seed_file("02-deployment-injection.yaml"),
    ]);
    assert!(injected.status.success(), "{}", text(&injected.stderr));
    let roots = run(&[
        "--state-dir",
        s,
        "get",
        "cm",
        "linkerd-identity-trust-roots",
        "-n",
        "linkerd",
        "-o",
        "json",
    ]);
    let roots: serde_json::Value = serde_json::from_slice(&roots.stdout).unwrap();
    let first_line = roots["data"]["ca-bundle.crt"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(
        text(&injected.stdout).contains(&first_line),
        "the installed anchors reach the proxy"
    );

    let out = run(&[
        "--state-dir",
        s,
        "upgrade",
        "--identity-trust-domain",
        "example.org",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("installed with trust domain \"cluster.local\""));
}

#[test]
fn uninstall_prints_everything_for_deletion() {
    let out = run(&["uninstall"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    assert!(
        yaml.starts_with("apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration"),
        "{yaml}"
    );
    assert!(yaml.contains("name: servers.policy.linkerd.io"));
    assert!(yaml.contains("kind: Namespace"));
    assert!(!yaml.contains("crt.pem"), "no secrets in the deletion list");
}

#[test]
fn inject_and_uninject_the_seed_deployment() {
    let seed02 = seed_file("02-deployment-injection.yaml");
    let original = documents(&std::fs::read(&seed02).unwrap());

    // Without --manual: the seed's template already asks for injection; nothing changes.
    let out = run(&["inject", &seed02]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), "deployment \"myapp\" injected");
    assert_eq!(documents(&out.stdout), original);

    // --manual adds the proxy with the seed's ports, resources and log level.
    let out = run(&[
        "inject",
        "--manual",
        "--identity-trust-anchors-file",
        &fixture("ca.crt"),
        &seed02,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), "deployment \"myapp\" injected");
    let yaml = text(&out.stdout);
    for line in [
        "  name: linkerd-proxy\n",
        "  name: linkerd-init\n",
        "- 4190,4191,8080,8443",
        "- 3306,5432",
        "value: info,linkerd=debug,[{headers}]=off,[{request}]=off",
        "linkerd.io/proxy-deployment: myapp",
        "linkerd.io/workload-ns: production",
    ] {
        assert!(yaml.contains(line), "{line} missing:\n{yaml}");
    }
    let manual = out.stdout;

    // Injecting again changes nothing; uninject gives the original back.
    let again = run_stdin(
        &[
            "inject",
            "--manual",
            "--identity-trust-anchors-file",
            &fixture("ca.crt"),
            "-",
        ],
        &manual,
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("skipped: already injected"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(again.stdout, manual);
    let back = run_stdin(&["uninject", "-"], &manual);
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert_eq!(text(&back.stderr).trim(), "deployment \"myapp\" uninjected");
    assert_eq!(documents(&back.stdout), original);

    // A workload without the annotation gets it; uninject takes it away again.
    let plain = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: production\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - {name: web, image: web}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: production\nspec:\n  ports:\n  - port: 80\n";
    let out = run_stdin(&["inject", "-"], plain.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("linkerd.io/inject: enabled"));
    assert_eq!(
        text(&out.stderr).trim(),
        "deployment \"web\" injected\nservice \"web\" skipped: not a workload (no pod template)"
    );
    let back = run_stdin(&["uninject", "-"], &out.stdout);
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert_eq!(documents(&back.stdout), documents(plain.as_bytes()));
}

#[test]
fn inject_refuses_malformed_input() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n      annotations:\n        config.linkerd.io/proxy-cpu-limit: lots\n    spec:\n      containers:\n      - {name: web, image: web}\n",
    )
    .unwrap();
    for cmd in ["inject", "uninject"] {
        let out = run(&[cmd, bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(out.stdout.is_empty(), "{cmd}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{}:12:9: document 1 (deployment/default/web): spec.template.metadata.annotations.config.linkerd.io/proxy-cpu-limit: expected a Kubernetes quantity", bad.display())),
            "{cmd}: {err}"
        );
        assert!(err.contains("nothing was printed"), "{err}");
    }
    let out = run(&["inject", "--manual", &seed_file("02-deployment-injection.yaml")]);
    assert_eq!(out.status.code(), Some(1), "no anchors and no cluster");
    assert!(
        text(&out.stderr).contains("--identity-trust-anchors-file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_installed_controller_command_line_matches_its_mounts() {
    // Render an install, lay out what Kubernetes would mount, and run the Deployment's own
    // command line: everything it names must parse and load, so it gets as far as looking
    // for the API server (which this machine has none of).
    let out = run(&["install"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs = documents(&out.stdout);
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
            .clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |path: &str, bytes: &[u8]| {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    let b64 = |v: &serde_json::Value| -> Vec<u8> {
        // Secrets hold base64; decode with a tiny standard-alphabet decoder.
        let s = v.as_str().unwrap().as_bytes();
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let clean: Vec<u8> = s.iter().copied().filter(|c| *c != b'=').collect();
        clean
            .chunks(4)
            .flat_map(|ch| {
                let n = ch
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, c)| acc | (u32::from(val(*c)) << (18 - 6 * i)));
                let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
                bytes[..ch.len() - 1].to_vec()
            })
            .collect()
    };
    let config = find("ConfigMap", "linkerd-config");
    write(
        "/var/run/linkerd/config/values",
        config["data"]["values"].as_str().unwrap().as_bytes(),
    );
    let roots = find("ConfigMap", "linkerd-identity-trust-roots");
    write(
        "/var/run/linkerd/identity/trust-roots/ca-bundle.crt",
        roots["data"]["ca-bundle.crt"].as_str().unwrap().as_bytes(),
    );
    let issuer = find("Secret", "linkerd-identity-issuer");
    for key in ["crt.pem", "key.pem"] {
        let v = &issuer["data"][key];
        let bytes = if v.is_string() {
            b64(v)
        } else {
            issuer["stringData"][key].as_str().unwrap().as_bytes().to_vec()
        };
        write(&format!("/var/run/linkerd/identity/issuer/{key}"), &bytes);
    }
    let tls = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["type"] == "kubernetes.io/tls")
        .expect("the webhook's TLS secret");
    for key in ["tls.crt", "tls.key"] {
        write(&format!("/var/run/linkerd/tls/{key}"), &b64(&tls["data"][key]));
    }
    let deploy = find("Deployment", "linkerd-controller");
    let args: Vec<String> = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            if a.starts_with("/var/run/linkerd") {
                root.join(a.trim_start_matches('/')).display().to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    let out = strait()
        .args(&args)
        .env("KUBECONFIG", root.join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot reach the Kubernetes API"),
        "flags and files were all accepted: {err}"
    );
}

/// `strait mirror` announces the addresses it bound — with port 0, the real ports, and the
/// cluster DNS on one port for UDP and TCP.
#[test]
fn mirror_announces_the_ports_it_bound() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = strait()
        .arg("--state-dir")
        .arg(dir.path())
        .args([
            "mirror",
            "--admin-addr",
            "127.0.0.1:0",
            "--service-cidr",
            "198.19.250.0/24",
            "--dns-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("strait runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let addr = |k: &str| -> std::net::SocketAddr {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} missing in {line}"))
            .parse()
            .unwrap()
    };
    let (admin, dns) = (addr("admin"), addr("dns"));
    assert_ne!(admin.port(), 0);
    assert_ne!(
        dns.port(),
        0,
        "the DNS port actually bound, not the one asked for"
    );
    let tcp = std::net::TcpStream::connect_timeout(&dns, std::time::Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    tcp.expect("the cluster DNS answers TCP on the announced port");
}

/// A cluster DNS address already in use stops `strait mirror` with what to do.
#[test]
fn mirror_says_when_the_dns_address_is_taken() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mirror = |args: &[&str]| {
        strait()
            .arg("--state-dir")
            .arg(dir.path())
            .args(["mirror", "--admin-addr", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("strait runs")
    };
    let out = mirror(&["--service-cidr", "198.19.250.0/24", "--dns-addr", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr} for the cluster DNS"))
            && err.contains("pass another --dns-addr"),
        "{err}"
    );
    // Without a range for the mirrors' cluster IPs, their names could answer nothing.
    let out = mirror(&["--dns-addr", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("--dns-addr needs --service-cidr"), "{err}");
}

/// Mesh PEM files for a gateway in `dir`: `ca.crt`, `gw.crt`, `gw.key`.
fn gateway_pem_files(dir: &Path) {
    use strait_identity::{DEFAULT_LEAF_LIFETIME, TrustDomain, encode_pem, generate, generate_key_and_csr};
    let now = std::time::SystemTime::now();
    let (anchors, issuer) = generate(&TrustDomain::default(), now).unwrap();
    let me = strait_gateway::default_gateway_identity(&TrustDomain::default()).unwrap();
    let (key, csr) = generate_key_and_csr(&me).unwrap();
    let issued = issuer
        .issue(csr.as_ref(), &me, DEFAULT_LEAF_LIFETIME, now)
        .unwrap();
    std::fs::write(dir.join("ca.crt"), anchors.to_pem()).unwrap();
    let chain: String = issued
        .chain
        .iter()
        .map(|c| encode_pem("CERTIFICATE", c))
        .collect();
    std::fs::write(dir.join("gw.crt"), chain).unwrap();
    std::fs::write(
        dir.join("gw.key"),
        encode_pem("PRIVATE KEY", key.secret_pkcs8_der()),
    )
    .unwrap();
}

fn gateway_identity_args(dir: &Path) -> Vec<String> {
    let f = |n: &str| dir.join(n).display().to_string();
    vec![
        "--identity-trust-anchors-file".into(),
        f("ca.crt"),
        "--identity-cert-file".into(),
        f("gw.crt"),
        "--identity-key-file".into(),
        f("gw.key"),
    ]
}

#[test]
fn the_gateway_opens_proxy_entries_and_refuses_bad_entry_flags() {
    use std::io::{BufRead, BufReader};
    use strait_gateway::proto::header::{Progress, Reply, Request, decode_reply, encode_request};
    let dir = tempfile::tempdir().unwrap();
    gateway_pem_files(dir.path());
    let ids = gateway_identity_args(dir.path());

    let bad = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["gateway".into(), "--quic-addr".into(), "127.0.0.1:0".into()];
        args.extend(["--admin-addr".into(), "127.0.0.1:0".into()]);
        args.extend(ids.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert!(!out.status.success(), "{extra:?}");
        text(&out.stderr)
    };
    let cases: [(&[&str], &str); 10] = [
        (
            &["--proxy-entry", "localhost:4180"],
            "--proxy-entry \"localhost:4180\": expected ADDR (a TCP IP:PORT) or LINK=ADDR",
        ),
        (
            &[
                "--proxy-entry",
                "127.0.0.1:4180",
                "--proxy-entry",
                "127.0.0.1:4181",
            ],
            "--proxy-entry: two entries for every link",
        ),
        (
            &["--proxy-entry", "east=127.0.0.1:4180"],
            "proxy entry 127.0.0.1:4180 names link \"east\", which is not configured",
        ),
        (
            &["--destination-addr", "8086"],
            "--destination-addr \"8086\": expected HOST:PORT",
        ),
        (&["--endpoint-inbound-port", "4143"], "--destination-addr"),
        (
            &[
                "--destination-addr",
                "127.0.0.1:9",
                "--destination-svc-name",
                "linkerd-destination",
            ],
            "--destination-svc-name \"linkerd-destination\": expected a mesh identity",
        ),
        (
            &["--destination-svc-name", "linkerd-destination"],
            "--destination-addr",
        ),
        (
            &["--serve-exports"],
            "--serve-exports needs the cluster to read: pass --state-dir DIR",
        ),
        (
            &["--kubernetes"],
            "--kubernetes says where --serve-exports and --watch-links read",
        ),
        (
            &["--watch-links"],
            "--watch-links needs the cluster to read: pass --state-dir DIR",
        ),
    ];
    for (extra, expected) in cases {
        let err = bad(extra);
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
    // A state directory whose controller is not running: nothing to serve from, and the
    // message says what to start.
    let state = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["--state-dir".into(), state.path().display().to_string()];
    args.extend(["gateway".into(), "--quic-addr".into(), "127.0.0.1:0".into()]);
    args.extend([
        "--admin-addr".into(),
        "127.0.0.1:0".into(),
        "--serve-exports".into(),
    ]);
    args.extend(ids.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--serve-exports: cannot read") && err.contains("start the cluster's controller"),
        "{err}"
    );
    let out = run(&["mirror", "--gateway-entry", "east:127.0.0.1:4180"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--gateway-entry \"east:127.0.0.1:4180\": expected ADDR"),
        "{}",
        text(&out.stderr)
    );

    // A gateway with a proxy entry for a link whose remote is not there: the entry is
    // announced, and a proxy opening a stream hears link-down.
    let mut child = strait()
        .args([
            "gateway",
            "--quic-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(&ids)
        .args(["--link", "east=127.0.0.1:9", "--proxy-entry", "east=127.0.0.1:0"])
        .args([
            "--destination-addr",
            "127.0.0.1:9",
            "--endpoint-inbound-port",
            "4143",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bound: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let entry = bound["proxy_entries"][0].as_str().unwrap().to_string();
    let mut s = std::net::TcpStream::connect(&entry).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let target = strait_gateway::Target {
        authority: strait_gateway::Authority::new("myapp.production.svc.cluster.local").unwrap(),
        port: 80,
        protocol: strait_gateway::Protocol::Http2,
        identity: None,
        endpoint: None,
    };
    let mut frame = Vec::new();
    encode_request(&Request::Open(target), &mut frame);
    s.write_all(&frame).unwrap();
    let mut reply = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut reply).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let Ok(Progress::Complete(d)) = decode_reply(&reply) else {
        panic!("a reply expected: {reply:?}")
    };
    let Reply::Refused { reason, message } = d.frame else {
        panic!("a refusal expected")
    };
    assert_eq!(reason.as_str(), "link-down", "{message}");
    assert!(message.contains("link to east is down"), "{message}");
}

/// Starts `strait [pre..] gateway --quic-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 [args..]`
/// with stderr to `log`; returns the child and its announced addresses.
fn spawn_gateway(pre: &[String], args: &[String], log: &Path) -> (std::process::Child, serde_json::Value) {
    use std::io::{BufRead, BufReader};
    let mut child = strait()
        .args(pre)
        .args([
            "gateway",
            "--quic-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bound = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (child, bound)
}

/// Kills the gateways of a test however it ends.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn gateways_refuse_wrong_identities_and_untrusted_anchors_and_multicluster_commands_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs, state) = (
        dir.path().join("ours"),
        dir.path().join("theirs"),
        dir.path().join("state"),
    );
    for d in [&ours, &theirs, &state] {
        std::fs::create_dir_all(d).unwrap();
    }
    gateway_pem_files(&ours);
    gateway_pem_files(&theirs);
    let mut children = Children(Vec::new());
    // "east" holds a certificate under other trust anchors; "north" is in our mesh but
    // west expects another identity of it.
    let (east, east_bound) =
        spawn_gateway(&[], &gateway_identity_args(&theirs), &dir.path().join("east.log"));
    children.0.push(east);
    let (north, north_bound) =
        spawn_gateway(&[], &gateway_identity_args(&ours), &dir.path().join("north.log"));
    children.0.push(north);
    let mut args = gateway_identity_args(&ours);
    args.extend([
        "--link".to_string(),
        format!("east={}", east_bound["quic"].as_str().unwrap()),
        "--link".to_string(),
        format!(
            "north={}@impostor.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
            north_bound["quic"].as_str().unwrap()
        ),
    ]);
    let pre = vec!["--state-dir".to_string(), state.display().to_string()];
    let west_log = dir.path().join("west.log");
    let (west, west_bound) = spawn_gateway(&pre, &args, &west_log);
    children.0.push(west);
    let admin = west_bound["admin"].as_str().unwrap().to_string();
    // The gateway published its admin address for the multicluster commands.
    let published = std::fs::read_to_string(state.join("gateway.json")).unwrap();
    assert!(published.contains(&admin), "{published}");

    // Metrics: both links dead, each failure counted under its reason (bounded wait).
    let series = |reason: &str, cluster: &str| {
        format!("gateway_link_errors_total{{target_cluster_name=\"{cluster}\",reason=\"{reason}\"}} ")
    };
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = http_get_text(&admin, "/metrics");
        let counted = |s: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(s))
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|n| n >= 1.0)
        };
        if counted(&series("untrusted-peer", "east")) && counted(&series("wrong-identity", "north")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for line in [
        "gateway_alive{target_cluster_name=\"east\"} 0",
        "gateway_alive{target_cluster_name=\"north\"} 0",
        &format!("{}0", series("wrong-identity", "east")),
        &format!("{}0", series("untrusted-peer", "north")),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains(&format!("{}0\n", series("untrusted-peer", "east"))),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&format!("{}0\n", series("wrong-identity", "north"))),
        "{metrics}"
    );

    // The log says which link, why, and what to do.
    let log = std::fs::read_to_string(&west_log).unwrap();
    assert!(
        log.contains("could not link to the remote gateway")
            && log.contains("untrusted-peer")
            && log.contains("wrong-identity"),
        "{log}"
    );

    // `multicluster check` fails with each link's reason and advice.
    let state_s = state.display().to_string();
    let out = run(&["--state-dir", &state_s, "multicluster", "check"]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    for expected in [
        "√ the local gateway is running",
        "× gateway link to east is up",
        "does not chain to this cluster's trust anchors",
        "× gateway link to north is up",
        "check the Link's gatewayIdentity",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }
    // `multicluster gateways` shows both dead, with why, even without a mirror.
    let out = run(&["--state-dir", &state_s, "multicluster", "gateways"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let row = |cluster: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(cluster))
            .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
    };
    assert_eq!(row("east").as_deref(), Some("False"), "{stdout}");
    assert_eq!(row("north").as_deref(), Some("False"), "{stdout}");
    assert!(
        stdout.contains("link to east: ")
            && stdout.contains("untrusted-peer")
            && stdout.contains("link to north: "),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("no mirror runs"),
        "{}",
        text(&out.stderr)
    );
}

/// The body of a plain HTTP GET (blocking, bounded).
fn http_get_text(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[test]
fn multicluster_check_compares_federated_members_with_their_federated_services() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().to_str().unwrap();
    // A Link whose status reports myapp joined (as west's mirror writes it), and
    // ledger refused for a port conflict.
    let link = r#"
apiVersion: v1
kind: Namespace
metadata: {name: linkerd-multicluster}
---
apiVersion: v1
kind: Namespace
metadata: {name: production}
---
apiVersion: multicluster.linkerd.io/v1alpha3
kind: Link
metadata: {name: east, namespace: linkerd-multicluster}
spec:
  targetClusterName: east
  clusterCredentialsSecret: cluster-credentials-east
  gatewayAddress: 127.0.0.1
  gatewayPort: "4143"
  gatewayIdentity: linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local
status:
  federatedServices:
    - controllerName: linkerd.io/service-mirror
      remoteRef: {group: "", kind: Service, name: myapp, namespace: production}
      conditions:
        - {type: Mirrored, status: "True", reason: Mirrored, message: "", localRef: {kind: Service, name: myapp-federated, namespace: production}}
    - controllerName: linkerd.io/service-mirror
      remoteRef: {group: "", kind: Service, name: ledger, namespace: production}
      conditions:
        - {type: Mirrored, status: "False", reason: PortConflict, message: "give every member of ledger the same port names, numbers and protocols", localRef: {kind: Service, name: ledger-federated, namespace: production}}
"#;
    let out = run_stdin(&["--state-dir", s, "apply", "-f", "-"], link.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let check = || {
        let out = run(&["--state-dir", s, "multicluster", "check"]);
        assert_eq!(out.status.code(), Some(1), "no mirror runs here");
        text(&out.stdout)
    };
    // Bad: the federated Service the Link reports is missing, and ledger was refused.
    let report = check();
    assert!(
        report.contains("× federated members of cluster east have joined their federated services"),
        "{report}"
    );
    assert!(
        report.contains("production/myapp-federated, but that Service does not exist"),
        "{report}"
    );
    assert!(
        report.contains("production/ledger of cluster east is not in production/ledger-federated (PortConflict): give every member"),
        "{report}"
    );

    // The federated Service appears listing myapp@east, with east's slice.
    let federated = r#"
apiVersion: v1
kind: Service
metadata:
  name: myapp-federated
  namespace: production
  labels: {mirror.linkerd.io/mirrored-service: "true", mirror.strait.io/federated: "true"}
  annotations: {multicluster.linkerd.io/remote-discovery: myapp@east}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: myapp-federated-east
  namespace: production
  labels: {kubernetes.io/service-name: myapp-federated, mirror.strait.io/federated: "true"}
addressType: IPv4
ports: [{name: http, port: 4143}]
endpoints:
  - addresses: [127.0.0.1]
    conditions: {ready: true}
"#;
    let out = run_stdin(&["--state-dir", s, "apply", "-f", "-"], federated.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = check();
    assert!(!report.contains("that Service does not exist"), "{report}");
    // Without a mirror nothing says whether east's gateway lives: the slice and the Link
    // are enough for the federated Service itself.
    assert!(
        report.contains("√ federated service production/myapp-federated reaches all its members"),
        "{report}"
    );

    // The Link goes: the federated Service lists a member of no linked cluster.
    let out = run(&[
        "--state-dir",
        s,
        "delete",
        "link",
        "east",
        "-n",
        "linkerd-multicluster",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = check();
    assert!(
        report.contains("× federated service production/myapp-federated reaches all its members")
            && report.contains("no Link targets cluster east"),
        "{report}"
    );
}
