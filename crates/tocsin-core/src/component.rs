//! The component catalogue and what an incident does to each component.
//!
//! Operators keep a catalogue of the parts of their service customers know by name ("Payments
//! API", grouped under "Platform"). Incidents name components by catalogue id and may say how
//! hard each one is hit ([`Impact`]). Messages speak the display names and the impacts in
//! words, never the ids.
//!
//! The display names an event speaks are those the catalogue held when it was published: the
//! ingest copies them into the event ([`crate::Change::component_names`]), so a message sent
//! or re-sent later says what it would have said then, and no worker reads the catalogue.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// Longest display name, group or id.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// How many components a catalogue may hold; a large status page has a few hundred.
pub const MAX_CATALOGUE: usize = 1_000;

/// One entry of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// What publishers and subscribers' preferences name it by: lowercase letters, digits,
    /// `-`, `_` and `.`, starting with a letter or digit ("payments-api").
    pub id: String,
    /// What customers read ("Payments API").
    pub name: String,
    /// Where a status page lists it ("Platform").
    pub group: Option<String>,
    /// A sentence for customers about what it is.
    pub description: Option<String>,
}

impl Component {
    /// Checks every field and trims the text ones.
    pub fn validate(mut self) -> Result<Component, DomainError> {
        check_id(&self.id)?;
        self.name = text("name", &self.name, MAX_NAME_CHARS)?
            .ok_or_else(|| DomainError::invalid("name", "is required"))?;
        self.group = text("group", self.group.as_deref().unwrap_or(""), MAX_NAME_CHARS)?;
        self.description = text(
            "description",
            self.description.as_deref().unwrap_or(""),
            MAX_DESCRIPTION_CHARS,
        )?;
        Ok(self)
    }
}

/// Whether `id` is a well-formed catalogue id.
pub fn check_id(id: &str) -> Result<(), DomainError> {
    let well_formed = !id.is_empty()
        && id.len() <= MAX_NAME_CHARS
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if well_formed {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "id",
            format!(
                "{id:?} is not a component id: use lowercase letters, digits, '-', '_' and '.', \
                 starting with a letter or digit, at most {MAX_NAME_CHARS} characters"
            ),
        ))
    }
}

fn text(field: &'static str, raw: &str, max: usize) -> Result<Option<String>, DomainError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let chars = trimmed.chars().count();
    if chars > max {
        return Err(DomainError::invalid(
            field,
            format!("is {chars} characters long; the limit is {max}"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(DomainError::invalid(field, "contains control characters"));
    }
    Ok(Some(trimmed.to_owned()))
}

/// How hard an incident hits one component, in the words status pages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// Slower than it should be, or some requests fail, but it works.
    DegradedPerformance,
    /// Down for some customers or some of its functions.
    PartialOutage,
    /// Down.
    MajorOutage,
    /// Taken down or limited on purpose, for planned work.
    UnderMaintenance,
}

impl Impact {
    pub const ALL: [Impact; 4] = [
        Impact::DegradedPerformance,
        Impact::PartialOutage,
        Impact::MajorOutage,
        Impact::UnderMaintenance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Impact::DegradedPerformance => "degraded_performance",
            Impact::PartialOutage => "partial_outage",
            Impact::MajorOutage => "major_outage",
            Impact::UnderMaintenance => "under_maintenance",
        }
    }

    /// As a message says it: "degraded performance".
    pub fn words(self) -> &'static str {
        match self {
            Impact::DegradedPerformance => "degraded performance",
            Impact::PartialOutage => "partial outage",
            Impact::MajorOutage => "major outage",
            Impact::UnderMaintenance => "under maintenance",
        }
    }

    /// As a text message says it after the component's name, where characters count:
    /// "Payments API down".
    pub fn short_words(self) -> &'static str {
        match self {
            Impact::DegradedPerformance => "slow",
            Impact::PartialOutage => "partly down",
            Impact::MajorOutage => "down",
            Impact::UnderMaintenance => "in maintenance",
        }
    }

    /// How bad it is for customers, for picking the worst: maintenance is planned and
    /// announced, so it ranks below any unplanned impact.
    fn rank(self) -> u8 {
        match self {
            Impact::UnderMaintenance => 0,
            Impact::DegradedPerformance => 1,
            Impact::PartialOutage => 2,
            Impact::MajorOutage => 3,
        }
    }

    /// The worst of `impacts`, if any.
    pub fn worst(impacts: impl IntoIterator<Item = Impact>) -> Option<Impact> {
        impacts.into_iter().max_by_key(|i| i.rank())
    }
}

impl fmt::Display for Impact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Impact {
    type Err = DomainError;

    /// Accepts `major_outage`, `major-outage` and `major outage`, in any case.
    fn from_str(s: &str) -> Result<Impact, DomainError> {
        let wanted = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        Impact::ALL
            .into_iter()
            .find(|i| i.as_str() == wanted)
            .ok_or_else(|| {
                DomainError::invalid(
                    "impact",
                    format!(
                        "{s:?} is not an impact; use degraded_performance, partial_outage, \
                         major_outage or under_maintenance"
                    ),
                )
            })
    }
}

/// One affected component as a message shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affected {
    pub id: String,
    /// The catalogue's display name when the event was published; the id when the component
    /// is not in the catalogue.
    pub name: String,
    #[serde(default)]
    pub impact: Option<Impact>,
}

/// The affected components of an incident, in the incident's order, with names and impacts.
pub fn affected(
    components: &[String],
    names: &BTreeMap<String, String>,
    impacts: &BTreeMap<String, Impact>,
) -> Vec<Affected> {
    components
        .iter()
        .map(|id| Affected {
            id: id.clone(),
            name: names.get(id).cloned().unwrap_or_else(|| id.clone()),
            impact: impacts.get(id).copied(),
        })
        .collect()
}

/// What a publish names that the catalogue does not hold, when the catalogue is in use.
///
/// An empty catalogue means the operator has not adopted one: components stay free-form
/// names, as before catalogues existed. Once it holds anything, an unknown id is refused,
/// because a typo ("API" for "api") would silently reach none of the subscribers who follow
/// the real component.
pub fn check_known<'a>(
    named: impl IntoIterator<Item = &'a String>,
    catalogue: &BTreeMap<String, Component>,
    field: &'static str,
) -> Result<(), DomainError> {
    if catalogue.is_empty() {
        return Ok(());
    }
    let unknown: Vec<&str> = named
        .into_iter()
        .filter(|id| !catalogue.contains_key(id.as_str()))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let mut known: Vec<&str> = catalogue.keys().map(String::as_str).take(20).collect();
    if catalogue.len() > known.len() {
        known.push("…");
    }
    Err(DomainError::invalid(
        field,
        format!(
            "{} not in the component catalogue (known: {}); add it with `tocsinctl components put`",
            unknown
                .iter()
                .map(|id| format!("{id:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            known.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(id: &str, name: &str) -> Component {
        Component {
            id: id.into(),
            name: name.into(),
            group: None,
            description: None,
        }
    }

    #[test]
    fn ids_are_slugs() {
        for good in ["api", "payments-api", "eu.db_2", "9gag"] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", "API", "-api", "pay ments", "api/v2", &"a".repeat(101)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_trims_and_requires_a_name() {
        let c = Component {
            group: Some("  Platform ".into()),
            description: Some("   ".into()),
            ..component("api", " Payments API ")
        }
        .validate()
        .unwrap();
        assert_eq!(c.name, "Payments API");
        assert_eq!(c.group.as_deref(), Some("Platform"));
        assert_eq!(c.description, None);
        assert!(component("api", "  ").validate().is_err());
        assert!(component("api", "bad\u{7}name").validate().is_err());
    }

    #[test]
    fn impacts_parse_in_every_spelling_and_rank_maintenance_lowest() {
        for s in ["major_outage", "major-outage", "Major Outage"] {
            assert_eq!(s.parse::<Impact>().unwrap(), Impact::MajorOutage);
        }
        assert!("down".parse::<Impact>().is_err());
        assert_eq!(
            Impact::worst([Impact::UnderMaintenance, Impact::DegradedPerformance]),
            Some(Impact::DegradedPerformance)
        );
        assert_eq!(
            Impact::worst([Impact::PartialOutage, Impact::MajorOutage]),
            Some(Impact::MajorOutage)
        );
        assert_eq!(Impact::worst([]), None);
    }

    #[test]
    fn affected_uses_catalogue_names_and_falls_back_to_ids() {
        let names = BTreeMap::from([("api".to_owned(), "Payments API".to_owned())]);
        let impacts = BTreeMap::from([("api".to_owned(), Impact::MajorOutage)]);
        let shown = affected(&["api".into(), "legacy".into()], &names, &impacts);
        assert_eq!(shown[0].name, "Payments API");
        assert_eq!(shown[0].impact, Some(Impact::MajorOutage));
        assert_eq!(shown[1].name, "legacy");
        assert_eq!(shown[1].impact, None);
    }

    #[test]
    fn an_empty_catalogue_accepts_any_name_and_a_used_one_refuses_unknown_ids() {
        let names = ["api".to_owned(), "API".to_owned()];
        assert!(check_known(&names, &BTreeMap::new(), "components").is_ok());
        let catalogue = BTreeMap::from([("api".to_owned(), component("api", "Payments API"))]);
        assert!(check_known(&names[..1], &catalogue, "components").is_ok());
        let err = check_known(&names, &catalogue, "components")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"API\" not in the component catalogue"),
            "{err}"
        );
        assert!(err.contains("known: api"), "{err}");
    }
}
