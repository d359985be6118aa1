//! Alerts from monitoring tools, turned into incident events. Pure: the ingest's HTTP
//! handler parses, asks the store for the incident's state, calls [`decide`], and publishes
//! what it returns through the same path as any publisher.
//!
//! - [`alertmanager`]: Prometheus Alertmanager's webhook payload (version 4).
//! - [`mapping`]: the operator's rules: which alerts may reach customers, as which
//!   components and severity.
//!
//! An alert group is one incident. Its id is derived from the receiver and the group key,
//! so every notification about the group finds the same incident; the idempotency key is
//! derived from the notification's content, so Alertmanager re-sending a notification
//! (`repeat_interval`, retries after a timeout) records nothing new.

pub mod alertmanager;
pub mod mapping;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tocsin_core::{Change, EventKind, Incident, IncidentId, IncidentStatus, PublishRequest};

pub use alertmanager::{Alert, Notification};
pub use mapping::{Mapping, MappingError, Rule};

/// What a notification comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Publish this.
    Publish(Box<PublishRequest>),
    /// Keep this opening as a draft until an operator publishes it (a rule with `hold`).
    Hold(Box<PublishRequest>),
    /// Nothing to publish, and why (logged and answered, never an error: Alertmanager would
    /// only retry).
    Ignore(&'static str),
}

/// The incident an alert group becomes: a UUID from the receiver and the group key.
pub fn incident_id(notification: &Notification) -> IncidentId {
    let digest = Sha256::digest(format!(
        "tocsin.alertmanager.v1|{}|{}",
        notification.receiver, notification.group_key
    ));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A version-8 (custom) UUID with the RFC 9562 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    IncidentId::from_uuid(uuid::Uuid::from_bytes(bytes))
}

/// The idempotency key of a notification: its group, status and alerts (each by fingerprint,
/// status and start), so the same notification sent twice is one event.
fn idempotency_key(notification: &Notification) -> String {
    let mut alerts: Vec<String> = notification
        .alerts
        .iter()
        .map(|a| format!("{}:{}:{}", a.fingerprint, a.status, a.starts_at))
        .collect();
    alerts.sort();
    let digest = Sha256::digest(format!(
        "{}|{}|{}|{}",
        notification.receiver,
        notification.group_key,
        notification.status,
        alerts.join(",")
    ));
    format!("alertmanager-{}", &hex::encode(digest)[..32])
}

/// What `notification` does to the incident it belongs to, in state `current` (`None`: it
/// does not exist yet).
pub fn decide(
    notification: &Notification,
    mapping: &Mapping,
    current: Option<&Incident>,
    now: OffsetDateTime,
) -> Decision {
    let firing = notification.status == "firing";
    let Some(rule) = mapping.rule_for(&notification.common_labels) else {
        return Decision::Ignore("no rule matches the group's labels");
    };
    if !rule.public {
        return Decision::Ignore("the matching rule keeps these alerts from customers");
    }
    let text = notification.customer_text();
    let incident_id = incident_id(notification);
    let open = current.is_some_and(|i| !i.is_closed());
    let change = match (firing, current, open) {
        (true, None, _) if rule.components_for(&notification.common_labels).is_empty() => {
            return Decision::Ignore("the group names no component for the rule's component_label");
        }
        (true, None, _) => Change {
            title: Some(notification.title()),
            severity: Some(rule.severity_for(&notification.common_labels)),
            components: rule.components_for(&notification.common_labels),
            started_at: notification.started_at().filter(|at| *at <= now),
            ..Change::new(EventKind::Opened, text)
        },
        (true, Some(_), true) => Change {
            severity: Some(rule.severity_for(&notification.common_labels)),
            ..Change::new(EventKind::Updated, text)
        },
        (true, Some(incident), false) if incident.status == IncidentStatus::Resolved => {
            Change::new(EventKind::Reopened, text)
        }
        (true, Some(_), false) => return Decision::Ignore("the incident is closed"),
        (false, Some(_), true) => Change::new(
            EventKind::Resolved,
            notification
                .common_annotations
                .get("resolved")
                .cloned()
                .unwrap_or_else(|| {
                    "The problem is fixed and everything works normally again.".into()
                }),
        ),
        (false, _, _) => return Decision::Ignore("resolved, and no open incident to resolve"),
    };
    let held = rule.hold && change.kind == EventKind::Opened;
    let request = Box::new(PublishRequest {
        idempotency_key: idempotency_key(notification),
        incident_id: Some(incident_id),
        change,
        occurred_at: None,
        expected_version: None,
    });
    if held {
        Decision::Hold(request)
    } else {
        Decision::Publish(request)
    }
}

#[cfg(test)]
mod tests;
