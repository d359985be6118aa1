//! `tocsinctl subscribers list|get|delete|rotate-secret`: who is told, read and kept one
//! subscriber at a time (`import` writes them in bulk).

use tocsin_proto::v1;

use crate::client::{CtlError, Server};
use crate::deliveries::{channel_arg, channel_word, time_text};
use crate::watch::enum_word;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum SubscribersCommand {
    /// List live subscribers in external-id order, optionally by channel or component.
    List {
        /// Only subscribers who chose this channel: email, sms or webhook.
        #[arg(long)]
        channel: Option<String>,
        /// Only subscribers who follow this component (or every component).
        #[arg(long)]
        component: Option<String>,
        /// At most this many subscribers in all, fetched a page at a time.
        #[arg(long, default_value_t = 1_000)]
        limit: usize,
        /// Subscribers per request (1 to 1,000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000))]
        page_size: u32,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one subscriber: contacts, preferences, and the channels that opted out.
    Get {
        /// The subscriber's external id.
        external_id: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a subscriber: their contact details are erased, and the delivery trail keeps
    /// only their internal id. Asks first unless `--yes`.
    Delete {
        /// The subscriber's external id.
        external_id: String,
        /// Delete without asking (needed when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Replace a subscriber's webhook signing secret and print the new one, once, alone on
    /// standard output. The old secret stops signing at once.
    RotateSecret {
        /// The subscriber's external id.
        external_id: String,
    },
}

pub(crate) async fn run(server: &Server, command: SubscribersCommand) -> Result<(), CtlError> {
    match command {
        SubscribersCommand::List {
            channel,
            component,
            limit,
            page_size,
            json,
        } => {
            let request = v1::ListSubscribersRequest {
                page_size: page_size
                    .min(u32::try_from(limit).unwrap_or(u32::MAX))
                    .max(1),
                page_token: String::new(),
                channel: channel
                    .as_deref()
                    .map(channel_arg)
                    .transpose()?
                    .unwrap_or_default(),
                component: component.unwrap_or_default(),
            };
            let subscribers = list(server, request, limit).await?;
            if json {
                for s in &subscribers {
                    println!("{}", subscriber_json(s));
                }
            } else if subscribers.is_empty() {
                println!("no subscribers match");
            } else {
                print!("{}", render_list(&subscribers));
                println!("{} subscribers", subscribers.len());
            }
            Ok(())
        }
        SubscribersCommand::Get { external_id, json } => {
            let subscriber = server
                .subscribers()
                .get_subscriber(v1::GetSubscriberRequest { external_id })
                .await
                .map_err(|status| server.fail(status))?
                .into_inner();
            if json {
                println!("{}", subscriber_json(&subscriber));
            } else {
                print!("{}", render_one(&subscriber));
            }
            Ok(())
        }
        SubscribersCommand::Delete { external_id, yes } => {
            let question = format!(
                "Delete subscriber {external_id}? Their contact details are erased for good."
            );
            if !crate::confirm::confirm(&question, yes, "delete the subscriber")? {
                eprintln!("not confirmed; nothing was deleted");
                return Ok(());
            }
            server
                .subscribers()
                .delete_subscriber(v1::DeleteSubscriberRequest {
                    external_id: external_id.clone(),
                })
                .await
                .map_err(|status| server.fail(status))?;
            println!("deleted subscriber {external_id}; their contact details are erased");
            Ok(())
        }
        SubscribersCommand::RotateSecret { external_id } => {
            let reply = server
                .subscribers()
                .rotate_webhook_secret(v1::RotateWebhookSecretRequest {
                    external_id: external_id.clone(),
                })
                .await
                .map_err(|status| server.fail(status))?
                .into_inner();
            // The secret alone on stdout, so `$(tocsinctl subscribers rotate-secret x)` is it.
            eprintln!(
                "new webhook signing secret for {external_id} (shown once; give it to the \
                 receiver, the old one no longer signs):"
            );
            println!("{}", reply.webhook_secret);
            Ok(())
        }
    }
}

/// Pages through `ListSubscribers` until the last page or `limit` subscribers.
async fn list(
    server: &Server,
    mut request: v1::ListSubscribersRequest,
    limit: usize,
) -> Result<Vec<v1::Subscriber>, CtlError> {
    let mut subscribers = Vec::new();
    while subscribers.len() < limit {
        let page = server
            .subscribers()
            .list_subscribers(request.clone())
            .await
            .map_err(|status| server.fail(status))?
            .into_inner();
        subscribers.extend(page.subscribers);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    subscribers.truncate(limit);
    Ok(subscribers)
}

fn severity_word(raw: i32) -> String {
    match v1::Severity::try_from(raw) {
        Ok(v1::Severity::Unspecified) | Err(_) => "minor".to_owned(),
        Ok(s) => enum_word(s.as_str_name(), "SEVERITY_"),
    }
}

fn kind_word(raw: i32) -> String {
    v1::EventKind::try_from(raw)
        .map(|k| enum_word(k.as_str_name(), "EVENT_KIND_"))
        .unwrap_or_else(|_| raw.to_string())
}

fn clock(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

fn words(raw: &[i32], word: fn(i32) -> String) -> Vec<String> {
    raw.iter().map(|c| word(*c)).collect()
}

/// Empty lists read as what they mean.
fn or(items: Vec<String>, empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(", ")
    }
}

/// A list in one table cell, without spaces so columns stay columns.
fn cell(items: Vec<String>, empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(",")
    }
}

fn render_list(subscribers: &[v1::Subscriber]) -> String {
    let rows: Vec<Vec<String>> = subscribers
        .iter()
        .map(|s| {
            let p = s.preferences.clone().unwrap_or_default();
            vec![
                s.external_id.clone(),
                cell(words(&p.channels, channel_word), "-"),
                cell(p.components.clone(), "(all)"),
                severity_word(p.min_severity),
                cell(words(&s.opted_out, channel_word), "-"),
                time_text(s.updated_at.as_ref()),
            ]
        })
        .collect();
    crate::table::render(
        &[
            "EXTERNAL_ID",
            "CHANNELS",
            "COMPONENTS",
            "MIN_SEVERITY",
            "OPTED_OUT",
            "UPDATED",
        ],
        &rows,
    )
}

/// One subscriber as an operator reads it: a line per fact, nothing left out.
fn render_one(s: &v1::Subscriber) -> String {
    let contacts = s.contacts.clone().unwrap_or_default();
    let p = s.preferences.clone().unwrap_or_default();
    let contact = |value: &str| {
        if value.is_empty() {
            "(none)".to_owned()
        } else {
            value.to_owned()
        }
    };
    let webhook = match (
        contacts.webhook_url.is_empty(),
        s.webhook_disabled_reason.is_empty(),
    ) {
        (true, _) => "(none)".to_owned(),
        (false, true) => contacts.webhook_url.clone(),
        (false, false) => format!(
            "{} (disabled: {})",
            contacts.webhook_url, s.webhook_disabled_reason
        ),
    };
    let mut out = format!("subscriber {} ({})\n", s.external_id, s.subscriber_id);
    out.push_str(&format!("  email:        {}\n", contact(&contacts.email)));
    out.push_str(&format!("  phone:        {}\n", contact(&contacts.phone)));
    out.push_str(&format!("  webhook:      {webhook}\n"));
    out.push_str(&format!(
        "  channels:     {}\n",
        or(words(&p.channels, channel_word), "(none)")
    ));
    out.push_str(&format!(
        "  components:   {}\n",
        or(p.components.clone(), "(every component)")
    ));
    out.push_str(&format!(
        "  min severity: {}\n",
        severity_word(p.min_severity)
    ));
    for kinds in &p.kinds {
        out.push_str(&format!(
            "  kinds:        {}: {}\n",
            channel_word(kinds.channel),
            or(words(&kinds.kinds, kind_word), "(none)")
        ));
    }
    let quiet = p.quiet_hours.as_ref().map_or_else(
        || "(none)".to_owned(),
        |q| {
            format!(
                "{} {}-{}",
                q.time_zone,
                clock(q.start_minute),
                clock(q.end_minute)
            )
        },
    );
    out.push_str(&format!("  quiet hours:  {quiet}\n"));
    out.push_str(&format!(
        "  opted out:    {}\n",
        or(words(&s.opted_out, channel_word), "(none)")
    ));
    out.push_str(&format!(
        "  created {}, updated {}, revision {}\n",
        time_text(s.created_at.as_ref()),
        time_text(s.updated_at.as_ref()),
        s.revision
    ));
    out
}

fn subscriber_json(s: &v1::Subscriber) -> serde_json::Value {
    let contacts = s.contacts.clone().unwrap_or_default();
    let p = s.preferences.clone().unwrap_or_default();
    serde_json::json!({
        "external_id": s.external_id,
        "subscriber_id": s.subscriber_id,
        "contacts": {
            "email": contacts.email,
            "phone": contacts.phone,
            "webhook_url": contacts.webhook_url,
        },
        "preferences": {
            "channels": words(&p.channels, channel_word),
            "components": p.components,
            "min_severity": severity_word(p.min_severity),
            "kinds": p.kinds.iter().map(|k| {
                (channel_word(k.channel), serde_json::json!(words(&k.kinds, kind_word)))
            }).collect::<serde_json::Map<_, _>>(),
            "quiet_hours": p.quiet_hours.as_ref().map(|q| serde_json::json!({
                "time_zone": q.time_zone,
                "start": clock(q.start_minute),
                "end": clock(q.end_minute),
            })),
        },
        "opted_out": words(&s.opted_out, channel_word),
        "webhook_disabled_reason": s.webhook_disabled_reason,
        "revision": s.revision,
        "created_at": time_text(s.created_at.as_ref()),
        "updated_at": time_text(s.updated_at.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> v1::Subscriber {
        v1::Subscriber {
            subscriber_id: "sub-1".into(),
            external_id: "acme".into(),
            contacts: Some(v1::Contacts {
                email: "ops@acme.example".into(),
                phone: "+14155550100".into(),
                webhook_url: String::new(),
            }),
            preferences: Some(v1::Preferences {
                channels: vec![v1::Channel::Email as i32, v1::Channel::Sms as i32],
                components: vec!["api".into()],
                min_severity: v1::Severity::Major as i32,
                kinds: vec![v1::ChannelKinds {
                    channel: v1::Channel::Sms as i32,
                    kinds: vec![v1::EventKind::Opened as i32],
                }],
                quiet_hours: Some(v1::QuietHours {
                    time_zone: "Europe/Paris".into(),
                    start_minute: 1320,
                    end_minute: 420,
                }),
            }),
            opted_out: vec![v1::Channel::Sms as i32],
            revision: 7,
            ..Default::default()
        }
    }

    #[test]
    fn one_subscriber_shows_contacts_preferences_and_opt_outs() {
        let text = render_one(&acme());
        for line in [
            "subscriber acme (sub-1)",
            "  email:        ops@acme.example",
            "  phone:        +14155550100",
            "  webhook:      (none)",
            "  channels:     email, sms",
            "  components:   api",
            "  min severity: major",
            "  kinds:        sms: opened",
            "  quiet hours:  Europe/Paris 22:00-07:00",
            "  opted out:    sms",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        let json = subscriber_json(&acme());
        assert_eq!(json["opted_out"], serde_json::json!(["sms"]));
        assert_eq!(
            json["preferences"]["kinds"]["sms"],
            serde_json::json!(["opened"])
        );
        assert_eq!(json["preferences"]["quiet_hours"]["start"], "22:00");
    }

    #[test]
    fn the_list_says_all_for_every_component_and_minor_for_no_threshold() {
        let everyone = v1::Subscriber {
            external_id: "bob".into(),
            preferences: Some(v1::Preferences {
                channels: vec![v1::Channel::Webhook as i32],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render_list(&[acme(), everyone]);
        let cells: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(cells[0], ["acme", "email,sms", "api", "major", "sms"]);
        assert_eq!(cells[1], ["bob", "webhook", "(all)", "minor", "-"]);
    }
}
