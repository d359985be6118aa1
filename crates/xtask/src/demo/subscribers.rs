//! The demo's customers: who they are, what they asked for, and so what each event of the
//! incident must bring each channel.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use tocsin_proto::v1::{self, EventKind, subscriber_service_client::SubscriberServiceClient};
use tonic::transport::Channel;

use crate::pipeline::operator_authed;
use crate::stack::{self, Ports};

/// Subscribers per kind of preference.
const EACH: usize = 8;

/// Deliveries each kind of event must make, per channel.
pub(super) struct Expected {
    pub(super) per_kind: BTreeMap<EventKind, BTreeMap<v1::Channel, u64>>,
}

/// One kind of customer, `EACH` times over.
struct Persona {
    prefix: &'static str,
    channels: &'static [v1::Channel],
    components: &'static [&'static str],
    min_severity: v1::Severity,
    /// SMS gets only these kinds (as status pages do: the start and the end).
    sms_kinds: &'static [EventKind],
}

const PERSONAS: [Persona; 5] = [
    // Every update by email.
    Persona {
        prefix: "mail",
        channels: &[v1::Channel::Email],
        components: &[],
        min_severity: v1::Severity::Minor,
        sms_kinds: &[],
    },
    // Every update by email; a text when it starts and when it ends.
    Persona {
        prefix: "mail-and-text",
        channels: &[v1::Channel::Email, v1::Channel::Sms],
        components: &["api"],
        min_severity: v1::Severity::Major,
        sms_kinds: &[EventKind::Opened, EventKind::Resolved],
    },
    // Their own tooling, through a signed webhook.
    Persona {
        prefix: "hook",
        channels: &[v1::Channel::Webhook],
        components: &["api", "dashboard"],
        min_severity: v1::Severity::Minor,
        sms_kinds: &[],
    },
    // Follows only billing, which this incident does not touch: never told.
    Persona {
        prefix: "billing-only",
        channels: &[v1::Channel::Email, v1::Channel::Sms],
        components: &["billing"],
        min_severity: v1::Severity::Minor,
        sms_kinds: &[],
    },
    // Wants only critical incidents; this one is major: never told.
    Persona {
        prefix: "critical-only",
        channels: &[v1::Channel::Email],
        components: &[],
        min_severity: v1::Severity::Critical,
        sms_kinds: &[],
    },
];

/// Imports the personas (and one malformed row, to show per-row errors) over gRPC, registers
/// the webhook secrets the import returned with the local receiver, and returns what the
/// incident's events must deliver.
pub(super) async fn import(
    client: &mut SubscriberServiceClient<Channel>,
    http: &reqwest::Client,
    ports: Ports,
) -> anyhow::Result<Expected> {
    let mut rows = Vec::new();
    for persona in &PERSONAS {
        for n in 1..=EACH {
            rows.push(row(persona, n, ports));
        }
    }
    rows.push(v1::UpsertSubscriberRequest {
        consent: String::new(),
        external_id: "typo".into(),
        contacts: Some(v1::Contacts {
            email: "someone@@example.com".into(),
            ..Default::default()
        }),
        preferences: Some(v1::Preferences {
            channels: vec![v1::Channel::Email.into()],
            ..Default::default()
        }),
    });
    let sent = rows.len();
    let summary = client
        .import_subscribers(operator_authed(futures::stream::iter(rows)))
        .await
        .context("ImportSubscribers")?
        .into_inner();
    println!(
        "✓ ImportSubscribers: {} rows, {} created, {} rejected{}",
        summary.received,
        summary.created,
        summary.rejected,
        summary
            .errors
            .iter()
            .map(|e| format!(
                " (row {} {:?}: {}: {})",
                e.row, e.external_id, e.field, e.message
            ))
            .collect::<String>()
    );
    if summary.received != sent as u64 || summary.rejected != 1 {
        bail!("the import should take every row but the malformed one: {summary:?}");
    }

    let registered =
        stack::register_webhook_endpoints(http, ports.webhook, summary.webhook_secrets).await?;
    println!(
        "✓ {} webhook secrets (whsec_…, returned once by the import) registered with the receiver, \
         which verifies every signature",
        registered
    );
    Ok(expected())
}

fn row(persona: &Persona, n: usize, ports: Ports) -> v1::UpsertSubscriberRequest {
    let external_id = format!("{}-{n:02}", persona.prefix);
    let mut contacts = v1::Contacts::default();
    for channel in persona.channels {
        match channel {
            v1::Channel::Email => contacts.email = format!("{external_id}@customers.example"),
            v1::Channel::Sms => contacts.phone = format!("+1415555{:04}", 2600 + n),
            v1::Channel::Webhook => {
                contacts.webhook_url =
                    format!("http://127.0.0.1:{}/hooks/{external_id}", ports.webhook);
            }
            v1::Channel::Unspecified => {}
        }
    }
    let kinds = if persona.sms_kinds.is_empty() {
        Vec::new()
    } else {
        vec![v1::ChannelKinds {
            channel: v1::Channel::Sms.into(),
            kinds: persona.sms_kinds.iter().map(|&k| k.into()).collect(),
        }]
    };
    v1::UpsertSubscriberRequest {
        consent: String::new(),
        external_id,
        contacts: Some(contacts),
        preferences: Some(v1::Preferences {
            channels: persona.channels.iter().map(|&c| c.into()).collect(),
            components: persona.components.iter().map(|&c| c.into()).collect(),
            min_severity: persona.min_severity.into(),
            kinds,
            quiet_hours: None,
        }),
    }
}

/// What the demo's incident (major, on `api` and `dashboard`) and its maintenance (minor, on
/// `dashboard`) owe the personas, event by event.
fn expected() -> Expected {
    let incident = (v1::Severity::Major, &["api", "dashboard"][..]);
    let maintenance = (v1::Severity::Minor, &["dashboard"][..]);
    let mut per_kind: BTreeMap<EventKind, BTreeMap<v1::Channel, u64>> = BTreeMap::new();
    for (kind, (severity, components)) in [
        (EventKind::Opened, incident),
        (EventKind::Updated, incident),
        (EventKind::Resolved, incident),
        (EventKind::Review, incident),
        (EventKind::MaintenanceScheduled, maintenance),
        (EventKind::MaintenanceReminder, maintenance),
        (EventKind::MaintenanceStarted, maintenance),
        (EventKind::MaintenanceCompleted, maintenance),
    ] {
        let counts = per_kind.entry(kind).or_default();
        for persona in &PERSONAS {
            // Every concerned persona hears the incident from its opening, so those told
            // about it (who alone get its review) are the concerned ones.
            let concerned = persona.min_severity <= severity
                && (persona.components.is_empty()
                    || persona.components.iter().any(|c| components.contains(c)));
            if !concerned {
                continue;
            }
            for &channel in persona.channels {
                let wants = match channel {
                    v1::Channel::Sms if persona.sms_kinds.is_empty() => sms_default(kind),
                    v1::Channel::Sms => persona.sms_kinds.contains(&kind),
                    _ => true,
                };
                if wants {
                    *counts.entry(channel).or_default() += EACH as u64;
                }
            }
        }
    }
    Expected { per_kind }
}

/// Whether SMS delivers `kind` by default, as the core decides it.
fn sms_default(kind: EventKind) -> bool {
    tocsin_proto::event_kind_in("kind", kind.into())
        .is_ok_and(|kind| tocsin_core::default_kinds(tocsin_core::Channel::Sms).contains(&kind))
}
