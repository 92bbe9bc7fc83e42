//! YAML (and JSON, which YAML 1.2 contains) documents to `serde_json::Value`, with the source
//! position of every node.
//!
//! Typed deserialization happens afterwards from the `Value`; keeping a position per
//! [`FieldPath`] is what lets the loader say "line 14: spec.port: expected …" for a problem
//! found long after parsing. Scalars resolve by the YAML 1.2 core schema, as kubectl does
//! for everything the mesh kinds contain.

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

use crate::validate::FieldPath;

/// Where a node starts in its source: 1-based line, 1-based column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// One document of a stream.
#[derive(Clone, Debug)]
pub struct Document {
    /// 1-based position of the document in its file (empty documents count too).
    pub index: usize,
    /// Where the document's root node starts.
    pub pos: Pos,
    /// The document's content.
    pub value: Value,
    /// Positions of every node, by path from the root.
    pub positions: HashMap<FieldPath, Pos>,
}

impl Document {
    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn position_of(&self, path: &FieldPath) -> Pos {
        let mut p = path.clone();
        loop {
            if let Some(pos) = self.positions.get(&p) {
                return *pos;
            }
            if p.0.pop().is_none() {
                return self.pos;
            }
        }
    }
}

/// A syntax error, with where it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {}, column {}: {message}", pos.line, pos.col)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// 1-based document number the error is in.
    pub document: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses every document of `src`. Documents that are empty (or only comments, or `null`)
/// are returned with a `Null` value; callers skip them as kubectl does.
pub fn parse(src: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut b = Builder {
        parser: Parser::new_from_str(src),
        anchors: HashMap::new(),
        positions: HashMap::new(),
        document: 0,
    };
    let mut docs = Vec::new();
    loop {
        let (ev, span) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                b.document += 1;
                b.anchors.clear();
                let (ev, span) = b.next()?;
                let (value, pos) = if matches!(ev, Event::DocumentEnd) {
                    (Value::Null, pos_of(&span))
                } else {
                    let pos = pos_of(&span);
                    (b.node(ev, span, &FieldPath::root())?, pos)
                };
                docs.push(Document {
                    index: b.document,
                    pos,
                    value,
                    positions: std::mem::take(&mut b.positions),
                });
            }
            other => {
                return Err(b.error(&span, format!("unexpected YAML event {other:?}")));
            }
        }
    }
    Ok(docs)
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

struct Builder<'a> {
    parser: Parser<'a, granit_parser::StrInput<'a>>,
    anchors: HashMap<usize, Value>,
    positions: HashMap<FieldPath, Pos>,
    document: usize,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), SyntaxError> {
        match self.parser.next_event() {
            // Comments are presentation, not data.
            Some(Ok((Event::Comment(..), _))) => self.next(),
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(SyntaxError {
                pos: Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                document: self.document.max(1),
                message: e.info(),
            }),
            None => Err(SyntaxError {
                pos: Pos { line: 0, col: 0 },
                document: self.document.max(1),
                message: "unexpected end of input".into(),
            }),
        }
    }

    fn error(&self, span: &Span, message: String) -> SyntaxError {
        SyntaxError {
            pos: pos_of(span),
            document: self.document.max(1),
            message,
        }
    }

    fn node(&mut self, ev: Event<'a>, span: Span, path: &FieldPath) -> Result<Value, SyntaxError> {
        self.positions.entry(path.clone()).or_insert(pos_of(&span));
        let (value, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.as_ref().and_then(|t| t.core_suffix().map(str::to_string));
                let v = resolve_scalar(&text, style, tag.as_deref()).map_err(|m| self.error(&span, m))?;
                (v, anchor)
            }
            Event::SequenceStart(_, anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let child = path.index(items.len());
                    items.push(self.node(ev, span, &child)?);
                }
                (Value::Array(items), anchor)
            }
            Event::MappingStart(_, anchor, _) => (Value::Object(self.mapping(path)?), anchor),
            Event::Alias(id) => {
                let v = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| self.error(&span, "alias refers to an unknown anchor".into()))?;
                (v, 0)
            }
            other => return Err(self.error(&span, format!("unexpected YAML event {other:?}"))),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        Ok(value)
    }

    fn mapping(&mut self, path: &FieldPath) -> Result<Map<String, Value>, SyntaxError> {
        let mut map = Map::new();
        let mut merged: Vec<Map<String, Value>> = Vec::new();
        let mut key_lines: HashMap<String, usize> = HashMap::new();
        loop {
            let (ev, key_span) = self.next()?;
            let key = match ev {
                Event::MappingEnd => break,
                Event::Scalar(text, style, _, tag) => {
                    let tag = tag.as_ref().and_then(|t| t.core_suffix().map(str::to_string));
                    match resolve_scalar(&text, style, tag.as_deref()) {
                        Ok(Value::String(s)) => s,
                        Ok(Value::Null) => "null".to_string(),
                        Ok(other) => other.to_string(),
                        Err(m) => return Err(self.error(&key_span, m)),
                    }
                }
                _ => {
                    return Err(self.error(
                        &key_span,
                        "mapping keys must be plain strings (Kubernetes objects have no complex keys)".into(),
                    ));
                }
            };
            let child = path.key(key.clone());
            self.positions.insert(child.clone(), pos_of(&key_span));
            let (ev, span) = self.next()?;
            if key == "<<" {
                match self.node(ev, span, &child)? {
                    Value::Object(m) => merged.push(m),
                    Value::Array(items) => {
                        for item in items {
                            match item {
                                Value::Object(m) => merged.push(m),
                                _ => {
                                    return Err(self.error(
                                        &key_span,
                                        "merge key '<<' takes a mapping or a list of mappings".into(),
                                    ));
                                }
                            }
                        }
                    }
                    _ => {
                        return Err(self.error(
                            &key_span,
                            "merge key '<<' takes a mapping or a list of mappings".into(),
                        ));
                    }
                }
                continue;
            }
            let value = self.node(ev, span, &child)?;
            if let Some(first) = key_lines.get(&key) {
                return Err(self.error(
                    &key_span,
                    format!("duplicate key {key:?} in {path} (first defined on line {first})"),
                ));
            }
            key_lines.insert(key.clone(), key_span.start.line());
            map.insert(key, value);
        }
        for m in merged {
            for (k, v) in m {
                map.entry(k).or_insert(v);
            }
        }
        Ok(map)
    }
}

/// Serializes values as a multi-document YAML stream (`---` between documents).
pub fn to_yaml(values: &[Value]) -> String {
    serde_saphyr::to_string_multiple(values).expect("JSON values always serialize as YAML")
}

/// Resolves a scalar by the YAML 1.2 core schema, honouring explicit core tags.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Value, String> {
    match tag {
        Some("str") => return Ok(Value::String(text.to_string())),
        Some("null") => return Ok(Value::Null),
        Some("bool") => {
            return parse_bool(text)
                .map(Value::Bool)
                .ok_or_else(|| format!("!!bool scalar {text:?} is not true or false"));
        }
        Some("int") => {
            return parse_int(text).ok_or_else(|| format!("!!int scalar {text:?} is not an integer"));
        }
        Some("float") => {
            return parse_float(text)
                .or_else(|| parse_int(text))
                .ok_or_else(|| format!("!!float scalar {text:?} is not a finite number"));
        }
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_string()));
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = parse_bool(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(n) = parse_int(text) {
        return Ok(n);
    }
    if let Some(f) = parse_float(text) {
        return Ok(f);
    }
    Ok(Value::String(text.to_string()))
}

fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_int(t: &str) -> Option<Value> {
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, body) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if body.is_empty()
        || !body.chars().all(|c| c.is_digit(radix))
        || (radix != 10 && t.starts_with(['-', '+']))
    {
        return None;
    }
    let mag = u64::from_str_radix(body, radix).ok()?;
    if neg {
        let v = i64::try_from(mag).ok()?.checked_neg()?;
        Some(Value::Number(v.into()))
    } else {
        Some(Value::Number(mag.into()))
    }
}

fn parse_float(t: &str) -> Option<Value> {
    let body = t.trim_start_matches(['-', '+']);
    let first = body.chars().next()?;
    if !(first.is_ascii_digit() || first == '.') || !body.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
    {
        return None;
    }
    let f: f64 = t.parse().ok()?;
    Number::from_f64(f).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_resolve_by_core_schema() {
        let docs =
            parse("a: 1\nb: \"1\"\nc: true\nd: ~\ne: 1.5\nf: 0x1F\ng: enabled\nh: '8080,8443'\ni: -3\n")
                .unwrap();
        assert_eq!(
            docs[0].value,
            json!({"a": 1, "b": "1", "c": true, "d": null, "e": 1.5, "f": 31, "g": "enabled", "h": "8080,8443", "i": -3})
        );
    }

    #[test]
    fn positions_follow_paths() {
        let src = "apiVersion: v1\nkind: Service\nspec:\n  ports:\n    - port: 80\n      targetPort: 8080\n";
        let docs = parse(src).unwrap();
        let d = &docs[0];
        assert_eq!(
            d.position_of(&FieldPath::parse("spec.ports[0].targetPort")).line,
            6
        );
        assert_eq!(d.position_of(&FieldPath::parse("spec.ports[0].port")).line, 5);
        // unknown paths fall back to the nearest ancestor
        assert_eq!(d.position_of(&FieldPath::parse("spec.ports[0].nope")).line, 5);
    }

    #[test]
    fn multiple_documents_are_numbered_including_empty_ones() {
        let docs = parse("a: 1\n---\n# only a comment\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].value, Value::Null);
        assert_eq!(docs[2].index, 3);
        assert_eq!(docs[2].pos.line, 5);
    }

    #[test]
    fn json_is_yaml() {
        let docs = parse("{\"kind\": \"List\", \"items\": [{\"a\": 1}]}").unwrap();
        assert_eq!(docs[0].value, json!({"kind": "List", "items": [{"a": 1}]}));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("duplicate key \"a\""), "{err}");
        assert!(err.message.contains("line 1"), "{err}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: 1\n---\nb: [1, 2\n").unwrap_err();
        assert_eq!(err.document, 2);
        assert!(err.pos.line >= 3, "{err}");
    }

    #[test]
    fn yaml_output_reads_back_the_same() {
        let v =
            json!({"a": "1", "b": "true", "c": 1, "d": "", "e": "x: y", "f": ["-", "*"], "g": {"h": null}});
        let docs = parse(&to_yaml(&[v.clone(), v.clone()])).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value, v);
    }

    #[test]
    fn anchors_and_merge_keys() {
        let docs = parse("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n").unwrap();
        assert_eq!(docs[0].value["other"], json!({"x": 1, "y": 2}));
    }
}
