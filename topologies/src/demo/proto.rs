//! The demo's gRPC service, written with prost derives instead of generated code:
//!
//! ```proto
//! syntax = "proto3";
//! package strait.demo;
//! service Demo { rpc Hello(HelloRequest) returns (HelloReply); }
//! message HelloRequest { string message = 1; }
//! message HelloReply {
//!   string name = 1; string version = 2; string cluster = 3; string pod = 4;
//!   string namespace = 5; string protocol = 6; bytes padding = 7;
//! }
//! ```

/// The one method's path.
pub const HELLO_PATH: &str = "/strait.demo.Demo/Hello";

/// A greeting.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HelloRequest {
    /// Free text, echoed nowhere; lets clients vary request sizes.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// Who answered.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HelloReply {
    /// The workload's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its version.
    #[prost(string, tag = "2")]
    pub version: String,
    /// Its cluster.
    #[prost(string, tag = "3")]
    pub cluster: String,
    /// Its pod.
    #[prost(string, tag = "4")]
    pub pod: String,
    /// Its namespace.
    #[prost(string, tag = "5")]
    pub namespace: String,
    /// Always `gRPC`.
    #[prost(string, tag = "6")]
    pub protocol: String,
    /// Filler up to the configured response size.
    #[prost(bytes = "vec", tag = "7")]
    pub padding: Vec<u8>,
}

impl HelloReply {
    /// The identity it carries.
    pub fn identity(&self) -> super::Identity {
        super::Identity {
            name: self.name.clone(),
            version: self.version.clone(),
            cluster: self.cluster.clone(),
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
        }
    }
}
