//! Conversions of the component catalogue and of impacts.

use std::collections::BTreeMap;

use tocsin_core::component::Affected;
use tocsin_core::{Component, DomainError, Impact};

use crate::v1;

impl From<v1::Component> for Component {
    /// Decodes; [`Component::validate`] checks the fields afterwards.
    fn from(c: v1::Component) -> Component {
        Component {
            id: c.id,
            name: c.name,
            group: Some(c.group).filter(|g| !g.trim().is_empty()),
            description: Some(c.description).filter(|d| !d.trim().is_empty()),
        }
    }
}

impl From<&Component> for v1::Component {
    fn from(c: &Component) -> v1::Component {
        v1::Component {
            id: c.id.clone(),
            name: c.name.clone(),
            group: c.group.clone().unwrap_or_default(),
            description: c.description.clone().unwrap_or_default(),
        }
    }
}

impl From<Impact> for v1::Impact {
    fn from(i: Impact) -> v1::Impact {
        match i {
            Impact::DegradedPerformance => v1::Impact::DegradedPerformance,
            Impact::PartialOutage => v1::Impact::PartialOutage,
            Impact::MajorOutage => v1::Impact::MajorOutage,
            Impact::UnderMaintenance => v1::Impact::UnderMaintenance,
        }
    }
}

/// The impacts of a publish, by component; each must state one.
pub fn impacts(raw: Vec<v1::ComponentImpact>) -> Result<BTreeMap<String, Impact>, DomainError> {
    let mut out = BTreeMap::new();
    for entry in raw {
        let impact = match v1::Impact::try_from(entry.impact) {
            Ok(v1::Impact::DegradedPerformance) => Impact::DegradedPerformance,
            Ok(v1::Impact::PartialOutage) => Impact::PartialOutage,
            Ok(v1::Impact::MajorOutage) => Impact::MajorOutage,
            Ok(v1::Impact::UnderMaintenance) => Impact::UnderMaintenance,
            Ok(v1::Impact::Unspecified) => {
                return Err(DomainError::invalid(
                    "impacts",
                    format!("{:?} has no impact; state one", entry.component),
                ));
            }
            Err(_) => {
                return Err(DomainError::invalid(
                    "impacts",
                    format!("{} is not a known impact", entry.impact),
                ));
            }
        };
        if out.insert(entry.component.clone(), impact).is_some() {
            return Err(DomainError::invalid(
                "impacts",
                format!("{:?} is named twice", entry.component),
            ));
        }
    }
    Ok(out)
}

/// Affected components on the wire, with names and impacts (UNSPECIFIED when unstated).
pub(crate) fn affected(shown: &[Affected]) -> Vec<v1::ComponentImpact> {
    shown
        .iter()
        .map(|a| v1::ComponentImpact {
            component: a.id.clone(),
            impact: a.impact.map_or(0, |i| v1::Impact::from(i).into()),
            name: a.name.clone(),
        })
        .collect()
}
