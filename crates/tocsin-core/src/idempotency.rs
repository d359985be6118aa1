//! Fingerprints of publish requests, so that a retried publish with the same idempotency key
//! can be told apart from a different request that reuses the key.

use sha2::{Digest, Sha256};

use crate::change::PublishRequest;

/// SHA-256 over the canonical JSON of the validated request, hex-encoded.
///
/// Serde serialises struct fields in declaration order and labels from a `BTreeMap`, so the
/// same request always produces the same bytes. Absent `occurred_at` stays absent (it is not
/// replaced by the server clock first), so a retry without a timestamp still matches. The
/// component names the ingest copies in from the catalogue are left out: they are not what
/// the publisher asked, and a rename between a publish and its retry must not make the retry
/// a different request.
pub fn fingerprint(request: &PublishRequest) -> String {
    let canonical = if request.change.component_names.is_empty() {
        serde_json::to_vec(request)
    } else {
        let mut asked = request.clone();
        asked.change.component_names.clear();
        serde_json::to_vec(&asked)
    }
    .expect("a PublishRequest always serialises");
    hex::encode(Sha256::digest(canonical))
}
