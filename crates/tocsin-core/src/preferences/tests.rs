use time::macros::datetime;

use super::*;

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn only(names: &[&str]) -> ComponentFilter {
    ComponentFilter::Only(names.iter().map(|n| (*n).to_owned()).collect())
}

fn quiet(time_zone: &str, start: (u16, u16), end: (u16, u16)) -> QuietHours {
    QuietHours {
        time_zone: time_zone.to_owned(),
        start_minute: start.0 * 60 + start.1,
        end_minute: end.0 * 60 + end.1,
    }
}

fn email_only() -> Preferences {
    Preferences {
        channels: BTreeSet::from([Channel::Email]),
        components: ComponentFilter::All,
        min_severity: Severity::Minor,
        kinds: BTreeMap::new(),
        quiet_hours: None,
    }
}

fn field_of(result: Result<(), DomainError>) -> &'static str {
    match result {
        Err(DomainError::Invalid { field, .. }) => field,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn component_filter_all_matches_anything_even_no_components() {
    assert!(ComponentFilter::All.matches(&names(&["api"])));
    assert!(ComponentFilter::All.matches(&[]));
}

#[test]
fn component_filter_only_matches_when_the_sets_intersect() {
    let filter = only(&["api", "dashboard"]);
    assert!(filter.matches(&names(&["dashboard"])));
    assert!(filter.matches(&names(&["billing", "api"])));
    assert!(!filter.matches(&names(&["billing"])));
    assert!(!filter.matches(&[]));
    // Names match exactly, as publishers' names are stored.
    assert!(!filter.matches(&names(&["API"])));
}

#[test]
fn sms_defaults_to_open_resolve_reopen_and_maintenance_announcements() {
    use EventKind::*;
    assert_eq!(
        default_kinds(Channel::Sms),
        BTreeSet::from([Opened, Resolved, Reopened, MaintenanceScheduled])
    );
    assert_eq!(
        default_kinds(Channel::Email),
        BTreeSet::from(EventKind::ALL)
    );
    assert_eq!(
        default_kinds(Channel::Webhook),
        BTreeSet::from(EventKind::ALL)
    );
}

#[test]
fn wants_uses_the_explicit_kinds_entry_else_the_channel_default() {
    let mut prefs = email_only();
    prefs.channels.insert(Channel::Sms);
    assert!(prefs.wants(Channel::Sms, EventKind::Opened));
    assert!(!prefs.wants(Channel::Sms, EventKind::Updated));
    assert!(prefs.wants(Channel::Email, EventKind::Updated));
    assert!(
        !prefs.wants(Channel::Webhook, EventKind::Opened),
        "webhook is not chosen"
    );

    prefs
        .kinds
        .insert(Channel::Sms, BTreeSet::from([EventKind::Updated]));
    assert!(prefs.wants(Channel::Sms, EventKind::Updated));
    assert!(
        !prefs.wants(Channel::Sms, EventKind::Opened),
        "the entry replaces the default"
    );
}

#[test]
fn quiet_hours_hold_inside_a_same_day_window_until_its_end() {
    // Asia/Tokyo is UTC+9 all year.
    let q = quiet("Asia/Tokyo", (9, 0), (17, 0));
    assert_eq!(
        q.held_until(datetime!(2026-06-01 00:00 UTC)),
        Some(datetime!(2026-06-01 08:00 UTC)),
        "the start minute is inside"
    );
    assert_eq!(
        q.held_until(datetime!(2026-06-01 07:59:59.5 UTC)),
        Some(datetime!(2026-06-01 08:00 UTC))
    );
    assert_eq!(
        q.held_until(datetime!(2026-06-01 08:00 UTC)),
        None,
        "the end minute is outside"
    );
    assert_eq!(q.held_until(datetime!(2026-05-31 23:59 UTC)), None);
    assert_eq!(q.held_until(datetime!(2026-06-01 12:00 UTC)), None);
}

#[test]
fn quiet_hours_wrapping_midnight_end_on_the_right_day() {
    let q = quiet("UTC", (22, 0), (7, 0));
    assert_eq!(
        q.held_until(datetime!(2026-06-01 22:00 UTC)),
        Some(datetime!(2026-06-02 07:00 UTC))
    );
    assert_eq!(
        q.held_until(datetime!(2026-06-01 23:30 UTC)),
        Some(datetime!(2026-06-02 07:00 UTC))
    );
    assert_eq!(
        q.held_until(datetime!(2026-06-02 03:00 UTC)),
        Some(datetime!(2026-06-02 07:00 UTC))
    );
    assert_eq!(q.held_until(datetime!(2026-06-02 07:00 UTC)), None);
    assert_eq!(q.held_until(datetime!(2026-06-02 12:00 UTC)), None);
    assert_eq!(q.held_until(datetime!(2026-06-02 21:59 UTC)), None);
}

#[test]
fn quiet_hours_follow_local_time_not_utc() {
    // 22:00-07:00 in Paris is 20:00-05:00 UTC in summer (UTC+2).
    let q = quiet("Europe/Paris", (22, 0), (7, 0));
    assert_eq!(
        q.held_until(datetime!(2026-07-01 20:30 UTC)),
        Some(datetime!(2026-07-02 05:00 UTC))
    );
    assert_eq!(
        q.held_until(datetime!(2026-07-02 05:30 UTC)),
        None,
        "07:30 in Paris"
    );
}

#[test]
fn quiet_hours_across_spring_forward_in_paris_end_at_local_seven() {
    // Clocks go from 02:00 CET (UTC+1) to 03:00 CEST (UTC+2) at 01:00 UTC on 2026-03-29.
    // 07:00 that morning is 05:00 UTC; a fixed offset would say 06:00.
    let q = quiet("Europe/Paris", (22, 0), (7, 0));
    assert_eq!(
        q.held_until(datetime!(2026-03-28 22:00 UTC)),
        Some(datetime!(2026-03-29 05:00 UTC))
    );
    assert_eq!(
        q.held_until(datetime!(2026-03-29 04:59 UTC)),
        Some(datetime!(2026-03-29 05:00 UTC))
    );
    assert_eq!(q.held_until(datetime!(2026-03-29 05:00 UTC)), None);
}

#[test]
fn quiet_hours_across_fall_back_in_paris_end_at_local_seven() {
    // Clocks go from 03:00 CEST back to 02:00 CET at 01:00 UTC on 2026-10-25; 07:00 CET is
    // 06:00 UTC.
    let q = quiet("Europe/Paris", (22, 0), (7, 0));
    assert_eq!(
        q.held_until(datetime!(2026-10-24 21:00 UTC)),
        Some(datetime!(2026-10-25 06:00 UTC))
    );
    assert_eq!(q.held_until(datetime!(2026-10-25 06:00 UTC)), None);
}

#[test]
fn quiet_hours_across_spring_forward_in_new_york_end_at_local_eight() {
    // EST (UTC-5) becomes EDT (UTC-4) at 07:00 UTC on 2026-03-08; 08:00 EDT is 12:00 UTC.
    let q = quiet("America/New_York", (21, 0), (8, 0));
    assert_eq!(
        q.held_until(datetime!(2026-03-08 03:00 UTC)),
        Some(datetime!(2026-03-08 12:00 UTC))
    );
}

#[test]
fn quiet_hours_ending_in_a_skipped_hour_end_at_the_jump() {
    // 02:30 does not exist in Paris on 2026-03-29: the clock jumps from 02:00 to 03:00 at
    // 01:00 UTC, and from then on it reads later than 02:30.
    let q = quiet("Europe/Paris", (22, 0), (2, 30));
    assert_eq!(
        q.held_until(datetime!(2026-03-28 22:00 UTC)),
        Some(datetime!(2026-03-29 01:00 UTC))
    );
    assert_eq!(
        q.held_until(datetime!(2026-03-29 01:15 UTC)),
        None,
        "03:15 CEST"
    );
}

#[test]
fn quiet_hours_ending_in_a_repeated_hour_end_at_the_next_reading() {
    // 02:30 happens twice in Paris on 2026-10-25: at 00:30 UTC (CEST) and 01:30 UTC (CET).
    let q = quiet("Europe/Paris", (1, 0), (2, 30));
    assert_eq!(
        q.held_until(datetime!(2026-10-25 00:15 UTC)),
        Some(datetime!(2026-10-25 00:30 UTC)),
        "02:15 CEST ends at the first 02:30"
    );
    assert_eq!(
        q.held_until(datetime!(2026-10-25 00:45 UTC)),
        None,
        "02:45 CEST"
    );
    assert_eq!(
        q.held_until(datetime!(2026-10-25 01:15 UTC)),
        Some(datetime!(2026-10-25 01:30 UTC)),
        "02:15 CET ends at the second 02:30"
    );
}

#[test]
fn invalid_quiet_hours_never_hold() {
    let now = datetime!(2026-06-01 23:00 UTC);
    assert_eq!(
        quiet("Mars/Olympus_Mons", (22, 0), (7, 0)).held_until(now),
        None
    );
    assert_eq!(quiet("UTC", (22, 0), (22, 0)).held_until(now), None);
    assert_eq!(quiet("UTC", (22, 0), (24, 0)).held_until(now), None);
}

#[test]
fn quiet_hours_validation_names_the_field() {
    assert_eq!(quiet("Europe/Paris", (22, 0), (7, 0)).validate(), Ok(()));
    assert_eq!(
        quiet("europe/paris", (22, 0), (7, 0)).validate(),
        Ok(()),
        "IANA lookup ignores case"
    );
    for bad in [
        quiet("Europe/Atlantis", (22, 0), (7, 0)),
        quiet("", (22, 0), (7, 0)),
        quiet("+02:00", (22, 0), (7, 0)),
        quiet("Etc/Unknown", (22, 0), (7, 0)),
        quiet("UTC", (7, 0), (7, 0)),
        quiet("UTC", (24, 0), (7, 0)),
        quiet("UTC", (22, 0), (24, 0)),
    ] {
        assert_eq!(field_of(bad.validate()), "quiet_hours", "{bad:?}");
    }
}

#[test]
fn preferences_validation_accepts_a_full_document_at_its_limits() {
    let prefs = Preferences {
        channels: BTreeSet::from(Channel::ALL),
        components: ComponentFilter::Only(
            (0..MAX_SUBSCRIBED_COMPONENTS)
                .map(|i| format!("{i:0>100}"))
                .collect(),
        ),
        min_severity: Severity::Major,
        kinds: BTreeMap::from([(Channel::Sms, BTreeSet::from([EventKind::Opened]))]),
        quiet_hours: Some(quiet("America/New_York", (22, 0), (7, 0))),
    };
    assert_eq!(prefs.validate(), Ok(()));
}

#[test]
fn preferences_validation_names_the_field_at_fault() {
    let check = |edit: &dyn Fn(&mut Preferences)| {
        let mut prefs = email_only();
        edit(&mut prefs);
        field_of(prefs.validate())
    };
    assert_eq!(check(&|p| p.channels.clear()), "preferences.channels");

    assert_eq!(
        check(&|p| p.components = only(&[])),
        "preferences.components"
    );
    assert_eq!(
        check(&|p| p.components = only(&[" api"])),
        "preferences.components"
    );
    assert_eq!(
        check(&|p| p.components = only(&["api "])),
        "preferences.components"
    );
    assert_eq!(
        check(&|p| p.components = only(&["  "])),
        "preferences.components"
    );
    assert_eq!(
        check(&|p| p.components = only(&["a\u{7}"])),
        "preferences.components"
    );
    let too_long = "x".repeat(101);
    assert_eq!(
        check(&|p| p.components = only(&[&too_long])),
        "preferences.components"
    );
    let too_many = ComponentFilter::Only((0..=200).map(|i| format!("c{i}")).collect());
    assert_eq!(
        check(&|p| p.components = too_many.clone()),
        "preferences.components"
    );

    assert_eq!(
        check(&|p| {
            p.kinds
                .insert(Channel::Sms, BTreeSet::from([EventKind::Opened]));
        }),
        "preferences.kinds",
        "sms is not a chosen channel"
    );
    assert_eq!(
        check(&|p| {
            p.kinds.insert(Channel::Email, BTreeSet::new());
        }),
        "preferences.kinds"
    );

    assert_eq!(
        check(&|p| p.quiet_hours = Some(quiet("Nowhere/Special", (22, 0), (7, 0)))),
        "preferences.quiet_hours"
    );
    assert_eq!(
        check(&|p| p.quiet_hours = Some(quiet("UTC", (7, 0), (7, 0)))),
        "preferences.quiet_hours"
    );
}

#[test]
fn preferences_serialise_to_stable_json_and_back() {
    let prefs = Preferences {
        channels: BTreeSet::from([Channel::Webhook, Channel::Sms]),
        components: only(&["dashboard", "api"]),
        min_severity: Severity::Major,
        kinds: BTreeMap::from([(
            Channel::Sms,
            BTreeSet::from([EventKind::Resolved, EventKind::Opened]),
        )]),
        quiet_hours: Some(quiet("Europe/Paris", (22, 0), (7, 0))),
    };
    let json = serde_json::to_string(&prefs).unwrap();
    // The stored form: sets sorted, enums in snake_case, nothing depending on insertion order.
    assert_eq!(
        json,
        r#"{"channels":["sms","webhook"],"components":{"only":["api","dashboard"]},"min_severity":"major","kinds":{"sms":["opened","resolved"]},"quiet_hours":{"time_zone":"Europe/Paris","start_minute":1320,"end_minute":420}}"#
    );
    assert_eq!(serde_json::from_str::<Preferences>(&json).unwrap(), prefs);
}

#[test]
fn preferences_read_minimal_json_with_defaults() {
    let prefs: Preferences =
        serde_json::from_str(r#"{"channels":["email"],"min_severity":"minor"}"#).unwrap();
    assert_eq!(prefs, email_only());
    assert_eq!(
        serde_json::to_string(&prefs).unwrap(),
        r#"{"channels":["email"],"components":"all","min_severity":"minor"}"#
    );
}
