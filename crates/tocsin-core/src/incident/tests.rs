use time::macros::datetime;

use super::*;
use crate::change::PublishRequest;

fn change(kind: EventKind) -> Change {
    Change {
        kind,
        status: None,
        severity: None,
        components: vec![],
        title: None,
        message: "We are looking into it.".into(),
        labels: BTreeMap::new(),
        window: None,
    }
}

fn opened() -> Change {
    Change {
        severity: Some(Severity::Major),
        components: vec!["api".into()],
        title: Some("API errors".into()),
        ..change(EventKind::Opened)
    }
}

fn record(incident_id: IncidentId, version: u64, change: Change) -> RecordedEvent {
    RecordedEvent {
        event_id: EventId::new(),
        incident_id,
        version,
        position: version as i64,
        publisher: "test".into(),
        idempotency_key: format!("k{version}"),
        occurred_at: datetime!(2026-11-23 10:00 UTC) + time::Duration::minutes(version as i64),
        recorded_at: datetime!(2026-11-23 10:00 UTC),
        change,
    }
}

#[test]
fn fold_follows_an_incident_from_open_to_resolve() {
    let id = IncidentId::new();
    let events = [
        record(id, 1, opened()),
        record(
            id,
            2,
            Change {
                status: Some(IncidentStatus::Identified),
                severity: Some(Severity::Critical),
                ..change(EventKind::Updated)
            },
        ),
        record(id, 3, change(EventKind::Resolved)),
    ];
    let incident = Incident::fold(&events).unwrap();
    assert_eq!(incident.version, 3);
    assert_eq!(incident.status, IncidentStatus::Resolved);
    assert_eq!(incident.severity, Severity::Critical);
    assert_eq!(incident.title, "API errors");
    assert_eq!(incident.components, vec!["api".to_owned()]);
    assert_eq!(incident.resolved_at, Some(events[2].occurred_at));
    assert_eq!(incident.opened_at, events[0].occurred_at);
}

#[test]
fn resolved_incident_accepts_only_reopen() {
    let id = IncidentId::new();
    let resolved = Incident::fold(&[
        record(id, 1, opened()),
        record(id, 2, change(EventKind::Resolved)),
    ])
    .unwrap();
    for kind in [
        EventKind::Updated,
        EventKind::Resolved,
        EventKind::MaintenanceStarted,
    ] {
        let err = Incident::check_transition(Some(&resolved), id, &change(kind), None).unwrap_err();
        assert!(
            matches!(err, DomainError::InvalidTransition(_)),
            "{kind:?}: {err}"
        );
    }
    Incident::check_transition(Some(&resolved), id, &change(EventKind::Reopened), None).unwrap();
    let reopened = Incident::apply(Some(resolved), &record(id, 3, change(EventKind::Reopened)));
    assert_eq!(reopened.status, IncidentStatus::Investigating);
    assert_eq!(reopened.resolved_at, None);
}

#[test]
fn unknown_incident_and_stale_version_are_refused() {
    let id = IncidentId::new();
    assert_eq!(
        Incident::check_transition(None, id, &change(EventKind::Updated), None),
        Err(DomainError::NotFound(id))
    );
    let open = Incident::fold(&[record(id, 1, opened())]).unwrap();
    assert_eq!(
        Incident::check_transition(Some(&open), id, &change(EventKind::Updated), Some(3)),
        Err(DomainError::VersionConflict {
            expected: 3,
            actual: 1
        })
    );
    Incident::check_transition(Some(&open), id, &change(EventKind::Updated), Some(1)).unwrap();
}

#[test]
fn maintenance_runs_scheduled_started_completed() {
    let id = IncidentId::new();
    let window = MaintenanceWindow {
        starts_at: datetime!(2026-11-24 02:00 UTC),
        ends_at: datetime!(2026-11-24 03:00 UTC),
    };
    let scheduled = Change {
        title: Some("Database upgrade".into()),
        components: vec!["db".into()],
        window: Some(window),
        ..change(EventKind::MaintenanceScheduled)
    };
    let m = Incident::fold(&[record(id, 1, scheduled)]).unwrap();
    assert_eq!(
        (m.kind, m.status),
        (IncidentKind::Maintenance, IncidentStatus::Scheduled)
    );
    assert!(Incident::check_transition(Some(&m), id, &change(EventKind::Resolved), None).is_err());
    let m = Incident::apply(
        Some(m),
        &record(id, 2, change(EventKind::MaintenanceStarted)),
    );
    assert_eq!(m.status, IncidentStatus::InProgress);
    let m = Incident::apply(
        Some(m),
        &record(id, 3, change(EventKind::MaintenanceCompleted)),
    );
    assert!(m.is_closed());
    assert!(Incident::check_transition(Some(&m), id, &change(EventKind::Updated), None).is_err());
}

fn request(change: Change) -> PublishRequest {
    PublishRequest {
        idempotency_key: "key-1".into(),
        incident_id: None,
        change,
        occurred_at: None,
        expected_version: None,
    }
}

fn invalid_field(result: Result<PublishRequest, DomainError>) -> &'static str {
    match result {
        Err(DomainError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn validation_names_the_offending_field() {
    let now = datetime!(2026-11-23 10:00 UTC);
    assert!(request(opened()).validate(now).is_ok());

    let mut r = request(opened());
    r.idempotency_key = "  ".into();
    assert_eq!(invalid_field(r.validate(now)), "idempotency_key");

    let mut r = request(opened());
    r.idempotency_key = "k".repeat(256);
    assert_eq!(invalid_field(r.validate(now)), "idempotency_key");

    assert_eq!(
        invalid_field(
            request(Change {
                title: None,
                ..opened()
            })
            .validate(now)
        ),
        "title"
    );
    assert_eq!(
        invalid_field(
            request(Change {
                severity: None,
                ..opened()
            })
            .validate(now)
        ),
        "severity"
    );
    assert_eq!(
        invalid_field(
            request(Change {
                message: "x".repeat(4001),
                ..opened()
            })
            .validate(now)
        ),
        "message"
    );
    assert_eq!(
        invalid_field(
            request(Change {
                components: vec![],
                ..opened()
            })
            .validate(now)
        ),
        "components"
    );
    assert_eq!(
        invalid_field(
            request(Change {
                status: Some(IncidentStatus::Completed),
                ..opened()
            })
            .validate(now)
        ),
        "status"
    );
    assert_eq!(
        invalid_field(request(change(EventKind::Updated)).validate(now)),
        "incident_id"
    );

    let mut r = request(opened());
    r.occurred_at = Some(now + time::Duration::hours(1));
    assert_eq!(invalid_field(r.validate(now)), "occurred_at");

    let mut labels = BTreeMap::new();
    labels.insert("bad key!".to_owned(), "v".to_owned());
    assert_eq!(
        invalid_field(request(Change { labels, ..opened() }).validate(now)),
        "labels"
    );
}

#[test]
fn validation_trims_and_deduplicates() {
    let now = datetime!(2026-11-23 10:00 UTC);
    let r = request(Change {
        components: vec![" api ".into(), "api".into(), "db".into()],
        title: Some("  API errors ".into()),
        ..opened()
    })
    .validate(now)
    .unwrap();
    assert_eq!(r.change.components, vec!["api".to_owned(), "db".to_owned()]);
    assert_eq!(r.change.title.as_deref(), Some("API errors"));
}

#[test]
fn fingerprint_is_stable_and_sensitive() {
    let a = crate::idempotency::fingerprint(&request(opened()));
    assert_eq!(a, crate::idempotency::fingerprint(&request(opened())));
    let b = crate::idempotency::fingerprint(&request(Change {
        message: "other".into(),
        ..opened()
    }));
    assert_ne!(a, b);
}
