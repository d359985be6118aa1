use time::macros::datetime;
use tocsin_core::{EventId, RecordedEvent, Severity};

use super::*;

fn notification(status: &str, alerts: &[(&str, &str)]) -> Notification {
    let body = serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighErrorRate\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "tocsin",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "service": "payments", "severity": "critical"},
        "commonAnnotations": {
            "summary": "Payments API errors",
            "description": "5% of requests fail",
            "customer_message": "Some card payments fail. We are on it."
        },
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts.iter().map(|(fingerprint, status)| serde_json::json!({
            "status": status,
            "labels": {"alertname": "HighErrorRate", "instance": fingerprint},
            "annotations": {},
            "startsAt": "2026-12-07T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": fingerprint
        })).collect::<Vec<_>>()
    });
    Notification::parse(body.to_string().as_bytes()).unwrap()
}

fn mapping() -> Mapping {
    Mapping::parse(
        r#"{"rules": [
            {"match": {"team": "internal"}, "public": false},
            {"match": {"service": "payments"}, "components": ["api"], "public": true}
        ]}"#,
    )
    .unwrap()
}

fn now() -> OffsetDateTime {
    datetime!(2026-12-07 10:05 UTC)
}

fn published(decision: Decision) -> PublishRequest {
    match decision {
        Decision::Publish(request) => *request,
        Decision::Ignore(why) => panic!("ignored: {why}"),
        Decision::Hold(_) => panic!("held"),
    }
}

fn after(request: &PublishRequest, current: Option<Incident>) -> Incident {
    let validated = request.clone().validate(now()).unwrap();
    Incident::apply(
        current.clone(),
        &RecordedEvent {
            event_id: EventId::new(),
            incident_id: validated.incident_id.unwrap(),
            version: current.map_or(1, |i| i.version + 1),
            position: 1,
            publisher: "alertmanager".into(),
            idempotency_key: validated.idempotency_key.clone(),
            occurred_at: now(),
            recorded_at: now(),
            change: validated.change,
        },
    )
}

#[test]
fn a_group_opens_updates_resolves_and_reopens_one_incident() {
    let firing = notification("firing", &[("a1", "firing")]);
    let open = published(decide(&firing, &mapping(), None, now()));
    assert_eq!(open.change.kind, EventKind::Opened);
    assert_eq!(open.change.title.as_deref(), Some("Payments API errors"));
    assert_eq!(
        open.change.message,
        "Some card payments fail. We are on it."
    );
    assert_eq!(open.change.severity, Some(Severity::Critical));
    assert_eq!(open.change.components, ["api"]);
    assert_eq!(
        open.change.started_at,
        Some(datetime!(2026-12-07 10:00 UTC))
    );
    assert_eq!(open.incident_id, Some(incident_id(&firing)));
    let incident = after(&open, None);

    // The same notification again (repeat_interval): the same key, so one event.
    let again = published(decide(&firing, &mapping(), None, now()));
    assert_eq!(again.idempotency_key, open.idempotency_key);

    // Another alert joins the group: an update of the same incident.
    let grown = notification("firing", &[("a1", "firing"), ("a2", "firing")]);
    let update = published(decide(&grown, &mapping(), Some(&incident), now()));
    assert_eq!(update.change.kind, EventKind::Updated);
    assert_eq!(update.incident_id, open.incident_id);
    assert_ne!(update.idempotency_key, open.idempotency_key);
    let incident = after(&update, Some(incident));

    let resolved = notification("resolved", &[("a1", "resolved"), ("a2", "resolved")]);
    let resolve = published(decide(&resolved, &mapping(), Some(&incident), now()));
    assert_eq!(resolve.change.kind, EventKind::Resolved);
    let incident = after(&resolve, Some(incident));
    assert_eq!(
        decide(&resolved, &mapping(), Some(&incident), now()),
        Decision::Ignore("resolved, and no open incident to resolve")
    );

    let back = published(decide(&firing, &mapping(), Some(&incident), now()));
    assert_eq!(back.change.kind, EventKind::Reopened);
}

#[test]
fn only_alerts_a_public_rule_matches_reach_customers() {
    let mut internal = notification("firing", &[("a1", "firing")]);
    internal
        .common_labels
        .insert("team".into(), "internal".into());
    assert!(matches!(
        decide(&internal, &mapping(), None, now()),
        Decision::Ignore(_)
    ));
    let mut unknown = notification("firing", &[("a1", "firing")]);
    unknown.common_labels.remove("service");
    assert_eq!(
        decide(&unknown, &mapping(), None, now()),
        Decision::Ignore("no rule matches the group's labels")
    );
}

#[test]
fn payloads_and_rules_are_checked() {
    assert!(Notification::parse(b"{}").is_err());
    let v3 = br#"{"version":"3","groupKey":"k","status":"firing","receiver":"r"}"#;
    assert!(matches!(
        Notification::parse(v3),
        Err(alertmanager::ParseError::Version { .. })
    ));
    assert!(Mapping::parse(r#"{"rules": [{"match": {}, "public": true}]}"#).is_err());
    assert!(
        Mapping::parse(r#"{"rules": [{"public": true, "components": ["a"], "severity": "huge"}]}"#)
            .is_err()
    );
    assert!(Mapping::parse(r#"{"rules": [], "extra": 1}"#).is_err());
    let by_label = Mapping::parse(
        r#"{"rules": [{"match": {}, "component_label": "component", "severity": "major", "public": true}]}"#,
    )
    .unwrap();
    let mut n = notification("firing", &[("a1", "firing")]);
    let ignored = decide(&n, &by_label, None, now());
    assert!(matches!(ignored, Decision::Ignore(_)), "{ignored:?}");
    n.common_labels
        .insert("component".into(), "dashboard".into());
    let open = published(decide(&n, &by_label, None, now()));
    assert_eq!(open.change.components, ["dashboard"]);
    assert_eq!(
        open.change.severity,
        Some(Severity::Major),
        "the rule's severity wins"
    );
}

#[test]
fn the_shipped_example_rules_parse() {
    let shipped = include_str!("../../../deploy/alert-rules.json");
    let mapping = Mapping::parse(shipped).unwrap();
    assert_eq!(mapping.rules.len(), 3);
}

/// The shape Grafana alerting's webhook contact point posts (version 1), as its
/// documentation shows it, with this test's own labels.
const GRAFANA_FIRING: &str = r#"{
  "receiver": "tocsin",
  "status": "firing",
  "orgId": 1,
  "alerts": [{
    "status": "firing",
    "labels": {"alertname": "Checkout latency", "service": "payments", "severity": "warning"},
    "annotations": {"summary": "Checkout is slow", "description": "p99 above 2 s"},
    "startsAt": "2026-12-07T09:51:03.157076+02:00",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "https://grafana.example/alerting/grafana/abc/view",
    "fingerprint": "c6eadffa33fcdf37",
    "silenceURL": "https://grafana.example/alerting/silence/new",
    "dashboardURL": "",
    "panelURL": "",
    "values": {"B": 2.4, "C": 1}
  }],
  "groupLabels": {"alertname": "Checkout latency"},
  "commonLabels": {"alertname": "Checkout latency", "service": "payments", "severity": "warning"},
  "commonAnnotations": {"summary": "Checkout is slow", "description": "p99 above 2 s"},
  "externalURL": "https://grafana.example/",
  "version": "1",
  "groupKey": "{}/{alertname=\"Checkout latency\"}:{alertname=\"Checkout latency\"}",
  "truncatedAlerts": 0,
  "title": "[FIRING:1] Checkout latency (payments)",
  "state": "alerting",
  "message": "**Firing**"
}"#;

#[test]
fn grafana_s_webhook_opens_an_incident_like_alertmanager_s() {
    use alertmanager::Source;
    let n = Notification::parse_from(GRAFANA_FIRING.as_bytes(), Source::Grafana).unwrap();
    assert!(
        Notification::parse(GRAFANA_FIRING.as_bytes()).is_err(),
        "version 1 is Grafana's"
    );
    let open = published(decide(&n, &mapping(), None, now()));
    assert_eq!(open.change.kind, EventKind::Opened);
    assert_eq!(open.change.title.as_deref(), Some("Checkout is slow"));
    assert_eq!(open.change.message, "p99 above 2 s");
    assert_eq!(
        open.change.severity,
        Some(Severity::Major),
        "warning is major"
    );
    assert_eq!(
        open.change.started_at,
        Some(datetime!(2026-12-07 07:51:03.157076 UTC))
    );
}

#[test]
fn a_held_rule_drafts_the_opening_and_lets_follow_ups_through_once_published() {
    let mapping = Mapping::parse(
        r#"{"rules": [{"match": {"service": "payments"}, "components": ["api"], "public": true, "hold": true}]}"#,
    )
    .unwrap();
    let firing = notification("firing", &[("a1", "firing")]);
    let Decision::Hold(draft) = decide(&firing, &mapping, None, now()) else {
        panic!("the opening is held");
    };
    assert_eq!(draft.change.kind, EventKind::Opened);
    // Published by an operator: the group's next notifications flow as usual.
    let incident = after(&draft, None);
    let resolved = notification("resolved", &[("a1", "resolved")]);
    assert_eq!(
        published(decide(&resolved, &mapping, Some(&incident), now()))
            .change
            .kind,
        EventKind::Resolved
    );
}
