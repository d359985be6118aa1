use tocsin_core::DomainError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The domain refused the change (invalid, unknown incident, bad transition, stale version).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The idempotency key was used before for a different request.
    #[error("idempotency key {key:?} was already used by this publisher for a different request")]
    IdempotencyKeyReused { key: String },
    /// A concurrent writer won a race on a unique constraint; the caller may retry.
    #[error("concurrent write conflict on {constraint}")]
    Conflict { constraint: String },
    /// The database could not be reached or timed out; retry later.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A stored row does not decode: a bug or manual tampering.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict {
                constraint: db.constraint().unwrap_or("unknown").to_owned(),
            },
            // 22021: text PostgreSQL cannot hold (a NUL character). The request's fault, so
            // the caller must hear so rather than "internal error" or "retry".
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => {
                StoreError::Domain(DomainError::invalid(
                    "input",
                    "holds a NUL character (\\0), which no text field may hold",
                ))
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e),
            _ => StoreError::Database(e),
        }
    }
}
