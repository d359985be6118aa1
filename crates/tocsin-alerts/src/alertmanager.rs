//! Alertmanager's webhook notification, version 4 (the `webhook_config` receiver's body), and
//! Grafana alerting's webhook, which sends the same shape as its version 1 (with extra
//! fields such as `orgId`, `title` and each alert's `values`, which Tocsin does not need).

use std::collections::BTreeMap;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One notification: the current state of one alert group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    pub group_key: String,
    /// `firing` while any alert of the group fires, else `resolved`.
    pub status: String,
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub external_url: String,
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// Why a body is not a notification Tocsin reads.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not an alert webhook notification: {0}")]
    Json(#[from] serde_json::Error),
    #[error("payload version {found:?}; this receiver reads version {expected}")]
    Version {
        found: String,
        expected: &'static str,
    },
    #[error("status {0:?} is neither firing nor resolved")]
    Status(String),
}

/// Who sent a notification: each speaks its own payload version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Alertmanager,
    Grafana,
}

impl Source {
    fn version(self) -> &'static str {
        match self {
            Source::Alertmanager => "4",
            Source::Grafana => "1",
        }
    }
}

impl Notification {
    /// Reads an Alertmanager webhook body.
    pub fn parse(body: &[u8]) -> Result<Notification, ParseError> {
        Self::parse_from(body, Source::Alertmanager)
    }

    /// Reads a webhook body from `source`.
    pub fn parse_from(body: &[u8], source: Source) -> Result<Notification, ParseError> {
        let n: Notification = serde_json::from_slice(body)?;
        if n.version != source.version() {
            return Err(ParseError::Version {
                found: n.version,
                expected: source.version(),
            });
        }
        if n.status != "firing" && n.status != "resolved" {
            return Err(ParseError::Status(n.status));
        }
        Ok(n)
    }

    /// The incident's title: the group's `summary` annotation, else its alert name.
    pub fn title(&self) -> String {
        let title = self
            .common_annotations
            .get("summary")
            .or_else(|| self.common_labels.get("alertname"))
            .or_else(|| self.group_labels.get("alertname"))
            .cloned()
            .unwrap_or_else(|| "Service problem".into());
        title.chars().take(200).collect()
    }

    /// What customers read: the `customer_message` annotation when the alert rule has one
    /// (monitoring text is written for engineers), else the description, else the summary.
    pub fn customer_text(&self) -> String {
        let text = ["customer_message", "description", "summary"]
            .iter()
            .find_map(|k| self.common_annotations.get(*k))
            .cloned()
            .unwrap_or_else(|| {
                "We are seeing a problem with our service and are looking into it.".into()
            });
        text.chars().take(4_000).collect()
    }

    /// When the group's earliest firing alert began.
    pub fn started_at(&self) -> Option<OffsetDateTime> {
        self.alerts
            .iter()
            .filter(|a| a.status == "firing")
            .filter_map(|a| OffsetDateTime::parse(&a.starts_at, &Rfc3339).ok())
            .min()
    }
}
