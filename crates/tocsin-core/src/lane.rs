//! Which queue a delivery waits in.
//!
//! A fan-out to a hundred thousand subscribers puts a hundred thousand jobs in front of
//! whatever comes next. Lanes keep the next thing from waiting behind them: a small fan-out
//! (a handful of subscribers, whatever its severity) goes to the `small` lane, a big one to
//! `critical` when the incident is critical and to `bulk` otherwise. Workers serve each lane
//! with capacity of its own, so small or critical work never queues behind a big fan-out.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Severity;
use crate::error::DomainError;

/// The lanes, in the order workers favour them.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Fan-outs small enough to go out at once.
    Small,
    /// Big fan-outs of critical incidents.
    Critical,
    /// Every other big fan-out. Deliveries recorded before lanes existed are here too.
    #[default]
    Bulk,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Self::Small, Self::Critical, Self::Bulk];

    /// The lane of a fan-out: `small` when every recipient fits in the first, small page of
    /// the walk, else by the incident's severity.
    pub fn of_fanout(fits_small_page: bool, severity: Severity) -> Lane {
        match (fits_small_page, severity) {
            (true, _) => Self::Small,
            (false, Severity::Critical) => Self::Critical,
            (false, _) => Self::Bulk,
        }
    }

    /// The stable name, in the ledger, subjects, consumer names and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::Critical => "critical",
            Self::Bulk => "bulk",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lane {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|lane| lane.as_str() == s)
            .ok_or_else(|| {
                DomainError::invalid("lane", format!("{s:?} is not one of small, critical, bulk"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_fan_outs_go_first_whatever_their_severity() {
        for severity in [Severity::Minor, Severity::Major, Severity::Critical] {
            assert_eq!(Lane::of_fanout(true, severity), Lane::Small);
        }
        assert_eq!(Lane::of_fanout(false, Severity::Critical), Lane::Critical);
        assert_eq!(Lane::of_fanout(false, Severity::Major), Lane::Bulk);
        assert_eq!(Lane::of_fanout(false, Severity::Minor), Lane::Bulk);
    }

    #[test]
    fn names_round_trip() {
        for lane in Lane::ALL {
            assert_eq!(lane.as_str().parse::<Lane>().unwrap(), lane);
            let json = serde_json::to_string(&lane).unwrap();
            assert_eq!(serde_json::from_str::<Lane>(&json).unwrap(), lane);
        }
        assert!("urgent".parse::<Lane>().is_err());
    }
}
