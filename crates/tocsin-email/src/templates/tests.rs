use tocsin_core::{EventKind, Notice};

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

#[test]
fn openings_and_updates_say_what_we_know_and_do() {
    let r = render(&sample_notice(EventKind::Opened));
    assert_eq!(r.subject, "[Acme] Service disruption: Payments API errors");
    assert!(
        r.text.contains("we want you to hear it from us first"),
        "{}",
        r.text
    );
    assert!(r.text.contains("What we know:"));
    assert!(r.text.contains("Our engineers are investigating the cause"));
    assert!(r.text.contains("Started: 2026-11-23 14:05 UTC"));
    assert!(
        r.text
            .contains("We will email you again as soon as anything changes")
    );
    assert!(r.text.contains("sorry"));

    let identified = Notice {
        status: tocsin_core::IncidentStatus::Identified,
        ..sample_notice(EventKind::Updated)
    };
    let r = render(&identified);
    assert_eq!(r.subject, "[Acme] Update: Payments API errors");
    assert!(
        r.text
            .contains("We have found the cause and are working on a fix.")
    );
    assert!(
        r.html
            .contains("We have found the cause and are working on a fix.")
    );
}

#[test]
fn resolution_says_fixed_how_long_sorry_and_follow_up() {
    let r = render(&sample_notice(EventKind::Resolved));
    assert_eq!(r.subject, "[Acme] Resolved: Payments API errors");
    for body in [&r.text, &r.html] {
        assert!(body.contains("is fixed"), "{body}");
        assert!(body.contains("It lasted 1 hour 12 minutes."), "{body}");
        assert!(body.contains("We are sorry"), "{body}");
        assert!(body.contains("post-incident review"), "{body}");
        assert!(body.contains("2026-11-23 15:17 UTC"), "{body}");
    }
}

#[test]
fn maintenance_says_when_and_what_calmly() {
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
    assert!(r.text.contains("You do not need to do anything."));
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
        ..sample_notice(EventKind::Updated)
    };
    let r = render(&notice);
    assert!(!r.text.contains("Live status"));
    assert!(!r.text.contains("To stop these emails"));
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
