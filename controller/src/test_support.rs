//! Shared test support: manifests to objects, a gRPC server on a loopback port, and a
//! bounded wait for the next stream message.

use std::net::SocketAddr;
use std::time::Duration;

use strait_api::loader::{LoadOptions, load_str};
use strait_api::store::local::LocalStore;
use strait_api::{Object, Store};
use tokio_stream::wrappers::TcpListenerStream;

/// The objects of a YAML text, which must load.
pub fn objects(yaml: &str) -> Vec<Object> {
    load_str("test.yaml", yaml, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|l| l.object)
        .collect()
}

/// Applies a YAML text to a store.
pub async fn apply(store: &LocalStore, yaml: &str) {
    store.apply(objects(yaml)).await.unwrap();
}

/// Serves gRPC routes on 127.0.0.1:0 for the rest of the test; returns the address.
pub async fn serve_grpc(routes: tonic::service::Routes) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// The next message of a stream, within 5 s; the stream must stay open.
pub async fn next<T>(s: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a message within 5s")
        .expect("no stream error")
        .expect("the stream stays open")
}
