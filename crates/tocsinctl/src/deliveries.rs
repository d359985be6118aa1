//! `tocsinctl deliveries INCIDENT`: the incident's deliveries from the ledger, filtered.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tocsin_proto::v1;

use crate::client::{CtlError, Server};
use crate::watch::enum_word;

#[derive(Debug, clap::Args)]
pub(crate) struct DeliveriesArgs {
    /// The incident id.
    incident: String,
    /// Only this channel: email, sms or webhook.
    #[arg(long)]
    channel: Option<String>,
    /// Only deliveries in this state (pending, sending, retrying, delivered, unknown, failed,
    /// dead, superseded, skipped); repeat for several.
    #[arg(long = "state")]
    states: Vec<String>,
    /// Only this subscriber, by external id.
    #[arg(long)]
    subscriber: Option<String>,
    /// Only the deliveries of this event, by incident version.
    #[arg(long)]
    version: Option<u64>,
    /// At most this many rows.
    #[arg(long, default_value_t = 1_000)]
    limit: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn channel_arg(name: &str) -> Result<i32, CtlError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "email" => v1::Channel::Email,
        "sms" => v1::Channel::Sms,
        "webhook" => v1::Channel::Webhook,
        _ => {
            return Err(CtlError::Usage(format!(
                "--channel {name:?} is not one of email, sms, webhook"
            )));
        }
    } as i32)
}

fn state_arg(name: &str) -> Result<i32, CtlError> {
    let wanted = format!("DELIVERY_STATE_{}", name.to_ascii_uppercase());
    v1::DeliveryState::from_str_name(&wanted)
        .filter(|s| *s != v1::DeliveryState::Unspecified)
        .map(|s| s as i32)
        .ok_or_else(|| {
            CtlError::Usage(format!(
                "--state {name:?} is not one of pending, sending, retrying, delivered, unknown, \
                 failed, dead, superseded, skipped"
            ))
        })
}

pub(crate) fn time_text(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|ts| OffsetDateTime::from_unix_timestamp(ts.seconds).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn state_word(raw: i32) -> String {
    v1::DeliveryState::try_from(raw)
        .map(|s| enum_word(s.as_str_name(), "DELIVERY_STATE_"))
        .unwrap_or_else(|_| raw.to_string())
}

pub(crate) fn channel_word(raw: i32) -> String {
    v1::Channel::try_from(raw)
        .map(|c| enum_word(c.as_str_name(), "CHANNEL_"))
        .unwrap_or_else(|_| raw.to_string())
}

pub(crate) async fn run(server: &Server, args: DeliveriesArgs) -> Result<(), CtlError> {
    let request = v1::ListDeliveriesRequest {
        incident_id: args.incident.clone(),
        channel: args
            .channel
            .as_deref()
            .map(channel_arg)
            .transpose()?
            .unwrap_or_default(),
        states: args
            .states
            .iter()
            .map(|s| state_arg(s))
            .collect::<Result<_, _>>()?,
        external_id: args.subscriber.clone().unwrap_or_default(),
        event_version: args.version.unwrap_or_default(),
        page_size: args.limit.clamp(1, 1_000) as u32,
        page_token: String::new(),
    };
    let deliveries = collect(server, request, args.limit).await?;

    if args.json {
        for d in &deliveries {
            let json = serde_json::json!({
                "delivery_key": d.delivery_key,
                "channel": channel_word(d.channel),
                "state": state_word(d.state),
                "event_version": d.event_version,
                "subscriber_id": d.subscriber_id,
                "external_id": d.external_id,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "provider_id": d.provider_id,
                "send_after": time_text(d.send_after.as_ref()),
                "next_attempt_at": time_text(d.next_attempt_at.as_ref()),
                "created_at": time_text(d.created_at.as_ref()),
                "updated_at": time_text(d.updated_at.as_ref()),
                "finished_at": time_text(d.finished_at.as_ref()),
            });
            println!("{json}");
        }
        return Ok(());
    }
    if deliveries.is_empty() {
        println!("no deliveries match");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            let external = if d.external_id.is_empty() {
                "(deleted)".to_owned()
            } else {
                d.external_id.clone()
            };
            vec![
                d.event_version.to_string(),
                channel_word(d.channel),
                state_word(d.state),
                external,
                d.attempts.to_string(),
                time_text(d.updated_at.as_ref()),
                d.delivery_key.clone(),
                d.last_error.clone(),
            ]
        })
        .collect();
    crate::table::print(
        &[
            "VERSION",
            "CHANNEL",
            "STATE",
            "SUBSCRIBER",
            "ATTEMPTS",
            "UPDATED",
            "KEY",
            "LAST_ERROR",
        ],
        &rows,
    );
    println!("{} deliveries", deliveries.len());
    Ok(())
}

/// Every delivery `request` lists, page after page, up to `limit`.
pub(crate) async fn collect(
    server: &Server,
    mut request: v1::ListDeliveriesRequest,
    limit: usize,
) -> Result<Vec<v1::Delivery>, CtlError> {
    let mut deliveries = Vec::new();
    loop {
        let page = server
            .incidents()
            .list_deliveries(request.clone())
            .await
            .map_err(|status| server.fail(status))?
            .into_inner();
        deliveries.extend(page.deliveries);
        if page.next_page_token.is_empty() || deliveries.len() >= limit {
            break;
        }
        request.page_token = page.next_page_token;
    }
    deliveries.truncate(limit);
    Ok(deliveries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_before_anything_is_sent() {
        assert_eq!(state_arg("Dead").unwrap(), v1::DeliveryState::Dead as i32);
        assert_eq!(state_arg("unspecified").unwrap_err().exit_code(), 2);
        assert_eq!(state_arg("sent").unwrap_err().exit_code(), 2);
        assert_eq!(channel_arg("SMS").unwrap(), v1::Channel::Sms as i32);
        assert_eq!(channel_arg("fax").unwrap_err().exit_code(), 2);
    }
}
