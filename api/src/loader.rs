//! The manifest loader: files, directories and stdin holding multi-document YAML or JSON
//! (and `List`s) into typed [`Object`]s, or errors that say exactly what to fix.
//!
//! Every error names the file, the document number and line, the object
//! (`kind/namespace/name`), the field path, and what was expected. Loading is all or
//! nothing for the caller: [`load`] returns either every object or every error found.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::core::validate_object;
use crate::kinds::{self, KindInfo, Object, ObjectKey};
use crate::validate::FieldPath;
use crate::yaml::{self, Document, Pos};

/// How objects without a namespace are treated, and how directories are read.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Namespace given to namespaced objects that name none (`default`, or `-n`).
    pub default_namespace: String,
    /// Whether directories are read recursively (`-R`).
    pub recursive: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            default_namespace: "default".into(),
            recursive: false,
        }
    }
}

/// One input text and the name to report it by.
#[derive(Clone, Debug)]
pub struct Source {
    /// A path as the user wrote it, or `<stdin>`.
    pub name: String,
    /// The text.
    pub text: String,
}

/// Where a loaded object was written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The source's name.
    pub file: String,
    /// 1-based document number.
    pub document: usize,
    /// Line of the object's first node.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} (document {})", self.file, self.line, self.document)
    }
}

/// A loaded, validated object.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The object, converted to its kind's storage version.
    pub object: Object,
    /// Where it came from.
    pub origin: Origin,
    /// The `apiVersion` it was written with.
    pub api_version: String,
    /// An earlier object of the same kind, namespace and name from another file of the
    /// same load, which this one replaces (`kubectl apply -f dir/` applies files in order).
    pub replaces: Option<Origin>,
}

/// Something wrong with the input, located as precisely as the input allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The source's name.
    pub file: String,
    /// 1-based document number (0 when the file could not be read at all).
    pub document: usize,
    /// 1-based line and column (0 when unknown).
    pub pos: Pos,
    /// `kind/namespace/name` of the object, as far as it could be read.
    pub object: Option<String>,
    /// The offending field, relative to the object.
    pub path: Option<FieldPath>,
    /// What is wrong: "expected …[, found …]".
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.pos.line > 0 {
            write!(f, ":{}:{}", self.pos.line, self.pos.col)?;
        }
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        f.write_str(": ")?;
        if let Some(p) = &self.path {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}

/// Every error of a failed load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Reads the named files and directories (`-` is `stdin`) into sources, in order; a
/// directory contributes its `.yaml`, `.yml` and `.json` files sorted by name.
pub fn read_sources(
    paths: &[String],
    recursive: bool,
    stdin: &mut dyn Read,
) -> Result<Vec<Source>, LoadErrors> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            match stdin.read_to_string(&mut text) {
                Ok(_) => sources.push(Source {
                    name: "<stdin>".into(),
                    text,
                }),
                Err(e) => errors.push(file_error("<stdin>", format!("cannot read standard input: {e}"))),
            }
            continue;
        }
        let path = Path::new(p);
        if path.is_dir() {
            match manifest_files(path, recursive) {
                Ok(files) if files.is_empty() => errors.push(file_error(
                    p,
                    "the directory holds no .yaml, .yml or .json files; expected manifests (use -R to read subdirectories)".into(),
                )),
                Ok(files) => {
                    for f in files {
                        read_file(&f, &mut sources, &mut errors);
                    }
                }
                Err(e) => errors.push(file_error(p, format!("cannot list the directory: {e}"))),
            }
        } else {
            read_file(path, &mut sources, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(sources)
    } else {
        Err(LoadErrors(errors))
    }
}

fn read_file(path: &Path, sources: &mut Vec<Source>, errors: &mut Vec<LoadError>) {
    let name = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => sources.push(Source { name, text }),
            Err(_) => errors.push(file_error(
                &name,
                "the file is not UTF-8 text; expected YAML or JSON".into(),
            )),
        },
        Err(e) => errors.push(file_error(
            &name,
            format!("cannot read the file: {e}; check the path"),
        )),
    }
}

fn manifest_files(dir: &Path, recursive: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    let mut out = Vec::new();
    for e in entries {
        if e.is_dir() {
            if recursive {
                out.extend(manifest_files(&e, true)?);
            }
        } else if e
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
        {
            out.push(e);
        }
    }
    Ok(out)
}

fn file_error(file: &str, message: String) -> LoadError {
    LoadError {
        file: file.to_string(),
        document: 0,
        pos: Pos { line: 0, col: 0 },
        object: None,
        path: None,
        message,
    }
}

/// Loads and validates every object of every source. Either all objects load, or the
/// result lists every problem found. An object defined twice in one file is an error;
/// defined again in a later file, the later definition replaces it (see [`Loaded::replaces`]).
pub fn load(sources: &[Source], opts: &LoadOptions) -> Result<Vec<Loaded>, LoadErrors> {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<ObjectKey, Origin> = HashMap::new();
    for src in sources {
        // JSON (what programs send the API) parses an order of magnitude faster without
        // positions; anything wrong with it is parsed again as YAML to say where.
        if let Some(doc) = json_document(&src.text) {
            let (first_loaded, first_error) = (loaded.len(), errors.len());
            DocCx {
                file: &src.name,
                doc: &doc,
                opts,
            }
            .document(&mut loaded, &mut errors);
            let mut keys = HashSet::new();
            let unique = loaded[first_loaded..].iter().all(|l| keys.insert(l.object.key()));
            if errors.len() == first_error && unique {
                continue;
            }
            loaded.truncate(first_loaded);
            errors.truncate(first_error);
        }
        let docs = match yaml::parse(&src.text) {
            Ok(d) => d,
            Err(e) => {
                errors.push(LoadError {
                    file: src.name.clone(),
                    document: e.document,
                    pos: e.pos,
                    object: None,
                    path: None,
                    message: format!("malformed YAML: {}", e.message),
                });
                continue;
            }
        };
        let first_error = errors.len();
        for doc in &docs {
            let cx = DocCx {
                file: &src.name,
                doc,
                opts,
            };
            cx.document(&mut loaded, &mut errors);
        }
        // Report a file's problems top to bottom, whatever order the checks found them in.
        errors[first_error..].sort_by_key(|e| (e.document, e.pos.line, e.pos.col));
    }
    // The same object twice in one file is a mistake; in a later file it is an update,
    // as `kubectl apply -f dir/` applies files in order and the last one wins.
    for l in &mut loaded {
        let key = l.object.key();
        match seen.get(&key) {
            Some(first) if first.file == l.origin.file => errors.push(LoadError {
                file: l.origin.file.clone(),
                document: l.origin.document,
                pos: Pos { line: l.origin.line, col: 1 },
                object: Some(key.to_string()),
                path: None,
                message: format!(
                    "duplicate object: {key} is already defined at {first}; expected each object once per file"
                ),
            }),
            Some(first) => {
                l.replaces = Some(first.clone());
                seen.insert(key, l.origin.clone());
            }
            None => {
                seen.insert(key, l.origin.clone());
            }
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(LoadErrors(errors))
    }
}

/// `text` as one JSON document without positions, if it is JSON without duplicate keys.
fn json_document(text: &str) -> Option<Document> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return None;
    }
    let value = serde_json::from_str::<StrictValue>(trimmed).ok()?.0;
    Some(Document {
        index: 1,
        pos: yaml::Pos { line: 1, col: 1 },
        value,
        positions: HashMap::new(),
    })
}

/// A JSON value that refuses duplicate keys (YAML parsing refuses them too, and the
/// last-one-wins of plain JSON parsing would hide a mistake).
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StrictValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
                Ok(StrictValue(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
                Ok(StrictValue(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
                Ok(StrictValue(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<StrictValue, E> {
                Ok(StrictValue(
                    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
                ))
            }
            fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
                Ok(StrictValue(Value::String(v.into())))
            }
            fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
                Ok(StrictValue(Value::String(v)))
            }
            fn visit_unit<E>(self) -> Result<StrictValue, E> {
                Ok(StrictValue(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<StrictValue, A::Error> {
                let mut out = Vec::new();
                while let Some(StrictValue(v)) = a.next_element()? {
                    out.push(v);
                }
                Ok(StrictValue(Value::Array(out)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<StrictValue, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    let StrictValue(v) = a.next_value()?;
                    if out.insert(k.clone(), v).is_some() {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                }
                Ok(StrictValue(Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Loads one text; a convenience for tests and stdin.
pub fn load_str(name: &str, text: &str, opts: &LoadOptions) -> Result<Vec<Loaded>, LoadErrors> {
    load(
        &[Source {
            name: name.into(),
            text: text.into(),
        }],
        opts,
    )
}

struct DocCx<'a> {
    file: &'a str,
    doc: &'a Document,
    opts: &'a LoadOptions,
}

impl DocCx<'_> {
    fn error(
        &self,
        base: &FieldPath,
        path: Option<FieldPath>,
        object: Option<String>,
        message: String,
    ) -> LoadError {
        let full = match &path {
            Some(p) => FieldPath(base.0.iter().chain(p.0.iter()).cloned().collect()),
            None => base.clone(),
        };
        LoadError {
            file: self.file.to_string(),
            document: self.doc.index,
            pos: self.doc.position_of(&full),
            object,
            path: path.filter(|p| !p.is_root()),
            message,
        }
    }

    fn document(&self, loaded: &mut Vec<Loaded>, errors: &mut Vec<LoadError>) {
        let root = FieldPath::root();
        match &self.doc.value {
            Value::Null => {}
            Value::Object(m) => {
                let kind = m.get("kind").and_then(Value::as_str).unwrap_or_default();
                let items = m.get("items").and_then(Value::as_array);
                if kind.ends_with("List") && items.is_some() {
                    for (i, item) in items.into_iter().flatten().enumerate() {
                        self.object(item, &root.key("items").index(i), loaded, errors);
                    }
                } else {
                    self.object(&self.doc.value, &root, loaded, errors);
                }
            }
            _ => errors.push(self.error(
                &root,
                None,
                None,
                "expected a Kubernetes object (a mapping with apiVersion, kind and metadata)".into(),
            )),
        }
    }

    fn object(&self, value: &Value, base: &FieldPath, loaded: &mut Vec<Loaded>, errors: &mut Vec<LoadError>) {
        let Some(map) = value.as_object() else {
            errors.push(self.error(
                base,
                None,
                None,
                "expected a Kubernetes object (a mapping with apiVersion, kind and metadata)".into(),
            ));
            return;
        };
        let label = describe(value);
        let api_version = map.get("apiVersion").and_then(Value::as_str);
        let kind = map.get("kind").and_then(Value::as_str);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            let field = if api_version.is_none() {
                "apiVersion"
            } else {
                "kind"
            };
            errors.push(self.error(
                base,
                Some(FieldPath::root().key(field)),
                label,
                format!(
                    "expected a string {field} (e.g. apiVersion: v1, kind: Service); every object needs both"
                ),
            ));
            return;
        };
        let info = match kinds::lookup(api_version, kind) {
            Ok(i) => i,
            Err(e) => {
                let field = if matches!(e, kinds::LookupError::UnknownKind { .. }) {
                    "kind"
                } else {
                    "apiVersion"
                };
                errors.push(self.error(base, Some(FieldPath::root().key(field)), label, e.to_string()));
                return;
            }
        };
        let mut typed_input = value.clone();
        self.normalize(info, &mut typed_input);
        let object = match Object::from_value(info.id, typed_input.clone()) {
            Ok(o) => o,
            Err(e) => {
                let (path, message) = serde_problem(&e);
                errors.push(self.error(base, Some(path), label, message));
                return;
            }
        };
        let label = Some(object.key().to_string());
        let mut unknown = Vec::new();
        unknown_fields(&typed_input, &object.to_value(), &FieldPath::root(), &mut unknown);
        for path in unknown {
            errors.push(self.error(
                base,
                Some(path),
                label.clone(),
                format!(
                    "unknown field; expected only the fields of {} {}",
                    info.api_version_of(version_of(api_version)),
                    info.kind
                ),
            ));
        }
        for problem in validate_object(&object).0 {
            let mut message = format!("expected {}", problem.expected);
            if let Some(found) = &problem.found {
                message.push_str(&format!(", found {found}"));
            }
            errors.push(self.error(base, Some(problem.path), label.clone(), message));
        }
        loaded.push(Loaded {
            object,
            origin: Origin {
                file: self.file.to_string(),
                document: self.doc.index,
                line: self.doc.position_of(base).line,
            },
            api_version: api_version.to_string(),
            replaces: None,
        });
    }

    /// Storage version, default namespace, and no namespace on cluster-scoped kinds (the
    /// API server ignores it there).
    fn normalize(&self, info: &KindInfo, v: &mut Value) {
        let Some(m) = v.as_object_mut() else { return };
        m.insert("apiVersion".into(), Value::String(info.api_version()));
        let meta = m
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            if info.namespaced {
                let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or_default();
                if ns.is_empty() {
                    meta.insert(
                        "namespace".into(),
                        Value::String(self.opts.default_namespace.clone()),
                    );
                }
            } else {
                meta.remove("namespace");
            }
        }
    }
}

fn version_of(api_version: &str) -> &str {
    api_version.rsplit('/').next().unwrap_or(api_version)
}

/// `kind/namespace/name` from an untyped object, as far as it can be read.
fn describe(v: &Value) -> Option<String> {
    let kind = v.get("kind")?.as_str()?;
    let meta = v.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<no name>");
    match meta.and_then(|m| m.get("namespace")).and_then(Value::as_str) {
        Some(ns) => Some(format!("{}/{ns}/{name}", kind.to_ascii_lowercase())),
        None => Some(format!("{}/{name}", kind.to_ascii_lowercase())),
    }
}

/// Turns serde's error into a path and an "expected …" message.
fn serde_problem(e: &serde_path_to_error::Error<serde_json::Error>) -> (FieldPath, String) {
    let mut path = FieldPath::root();
    for seg in e.path().iter() {
        path = match seg {
            serde_path_to_error::Segment::Seq { index } => path.index(*index),
            serde_path_to_error::Segment::Map { key } => path.key(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => path.key(variant.clone()),
            serde_path_to_error::Segment::Unknown => path,
        };
    }
    let inner = e.inner().to_string();
    if let Some(field) = inner
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        return (path.key(field), "expected a value; the field is required".into());
    }
    if let Some(rest) = inner.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return (path, format!("expected {expected}, found {found}"));
    }
    if let Some(rest) = inner.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return (path, format!("expected {expected}, found {found}"));
    }
    if let Some(rest) = inner.strip_prefix("unknown variant ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return (path, format!("expected {expected}, found {found}"));
    }
    (path, format!("expected a valid value: {inner}"))
}

/// Paths of keys present in `input` that did not survive typing: fields the kind does not
/// have (kubectl's strict field validation). Explicit nulls count as absent.
fn unknown_fields(input: &Value, output: &Value, path: &FieldPath, out: &mut Vec<FieldPath>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, iv) in i {
                match o.get(k) {
                    None if !iv.is_null() => out.push(path.key(k.clone())),
                    None => {}
                    Some(ov) => unknown_fields(iv, ov, &path.key(k.clone()), out),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) if i.len() == o.len() => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                unknown_fields(iv, ov, &path.index(n), out);
            }
        }
        _ => {}
    }
}
