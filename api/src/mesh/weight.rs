//! Traffic weights written either as integers (SMI `v1alpha2`, Gateway API) or as Kubernetes
//! quantities (SMI `v1alpha1`'s `"900m"`, ServiceProfile `dstOverrides`).
//!
//! Both forms are read into one type that writes itself back the way it was read, so the
//! loader's key diff and `strait get -o yaml` show what the user wrote.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::formats;
use crate::validate::{FieldPath, Problems};

/// A weight as written in a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Weight {
    /// A plain integer (`90`).
    Int(i64),
    /// A Kubernetes quantity string (`"900m"`, `"1"`); validated, not parsed, at read time.
    Quantity(String),
}

impl Weight {
    /// The weight as a number (`"900m"` is 0.9), or `None` if the quantity does not parse.
    pub fn value(&self) -> Option<f64> {
        match self {
            // Weights are small; the cast is exact for anything a manifest carries.
            Weight::Int(n) => Some(*n as f64),
            Weight::Quantity(q) => formats::quantity(q).ok(),
        }
    }

    /// Pushes a problem if the weight is not a non-negative number.
    pub fn validate_at(&self, path: &FieldPath, problems: &mut Problems) {
        match self {
            Weight::Int(n) if *n < 0 => {
                problems.push(path, "a non-negative weight", Some(n.to_string()));
            }
            Weight::Int(_) => {}
            Weight::Quantity(q) => match formats::quantity(q) {
                Err(expected) => problems.push(
                    path,
                    format!("an integer weight or {expected}"),
                    Some(format!("{q:?}")),
                ),
                Ok(v) if v < 0.0 => problems.push(path, "a non-negative weight", Some(format!("{q:?}"))),
                Ok(_) => {}
            },
        }
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weight::Int(n) => write!(f, "{n}"),
            Weight::Quantity(q) => f.write_str(q),
        }
    }
}

impl Serialize for Weight {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            Weight::Int(n) => ser.serialize_i64(*n),
            Weight::Quantity(q) => ser.serialize_str(q),
        }
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Weight;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer weight or a quantity string such as \"900m\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Weight, E> {
                Ok(Weight::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Weight, E> {
                i64::try_from(v)
                    .map(Weight::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Weight, E> {
                // The API server's int-or-string rejects fractional numbers; a YAML parser
                // may still hand over `90.0` for `90`.
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(Weight::Int(v as i64))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Weight, E> {
                Ok(Weight::Quantity(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Weight, E> {
                Ok(Weight::Quantity(v))
            }
        }
        de.deserialize_any(V)
    }
}

impl JsonSchema for Weight {
    fn schema_name() -> Cow<'static, str> {
        "Weight".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An integer weight, or a Kubernetes quantity such as \"900m\".",
            "x-kubernetes-int-or-string": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_both_forms() {
        for v in [json!(90), json!("900m"), json!("1"), json!(0)] {
            let w: Weight = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&w).unwrap(), v);
        }
        assert!(serde_json::from_value::<Weight>(json!(0.5)).is_err());
        assert!(serde_json::from_value::<Weight>(json!(true)).is_err());
    }

    #[test]
    fn values() {
        assert_eq!(Weight::Int(90).value(), Some(90.0));
        assert_eq!(Weight::Quantity("900m".into()).value(), Some(0.9));
        assert_eq!(Weight::Quantity("nope".into()).value(), None);
    }

    #[test]
    fn validation() {
        let p = FieldPath::parse("spec.backends[0].weight");
        for (w, expected) in [
            (Weight::Int(-1), Some("a non-negative weight")),
            (Weight::Quantity("-100m".into()), Some("a non-negative weight")),
            (Weight::Quantity("lots".into()), Some("a Kubernetes quantity")),
            (Weight::Int(0), None),
            (Weight::Quantity("500m".into()), None),
        ] {
            let mut problems = Problems::default();
            w.validate_at(&p, &mut problems);
            match expected {
                None => assert!(problems.is_empty(), "{w}: {problems:?}"),
                Some(e) => {
                    assert_eq!(problems.0.len(), 1, "{w}");
                    assert_eq!(problems.0[0].path, p);
                    assert!(
                        problems.0[0].expected.contains(e),
                        "{w}: {}",
                        problems.0[0].expected
                    );
                }
            }
        }
    }
}
