//! Bearer-token authentication of callers, and the role each may act in.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::config::{CallerTokens, Role};

/// The authenticated caller, put in request extensions by [`Authenticator::intercept`].
/// Its name is recorded as the publisher of the events it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The caller of an authenticated request.
#[allow(clippy::result_large_err)]
pub(crate) fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::unauthenticated("request was not authenticated"))
}

/// Refuses a caller without the operator role, naming what it tried.
#[allow(clippy::result_large_err)]
pub(crate) fn require_operator<T>(request: &Request<T>, action: &str) -> Result<(), Status> {
    let caller = caller(request)?;
    if caller.role == Role::Operator {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{action} needs an operator token (TOCSIN_OPERATOR_TOKENS); {:?} is a {}",
            caller.name,
            caller.role.as_str()
        )))
    }
}

/// Checks `authorization: Bearer <token>` against the configured callers.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// SHA-256 of each token: comparing fixed-length digests keeps the comparison's time
    /// independent of where, and whether, the token differs.
    digests: Arc<Vec<(String, Role, [u8; 32])>>,
}

impl Authenticator {
    pub fn new(tokens: &CallerTokens) -> Self {
        let digests = tokens
            .iter()
            .map(|(name, token, role)| (name.to_owned(), role, digest(token)))
            .collect();
        Self {
            digests: Arc::new(digests),
        }
    }

    /// The caller the request's token belongs to.
    #[allow(clippy::result_large_err)]
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
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
        let mut found: Option<(&str, Role)> = None;
        for (name, role, expected) in self.digests.iter() {
            if bool::from(presented.ct_eq(expected)) {
                found = Some((name, *role));
            }
        }
        found
            .map(|(name, role)| Caller {
                name: name.to_owned(),
                role,
            })
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))
    }

    /// A tonic interceptor: authenticates, then records the caller on the request.
    #[allow(clippy::result_large_err)]
    pub fn intercept(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.authenticate(request.metadata())?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }

    /// An interceptor for services that only operators may call.
    #[allow(clippy::result_large_err)]
    pub fn intercept_operator(
        &self,
        request: Request<()>,
        service: &str,
    ) -> Result<Request<()>, Status> {
        let request = self.intercept(request)?;
        require_operator(&request, service)?;
        Ok(request)
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}
