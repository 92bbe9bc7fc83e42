//! `strait label` and `strait annotate`, as kubectl has them: `key=value` sets, `key-`
//! removes, changing an existing value needs `--overwrite`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;
use strait_api::kinds;

use crate::{Global, exit};

/// Arguments of `label` and `annotate`.
#[derive(Args, Debug)]
pub struct MetaArgs {
    /// The kind (`svc`, `namespace`, `deployment`, …).
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// `key=value` to set, `key-` to remove.
    #[arg(required = true)]
    pub changes: Vec<String>,
    /// The object's namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Allow changing a key that already has another value.
    #[arg(long)]
    pub overwrite: bool,
}

/// Which metadata map a command edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `metadata.labels`.
    Labels,
    /// `metadata.annotations`.
    Annotations,
}

impl Field {
    fn key(self) -> &'static str {
        match self {
            Field::Labels => "labels",
            Field::Annotations => "annotations",
        }
    }
}

/// One requested change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Set a key.
    Set(String, String),
    /// Remove a key.
    Remove(String),
}

/// Parses `key=value` / `key-`, checking keys and (for labels) values.
pub fn parse_change(field: Field, s: &str) -> Result<Change, String> {
    if let Some(key) = s.strip_suffix('-')
        && !s.contains('=')
    {
        strait_api::names::qualified_name(key).map_err(|e| format!("{s:?}: key {key:?}: expected {e}"))?;
        return Ok(Change::Remove(key.into()));
    }
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected key=value to set or key- to remove"))?;
    strait_api::names::qualified_name(k).map_err(|e| format!("{s:?}: key {k:?}: expected {e}"))?;
    if field == Field::Labels {
        strait_api::names::label_value(v).map_err(|e| format!("{s:?}: value {v:?}: expected {e}"))?;
    }
    Ok(Change::Set(k.into(), v.into()))
}

/// Applies changes to a map; what changed, or why it may not.
pub fn edit(map: &mut BTreeMap<String, String>, changes: &[Change], overwrite: bool) -> Result<bool, String> {
    let mut changed = false;
    for c in changes {
        match c {
            Change::Set(k, v) => match map.get(k) {
                Some(old) if old == v => {}
                Some(old) if !overwrite => {
                    return Err(format!(
                        "{k} already has the value {old:?}; pass --overwrite to change it to {v:?}"
                    ));
                }
                _ => {
                    map.insert(k.clone(), v.clone());
                    changed = true;
                }
            },
            Change::Remove(k) => changed |= map.remove(k).is_some(),
        }
    }
    Ok(changed)
}

/// Runs `label` or `annotate`.
pub fn run(g: &Global, field: Field, args: &MetaArgs) -> ExitCode {
    let fail = |e: String| {
        eprintln!("error: {e}");
        exit::code(exit::FAILURE)
    };
    let info = match kinds::lookup_name(&args.kind) {
        Ok(i) => i,
        Err(e) => return fail(e.to_string()),
    };
    let changes = match args
        .changes
        .iter()
        .map(|c| parse_change(field, c))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let cluster = match super::open_local(g) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let rt = super::runtime();
    let ns = info.namespaced.then_some(args.namespace.as_str());
    let found = match cluster.list(&rt, info, ns, Some(&args.name)) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let Some(obj) = found.into_iter().next() else {
        let place = ns.map(|n| format!(" in namespace {n}")).unwrap_or_default();
        return fail(format!("{}/{} not found{place}", info.plural, args.name));
    };
    let mut value = obj.to_value();
    let mut map: BTreeMap<String, String> =
        serde_json::from_value(value["metadata"][field.key()].clone()).unwrap_or_default();
    let changed = match edit(&mut map, &changes, args.overwrite) {
        Ok(c) => c,
        Err(e) => return fail(format!("{}/{}: {e}", info.plural, args.name)),
    };
    let what = format!("{}/{}", info.kind.to_lowercase(), args.name);
    if !changed {
        println!("{what} unchanged");
        return ExitCode::SUCCESS;
    }
    value["metadata"][field.key()] = serde_json::to_value(&map).expect("maps serialize");
    if let Some(m) = value["metadata"].as_object_mut() {
        // Apply as an update of what was read, not of a stale version.
        m.remove("resourceVersion");
    }
    let obj = match strait_api::Object::from_value(info.id, value) {
        Ok(o) => o,
        Err(e) => return fail(format!("{what}: {e}")),
    };
    match cluster.apply(&rt, vec![obj]) {
        Ok(_) => {
            println!(
                "{what} {}",
                if field == Field::Labels {
                    "labeled"
                } else {
                    "annotated"
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_like_kubectl() {
        assert_eq!(
            parse_change(Field::Labels, "mirror.linkerd.io/exported=true").unwrap(),
            Change::Set("mirror.linkerd.io/exported".into(), "true".into())
        );
        assert_eq!(
            parse_change(Field::Annotations, "linkerd.io/inject-").unwrap(),
            Change::Remove("linkerd.io/inject".into())
        );
        // Annotation values are free text; label values are not.
        assert!(parse_change(Field::Annotations, "note=a b c").is_ok());
        let e = parse_change(Field::Labels, "app=a b").unwrap_err();
        assert!(e.contains("value \"a b\": expected"), "{e}");
        let e = parse_change(Field::Labels, "justakey").unwrap_err();
        assert!(e.contains("expected key=value to set or key- to remove"), "{e}");
        let e = parse_change(Field::Labels, "bad key=1").unwrap_err();
        assert!(e.contains("key \"bad key\": expected"), "{e}");
    }

    #[test]
    fn overwriting_needs_the_flag_and_removing_an_absent_key_changes_nothing() {
        let mut m = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let set = [Change::Set("a".into(), "2".into())];
        let e = edit(&mut m, &set, false).unwrap_err();
        assert!(e.contains("pass --overwrite"), "{e}");
        assert_eq!(m["a"], "1", "a refused change leaves the map alone");
        assert!(edit(&mut m, &set, true).unwrap());
        assert_eq!(m["a"], "2");
        assert!(!edit(&mut m, &[Change::Remove("zz".into())], false).unwrap());
        assert!(
            !edit(&mut m, &set, false).unwrap(),
            "setting the same value is no change"
        );
        assert!(edit(&mut m, &[Change::Remove("a".into())], false).unwrap());
        assert!(m.is_empty());
    }
}
