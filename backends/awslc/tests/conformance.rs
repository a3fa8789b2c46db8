//! The public conformance kit on this suite, from its own crate: what any
//! third-party suite runs (on AWS-LC's FIPS module with the feature `fips`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

keyserver_testing::cipher_conformance!(awslc, keyserver_awslc::AwsLc::new());
