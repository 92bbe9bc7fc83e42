//! Strait's resource model: the Kubernetes and Linkerd kinds the mesh reads, their names,
//! labels and annotations, the manifest loader, and the `Store` every component watches.
//!
//! Everything above this crate sees typed objects and precise errors; nothing above it
//! parses YAML or knows whether cluster state lives in Kubernetes or in a local store.

pub mod core;
pub mod kinds;
pub mod labels;
pub mod loader;
pub mod mesh;
pub mod names;
pub mod store;
pub mod validate;
pub mod yaml;

pub use kinds::{Kind, KindId, Object, ObjectKey};
pub use store::{Store, StoreError, WatchEvent};
