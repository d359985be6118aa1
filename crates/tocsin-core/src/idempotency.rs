//! Fingerprints of publish requests, so that a retried publish with the same idempotency key
//! can be told apart from a different request that reuses the key.

use sha2::{Digest, Sha256};

use crate::change::PublishRequest;

/// SHA-256 over the canonical JSON of the validated request, hex-encoded.
///
/// Serde serialises struct fields in declaration order and labels from a `BTreeMap`, so the
/// same request always produces the same bytes. Absent `occurred_at` stays absent (it is not
/// replaced by the server clock first), so a retry without a timestamp still matches.
pub fn fingerprint(request: &PublishRequest) -> String {
    let canonical = serde_json::to_vec(request).expect("a PublishRequest always serialises");
    hex::encode(Sha256::digest(canonical))
}
