use tocsin_core::{EventKind, IncidentStatus, Notice, Severity};

use super::*;

fn render(notice: &Notice) -> Rendered {
    Templates::defaults().render(notice).unwrap()
}

#[test]
fn every_kind_renders_its_facts_in_text_and_html() {
    for kind in EventKind::ALL {
        let notice = sample_notice(kind);
        let r = render(&notice);
        assert!(r.subject.starts_with("[Acme] "), "{kind:?}: {}", r.subject);
        assert!(
            r.subject.contains("Payments API errors"),
            "{kind:?}: {}",
            r.subject
        );
        assert!(!r.subject.contains('\n'));
        for (part, body) in [("text", &r.text), ("html", &r.html)] {
            for fact in [
                "Some card payments fail with an error.",
                "Payments API and Dashboard",
                "https://status.acme.test",
                "https://status.acme.test/unsubscribe/u1",
                "https://status.acme.test/preferences/p1",
            ] {
                // minijinja's HTML escaping also escapes `/`; browsers decode it in attributes.
                let fact = if part == "html" {
                    fact.replace('/', "&#x2f;")
                } else {
                    fact.to_owned()
                };
                assert!(
                    body.contains(&fact),
                    "{kind:?} {part} lacks {fact:?}:\n{body}"
                );
            }
            assert!(
                !body.contains("{{") && !body.contains("{%"),
                "{kind:?} {part}"
            );
            assert!(
                !body.contains("\n\n\n"),
                "{kind:?} {part} has ragged gaps:\n{body}"
            );
        }
        assert!(r.html.starts_with("<!DOCTYPE html>"), "{kind:?}");
    }
}

/// Both bodies, for assertions that must hold in each.
fn bodies(r: &Rendered) -> [(&'static str, &str); 2] {
    [("text", r.text.as_str()), ("html", r.html.as_str())]
}

fn bare(kind: EventKind) -> Notice {
    let [_, bare] = Notice::examples(kind);
    bare
}

#[test]
fn impacts_are_listed_per_component_by_name() {
    for kind in [EventKind::Opened, EventKind::Updated, EventKind::Reopened] {
        let [full, without] = Notice::examples(kind);
        let r = render(&full);
        assert!(
            r.text.contains(
                "How each part is affected:\n- Payments API: partial outage\n- Dashboard: degraded performance"
            ),
            "{kind:?}: {}",
            r.text
        );
        assert!(
            r.html.contains("<li>Payments API: partial outage</li>"),
            "{kind:?}: {}",
            r.html
        );
        // Display names, never the catalogue ids.
        for (part, body) in bodies(&r) {
            assert!(!body.contains("payments-api"), "{kind:?} {part}: {body}");
        }
        let r = render(&without);
        for (part, body) in bodies(&r) {
            assert!(!body.contains("How each part"), "{kind:?} {part}: {body}");
        }
    }
    // A stated major outage names the opening, whatever the severity.
    let [full, _] = Notice::examples(EventKind::Opened);
    let down = Notice {
        severity: Severity::Minor,
        affected: full
            .affected
            .iter()
            .cloned()
            .map(|a| tocsin_core::component::Affected {
                impact: Some(tocsin_core::Impact::MajorOutage),
                ..a
            })
            .collect(),
        ..full
    };
    assert_eq!(render(&down).subject, "[Acme] Outage: Payments API errors");
}

#[test]
fn subjects_say_how_bad_it_is_or_where_it_stands() {
    // Without stated impacts the severity says how bad it is.
    let opened = |severity| Notice {
        severity,
        ..bare(EventKind::Opened)
    };
    assert_eq!(
        render(&opened(Severity::Critical)).subject,
        "[Acme] Outage: Payments API errors"
    );
    assert_eq!(
        render(&opened(Severity::Major)).subject,
        "[Acme] Partial outage: Payments API errors"
    );
    assert_eq!(
        render(&opened(Severity::Minor)).subject,
        "[Acme] Degraded: Payments API errors"
    );
    let updated = |status| Notice {
        status,
        ..sample_notice(EventKind::Updated)
    };
    assert_eq!(
        render(&updated(IncidentStatus::Identified)).subject,
        "[Acme] Identified: Payments API errors"
    );
    assert_eq!(
        render(&updated(IncidentStatus::Monitoring)).subject,
        "[Acme] Monitoring: Payments API errors"
    );
    assert_eq!(
        render(&updated(IncidentStatus::Investigating)).subject,
        "[Acme] Update: Payments API errors"
    );
    for (kind, subject) in [
        (EventKind::Resolved, "[Acme] Resolved: Payments API errors"),
        (
            EventKind::Reopened,
            "[Acme] Problem back: Payments API errors",
        ),
        (
            EventKind::Review,
            "[Acme] Incident review: Payments API errors",
        ),
        (
            EventKind::MaintenanceStarted,
            "[Acme] Maintenance under way: Payments API errors",
        ),
        (
            EventKind::MaintenanceCompleted,
            "[Acme] Maintenance complete: Payments API errors",
        ),
    ] {
        assert_eq!(render(&sample_notice(kind)).subject, subject);
    }
}

#[test]
fn an_open_incident_says_when_it_began_what_to_do_and_when_we_write_next() {
    for kind in [EventKind::Opened, EventKind::Updated, EventKind::Reopened] {
        let r = render(&sample_notice(kind));
        assert!(
            r.text.contains("Started: 2026-11-23 14:05 UTC\n"),
            "{kind:?}:\n{}",
            r.text
        );
        assert!(
            r.text
                .contains("Next update: by 2026-11-23 16:00 UTC, sooner if anything changes."),
            "{kind:?}:\n{}",
            r.text
        );
        assert!(
            r.text
                .contains("What you need to do:\nRetry payments that failed after 14:05 UTC.\n"),
            "{kind:?}:\n{}",
            r.text
        );
        assert!(
            r.html.contains("Next update: by 2026-11-23 16:00 UTC"),
            "{kind:?}"
        );
        assert!(r.html.contains("What you need to do</h2>"), "{kind:?}");
        assert!(!r.text.contains("First reported"), "{kind:?}");
    }
    let r = render(&sample_notice(EventKind::Opened));
    assert!(r.text.contains("we want you to hear it from us first"));
    assert!(r.text.contains("Our engineers are investigating the cause"));
    let identified = Notice {
        status: IncidentStatus::Identified,
        ..sample_notice(EventKind::Updated)
    };
    for (part, body) in bodies(&render(&identified)) {
        assert!(
            body.contains("We have found the cause and are working on a fix."),
            "{part}"
        );
    }
    assert!(
        render(&sample_notice(EventKind::Updated))
            .text
            .contains("This update: 2026-11-23 15:17 UTC")
    );
    assert!(
        render(&sample_notice(EventKind::Reopened))
            .text
            .contains("Came back: 2026-11-23 15:17 UTC")
    );
}

#[test]
fn an_unknown_start_is_called_the_first_report_and_no_duration_is_claimed() {
    for kind in [
        EventKind::Opened,
        EventKind::Updated,
        EventKind::Resolved,
        EventKind::Review,
    ] {
        let r = render(&bare(kind));
        for (part, body) in bodies(&r) {
            assert!(
                body.contains("First reported: 2026-11-23 14:20 UTC"),
                "{kind:?} {part}:\n{body}"
            );
            assert!(!body.contains("Started:"), "{kind:?} {part}:\n{body}");
            assert!(!body.contains("lasted"), "{kind:?} {part}:\n{body}");
        }
    }
}

#[test]
fn nothing_is_promised_that_the_reader_will_not_get_by_email() {
    let no_updates = |kind| Notice {
        channel_kinds: vec![EventKind::Opened, EventKind::Resolved],
        ..sample_notice(kind)
    };
    // Resolutions only: the promise of a next update is kept on the status page, and the
    // reader is promised only the resolution by email.
    let r = render(&no_updates(EventKind::Opened));
    assert!(
        r.text
            .contains("Next update: on the status page by 2026-11-23 16:00 UTC."),
        "{}",
        r.text
    );
    assert!(!r.text.contains("sooner if anything changes"), "{}", r.text);
    let r = render(&Notice {
        next_update_at: None,
        ..no_updates(EventKind::Opened)
    });
    assert!(
        r.text.contains(
            "Next update: we will email you when it is fixed; the status page has the latest at any time."
        ),
        "{}",
        r.text
    );
    // Openings only, no status page, no promised time: no "Next update" line at all.
    let r = render(&Notice {
        channel_kinds: vec![EventKind::Opened],
        next_update_at: None,
        status_page_url: None,
        ..sample_notice(EventKind::Opened)
    });
    for (part, body) in bodies(&r) {
        assert!(!body.contains("Next update"), "{part}:\n{body}");
        assert!(!body.contains("will email you"), "{part}:\n{body}");
    }
    // Every update by email and no time promised: say so.
    assert!(
        render(&bare(EventKind::Updated))
            .text
            .contains("Next update: we will email you as soon as anything changes.")
    );
}

#[test]
fn a_resolution_promises_a_review_only_when_one_is_coming() {
    let r = render(&sample_notice(EventKind::Resolved));
    for (part, body) in bodies(&r) {
        assert!(body.contains("is fixed"), "{part}");
        assert!(body.contains("Started: 2026-11-23 14:05 UTC"), "{part}");
        assert!(body.contains("Resolved: 2026-11-23 15:17 UTC"), "{part}");
        assert!(body.contains("It lasted 1 hour 12 minutes."), "{part}");
        assert!(body.contains("We are sorry"), "{part}");
        assert!(
            body.contains("We will email you a review of what went wrong"),
            "{part}:\n{body}"
        );
    }
    let review_not_by_email = Notice {
        channel_kinds: vec![EventKind::Opened, EventKind::Resolved],
        ..sample_notice(EventKind::Resolved)
    };
    assert!(
        render(&review_not_by_email)
            .text
            .contains("We will publish a review of what went wrong")
    );
    let no_review = Notice {
        review_to_follow: false,
        ..sample_notice(EventKind::Resolved)
    };
    for (part, body) in bodies(&render(&no_review)) {
        assert!(!body.contains("review"), "{part}:\n{body}");
        assert!(!body.contains("follow up"), "{part}:\n{body}");
    }
}

#[test]
fn a_review_looks_back_with_its_link_and_the_incident_times() {
    let r = render(&sample_notice(EventKind::Review));
    assert!(
        r.text
            .contains("The full review: https://status.acme.test/reviews/payments"),
        "{}",
        r.text
    );
    assert!(r.html.contains("Read the full review</a>"), "{}", r.html);
    for (part, body) in bodies(&r) {
        assert!(body.contains("It is resolved."), "{part}");
        assert!(body.contains("Resolved: 2026-11-23 15:17 UTC"), "{part}");
        assert!(body.contains("It lasted 1 hour 12 minutes."), "{part}");
    }
    let r = render(&bare(EventKind::Review));
    assert!(!r.text.contains("The full review"), "{}", r.text);
}

#[test]
fn maintenance_says_when_and_asks_nothing_unless_the_publisher_does() {
    let r = render(&sample_notice(EventKind::MaintenanceScheduled));
    assert_eq!(
        r.subject,
        "[Acme] Planned maintenance on 2026-11-24 02:00 UTC: Payments API errors"
    );
    assert!(
        r.text
            .contains("When: 2026-11-24 02:00 UTC to 2026-11-24 03:30 UTC (1 hour 30 minutes)"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("What you need to do:\nRetry payments"),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("when the work starts and when it is complete")
    );
    let r = render(&bare(EventKind::MaintenanceScheduled));
    for (part, body) in bodies(&r) {
        assert!(!body.contains("need to do"), "{part}:\n{body}");
        assert!(!body.contains("We will let you know"), "{part}:\n{body}");
    }
    let only_completion = Notice {
        channel_kinds: vec![
            EventKind::MaintenanceScheduled,
            EventKind::MaintenanceCompleted,
        ],
        ..sample_notice(EventKind::MaintenanceScheduled)
    };
    assert!(
        render(&only_completion)
            .text
            .contains("We will let you know when it is complete.")
    );
    let r = render(&sample_notice(EventKind::MaintenanceStarted));
    assert!(
        r.text
            .contains("Planned to finish by: 2026-11-24 03:30 UTC")
    );
    assert!(
        r.text
            .contains("We will tell you as soon as it is complete.")
    );
    assert!(
        !render(&bare(EventKind::MaintenanceStarted))
            .text
            .contains("We will tell you")
    );
    let r = render(&sample_notice(EventKind::MaintenanceCompleted));
    assert!(r.text.contains("is complete"));
}

#[test]
fn html_is_escaped_and_text_is_not() {
    let notice = Notice {
        title: "<script>alert(1)</script> & more".into(),
        message: "Errors on <b>checkout</b>".into(),
        ..sample_notice(EventKind::Opened)
    };
    let r = render(&notice);
    assert!(!r.html.contains("<script>"), "{}", r.html);
    assert!(
        r.html
            .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; more"),
        "{}",
        r.html
    );
    assert!(
        r.html
            .contains("Errors on &lt;b&gt;checkout&lt;&#x2f;b&gt;")
    );
    // Plain text and the subject are not HTML: escaping them would show entities to readers.
    assert!(r.text.contains("Errors on <b>checkout</b>"));
    assert!(r.subject.contains("<script>alert(1)</script> & more"));
}

#[test]
fn without_urls_the_links_are_left_out() {
    let notice = Notice {
        status_page_url: None,
        unsubscribe_url: None,
        preferences_url: None,
        ..sample_notice(EventKind::Updated)
    };
    let r = render(&notice);
    assert!(!r.text.contains("Live status"));
    assert!(!r.text.contains("To stop these emails"));
    assert!(!r.text.contains("To choose what you hear about"));
    assert!(!r.html.contains("href"));
}

#[test]
fn an_override_dir_wins_per_file_and_defaults_fill_the_rest() {
    let dir = std::env::temp_dir().join(format!("tocsin-email-templates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("opened.subject.jinja"),
        "{{ company }} is down: {{ title }}",
    )
    .unwrap();
    std::fs::write(dir.join("opened.html.jinja"), "<p>{{ title }}</p>").unwrap();
    let templates = Templates::from_dir(&dir).unwrap();
    let notice = Notice {
        title: "A <b>".into(),
        ..sample_notice(EventKind::Opened)
    };
    let r = templates.render(&notice).unwrap();
    assert_eq!(r.subject, "Acme is down: A <b>");
    assert_eq!(r.html, "<p>A &lt;b&gt;</p>\n", "overrides are escaped too");
    assert!(
        r.text.contains("What we know:"),
        "the default text body stays"
    );
    let updated = templates
        .render(&sample_notice(EventKind::Updated))
        .unwrap();
    assert_eq!(updated.subject, "[Acme] Update: Payments API errors");
    let review = templates.render(&sample_notice(EventKind::Review)).unwrap();
    assert_eq!(
        review.subject,
        "[Acme] Incident review: Payments API errors"
    );

    // An override naming a field that does not exist fails at load, not at the first outage.
    std::fs::write(dir.join("updated.txt.jinja"), "{{ no_such_field }}").unwrap();
    let err = Templates::from_dir(&dir).unwrap_err();
    assert!(
        matches!(err, Error::Template { ref name, .. } if name == "updated.txt.jinja"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tidy_squeezes_blank_runs() {
    assert_eq!(tidy("\n\na  \n\n\n\nb\n\n"), "a\n\nb\n");
}

#[test]
fn a_reminder_says_how_soon_and_when() {
    let r = render(&sample_notice(EventKind::MaintenanceReminder));
    assert_eq!(
        r.subject,
        "[Acme] Reminder: planned maintenance in 10 hours 43 minutes: Payments API errors"
    );
    for (part, body) in bodies(&r) {
        assert!(
            body.contains("starts in 10 hours 43 minutes"),
            "{part}:\n{body}"
        );
        assert!(
            body.contains("2026-11-24 02:00 UTC to 2026-11-24 03:30 UTC (1 hour 30 minutes)"),
            "{part}:\n{body}"
        );
        assert!(body.contains("when it is complete"), "{part}:\n{body}");
    }
    let r = render(&bare(EventKind::MaintenanceReminder));
    assert!(!r.text.contains("when it is complete"), "{}", r.text);
}

#[test]
fn a_catch_up_tells_the_story_so_far_as_an_opening_would() {
    let r = render(&Notice::catch_up_example());
    assert_eq!(r.subject, "[Acme] Partial outage: Payments API errors");
    for (part, body) in bodies(&r) {
        assert!(
            body.contains("It began before you started following it"),
            "{part}:\n{body}"
        );
        assert!(body.contains("2026-11-23 14:20 UTC"), "{part}:\n{body}");
        assert!(
            body.contains("Some card payments fail with an error."),
            "the earlier message is told: {part}:\n{body}"
        );
        assert!(
            body.contains("We found a faulty configuration change"),
            "{part}:\n{body}"
        );
        assert!(
            body.contains("We have found the cause and are working on a fix."),
            "{part}:\n{body}"
        );
    }
    assert!(
        r.text
            .contains("What happened so far:\n- 2026-11-23 14:20 UTC: Some card payments")
    );
    assert!(r.text.contains("Started: 2026-11-23 14:05 UTC"));
}

#[test]
fn a_fallback_notice_says_which_address_failed_why_and_how_to_fix_it() {
    let r = render(&Notice::channel_failure_example());
    assert_eq!(r.subject, "[Acme] We could not reach your webhook endpoint");
    assert!(
        r.text.contains(
            "We could not deliver our messages about \"Payments API errors\" to your webhook \
             endpoint (https://hooks.example.test/acme), so we have stopped sending to it."
        ),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("What went wrong:\nthe endpoint answered 410 Gone\n"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("change its URL in your subscription"),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("The latest on \"Payments API errors\":\nSome card payments"),
        "{}",
        r.text
    );
    assert!(
        r.html.contains("the endpoint answered 410 Gone"),
        "{}",
        r.html
    );
    let sms_failed = Notice {
        channel_failure: Some(tocsin_core::notice::ChannelFailure {
            channel: tocsin_core::Channel::Sms,
            address: Some("+14155550100".into()),
            reason: "failed through every retry: 30003 unreachable".into(),
        }),
        ..Notice::channel_failure_example()
    };
    let r = render(&sms_failed);
    assert_eq!(r.subject, "[Acme] We could not reach your phone number");
    assert!(
        r.text.contains("to your phone number (+14155550100)."),
        "{}",
        r.text
    );
    assert!(!r.text.contains("stopped sending"), "{}", r.text);
    assert!(
        r.text
            .contains("Please check that your phone number is right"),
        "{}",
        r.text
    );
}
