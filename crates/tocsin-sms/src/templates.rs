//! Short SMS bodies, one template per event kind.
//!
//! The defaults are compiled in from `crates/tocsin-sms/templates/`; [`Templates::from_dir`]
//! overrides any of them with a file of the same name and keeps the default for the rest.
//! Templates see every [`Notice`] field plus `headline`, `duration_seconds` and
//! `window_seconds`, and the filters `datetime`, `time_near` (`14:05 UTC` on the same day as
//! its argument, the full date otherwise), `duration` and `list`. The output is one line:
//! runs of whitespace, newlines included, become one space. The frame is kept short (a
//! typical opening fits two segments with its message whole), and it promises only what
//! this reader will get by text (`channel_kinds`).
//!
//! [`Templates::render`] fits the text into a segment budget by shortening the publisher's
//! message first, so the facts that frame it (company, components, what we are doing, the
//! status link, the opt-out) survive; only if even an empty message does not fit is the whole
//! text cut.

use std::path::Path;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tocsin_core::notice::{human_duration, human_list, human_time, human_time_near};
use tocsin_core::{EventKind, Notice};

use crate::error::Error;
use crate::segments::{self, Fitted};

macro_rules! defaults {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

/// Every template file by name, with its compiled-in default.
pub const DEFAULTS: &[(&str, &str)] = defaults!(
    "_macros.jinja",
    "opened.txt.jinja",
    "updated.txt.jinja",
    "reopened.txt.jinja",
    "resolved.txt.jinja",
    "maintenance_scheduled.txt.jinja",
    "maintenance_started.txt.jinja",
    "maintenance_completed.txt.jinja",
    "maintenance_reminder.txt.jinja",
    "review.txt.jinja",
    "catch_up.txt.jinja",
    "channel_failed.txt.jinja",
);

/// The compiled template set.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The compiled-in templates.
    pub fn defaults() -> Templates {
        let mut env = environment();
        for (name, source) in DEFAULTS {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("default SMS template {name} is broken: {e:#}"));
        }
        Templates { env }
    }

    /// The templates in `dir`, each file falling back to its default when absent. Every kind
    /// is rendered once against a sample notice, so a broken override fails at start-up.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Templates, Error> {
        let dir = dir.as_ref();
        let mut env = environment();
        for (name, default) in DEFAULTS {
            let path = dir.join(name);
            let source = match std::fs::read_to_string(&path) {
                Ok(source) => {
                    tracing::info!(template = name, path = %path.display(), "SMS template overridden");
                    source
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (*default).to_owned(),
                Err(source) => return Err(Error::Unreadable { path, source }),
            };
            env.add_template_owned(*name, source)
                .map_err(|source| Error::Template {
                    name: (*name).to_owned(),
                    source,
                })?;
        }
        let templates = Templates { env };
        for kind in EventKind::ALL {
            for notice in Notice::examples(kind) {
                templates.render_full(&notice)?;
            }
        }
        templates.render_full(&Notice::catch_up_example())?;
        templates.render_full(&Notice::channel_failure_example())?;
        Ok(templates)
    }

    /// The whole text for `notice`, whatever its length, typography normalised to GSM-7
    /// where a plain equivalent exists.
    pub fn render_full(&self, notice: &Notice) -> Result<String, Error> {
        self.render_with_message(notice, &notice.message)
    }

    /// The text for `notice` in at most `max_segments` segments; see the module doc for how
    /// it is shortened.
    pub fn render(&self, notice: &Notice, max_segments: usize) -> Result<Fitted, Error> {
        let full = self.render_full(notice)?;
        let fitted = segments::fit(&full, max_segments);
        if !fitted.truncated {
            return Ok(fitted);
        }
        let message = segments::normalize(&notice.message);
        let ellipsis = segments::encoding(&full).ellipsis();
        let words: Vec<usize> = word_ends(&message);
        let with_words = |n: usize| -> Result<String, Error> {
            let shortened = match n {
                0 => String::new(),
                n => format!(
                    "{}{ellipsis}",
                    message[..words[n - 1]].trim_end_matches([',', ';', ':', '-'])
                ),
            };
            self.render_with_message(notice, &shortened)
        };
        // The most words of the message that still fit; the text grows with every word.
        let fits = |n: usize| -> Result<bool, Error> {
            Ok(segments::segments(&with_words(n)?) <= max_segments.max(1))
        };
        if !fits(0)? {
            tracing::warn!(
                kind = notice.kind.as_str(),
                max_segments,
                "SMS frame alone exceeds the budget; cutting the whole text"
            );
            return Ok(fitted);
        }
        let (mut lo, mut hi) = (0, words.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid)? { lo = mid } else { hi = mid - 1 }
        }
        let text = with_words(lo)?;
        let m = segments::measure(&text);
        Ok(Fitted {
            text,
            encoding: m.encoding,
            segments: m.segments,
            truncated: true,
        })
    }

    fn render_with_message(&self, notice: &Notice, message: &str) -> Result<String, Error> {
        let ctx = context! {
            message => message,
            headline => notice.headline(),
            duration_seconds => notice.duration().map(|d| d.whole_seconds()),
            window_seconds => notice.window.map(|w| (w.ends_at - w.starts_at).whole_seconds()),
            starts_in_seconds => notice.starts_in().map(|d| d.whole_seconds()),
            affected_short => notice.affected_in_short(),
            ..Value::from_serialize(notice)
        };
        let name = if notice.channel_failure.is_some() {
            "channel_failed.txt.jinja".to_owned()
        } else if notice.catch_up {
            "catch_up.txt.jinja".to_owned()
        } else {
            format!("{}.txt.jinja", notice.kind.as_str())
        };
        let text = self
            .env
            .get_template(&name)
            .and_then(|t| t.render(&ctx))
            .map_err(|source| Error::Template { name, source })?;
        Ok(segments::normalize(&text)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "))
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::defaults()
    }
}

/// Byte offsets where each word of `text` ends.
fn word_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                ends.push(i);
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    if in_word {
        ends.push(text.len());
    }
    ends
}

fn rfc3339(value: &str) -> Result<OffsetDateTime, minijinja::Error> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("expected an RFC 3339 timestamp, got {value:?}: {e}"),
        )
    })
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Strict: an override naming a missing field fails instead of texting a blank.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.add_filter("datetime", |value: &str| rfc3339(value).map(human_time));
    env.add_filter("time_near", |value: &str, reference: &str| {
        Ok(human_time_near(rfc3339(value)?, rfc3339(reference)?))
    });
    env.add_filter("duration", |seconds: i64| {
        human_duration(time::Duration::seconds(seconds))
    });
    env.add_filter("list", |items: Vec<String>| human_list(&items));
    env
}

/// The example notice of `kind` with every fact set.
#[cfg(test)]
pub(crate) fn sample_notice(kind: EventKind) -> Notice {
    let [full, _] = Notice::examples(kind);
    full
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::Encoding;

    #[test]
    fn every_kind_renders_a_compact_gsm7_text_with_the_facts() {
        let t = Templates::defaults();
        for kind in EventKind::ALL {
            let f = t.render(&sample_notice(kind), 3).unwrap();
            assert!(f.text.starts_with("[Acme] "), "{kind:?}: {}", f.text);
            assert!(f.text.contains("Payments API"), "{kind:?}: {}", f.text);
            assert!(
                f.text.contains("Some card payments fail with an error."),
                "{kind:?}: {}",
                f.text
            );
            assert!(!f.truncated && !f.text.contains("  ") && !f.text.contains('\n'));
            assert_eq!(f.encoding, Encoding::Gsm7, "{kind:?}: {}", f.text);
            assert!(
                f.segments <= 2,
                "{kind:?} costs {} segments: {}",
                f.segments,
                f.text
            );
        }
    }

    fn bare(kind: EventKind) -> Notice {
        let [_, bare] = Notice::examples(kind);
        bare
    }

    fn text(notice: &Notice) -> String {
        Templates::defaults().render(notice, 3).unwrap().text
    }

    #[test]
    fn the_opening_text_reads_plainly() {
        let opening = Notice {
            customer_action: None,
            ..sample_notice(EventKind::Opened)
        };
        assert_eq!(
            text(&opening),
            "[Acme] Partial outage: Payments API partly down and Dashboard slow since 14:05 UTC. \
             Some card payments fail with an error. We're investigating. Next update by 16:00 UTC. \
             https://status.acme.test Reply STOP to opt out."
        );
        assert_eq!(
            text(&bare(EventKind::Opened)),
            "[Acme] Partial outage: Payments API and Dashboard. Some card payments fail with \
             an error. We're investigating. Reply STOP to opt out.",
            "no start, no promise, no link: none claimed"
        );
        let r = text(&sample_notice(EventKind::Resolved));
        assert!(
            r.contains("working normally again after 1 hour 12 minutes."),
            "{r}"
        );
        assert!(r.contains("Sorry for the disruption."), "{r}");
        assert!(r.contains("We'll text you our review."), "{r}");
    }

    #[test]
    fn a_catch_up_text_reads_as_an_opening_of_something_ongoing() {
        let t = text(&Notice::catch_up_example());
        assert!(
            t.starts_with(
                "[Acme] Partial outage: Payments API partly down and Dashboard slow since 14:05 \
                 UTC, ongoing. \
                 We found a faulty configuration change"
            ),
            "{t}"
        );
        assert!(t.contains("Cause found, fix under way."), "{t}");
        assert!(
            t.ends_with("Reply STOP to opt out."),
            "the first text says how to stop: {t}"
        );
    }

    #[test]
    fn a_fallback_text_says_what_failed_and_why() {
        let t = text(&Notice::channel_failure_example());
        assert_eq!(
            t,
            "[Acme] We couldn't reach your webhook endpoint with our updates on Payments API \
             errors: the endpoint answered 410 Gone. Please fix it and update your \
             subscription. https://status.acme.test"
        );
    }

    #[test]
    fn a_typical_opening_fits_two_segments_with_its_message_whole() {
        // 121 characters: what an on-call engineer writes in a first message.
        let message = "Card payments in Europe fail at the bank step. Retries may also fail. \
                       We have paused the nightly batch job while we look.";
        assert_eq!(message.chars().count(), 121);
        let notice = Notice {
            message: message.into(),
            customer_action: None,
            ..sample_notice(EventKind::Opened)
        };
        let f = Templates::defaults().render(&notice, 2).unwrap();
        assert!(!f.truncated, "{}", f.text);
        assert!(f.text.contains(message));
        assert!(f.segments <= 2, "{} segments: {}", f.segments, f.text);
        assert!(f.text.contains("Next update by 16:00 UTC."), "{}", f.text);
    }

    #[test]
    fn promises_follow_what_the_reader_gets_by_text() {
        // The default SMS kinds: openings and resolutions, no updates.
        let sms_defaults: Vec<EventKind> = tocsin_core::default_kinds(tocsin_core::Channel::Sms)
            .into_iter()
            .collect();
        let opening = Notice {
            channel_kinds: sms_defaults.clone(),
            ..sample_notice(EventKind::Opened)
        };
        let t = text(&opening);
        assert!(!t.contains("updates"), "{t}");
        assert!(!t.contains("Next update"), "{t}");
        assert!(t.contains("We'll text when it's fixed."), "{t}");
        let with_updates = Notice {
            next_update_at: None,
            ..sample_notice(EventKind::Updated)
        };
        assert!(text(&with_updates).contains("We'll text updates."));
        let resolved = Notice {
            channel_kinds: sms_defaults,
            ..sample_notice(EventKind::Resolved)
        };
        let t = text(&resolved);
        assert!(t.contains("We'll publish a review."), "{t}");
        assert!(!t.contains("text you our review"), "{t}");
        let t = text(&bare(EventKind::Resolved));
        assert!(!t.contains("review"), "{t}");
        assert!(
            !t.contains(" after "),
            "no duration without a known start: {t}"
        );
        let t = text(&sample_notice(EventKind::MaintenanceScheduled));
        assert!(t.contains("2026-11-24 02:00 UTC to 03:30 UTC"), "{t}");
        assert!(t.contains("Please act: Retry payments"), "{t}");
        let t = text(&bare(EventKind::MaintenanceScheduled));
        assert!(!t.contains("action") && !t.contains("act:"), "{t}");
        let t = text(&sample_notice(EventKind::MaintenanceReminder));
        assert!(
            t.starts_with(
                "[Acme] Reminder: maintenance on Payments API and Dashboard 2026-11-24 02:00 UTC to 03:30 UTC."
            ),
            "{t}"
        );
        let t = text(&sample_notice(EventKind::Review));
        assert!(
            t.contains("https://status.acme.test/reviews/payments"),
            "{t}"
        );
    }

    #[test]
    fn a_long_message_is_shortened_and_the_frame_survives() {
        let notice = Notice {
            message: "Card payments in Europe fail with a timeout after the bank step. ".repeat(20),
            customer_action: None,
            ..sample_notice(EventKind::Opened)
        };
        let f = Templates::defaults().render(&notice, 2).unwrap();
        assert!(f.truncated);
        assert!(f.segments <= 2);
        assert!(
            f.text
                .contains("... We're investigating. Next update by 16:00 UTC."),
            "{}",
            f.text
        );
        assert!(
            f.text
                .ends_with("https://status.acme.test Reply STOP to opt out."),
            "{}",
            f.text
        );
        // No room wasted: one more word would not fit.
        assert!(segments::segments(&f.text) == 2);
    }

    #[test]
    fn typography_is_normalised_to_keep_gsm7() {
        let notice = Notice {
            message: "We’re on it – sorry…".into(),
            ..sample_notice(EventKind::Updated)
        };
        let f = Templates::defaults().render(&notice, 1).unwrap();
        assert_eq!(f.encoding, Encoding::Gsm7, "{}", f.text);
        assert!(f.text.contains("We're on it - sorry..."), "{}", f.text);
    }

    #[test]
    fn an_override_dir_wins_per_file() {
        let dir = std::env::temp_dir().join(format!("tocsin-sms-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("opened.txt.jinja"),
            "{{ company }}: {{ title }} is down",
        )
        .unwrap();
        let t = Templates::from_dir(&dir).unwrap();
        assert_eq!(
            t.render_full(&sample_notice(EventKind::Opened)).unwrap(),
            "Acme: Payments API errors is down"
        );
        assert!(
            t.render_full(&sample_notice(EventKind::Updated))
                .unwrap()
                .starts_with("[Acme] Update: ")
        );
        std::fs::write(dir.join("resolved.txt.jinja"), "{{ nope }}").unwrap();
        assert!(matches!(
            Templates::from_dir(&dir),
            Err(Error::Template { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
