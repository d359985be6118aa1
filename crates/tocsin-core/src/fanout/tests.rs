use std::collections::{BTreeMap, BTreeSet};

use time::macros::datetime;

use super::*;
use crate::change::{Change, EventKind, IncidentStatus};
use crate::ids::IncidentId;
use crate::incident::IncidentKind;
use crate::preferences::{ComponentFilter, QuietHours};

/// 23:00 in Paris in summer: inside 22:00-07:00 quiet hours, which end at 05:00 UTC.
const NIGHT: OffsetDateTime = datetime!(2026-07-01 21:00 UTC);
const MORNING_END: OffsetDateTime = datetime!(2026-07-02 05:00 UTC);
/// 14:00 in Paris: outside those quiet hours.
const AFTERNOON: OffsetDateTime = datetime!(2026-07-01 12:00 UTC);

fn incident(severity: Severity, components: &[&str]) -> Incident {
    let id = IncidentId::new();
    Incident {
        impacts: BTreeMap::new(),
        component_names: BTreeMap::new(),
        id,
        kind: IncidentKind::Incident,
        status: IncidentStatus::Investigating,
        severity,
        title: "API errors".into(),
        components: components.iter().map(|c| (*c).to_owned()).collect(),
        message: "We are looking into it.".into(),
        labels: BTreeMap::new(),
        window: None,
        version: 1,
        last_event_id: EventId::new(),
        last_event_kind: EventKind::Opened,
        opened_at: AFTERNOON,
        updated_at: AFTERNOON,
        resolved_at: None,
        started_at: None,
        next_update_at: None,
        review_to_follow: false,
        reminders: None,
        customer_action: None,
    }
}

fn event(incident: &Incident, kind: EventKind) -> RecordedEvent {
    RecordedEvent {
        event_id: EventId::new(),
        incident_id: incident.id,
        version: incident.version,
        position: 1,
        publisher: "test".into(),
        idempotency_key: "k1".into(),
        occurred_at: AFTERNOON,
        recorded_at: AFTERNOON,
        change: Change::new(kind, "We are looking into it."),
    }
}

fn prefs(channels: &[Channel]) -> Preferences {
    Preferences {
        channels: channels.iter().copied().collect(),
        components: ComponentFilter::All,
        min_severity: Severity::Minor,
        kinds: BTreeMap::new(),
        quiet_hours: None,
    }
}

fn paris_nights() -> Option<QuietHours> {
    Some(QuietHours {
        time_zone: "Europe/Paris".into(),
        start_minute: 22 * 60,
        end_minute: 7 * 60,
    })
}

fn planned(channel: Channel, timing: Timing) -> Planned {
    Planned { channel, timing }
}

fn run(
    preferences: &Preferences,
    incident: &Incident,
    kind: EventKind,
    now: OffsetDateTime,
) -> Vec<Planned> {
    plan(preferences, incident, &event(incident, kind), false, now)
}

#[test]
fn incidents_below_the_minimum_severity_plan_nothing() {
    let mut p = prefs(&[Channel::Email]);
    p.min_severity = Severity::Major;
    let now = AFTERNOON;
    assert_eq!(
        run(
            &p,
            &incident(Severity::Minor, &["api"]),
            EventKind::Opened,
            now
        ),
        vec![]
    );
    assert_eq!(
        run(
            &p,
            &incident(Severity::Major, &["api"]),
            EventKind::Opened,
            now
        ),
        vec![planned(Channel::Email, Timing::Now)],
        "the minimum itself is delivered"
    );
    assert_eq!(
        run(
            &p,
            &incident(Severity::Critical, &["api"]),
            EventKind::Opened,
            now
        ),
        vec![planned(Channel::Email, Timing::Now)]
    );
}

#[test]
fn component_filter_decides_on_the_incident_components() {
    let mut p = prefs(&[Channel::Email]);
    p.components = ComponentFilter::Only(BTreeSet::from(["api".to_owned()]));
    assert_eq!(
        run(
            &p,
            &incident(Severity::Minor, &["billing"]),
            EventKind::Opened,
            AFTERNOON
        ),
        vec![]
    );
    assert_eq!(
        run(
            &p,
            &incident(Severity::Minor, &["billing", "api"]),
            EventKind::Opened,
            AFTERNOON
        ),
        vec![planned(Channel::Email, Timing::Now)]
    );
}

#[test]
fn sms_by_default_hears_only_opens_resolves_reopens_and_announcements() {
    let p = prefs(&[Channel::Email, Channel::Sms, Channel::Webhook]);
    let inc = incident(Severity::Minor, &["api"]);
    let all = |timing| {
        vec![
            planned(Channel::Email, timing),
            planned(Channel::Sms, timing),
            planned(Channel::Webhook, timing),
        ]
    };
    let no_sms = |timing| {
        vec![
            planned(Channel::Email, timing),
            planned(Channel::Webhook, timing),
        ]
    };
    use EventKind::*;
    for kind in [Opened, Resolved, Reopened, MaintenanceScheduled] {
        assert_eq!(run(&p, &inc, kind, AFTERNOON), all(Timing::Now), "{kind:?}");
    }
    for kind in [Updated, MaintenanceStarted, MaintenanceCompleted] {
        assert_eq!(
            run(&p, &inc, kind, AFTERNOON),
            no_sms(Timing::Now),
            "{kind:?}"
        );
    }
}

#[test]
fn an_explicit_kinds_entry_replaces_the_channel_default() {
    let mut p = prefs(&[Channel::Email, Channel::Sms]);
    p.kinds
        .insert(Channel::Sms, BTreeSet::from([EventKind::Updated]));
    p.kinds
        .insert(Channel::Email, BTreeSet::from([EventKind::Resolved]));
    let inc = incident(Severity::Minor, &["api"]);
    assert_eq!(
        run(&p, &inc, EventKind::Updated, AFTERNOON),
        vec![planned(Channel::Sms, Timing::Now)]
    );
    assert_eq!(
        run(&p, &inc, EventKind::Resolved, AFTERNOON),
        vec![planned(Channel::Email, Timing::Now)]
    );
    assert_eq!(run(&p, &inc, EventKind::Opened, AFTERNOON), vec![]);
}

#[test]
fn quiet_hours_hold_every_channel_until_they_end() {
    let mut p = prefs(&[Channel::Email, Channel::Webhook]);
    p.quiet_hours = paris_nights();
    let inc = incident(Severity::Major, &["api"]);
    let held = Timing::HeldUntil(MORNING_END);
    assert_eq!(
        run(&p, &inc, EventKind::Opened, NIGHT),
        vec![
            planned(Channel::Email, held),
            planned(Channel::Webhook, held)
        ]
    );
    assert_eq!(
        run(&p, &inc, EventKind::Opened, AFTERNOON),
        vec![
            planned(Channel::Email, Timing::Now),
            planned(Channel::Webhook, Timing::Now)
        ]
    );
}

#[test]
fn critical_incidents_bypass_quiet_hours() {
    let mut p = prefs(&[Channel::Sms]);
    p.quiet_hours = paris_nights();
    assert_eq!(
        run(
            &p,
            &incident(Severity::Critical, &["api"]),
            EventKind::Opened,
            NIGHT
        ),
        vec![planned(Channel::Sms, Timing::Now)]
    );
    assert_eq!(
        run(
            &p,
            &incident(Severity::Major, &["api"]),
            EventKind::Opened,
            NIGHT
        ),
        vec![planned(Channel::Sms, Timing::HeldUntil(MORNING_END))]
    );
}

#[test]
fn delivery_keys_are_stable_and_pinned() {
    let event = EventId::from_uuid("01890a5d-ac96-774b-bcce-b302099a8057".parse().unwrap());
    let subscriber =
        SubscriberId::from_uuid("01890a5d-ac96-774b-bcce-b302099a8058".parse().unwrap());
    let key = DeliveryKey::derive(event, subscriber, Channel::Email);
    assert_eq!(key, DeliveryKey::derive(event, subscriber, Channel::Email));
    // Pinned: a changed derivation would resend every delivery in flight during a deploy.
    assert_eq!(key.as_str(), "dlv_d976e33d107d79eaeafd3ba15fb91caa");
    assert_eq!(key.to_string(), key.as_str());
    assert_eq!(serde_json::to_string(&key).unwrap(), format!("\"{key}\""));
    assert_eq!(
        serde_json::from_str::<DeliveryKey>(&format!("\"{key}\"")).unwrap(),
        key
    );
}

#[test]
fn delivery_keys_differ_when_any_input_differs() {
    let (event, subscriber) = (EventId::new(), SubscriberId::new());
    let key = DeliveryKey::derive(event, subscriber, Channel::Email);
    assert_ne!(
        key,
        DeliveryKey::derive(EventId::new(), subscriber, Channel::Email)
    );
    assert_ne!(
        key,
        DeliveryKey::derive(event, SubscriberId::new(), Channel::Email)
    );
    assert_ne!(key, DeliveryKey::derive(event, subscriber, Channel::Sms));
    // The same uuid as event and as subscriber must not collide with itself swapped.
    let uuid = *event.as_uuid();
    let other = uuid::Uuid::now_v7();
    assert_ne!(
        DeliveryKey::derive(
            EventId::from_uuid(uuid),
            SubscriberId::from_uuid(other),
            Channel::Email
        ),
        DeliveryKey::derive(
            EventId::from_uuid(other),
            SubscriberId::from_uuid(uuid),
            Channel::Email
        )
    );
    let hex = key.as_str().strip_prefix("dlv_").unwrap();
    assert_eq!(hex.len(), 32);
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
}

#[test]
fn follow_ups_reach_everyone_told_before_even_below_their_threshold() {
    let mut p = prefs(&[Channel::Email]);
    p.min_severity = Severity::Major;
    p.components = ComponentFilter::Only(BTreeSet::from(["api".to_owned()]));
    // Downgraded to minor and moved to billing: no longer this subscriber's concern...
    let inc = incident(Severity::Minor, &["billing"]);
    let resolved = event(&inc, EventKind::Resolved);
    assert_eq!(plan(&p, &inc, &resolved, false, AFTERNOON), vec![]);
    // ...but they were told it opened, so they are told it ended.
    assert_eq!(
        plan(&p, &inc, &resolved, true, AFTERNOON),
        vec![planned(Channel::Email, Timing::Now)]
    );
    // Their channel choices still hold: no kind they opted out of is forced on them.
    p.kinds
        .insert(Channel::Email, BTreeSet::from([EventKind::Opened]));
    assert_eq!(plan(&p, &inc, &resolved, true, AFTERNOON), vec![]);
}

#[test]
fn a_scheduled_event_is_held_until_its_time_and_quiet_hours_are_judged_then() {
    let inc = incident(Severity::Major, &["api"]);
    let mut scheduled = event(&inc, EventKind::Updated);
    scheduled.change.deliver_at = Some(NIGHT);
    let p = prefs(&[Channel::Email]);
    assert_eq!(
        plan(&p, &inc, &scheduled, false, AFTERNOON),
        vec![planned(Channel::Email, Timing::HeldUntil(NIGHT))]
    );
    let mut quiet = p.clone();
    quiet.quiet_hours = paris_nights();
    assert_eq!(
        plan(&quiet, &inc, &scheduled, false, AFTERNOON),
        vec![planned(Channel::Email, Timing::HeldUntil(MORNING_END))],
        "due in the subscriber's night: held until their morning"
    );
    // A time already past sends now.
    scheduled.change.deliver_at = Some(AFTERNOON - time::Duration::hours(1));
    assert_eq!(
        plan(&p, &inc, &scheduled, false, AFTERNOON),
        vec![planned(Channel::Email, Timing::Now)]
    );
}

#[test]
fn a_review_goes_only_to_those_told_of_the_incident_and_not_by_text_unless_asked() {
    let mut inc = incident(Severity::Major, &["api"]);
    inc.status = IncidentStatus::Resolved;
    let review = event(&inc, EventKind::Review);
    let p = prefs(&[Channel::Email, Channel::Sms, Channel::Webhook]);
    assert_eq!(
        plan(&p, &inc, &review, false, AFTERNOON),
        vec![],
        "never told of it: a review would be their first word of it"
    );
    assert_eq!(
        plan(&p, &inc, &review, true, AFTERNOON),
        vec![
            planned(Channel::Email, Timing::Now),
            planned(Channel::Webhook, Timing::Now)
        ]
    );
    let mut wants_texts = p.clone();
    wants_texts.kinds.insert(
        Channel::Sms,
        BTreeSet::from([EventKind::Opened, EventKind::Review]),
    );
    assert_eq!(
        plan(&wants_texts, &inc, &review, true, AFTERNOON),
        vec![
            planned(Channel::Email, Timing::Now),
            planned(Channel::Sms, Timing::Now),
            planned(Channel::Webhook, Timing::Now)
        ]
    );
}
