//! The corpus of bad manifests in `tests/manifests/bad/`: each file must be refused with
//! exactly the errors its `# expect: LINE: TEXT` comments (or its `.expect` sidecar) name.

use std::path::{Path, PathBuf};

use strait_api::loader::{LoadOptions, load, read_sources};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/manifests/bad")
}

fn expectations(path: &Path, text: &str) -> Vec<(usize, String)> {
    let sidecar = PathBuf::from(format!("{}.expect", path.display()));
    let lines: Vec<String> = if sidecar.exists() {
        std::fs::read_to_string(&sidecar)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    } else {
        text.lines()
            .filter_map(|l| l.strip_prefix("# expect: ").map(str::to_string))
            .collect()
    };
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (line, msg) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("{}: bad expectation {l:?}", path.display()));
            (
                line.parse()
                    .unwrap_or_else(|_| panic!("{}: bad line in {l:?}", path.display())),
                msg.to_string(),
            )
        })
        .collect()
}

#[test]
fn every_bad_manifest_gets_its_precise_errors() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "the corpus is in place");
    let mut failures = Vec::new();
    for path in &files {
        let name = path.display().to_string();
        let sources = read_sources(std::slice::from_ref(&name), false, &mut std::io::empty()).unwrap();
        let expected = expectations(path, &sources[0].text);
        assert!(!expected.is_empty(), "{name} has no expectations");
        let errors = match load(&sources, &LoadOptions::default()) {
            Ok(objs) => {
                failures.push(format!("{name}: loaded {} objects, expected errors", objs.len()));
                continue;
            }
            Err(e) => e.0,
        };
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for (line, text) in &expected {
            let hit = errors
                .iter()
                .zip(&rendered)
                .any(|(e, r)| e.pos.line == *line && r.contains(text.as_str()));
            if !hit {
                failures.push(format!(
                    "{name}: no error at line {line} containing {text:?}; got:\n  {}",
                    rendered.join("\n  ")
                ));
            }
        }
        for r in &rendered {
            assert!(r.starts_with(&name), "every error names its file: {r}");
            assert!(r.contains("document "), "every error names its document: {r}");
        }
        if errors.len() != expected.len() {
            failures.push(format!(
                "{name}: expected {} errors, got {}:\n  {}",
                expected.len(),
                errors.len(),
                rendered.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_directory_with_one_bad_file_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: good\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: Bad\n",
    )
    .unwrap();
    let sources = read_sources(&[dir.path().display().to_string()], false, &mut std::io::empty()).unwrap();
    assert_eq!(sources.len(), 2);
    let err = load(&sources, &LoadOptions::default()).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(err.0[0].file.ends_with("b.yaml"));
}

#[test]
fn unreadable_inputs_say_what_to_check() {
    let err = read_sources(
        &["/nonexistent/manifests.yaml".into()],
        false,
        &mut std::io::empty(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/manifests.yaml"), "{msg}");
    assert!(msg.contains("cannot read the file"), "{msg}");
    let empty = tempfile::tempdir().unwrap();
    let err = read_sources(
        &[empty.path().display().to_string()],
        false,
        &mut std::io::empty(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no .yaml, .yml or .json files"), "{err}");
}

#[test]
fn stdin_is_read_for_dash() {
    let mut input = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n".as_bytes();
    let sources = read_sources(&["-".into()], false, &mut input).unwrap();
    assert_eq!(sources[0].name, "<stdin>");
    let loaded = load(&sources, &LoadOptions::default()).unwrap();
    assert_eq!(loaded[0].object.key().to_string(), "namespace/production");
}
