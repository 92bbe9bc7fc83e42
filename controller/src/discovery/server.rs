//! The Destination gRPC server with small per-stream encode buffers.
//!
//! tonic gives every response stream an encode buffer of 8 KiB that it keeps for the
//! stream's life. A proxy holds one `Get` stream per destination it talks to, and a
//! controller serves thousands of them: 2000 streams held 16 MiB of buffers that sat
//! empty between updates. This server routes `Get` and `GetProfile` through a codec whose
//! buffer starts at [`ENCODE_BUFFER`] (it grows for a larger message as before) and leaves
//! every other call to the generated server.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_server::{Destination, DestinationServer as Generated};
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{BoxFuture, Service, StdError};
use tonic::server::NamedService;
use tonic_prost::ProstCodec;
use tonic_prost::prost::Message;

use super::destination::DestinationService;

/// The initial encode buffer of a `Get` or `GetProfile` stream: an update of a few
/// endpoints fits.
pub const ENCODE_BUFFER: usize = 1024;
/// tonic's default: how much a stream encodes before it yields to the runtime.
const YIELD_THRESHOLD: usize = 32 * 1024;

const GET: &str = "/io.linkerd.proxy.destination.Destination/Get";
const GET_PROFILE: &str = "/io.linkerd.proxy.destination.Destination/GetProfile";

/// `io.linkerd.proxy.destination.Destination`, served from a [`DestinationService`].
#[derive(Clone)]
pub struct DestinationServer {
    service: Arc<DestinationService>,
    generated: Generated<DestinationService>,
}

impl DestinationServer {
    /// The server of `service`.
    pub fn new(service: DestinationService) -> Self {
        let service = Arc::new(service);
        Self {
            generated: Generated::from_arc(service.clone()),
            service,
        }
    }
}

impl NamedService for DestinationServer {
    const NAME: &'static str = <Generated<DestinationService> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for DestinationServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let service = self.service.clone();
        match req.uri().path() {
            GET => Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(SmallBuffers::<pb::Update, pb::GetDestination>::default());
                Ok(grpc.server_streaming(Get(service), req).await)
            }),
            GET_PROFILE => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(SmallBuffers::<
                    pb::DestinationProfile,
                    pb::GetDestination,
                >::default());
                Ok(grpc.server_streaming(GetProfile(service), req).await)
            }),
            _ => self.generated.call(req),
        }
    }
}

struct Get(Arc<DestinationService>);

impl tonic::server::ServerStreamingService<pb::GetDestination> for Get {
    type Response = pb::Update;
    type ResponseStream = <DestinationService as Destination>::GetStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<pb::GetDestination>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.get(request).await })
    }
}

struct GetProfile(Arc<DestinationService>);

impl tonic::server::ServerStreamingService<pb::GetDestination> for GetProfile {
    type Response = pb::DestinationProfile;
    type ResponseStream = <DestinationService as Destination>::GetProfileStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<pb::GetDestination>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.get_profile(request).await })
    }
}

/// prost encoding with an [`ENCODE_BUFFER`]-byte initial encode buffer.
struct SmallBuffers<T, U>(PhantomData<fn() -> (T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}
