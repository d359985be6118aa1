use crate::ids::IncidentId;

/// Why the domain refused a request. Variants say what the caller must do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field is missing, malformed or too long; fix the request.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The incident does not exist; open it first.
    #[error("incident {0} does not exist")]
    NotFound(IncidentId),
    /// The incident's lifecycle does not allow this event now (for example an update after resolve).
    #[error("{0}")]
    InvalidTransition(String),
    /// The caller's expected version is stale; re-read the incident and decide again.
    #[error("expected incident version {expected}, but it is at {actual}")]
    VersionConflict { expected: u64, actual: u64 },
}

impl DomainError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
