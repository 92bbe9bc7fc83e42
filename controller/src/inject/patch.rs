//! RFC 6902 JSON Patch: the difference between two JSON documents as `add`, `remove` and
//! `replace` operations, which is what the admission webhook answers with.
//!
//! The webhook diffs the pod as decoded against the pod as injected, so the patch touches
//! only what injection changed: fields of the request that the typed model does not know
//! stay as the API server sent them. Inserting into an array (a proxy as the first
//! container) becomes `add` at an index, never a replacement of the whole array.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One JSON Patch operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Operation {
    /// Add a member or insert an array element (replacing an existing member).
    Add {
        /// JSON Pointer.
        path: String,
        /// The new value.
        value: Value,
    },
    /// Remove a member or array element.
    Remove {
        /// JSON Pointer.
        path: String,
    },
    /// Replace a value.
    Replace {
        /// JSON Pointer.
        path: String,
        /// The new value.
        value: Value,
    },
}

/// The operations that turn `old` into `new`, in the order they must be applied.
pub fn diff(old: &Value, new: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    diff_at("", old, new, &mut ops);
    ops
}

/// Escapes one reference token of a JSON Pointer (RFC 6901): `~` then `/`.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn diff_at(path: &str, old: &Value, new: &Value, ops: &mut Vec<Operation>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                ops.push(Operation::Remove {
                    path: format!("{path}/{}", escape(k)),
                });
            }
            for (k, nv) in n {
                let p = format!("{path}/{}", escape(k));
                match o.get(k) {
                    Some(ov) => diff_at(&p, ov, nv, ops),
                    None => ops.push(Operation::Add {
                        path: p,
                        value: nv.clone(),
                    }),
                }
            }
        }
        (Value::Array(o), Value::Array(n)) => diff_array(path, o, n, ops),
        _ => ops.push(Operation::Replace {
            path: path.to_string(),
            value: new.clone(),
        }),
    }
}

fn diff_array(path: &str, old: &[Value], new: &[Value], ops: &mut Vec<Operation>) {
    if let Some(kept) = subsequence(old, new) {
        // `old` survives in order: add what is new, lowest index first, so every index is
        // the element's final position.
        for (i, v) in new.iter().enumerate().filter(|(i, _)| !kept.contains(i)) {
            ops.push(Operation::Add {
                path: format!("{path}/{i}"),
                value: v.clone(),
            });
        }
    } else if let Some(kept) = subsequence(new, old) {
        // Elements were only removed: highest index first, so earlier indexes stay valid.
        for i in (0..old.len()).rev().filter(|i| !kept.contains(i)) {
            ops.push(Operation::Remove {
                path: format!("{path}/{i}"),
            });
        }
    } else if old.len() == new.len() {
        for (i, (o, n)) in old.iter().zip(new).enumerate() {
            diff_at(&format!("{path}/{i}"), o, n, ops);
        }
    } else {
        ops.push(Operation::Replace {
            path: path.to_string(),
            value: Value::Array(new.to_vec()),
        });
    }
}

/// If every element of `short` appears in `long` in order, the indexes in `long` they
/// matched (greedily, first match).
fn subsequence(short: &[Value], long: &[Value]) -> Option<Vec<usize>> {
    let mut matched = Vec::with_capacity(short.len());
    let mut from = 0;
    for s in short {
        let at = long[from..].iter().position(|l| l == s)? + from;
        matched.push(at);
        from = at + 1;
    }
    Some(matched)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A JSON Patch applier for tests (RFC 6902 add/remove/replace), written independently
    /// of [`diff`] so a wrong patch cannot pass by agreeing with itself.
    pub(crate) fn apply(doc: &mut Value, ops: &[Operation]) -> Result<(), String> {
        for op in ops {
            let (path, value) = match op {
                Operation::Add { path, value } | Operation::Replace { path, value } => (path, Some(value)),
                Operation::Remove { path } => (path, None),
            };
            let (parent, last) = path.rsplit_once('/').ok_or(format!("bad path {path}"))?;
            let last = last.replace("~1", "/").replace("~0", "~");
            let target = doc.pointer_mut(parent).ok_or(format!("no parent for {path}"))?;
            match (op, target) {
                (Operation::Add { .. }, Value::Object(m)) | (Operation::Replace { .. }, Value::Object(m)) => {
                    if matches!(op, Operation::Replace { .. }) && !m.contains_key(&last) {
                        return Err(format!("replace of missing {path}"));
                    }
                    m.insert(last, value.cloned().unwrap());
                }
                (Operation::Remove { .. }, Value::Object(m)) => {
                    m.remove(&last).ok_or(format!("remove of missing {path}"))?;
                }
                (Operation::Add { .. }, Value::Array(a)) => {
                    let i = if last == "-" {
                        a.len()
                    } else {
                        last.parse().map_err(|_| path.clone())?
                    };
                    if i > a.len() {
                        return Err(format!("index out of range {path}"));
                    }
                    a.insert(i, value.cloned().unwrap());
                }
                (Operation::Replace { .. }, Value::Array(a)) => {
                    let i: usize = last.parse().map_err(|_| path.clone())?;
                    *a.get_mut(i).ok_or(format!("index out of range {path}"))? = value.cloned().unwrap();
                }
                (Operation::Remove { .. }, Value::Array(a)) => {
                    let i: usize = last.parse().map_err(|_| path.clone())?;
                    if i >= a.len() {
                        return Err(format!("index out of range {path}"));
                    }
                    a.remove(i);
                }
                _ => return Err(format!("{path}: parent is not a container")),
            }
        }
        Ok(())
    }

    #[test]
    fn diffs_apply_back_to_the_new_document() {
        let cases = [
            (json!({"a": 1}), json!({"a": 1})),
            (json!({"a": 1}), json!({"a": 2, "b": {"c": [1]}})),
            (json!({"a": {"x/y": 1, "t~": 2}}), json!({"a": {"x/y": 3}})),
            (
                json!({"c": [{"n": "app"}]}),
                json!({"c": [{"n": "proxy"}, {"n": "app"}]}),
            ),
            (json!({"c": [1, 2, 3]}), json!({"c": [0, 1, 9, 2, 3, 4]})),
            (json!({"c": [0, 1, 9, 2]}), json!({"c": [1, 2]})),
            (json!({"c": [1, 2]}), json!({"c": [2, 1]})),
            (json!({"c": [1, 2]}), json!({"c": [3]})),
            (json!({"c": null}), json!({"c": [1]})),
        ];
        for (old, new) in cases {
            let ops = diff(&old, &new);
            let mut doc = old.clone();
            apply(&mut doc, &ops).unwrap_or_else(|e| panic!("{old} -> {new}: {e}\n{ops:?}"));
            assert_eq!(doc, new, "{ops:?}");
        }
    }

    #[test]
    fn insertions_are_adds_at_indexes() {
        let ops = diff(
            &json!({"spec": {"containers": [{"name": "app"}]}}),
            &json!({"spec": {"containers": [{"name": "linkerd-proxy"}, {"name": "app"}]}}),
        );
        assert_eq!(
            ops,
            vec![Operation::Add {
                path: "/spec/containers/0".into(),
                value: json!({"name": "linkerd-proxy"})
            }]
        );
        let ops = diff(
            &json!({"metadata": {}}),
            &json!({"metadata": {"annotations": {"linkerd.io/inject": "enabled"}}}),
        );
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            json!([{"op": "add", "path": "/metadata/annotations", "value": {"linkerd.io/inject": "enabled"}}])
        );
        assert_eq!(escape("linkerd.io/inject"), "linkerd.io~1inject");
    }
}
