//! DNS tests
