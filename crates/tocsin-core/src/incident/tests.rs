use time::macros::datetime;

use super::*;
use crate::change::PublishRequest;

fn change(kind: EventKind) -> Change {
    Change::new(kind, "We are looking into it.")
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

#[test]
fn a_review_follows_a_resolution_and_leaves_it_resolved() {
    let id = IncidentId::new();
    let open = Incident::fold(&[record(id, 1, opened())]).unwrap();
    let review = Change {
        link: Some("https://status.acme.test/reviews/1".into()),
        ..change(EventKind::Review)
    };
    assert!(
        matches!(
            Incident::check_transition(Some(&open), id, &review, None),
            Err(DomainError::InvalidTransition(why)) if why.contains("resolve it first")
        ),
        "an open incident has nothing to review yet"
    );
    let resolved = Incident::apply(
        Some(open),
        &record(
            id,
            2,
            Change {
                review_to_follow: true,
                ..change(EventKind::Resolved)
            },
        ),
    );
    assert!(resolved.review_to_follow);
    Incident::check_transition(Some(&resolved), id, &review, None).unwrap();
    let reviewed = Incident::apply(Some(resolved.clone()), &record(id, 3, review));
    assert_eq!(reviewed.status, IncidentStatus::Resolved);
    assert_eq!(
        reviewed.resolved_at, resolved.resolved_at,
        "the review does not move the end of the incident"
    );
    // A second review (the full one after a preliminary) and a reopen stay possible.
    Incident::check_transition(Some(&reviewed), id, &change(EventKind::Review), None).unwrap();
    Incident::check_transition(Some(&reviewed), id, &change(EventKind::Reopened), None).unwrap();
    let reopened = Incident::apply(Some(reviewed), &record(id, 4, change(EventKind::Reopened)));
    assert!(
        !reopened.review_to_follow,
        "a reopen withdraws the promised review"
    );
    // A maintenance is never reviewed through this kind.
    let m = Incident::fold(&[record(
        id,
        1,
        Change {
            title: Some("DB upgrade".into()),
            components: vec!["db".into()],
            window: Some(MaintenanceWindow {
                starts_at: datetime!(2026-11-24 02:00 UTC),
                ends_at: datetime!(2026-11-24 03:00 UTC),
            }),
            ..change(EventKind::MaintenanceScheduled)
        },
    )])
    .unwrap();
    assert!(Incident::check_transition(Some(&m), id, &change(EventKind::Review), None).is_err());
}

#[test]
fn the_start_is_what_the_publisher_said_and_the_next_update_what_the_last_event_promised() {
    let id = IncidentId::new();
    let began = datetime!(2026-11-23 09:12 UTC);
    let next = datetime!(2026-11-23 10:30 UTC);
    let opened_unsaid = Incident::fold(&[record(id, 1, opened())]).unwrap();
    assert_eq!(
        opened_unsaid.started_at, None,
        "the report time is not the start"
    );
    let events = [
        record(
            id,
            1,
            Change {
                started_at: Some(began),
                next_update_at: Some(next),
                ..opened()
            },
        ),
        record(id, 2, change(EventKind::Updated)),
    ];
    let after_open = Incident::fold(&events[..1]).unwrap();
    assert_eq!(after_open.started_at, Some(began));
    assert_eq!(after_open.next_update_at, Some(next));
    let after_update = Incident::fold(&events).unwrap();
    assert_eq!(
        after_update.started_at,
        Some(began),
        "the start stays once said"
    );
    assert_eq!(
        after_update.next_update_at, None,
        "an update without a promise withdraws the earlier one"
    );
    // A later event may correct the start.
    let corrected = Incident::apply(
        Some(after_update),
        &record(
            id,
            3,
            Change {
                started_at: Some(datetime!(2026-11-23 08:55 UTC)),
                ..change(EventKind::Resolved)
            },
        ),
    );
    assert_eq!(corrected.started_at, Some(datetime!(2026-11-23 08:55 UTC)));
}

#[test]
fn times_and_promises_are_checked_where_they_are_given() {
    let now = datetime!(2026-11-23 10:00 UTC);
    let invalid = |c: Change| {
        let mut r = request(c);
        if !r.change.kind.creates() {
            r.incident_id = Some(IncidentId::new());
        }
        invalid_field(r.validate(now))
    };
    let ok = |c: Change| {
        let mut r = request(c);
        if !r.change.kind.creates() {
            r.incident_id = Some(IncidentId::new());
        }
        r.validate(now).unwrap()
    };
    ok(Change {
        started_at: Some(now - time::Duration::minutes(14)),
        next_update_at: Some(now + time::Duration::minutes(30)),
        customer_action: Some("Retry failed payments after 10:30 UTC.".into()),
        ..opened()
    });
    assert_eq!(
        invalid(Change {
            started_at: Some(now + time::Duration::hours(1)),
            ..opened()
        }),
        "started_at"
    );
    assert_eq!(
        invalid(Change {
            next_update_at: Some(now - time::Duration::minutes(1)),
            ..opened()
        }),
        "next_update_at",
        "a promise must lie ahead"
    );
    assert_eq!(
        invalid(Change {
            next_update_at: Some(now + time::Duration::days(8)),
            ..opened()
        }),
        "next_update_at"
    );
    assert_eq!(
        invalid(Change {
            next_update_at: Some(now + time::Duration::hours(1)),
            ..change(EventKind::Resolved)
        }),
        "next_update_at",
        "nothing is promised once it is fixed"
    );
    assert_eq!(
        invalid(Change {
            review_to_follow: true,
            ..change(EventKind::Updated)
        }),
        "review_to_follow"
    );
    assert!(
        ok(Change {
            review_to_follow: true,
            ..change(EventKind::Resolved)
        })
        .change
        .review_to_follow
    );
    for bad in [
        "ftp://x.test/r",
        "https://",
        "https:///path",
        "https://a b.test",
        "/reviews/1",
    ] {
        assert_eq!(
            invalid(Change {
                link: Some(bad.into()),
                ..change(EventKind::Review)
            }),
            "link",
            "{bad}"
        );
    }
    let review = ok(Change {
        link: Some(" https://status.acme.test/reviews/1 ".into()),
        deliver_at: Some(now + time::Duration::days(3)),
        ..change(EventKind::Review)
    });
    assert_eq!(
        review.change.link.as_deref(),
        Some("https://status.acme.test/reviews/1")
    );
    assert_eq!(
        invalid(Change {
            deliver_at: Some(now + time::Duration::days(91)),
            ..change(EventKind::Review)
        }),
        "deliver_at"
    );
    assert_eq!(
        invalid(Change {
            severity: Some(Severity::Critical),
            ..change(EventKind::Review)
        }),
        "severity"
    );
    assert_eq!(
        invalid(Change {
            status: Some(IncidentStatus::Monitoring),
            ..change(EventKind::Review)
        }),
        "status"
    );
}

#[test]
fn reminders_are_tocsins_own_and_come_only_before_the_start() {
    let now = datetime!(2026-11-23 10:00 UTC);
    let mut r = request(Change::new(EventKind::MaintenanceReminder, "Soon."));
    r.incident_id = Some(IncidentId::new());
    assert_eq!(
        invalid_field(r.validate(now)),
        "kind",
        "publishers cannot send one"
    );

    let maintenance = Change {
        title: Some("DB upgrade".into()),
        components: vec!["db".into()],
        window: Some(MaintenanceWindow {
            starts_at: datetime!(2026-11-24 02:00 UTC),
            ends_at: datetime!(2026-11-24 03:00 UTC),
        }),
        reminders: Some(vec![60, 1440, 60]),
        ..change(EventKind::MaintenanceScheduled)
    };
    let validated = request(maintenance.clone()).validate(now).unwrap();
    assert_eq!(
        validated.change.reminders,
        Some(vec![1440, 60]),
        "sorted, no repeats"
    );
    for bad in [vec![0], vec![43_201], vec![1, 2, 3, 4, 5, 6]] {
        assert_eq!(
            invalid_field(
                request(Change {
                    reminders: Some(bad.clone()),
                    ..maintenance.clone()
                })
                .validate(now)
            ),
            "reminders",
            "{bad:?}"
        );
    }
    let mut on_incident = request(Change {
        reminders: Some(vec![60]),
        ..opened()
    });
    on_incident.incident_id = None;
    assert_eq!(invalid_field(on_incident.validate(now)), "reminders");

    let id = IncidentId::new();
    let m = Incident::fold(&[record(id, 1, maintenance)]).unwrap();
    assert_eq!(
        m.reminders,
        Some(vec![60, 1440, 60]),
        "the fold keeps what was recorded"
    );
    let reminder = change(EventKind::MaintenanceReminder);
    Incident::check_transition(Some(&m), id, &reminder, None).unwrap();
    let reminded = Incident::apply(Some(m.clone()), &record(id, 2, reminder.clone()));
    assert_eq!(reminded.status, IncidentStatus::Scheduled);
    assert_eq!(reminded.message, m.message, "a reminder keeps the details");
    let started = Incident::apply(
        Some(reminded),
        &record(id, 3, change(EventKind::MaintenanceStarted)),
    );
    assert!(Incident::check_transition(Some(&started), id, &reminder, None).is_err());
    let incident = Incident::fold(&[record(id, 1, opened())]).unwrap();
    assert!(Incident::check_transition(Some(&incident), id, &reminder, None).is_err());
}

fn impacts(pairs: &[(&str, Impact)]) -> BTreeMap<String, Impact> {
    pairs.iter().map(|(c, i)| ((*c).to_owned(), *i)).collect()
}

#[test]
fn impacts_follow_the_incident_and_end_with_it() {
    let id = IncidentId::new();
    let open = Change {
        components: vec!["api".into(), "dashboard".into()],
        impacts: impacts(&[
            ("api", Impact::MajorOutage),
            ("dashboard", Impact::DegradedPerformance),
        ]),
        component_names: BTreeMap::from([("api".into(), "Payments API".into())]),
        ..opened()
    };
    let better = Change {
        impacts: impacts(&[("api", Impact::PartialOutage)]),
        ..change(EventKind::Updated)
    };
    let narrowed = Change {
        components: vec!["api".into()],
        ..change(EventKind::Updated)
    };
    let i = Incident::fold(&[record(id, 1, open.clone())]).unwrap();
    assert_eq!(i.impacts["api"], Impact::MajorOutage);
    assert_eq!(i.component_names["api"], "Payments API");

    // An update with impacts replaces them all: the dashboard recovered.
    assert!(Incident::check_transition(Some(&i), id, &better, None).is_ok());
    let i = Incident::apply(Some(i), &record(id, 2, better));
    assert_eq!(i.impacts, impacts(&[("api", Impact::PartialOutage)]));
    // One without keeps them for the components still affected.
    let i = Incident::apply(Some(i), &record(id, 3, narrowed));
    assert_eq!(i.impacts, impacts(&[("api", Impact::PartialOutage)]));
    // The names stay known though later events carried none.
    assert_eq!(i.component_names["api"], "Payments API");
    let i = Incident::apply(Some(i), &record(id, 4, change(EventKind::Resolved)));
    assert!(i.impacts.is_empty());
}

#[test]
fn impacts_must_name_affected_components() {
    let now = datetime!(2026-11-23 10:00 UTC);
    // An opening may name its components through its impacts alone.
    let by_impacts = request(Change {
        components: Vec::new(),
        impacts: impacts(&[("db", Impact::MajorOutage), ("api", Impact::PartialOutage)]),
        ..opened()
    })
    .validate(now)
    .unwrap();
    assert_eq!(by_impacts.change.components, vec!["api", "db"]);

    // On the same event, impacts stay within the listed components.
    let stray = request(Change {
        impacts: impacts(&[("db", Impact::MajorOutage)]),
        ..opened()
    });
    assert_eq!(invalid_field(stray.validate(now)), "impacts");

    // A resolution ends impacts; it does not set them.
    let mut resolved = request(Change {
        impacts: impacts(&[("api", Impact::MajorOutage)]),
        ..change(EventKind::Resolved)
    });
    resolved.incident_id = Some(IncidentId::new());
    assert_eq!(invalid_field(resolved.validate(now)), "impacts");

    // An update that keeps the set may only rate the incident's own components.
    let id = IncidentId::new();
    let i = Incident::fold(&[record(id, 1, opened())]).unwrap();
    let elsewhere = Change {
        impacts: impacts(&[("db", Impact::MajorOutage)]),
        ..change(EventKind::Updated)
    };
    let err = Incident::check_transition(Some(&i), id, &elsewhere, None).unwrap_err();
    assert!(
        matches!(
            err,
            DomainError::Invalid {
                field: "impacts",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_started_maintenance_puts_its_components_under_maintenance() {
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
    let m = Incident::fold(&[
        record(id, 1, scheduled),
        record(id, 2, change(EventKind::MaintenanceStarted)),
    ])
    .unwrap();
    assert_eq!(m.impacts, impacts(&[("db", Impact::UnderMaintenance)]));
    let m = Incident::apply(
        Some(m),
        &record(id, 3, change(EventKind::MaintenanceCompleted)),
    );
    assert!(m.impacts.is_empty());
}

#[test]
fn catalogue_names_are_not_part_of_the_fingerprint() {
    let asked = request(opened());
    let named = request(Change {
        component_names: BTreeMap::from([("api".into(), "Payments API".into())]),
        ..opened()
    });
    assert_eq!(
        crate::idempotency::fingerprint(&asked),
        crate::idempotency::fingerprint(&named)
    );
}

#[test]
fn direction_overrides_are_refused_in_customer_text_and_marks_are_kept() {
    let now = datetime!(2026-11-23 10:00 UTC);
    let publish = |title: &str| {
        PublishRequest {
            idempotency_key: "k".into(),
            incident_id: None,
            change: Change {
                title: Some(title.into()),
                ..opened()
            },
            occurred_at: None,
            expected_version: None,
        }
        .validate(now)
    };
    let refused = publish("API errors \u{202E}devlos\u{202C}")
        .unwrap_err()
        .to_string();
    assert!(
        refused.starts_with("title:") && refused.contains("U+202E"),
        "{refused}"
    );
    assert!(publish("\u{2067}خطأ\u{2069}").is_err(), "isolates too");
    // Right-to-left text with its marks is fine.
    assert!(publish("خطأ في الواجهة \u{200F}API").is_ok());
}
