/// Why a bus operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// NATS or JetStream is unreachable or did not answer in time; retry later.
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
    /// JetStream answered with an error (stream missing, limits); retrying as-is may not help.
    #[error("JetStream refused: {0}")]
    Rejected(String),
    /// A message on the bus does not decode as the expected envelope.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// The bus configuration cannot work (bad prefix).
    #[error("invalid bus configuration: {0}")]
    InvalidConfig(String),
}
