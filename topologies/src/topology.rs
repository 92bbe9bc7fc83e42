//! The topology file: which clusters `strait up` runs, what each one holds, how they are
//! linked, and how container images become local commands.
//!
//! ```yaml
//! apiVersion: strait.io/v1alpha1
//! kind: Topology
//! metadata:
//!   name: west-east
//! spec:
//!   isolation: auto            # netns (root), loopback (no root), or auto: netns when root
//!   images:                    # image -> command; `strait` is this binary
//!     myapp:latest: strait demo server
//!   sidecar: strait proxy      # optional: another proxy taking Linkerd's environment
//!   clusters:
//!     - name: west
//!       trustDomain: cluster.local   # default cluster.local
//!       clusterDomain: cluster.local # default cluster.local
//!       manifests: [west-east/west]  # files or directories, relative to this file
//!       images: {}                   # optional per-cluster overrides
//!   links:
//!     - from: west   # the linking cluster: it runs the mirror of `to`'s exported services
//!       to: east
//! ```
//!
//! Problems are reported like manifest problems: file, line, column, field and what was
//! expected, every problem of the file in one pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use strait_api::loader::{LoadError, LoadErrors};
use strait_api::validate::FieldPath;
use strait_api::yaml::{Document, Pos};

/// The API version of topology files.
pub const API_VERSION: &str = "strait.io/v1alpha1";
/// Most clusters one topology may hold (one address block each).
pub const MAX_CLUSTERS: usize = 4;

/// How pods are isolated from each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// A network namespace per pod on a per-cluster bridge, iptables capture (root).
    Netns,
    /// A 127.x address per pod, explicit proxy addressing (no root).
    Loopback,
    /// `netns` when running as root, else `loopback`.
    Auto,
}

impl Isolation {
    /// The mode to use on this machine.
    pub fn resolve(self, is_root: bool) -> Isolation {
        match self {
            Isolation::Auto if is_root => Isolation::Netns,
            Isolation::Auto => Isolation::Loopback,
            other => other,
        }
    }

    /// The name used in files and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Netns => "netns",
            Isolation::Loopback => "loopback",
            Isolation::Auto => "auto",
        }
    }

    /// Parses a name used in files and flags.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "netns" => Some(Isolation::Netns),
            "loopback" => Some(Isolation::Loopback),
            "auto" => Some(Isolation::Auto),
            _ => None,
        }
    }
}

/// A command line: the program and its arguments. `strait` as the program means the
/// running `strait` binary.
pub type CommandLine = Vec<String>;

/// One cluster of a topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster's name (a DNS label): `--cluster NAME`, mirror suffixes `<svc>-NAME`.
    pub name: String,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Manifest files and directories, resolved against the topology file's directory.
    pub manifests: Vec<PathBuf>,
    /// Image mappings of this cluster (over the topology's).
    pub images: BTreeMap<String, CommandLine>,
}

/// A link: `from` mirrors the exported services of `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The linking cluster.
    pub from: String,
    /// The target cluster.
    pub to: String,
}

/// A parsed, validated topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// The file it was read from.
    pub file: PathBuf,
    /// `metadata.name`.
    pub name: String,
    /// The requested isolation.
    pub isolation: Isolation,
    /// Image mappings shared by every cluster.
    pub images: BTreeMap<String, CommandLine>,
    /// The sidecar command (default `strait proxy`).
    pub sidecar: CommandLine,
    /// The clusters, in file order (their index picks their address block).
    pub clusters: Vec<Cluster>,
    /// The links.
    pub links: Vec<Link>,
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Topology, LoadErrors> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            LoadErrors(vec![problem(
                &name,
                0,
                Pos { line: 0, col: 0 },
                None,
                format!("cannot read the topology file: {e}"),
            )])
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&name, &text, &base).map(|mut t| {
            t.file = path.to_path_buf();
            t
        })
    }

    /// Parses a topology from text; relative manifest paths resolve against `base`.
    pub fn parse(name: &str, text: &str, base: &Path) -> Result<Topology, LoadErrors> {
        let docs = strait_api::yaml::parse(text)
            .map_err(|e| LoadErrors(vec![problem(name, e.document, e.pos, None, e.message)]))?;
        let docs: Vec<Document> = docs.into_iter().filter(|d| !d.value.is_null()).collect();
        let Some(doc) = docs.first() else {
            return Err(LoadErrors(vec![problem(
                name,
                0,
                Pos { line: 0, col: 0 },
                None,
                "expected a Topology document, found an empty file".into(),
            )]));
        };
        let mut r = Reader {
            file: name,
            doc,
            errors: Vec::new(),
        };
        if docs.len() > 1 {
            r.error(
                &FieldPath::root(),
                "expected exactly one document in a topology file".into(),
            );
        }
        let t = r.topology(base);
        if r.errors.is_empty() {
            Ok(t)
        } else {
            Err(LoadErrors(r.errors))
        }
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The command an image runs in `cluster`, if the topology maps it.
    pub fn command_for<'a>(&'a self, cluster: &'a Cluster, image: &str) -> Option<&'a CommandLine> {
        cluster.images.get(image).or_else(|| self.images.get(image))
    }
}

fn problem(file: &str, document: usize, pos: Pos, path: Option<FieldPath>, message: String) -> LoadError {
    LoadError {
        file: file.to_string(),
        document,
        pos,
        object: None,
        path,
        message,
    }
}

/// Walks the document, collecting every problem.
struct Reader<'a> {
    file: &'a str,
    doc: &'a Document,
    errors: Vec<LoadError>,
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

impl Reader<'_> {
    fn error(&mut self, path: &FieldPath, message: String) {
        let pos = self.doc.position_of(path);
        self.errors.push(LoadError {
            file: self.file.to_string(),
            document: self.doc.index,
            pos,
            object: Some("topology".into()),
            path: (!path.0.is_empty()).then(|| path.clone()),
            message,
        });
    }

    fn get<'v>(&self, v: &'v Value, key: &str) -> Option<&'v Value> {
        v.get(key).filter(|x| !x.is_null())
    }

    fn mapping<'v>(
        &mut self,
        v: &'v Value,
        path: &FieldPath,
        allowed: &[&str],
    ) -> Option<&'v serde_json::Map<String, Value>> {
        let Some(m) = v.as_object() else {
            self.error(path, format!("expected a mapping, found {}", describe(v)));
            return None;
        };
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                self.error(
                    &path.key(k),
                    format!("unknown field; expected one of {}", allowed.join(", ")),
                );
            }
        }
        Some(m)
    }

    fn string(&mut self, v: &Value, path: &FieldPath) -> Option<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            other => {
                self.error(
                    path,
                    format!("expected a non-empty string, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn dns_label(&mut self, v: &Value, path: &FieldPath) -> Option<String> {
        let s = self.string(v, path)?;
        match strait_api::names::dns1123_label(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                self.error(path, format!("expected {e}, found {s:?}"));
                None
            }
        }
    }

    fn domain(&mut self, parent: &Value, key: &str, path: &FieldPath) -> String {
        let Some(v) = self.get(parent, key) else {
            return "cluster.local".into();
        };
        let p = path.key(key);
        let Some(s) = self.string(v, &p) else {
            return String::new();
        };
        if strait_identity::TrustDomain::new(&s).is_err() {
            self.error(
                &p,
                format!("expected a DNS domain such as cluster.local, found {s:?}"),
            );
        }
        s
    }

    fn command(&mut self, v: &Value, path: &FieldPath) -> Option<CommandLine> {
        let words: Vec<String> = match v {
            Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    out.push(self.string(item, &path.index(i))?);
                }
                out
            }
            other => {
                self.error(
                    path,
                    format!(
                        "expected a command (a string, or a list of words), found {}",
                        describe(other)
                    ),
                );
                return None;
            }
        };
        if words.is_empty() {
            self.error(path, "expected a command, found an empty one".into());
            return None;
        }
        Some(words)
    }

    fn images(&mut self, parent: &Value, path: &FieldPath) -> BTreeMap<String, CommandLine> {
        let mut out = BTreeMap::new();
        let Some(v) = self.get(parent, "images") else {
            return out;
        };
        let p = path.key("images");
        let Some(m) = v.as_object() else {
            self.error(
                &p,
                format!("expected a mapping of image to command, found {}", describe(v)),
            );
            return out;
        };
        for (image, cmd) in m {
            if let Some(c) = self.command(cmd, &p.key(image)) {
                out.insert(image.clone(), c);
            }
        }
        out
    }

    fn topology(&mut self, base: &Path) -> Topology {
        let root = &self.doc.value;
        let rp = FieldPath::root();
        let mut t = Topology {
            file: PathBuf::new(),
            name: String::new(),
            isolation: Isolation::Auto,
            images: BTreeMap::new(),
            sidecar: vec!["strait".into(), "proxy".into()],
            clusters: Vec::new(),
            links: Vec::new(),
        };
        if self
            .mapping(root, &rp, &["apiVersion", "kind", "metadata", "spec"])
            .is_none()
        {
            return t;
        }
        match root.get("apiVersion") {
            Some(Value::String(s)) if s == API_VERSION => {}
            other => self.error(
                &rp.key("apiVersion"),
                format!(
                    "expected {API_VERSION}, found {}",
                    other.map_or("nothing".into(), describe)
                ),
            ),
        }
        match root.get("kind") {
            Some(Value::String(s)) if s == "Topology" => {}
            other => self.error(
                &rp.key("kind"),
                format!(
                    "expected Topology, found {}",
                    other.map_or("nothing".into(), describe)
                ),
            ),
        }
        let mp = rp.key("metadata");
        match self.get(root, "metadata") {
            Some(m) => {
                if self.mapping(m, &mp, &["name"]).is_some() {
                    match self.get(m, "name") {
                        Some(n) => t.name = self.dns_label(n, &mp.key("name")).unwrap_or_default(),
                        None => self.error(&mp.key("name"), "expected the topology's name".into()),
                    }
                }
            }
            None => self.error(&mp, "expected metadata with the topology's name".into()),
        }
        let sp = rp.key("spec");
        let Some(spec) = self.get(root, "spec") else {
            self.error(&sp, "expected a spec with clusters".into());
            return t;
        };
        if self
            .mapping(
                spec,
                &sp,
                &["isolation", "images", "sidecar", "clusters", "links"],
            )
            .is_none()
        {
            return t;
        }
        if let Some(v) = self.get(spec, "isolation") {
            let p = sp.key("isolation");
            match v.as_str().and_then(Isolation::parse) {
                Some(i) => t.isolation = i,
                None => self.error(
                    &p,
                    format!("expected netns, loopback or auto, found {}", describe(v)),
                ),
            }
        }
        t.images = self.images(spec, &sp);
        if let Some(v) = self.get(spec, "sidecar")
            && let Some(c) = self.command(v, &sp.key("sidecar"))
        {
            t.sidecar = c;
        }
        let cp = sp.key("clusters");
        match self.get(spec, "clusters") {
            Some(Value::Array(items)) if !items.is_empty() => {
                if items.len() > MAX_CLUSTERS {
                    self.error(
                        &cp,
                        format!("expected at most {MAX_CLUSTERS} clusters, found {}", items.len()),
                    );
                }
                for (i, item) in items.iter().enumerate() {
                    if let Some(c) = self.cluster(item, &cp.index(i), base) {
                        if t.clusters.iter().any(|o| o.name == c.name) {
                            self.error(
                                &cp.index(i).key("name"),
                                format!("expected a unique cluster name; {:?} is declared twice", c.name),
                            );
                        }
                        t.clusters.push(c);
                    }
                }
            }
            Some(other) => self.error(
                &cp,
                format!("expected a non-empty list of clusters, found {}", describe(other)),
            ),
            None => self.error(&cp, "expected a non-empty list of clusters".into()),
        }
        let lp = sp.key("links");
        match self.get(spec, "links") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let p = lp.index(i);
                    if self.mapping(item, &p, &["from", "to"]).is_none() {
                        continue;
                    }
                    let mut end = |key: &str| -> Option<String> {
                        let Some(v) = self.get(item, key) else {
                            self.error(&p.key(key), "expected a cluster name".into());
                            return None;
                        };
                        let name = self.string(v, &p.key(key))?;
                        if !t.clusters.iter().any(|c| c.name == name) {
                            let known: Vec<&str> = t.clusters.iter().map(|c| c.name.as_str()).collect();
                            self.error(
                                &p.key(key),
                                format!(
                                    "expected one of the clusters ({}), found {name:?}",
                                    known.join(", ")
                                ),
                            );
                            return None;
                        }
                        Some(name)
                    };
                    let (from, to) = (end("from"), end("to"));
                    let (Some(from), Some(to)) = (from, to) else {
                        continue;
                    };
                    if from == to {
                        self.error(
                            &p.key("to"),
                            format!(
                                "expected another cluster than {from:?}: a cluster cannot link to itself"
                            ),
                        );
                        continue;
                    }
                    let link = Link { from, to };
                    if t.links.contains(&link) {
                        self.error(
                            &p,
                            format!(
                                "expected each link once; {} -> {} is declared twice",
                                link.from, link.to
                            ),
                        );
                        continue;
                    }
                    t.links.push(link);
                }
            }
            Some(other) => self.error(
                &lp,
                format!("expected a list of links, found {}", describe(other)),
            ),
        }
        t
    }

    fn cluster(&mut self, v: &Value, p: &FieldPath, base: &Path) -> Option<Cluster> {
        self.mapping(
            v,
            p,
            &["name", "trustDomain", "clusterDomain", "manifests", "images"],
        )?;
        let name = match self.get(v, "name") {
            Some(n) => self.dns_label(n, &p.key("name")),
            None => {
                self.error(&p.key("name"), "expected the cluster's name".into());
                None
            }
        };
        let trust_domain = self.domain(v, "trustDomain", p);
        let cluster_domain = self.domain(v, "clusterDomain", p);
        let mut manifests = Vec::new();
        let mp = p.key("manifests");
        match self.get(v, "manifests") {
            None => {}
            Some(Value::String(s)) => manifests.push(s.clone()),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(s) = self.string(item, &mp.index(i)) {
                        manifests.push(s);
                    }
                }
            }
            Some(other) => self.error(
                &mp,
                format!("expected a path or a list of paths, found {}", describe(other)),
            ),
        }
        let mut paths = Vec::new();
        for (i, m) in manifests.iter().enumerate() {
            let path = base.join(m);
            if !path.exists() {
                let at = if matches!(self.get(v, "manifests"), Some(Value::Array(_))) {
                    mp.index(i)
                } else {
                    mp.clone()
                };
                self.error(
                    &at,
                    format!(
                        "expected an existing file or directory, found {m:?} (looked for {})",
                        path.display()
                    ),
                );
            }
            paths.push(path);
        }
        let images = self.images(v, p);
        Some(Cluster {
            name: name?,
            trust_domain,
            cluster_domain,
            manifests: paths,
            images,
        })
    }
}

#[cfg(test)]
mod tests;
