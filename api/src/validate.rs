//! Field paths and the problems that semantic validation finds.
//!
//! A [`FieldPath`] names a node inside one object (`spec.rules[0].matches[0].path.type`); the
//! loader turns it into a line number of the source document. Validation never stops at the
//! first problem: every check pushes onto [`Problems`] so a user fixes a file in one pass.

use std::fmt;

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A mapping key (`spec`, `matchLabels`, `linkerd.io/inject`).
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// The path from an object's root to one of its nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    /// The object's root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut segs = self.0.clone();
        segs.push(Segment::Key(key.into()));
        Self(segs)
    }

    /// This path extended by a sequence index.
    pub fn index(&self, i: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Segment::Index(i));
        Self(segs)
    }

    /// Parses the dotted form produced by [`fmt::Display`] (`a.b[0].c`); keys containing `.`
    /// or `[` cannot round-trip and are only for tests and messages.
    pub fn parse(s: &str) -> Self {
        let mut segs = Vec::new();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let (name, rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !name.is_empty() {
                segs.push(Segment::Key(name.to_string()));
            }
            for idx in rest.split('[').filter(|x| !x.is_empty()) {
                if let Ok(i) = idx.trim_end_matches(']').parse() {
                    segs.push(Segment::Index(i));
                }
            }
        }
        Self(segs)
    }

    /// Whether the path is the object's root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(root)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One thing wrong with an object: where, and what was expected instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The offending node.
    pub path: FieldPath,
    /// What the field must be (`"a port number 1-65535"`), phrased to complete "expected …".
    pub expected: String,
    /// What was there, when showing it helps (`"70000"`).
    pub found: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected {}", self.path, self.expected)?;
        if let Some(found) = &self.found {
            write!(f, ", found {found}")?;
        }
        Ok(())
    }
}

/// The problems found in one object, in the order they were found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Records that `path` should have been `expected` but was `found`.
    pub fn push(&mut self, path: &FieldPath, expected: impl Into<String>, found: Option<String>) {
        self.0.push(Problem {
            path: path.clone(),
            expected: expected.into(),
            found,
        });
    }

    /// Records a missing required field.
    pub fn missing(&mut self, path: &FieldPath, expected: impl Into<String>) {
        self.push(path, expected, Some("nothing (the field is required)".into()));
    }

    /// Whether nothing was found wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Semantic checks that serde's typing cannot express (ranges, formats, cross-field rules).
///
/// `path` is the path of `self` inside the object; implementations extend it for children.
pub trait Validate {
    /// Pushes every problem of `self` onto `problems`.
    fn validate(&self, path: &FieldPath, problems: &mut Problems);
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        if let Some(v) = self {
            v.validate(path, problems);
        }
    }
}

impl<T: Validate> Validate for Vec<T> {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        for (i, v) in self.iter().enumerate() {
            v.validate(&path.index(i), problems);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_display_and_parse_round_trip() {
        let p = FieldPath::root()
            .key("spec")
            .key("rules")
            .index(0)
            .key("matches")
            .index(2);
        assert_eq!(p.to_string(), "spec.rules[0].matches[2]");
        assert_eq!(FieldPath::parse("spec.rules[0].matches[2]"), p);
        assert_eq!(FieldPath::root().to_string(), "(root)");
    }
}
