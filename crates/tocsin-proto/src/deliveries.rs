//! Conversions of delivery states between `tocsin.v1` and `tocsin-core`.

use tocsin_core::{DeliveryState, DomainError};

use crate::v1;

impl From<DeliveryState> for v1::DeliveryState {
    fn from(state: DeliveryState) -> Self {
        match state {
            DeliveryState::Pending => Self::Pending,
            DeliveryState::Sending => Self::Sending,
            DeliveryState::Retrying => Self::Retrying,
            DeliveryState::Delivered => Self::Delivered,
            DeliveryState::Unknown => Self::Unknown,
            DeliveryState::Failed => Self::Failed,
            DeliveryState::Dead => Self::Dead,
            DeliveryState::Superseded => Self::Superseded,
            DeliveryState::Skipped => Self::Skipped,
        }
    }
}

/// A delivery state from the wire; unspecified or unknown values are refused.
pub fn delivery_state(field: &'static str, raw: i32) -> Result<DeliveryState, DomainError> {
    let wire = v1::DeliveryState::try_from(raw)
        .map_err(|_| DomainError::invalid(field, format!("{raw} is not a known delivery state")))?;
    DeliveryState::ALL
        .into_iter()
        .find(|state| v1::DeliveryState::from(*state) == wire)
        .ok_or_else(|| DomainError::invalid(field, "a delivery state is unspecified"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_and_unspecified_is_refused() {
        for state in DeliveryState::ALL {
            let wire = v1::DeliveryState::from(state) as i32;
            assert_eq!(delivery_state("states", wire).unwrap(), state);
        }
        assert!(delivery_state("states", 0).is_err());
        assert!(delivery_state("states", 99).is_err());
    }
}
