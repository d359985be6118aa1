//! Email templates: a subject, a plain-text body and an HTML body per event kind.
//!
//! The defaults are compiled in from `crates/tocsin-email/templates/`. A company can override
//! any of them by putting a file with the same name in a directory ([`Templates::from_dir`]);
//! files it does not override keep the default, so an override can be a single file.
//! HTML templates (`*.html.jinja`) are auto-escaped; subjects and text bodies are not, since
//! they are not HTML. Templates see every [`Notice`] field plus `headline` (the word that says
//! how bad it is or where it stands: "Outage", "Identified", "Resolved"), `duration_seconds`
//! (how long a resolved incident lasted, absent when its start is unknown) and
//! `window_seconds` (the length of a maintenance window), and the filters `datetime`,
//! `duration` and `list`. Every sentence about the future is conditional on what the reader
//! will really receive (`channel_kinds`) and what the publisher said (`next_update_at`,
//! `review_to_follow`, `customer_action`).

use std::path::Path;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tocsin_core::account::AccountNotice;
use tocsin_core::notice::{human_duration, human_list, human_time};
use tocsin_core::{EventKind, Notice};

use crate::error::Error;

macro_rules! defaults {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

/// Every template file by name, with its compiled-in default.
pub const DEFAULTS: &[(&str, &str)] = defaults!(
    "_macros.jinja",
    "_facts.txt.jinja",
    "_facts.html.jinja",
    "_footer.txt.jinja",
    "_layout.html.jinja",
    "opened.subject.jinja",
    "opened.txt.jinja",
    "opened.html.jinja",
    "updated.subject.jinja",
    "updated.txt.jinja",
    "updated.html.jinja",
    "reopened.subject.jinja",
    "reopened.txt.jinja",
    "reopened.html.jinja",
    "resolved.subject.jinja",
    "resolved.txt.jinja",
    "resolved.html.jinja",
    "maintenance_scheduled.subject.jinja",
    "maintenance_scheduled.txt.jinja",
    "maintenance_scheduled.html.jinja",
    "maintenance_started.subject.jinja",
    "maintenance_started.txt.jinja",
    "maintenance_started.html.jinja",
    "maintenance_completed.subject.jinja",
    "maintenance_completed.txt.jinja",
    "maintenance_completed.html.jinja",
    "maintenance_reminder.subject.jinja",
    "maintenance_reminder.txt.jinja",
    "maintenance_reminder.html.jinja",
    "review.subject.jinja",
    "review.txt.jinja",
    "review.html.jinja",
    "catch_up.subject.jinja",
    "catch_up.txt.jinja",
    "catch_up.html.jinja",
    "channel_failed.subject.jinja",
    "channel_failed.txt.jinja",
    "channel_failed.html.jinja",
    "account_confirm_email.subject.jinja",
    "account_confirm_email.txt.jinja",
    "account_confirm_email.html.jinja",
    "account_already_subscribed.subject.jinja",
    "account_already_subscribed.txt.jinja",
    "account_already_subscribed.html.jinja",
);

/// One notice rendered for email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, whitespace collapsed.
    pub subject: String,
    pub text: String,
    pub html: String,
}

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
                .unwrap_or_else(|e| panic!("default email template {name} is broken: {e:#}"));
        }
        Templates { env }
    }

    /// The templates in `dir`, each file falling back to its default when absent.
    ///
    /// Every kind is rendered against a notice with every fact and one with none before this
    /// returns, so a typo in an override fails at start-up rather than on the first real
    /// incident.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Templates, Error> {
        let dir = dir.as_ref();
        let mut env = environment();
        for (name, default) in DEFAULTS {
            let path = dir.join(name);
            let source = match std::fs::read_to_string(&path) {
                Ok(source) => {
                    tracing::info!(template = name, path = %path.display(), "email template overridden");
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
        warn_unknown_files(dir);
        let templates = Templates { env };
        for kind in EventKind::ALL {
            for notice in Notice::examples(kind) {
                templates.render(&notice)?;
            }
        }
        templates.render(&Notice::catch_up_example())?;
        templates.render(&Notice::channel_failure_example())?;
        for notice in account_examples() {
            templates.render_account(&notice)?;
        }
        Ok(templates)
    }

    /// Renders the subject and both bodies for `notice`.
    pub fn render(&self, notice: &Notice) -> Result<Rendered, Error> {
        let ctx = context! {
            headline => notice.headline(),
            duration_seconds => notice.duration().map(|d| d.whole_seconds()),
            window_seconds => notice.window.map(|w| (w.ends_at - w.starts_at).whole_seconds()),
            starts_in_seconds => notice.starts_in().map(|d| d.whole_seconds()),
            impact_lines => notice.impact_lines(),
            ..Value::from_serialize(notice)
        };
        // A reader's first word of an incident under way sums up the story.
        let kind = if notice.channel_failure.is_some() {
            "channel_failed"
        } else if notice.catch_up {
            "catch_up"
        } else {
            notice.kind.as_str()
        };
        self.render_parts(kind, &ctx)
    }

    /// The subject and both bodies from `<name>.{subject,txt,html}.jinja`.
    fn render_parts(&self, name: &str, ctx: &Value) -> Result<Rendered, Error> {
        let render = |part: &str| -> Result<String, Error> {
            let name = format!("{name}.{part}.jinja");
            self.env
                .get_template(&name)
                .and_then(|t| t.render(ctx))
                .map_err(|source| Error::Template { name, source })
        };
        Ok(Rendered {
            subject: one_line(&render("subject")?),
            text: tidy(&render("txt")?),
            html: tidy(&render("html")?),
        })
    }
}

impl Templates {
    /// Renders a message about a subscription itself (`account_<kind>.*.jinja`); templates
    /// see the notice's fields. Phone codes go by text, never by email.
    pub fn render_account(&self, notice: &AccountNotice) -> Result<Rendered, Error> {
        let kind = match notice {
            AccountNotice::ConfirmEmail { .. } => "confirm_email",
            AccountNotice::AlreadySubscribed { .. } => "already_subscribed",
            AccountNotice::PhoneCode { .. } => {
                return Err(Error::Invalid(
                    "a phone code is sent by text, not email".into(),
                ));
            }
        };
        self.render_parts(&format!("account_{kind}"), &Value::from_serialize(notice))
    }
}

/// One of each account message an email can carry, with every optional field and without.
pub fn account_examples() -> Vec<AccountNotice> {
    let at = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    vec![
        AccountNotice::ConfirmEmail {
            company: "Acme".into(),
            confirm_url: "https://status.acme.test/subscribe/confirm/TOKEN".into(),
            expires_at: at,
        },
        AccountNotice::AlreadySubscribed {
            company: "Acme".into(),
            preferences_url: Some("https://status.acme.test/preferences/TOKEN".into()),
            status_page_url: Some("https://status.acme.test/".into()),
        },
        AccountNotice::AlreadySubscribed {
            company: "Acme".into(),
            preferences_url: None,
            status_page_url: None,
        },
    ]
}

impl Default for Templates {
    fn default() -> Self {
        Templates::defaults()
    }
}

/// The environment every template set shares: filters, escaping and whitespace rules.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Strict: an override that names a field that does not exist fails instead of printing
    // an empty string into a customer's inbox.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html.jinja") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.add_filter("datetime", datetime_filter);
    env.add_filter("duration", |seconds: i64| {
        human_duration(time::Duration::seconds(seconds))
    });
    env.add_filter("list", |items: Vec<String>| human_list(&items));
    env
}

/// `2026-11-23T14:05:00Z` (as a notice serialises) to `2026-11-23 14:05 UTC`.
pub(crate) fn datetime_filter(value: &str) -> Result<String, minijinja::Error> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(human_time)
        .map_err(|e| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("datetime expects an RFC 3339 timestamp, got {value:?}: {e}"),
            )
        })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Trailing spaces go, runs of blank lines become one, and the text ends with one newline:
/// template conditionals otherwise leave ragged gaps.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = true; // Also drops leading blank lines.
    for line in s.lines().map(str::trim_end) {
        if line.is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
        } else {
            out.push_str(line);
            out.push('\n');
            blank = false;
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn warn_unknown_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(path = %dir.display(), "email template directory is unreadable; using defaults");
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !DEFAULTS.iter().any(|(known, _)| *known == name) {
            tracing::warn!(file = %name, "ignoring unknown file in the email template directory");
        }
    }
}

/// The example notice of `kind` with every fact set.
#[cfg(test)]
pub(crate) fn sample_notice(kind: EventKind) -> Notice {
    let [full, _] = Notice::examples(kind);
    full
}

#[cfg(test)]
mod tests;
