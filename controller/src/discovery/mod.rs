//! Service discovery for the destination API: the model, the index fed by the store, the
//! translation of ServiceProfiles and TrafficSplits, and the gRPC service.

pub mod destination;
pub mod index;
pub mod model;
pub mod profile;
pub mod server;
