//! The operator's rules for alerts: which may reach customers, as which components and
//! severity. A JSON file (`TOCSIN_ALERT_RULES`), for example:
//!
//! ```json
//! {"rules": [
//!   {"match": {"service": "payments"}, "components": ["api"], "public": true},
//!   {"match": {"team": "internal"}, "public": false},
//!   {"match": {}, "component_label": "component", "public": true, "hold": true}
//! ]}
//! ```
//!
//! `"hold": true` turns what would open an incident into a draft for an operator to publish
//! (`ListDrafts`, `PublishDraft`, `DiscardDraft`; `tocsinctl drafts`).
//!
//! The first rule whose `match` labels all equal the group's common labels wins; a group no
//! rule matches is ignored, so nothing reaches customers unless an operator said it may.
//! Severity comes from the `severity` label (Prometheus conventions: `critical` is critical,
//! `warning` or `major` is major, anything else minor), or the rule's fixed `severity`.

use std::collections::BTreeMap;

use serde::Deserialize;
use tocsin_core::Severity;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Labels the group must carry, with these values.
    #[serde(rename = "match", default)]
    pub matches: BTreeMap<String, String>,
    /// The incident's components.
    #[serde(default)]
    pub components: Vec<String>,
    /// Or a label that names the component.
    #[serde(default)]
    pub component_label: Option<String>,
    /// A fixed severity (`minor`, `major`, `critical`), overriding the `severity` label.
    #[serde(default)]
    pub severity: Option<String>,
    /// Whether these alerts may reach customers.
    pub public: bool,
    /// Hold for approval: an alert group that would open an incident becomes a draft an
    /// operator publishes (or discards), so a flapping alert never reaches customers on its
    /// own. Once published, the group's later notifications update and resolve it as usual.
    #[serde(default)]
    pub hold: bool,
}

/// Why a mapping file was refused.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("the alert rules are not valid JSON of the documented shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("rule {index}: {reason}")]
    Rule { index: usize, reason: String },
}

fn severity_word(word: &str) -> Option<Severity> {
    match word.trim().to_ascii_lowercase().as_str() {
        "critical" | "page" => Some(Severity::Critical),
        "major" | "warning" | "error" => Some(Severity::Major),
        "minor" | "info" | "notice" => Some(Severity::Minor),
        _ => None,
    }
}

impl Mapping {
    /// Reads and checks a rules file's content.
    pub fn parse(json: &str) -> Result<Mapping, MappingError> {
        let mapping: Mapping = serde_json::from_str(json)?;
        for (index, rule) in mapping.rules.iter().enumerate() {
            let fail = |reason: &str| {
                Err(MappingError::Rule {
                    index,
                    reason: reason.to_owned(),
                })
            };
            if rule.public && rule.components.is_empty() && rule.component_label.is_none() {
                return fail("a public rule needs components or a component_label");
            }
            if let Some(s) = &rule.severity
                && severity_word(s).is_none()
            {
                return fail("severity is one of minor, major, critical");
            }
        }
        Ok(mapping)
    }

    /// The first rule matching `labels`.
    pub fn rule_for(&self, labels: &BTreeMap<String, String>) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.matches.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

impl Rule {
    pub fn severity_for(&self, labels: &BTreeMap<String, String>) -> Severity {
        self.severity
            .as_deref()
            .and_then(severity_word)
            .or_else(|| labels.get("severity").and_then(|s| severity_word(s)))
            .unwrap_or(Severity::Minor)
    }

    pub fn components_for(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        let mut components = self.components.clone();
        if let Some(value) = self.component_label.as_ref().and_then(|l| labels.get(l))
            && !components.contains(value)
        {
            components.push(value.clone());
        }
        components
    }
}
