//! Cipher-suite conformance: this crate's suites through the public kit
//! (`keyserver::testing::cipher`), one line each.

#[cfg(feature = "cipher-rustcrypto")]
keyserver::cipher_conformance!(rustcrypto, keyserver::backends::RustCrypto::new());
#[cfg(feature = "cipher-openssl")]
keyserver::cipher_conformance!(openssl, keyserver::backends::OpenSsl::new());
#[cfg(feature = "cipher-awslc")]
keyserver::cipher_conformance!(awslc, keyserver::backends::AwsLc::new());
