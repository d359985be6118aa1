//! Bearer-token authentication of publishers.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::config::PublisherTokens;

/// The authenticated caller, put in request extensions by [`Authenticator::intercept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher(pub String);

/// Checks `authorization: Bearer <token>` against the configured publishers.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// SHA-256 of each token: comparing fixed-length digests keeps the comparison's time
    /// independent of where, and whether, the token differs.
    digests: Arc<Vec<(String, [u8; 32])>>,
}

impl Authenticator {
    pub fn new(tokens: &PublisherTokens) -> Self {
        let digests = tokens
            .iter()
            .map(|(name, token)| (name.to_owned(), digest(token)))
            .collect();
        Self {
            digests: Arc::new(digests),
        }
    }

    /// The publisher the request's token belongs to.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Publisher, Status> {
        let header = metadata.get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be `Bearer <token>`")
            })?;
        let presented = digest(token.trim().as_bytes());
        // Every entry is compared, match or not, so timing says nothing about which matched.
        let mut found: Option<&str> = None;
        for (name, expected) in self.digests.iter() {
            if bool::from(presented.ct_eq(expected)) {
                found = Some(name);
            }
        }
        found
            .map(|name| Publisher(name.to_owned()))
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))
    }

    /// A tonic interceptor: authenticates, then records the publisher on the request.
    #[allow(clippy::result_large_err)]
    pub fn intercept(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let publisher = self.authenticate(request.metadata())?;
        request.extensions_mut().insert(publisher);
        Ok(request)
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}
