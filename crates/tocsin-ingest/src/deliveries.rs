//! The ledger as `IncidentService` reports it: progress per channel and delivery listings,
//! with their page tokens.

use tocsin_core::{Channel, DeliveryState, IncidentId};
use tocsin_proto::v1;
use tocsin_store::{ChannelProgress, DeliveryCursor, DeliveryFilter, DeliveryView, Store};
use tonic::Status;

use crate::status::{domain_status, status};

pub(crate) fn progress_to_wire(progress: &ChannelProgress) -> v1::ChannelProgress {
    let count = |state| progress.count(state);
    v1::ChannelProgress {
        channel: v1::Channel::from(progress.channel) as i32,
        pending: count(DeliveryState::Pending),
        sending: count(DeliveryState::Sending),
        retrying: count(DeliveryState::Retrying),
        delivered: count(DeliveryState::Delivered),
        unknown: count(DeliveryState::Unknown),
        failed: count(DeliveryState::Failed),
        dead: count(DeliveryState::Dead),
        superseded: count(DeliveryState::Superseded),
        skipped: count(DeliveryState::Skipped),
        held: progress.held,
    }
}

fn delivery_to_wire(d: &DeliveryView) -> v1::Delivery {
    use tocsin_proto::timestamp;
    v1::Delivery {
        delivery_key: d.delivery_key.clone(),
        channel: v1::Channel::from(d.channel) as i32,
        state: v1::DeliveryState::from(d.state) as i32,
        event_version: d.event_version,
        subscriber_id: d.subscriber_id.to_string(),
        external_id: d.external_id.clone().unwrap_or_default(),
        attempts: d.attempts,
        last_error: d.last_error.clone().unwrap_or_default(),
        provider_id: d.provider_id.clone().unwrap_or_default(),
        send_after: d.send_after.map(timestamp),
        next_attempt_at: d.next_attempt_at.map(timestamp),
        created_at: Some(timestamp(d.created_at)),
        updated_at: Some(timestamp(d.updated_at)),
        finished_at: d.finished_at.map(timestamp),
    }
}

/// A page token is the last row of the previous page: `version:channel:key`. Opaque to
/// clients, and stable while rows change state, since none of the three ever changes.
fn encode_token(cursor: &DeliveryCursor) -> String {
    format!(
        "{}:{}:{}",
        cursor.event_version, cursor.channel, cursor.delivery_key
    )
}

fn decode_token(raw: &str) -> Result<Option<DeliveryCursor>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    let invalid = || Status::invalid_argument("page_token: not a token from a previous page");
    let mut parts = raw.splitn(3, ':');
    let (Some(version), Some(channel), Some(key)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    Ok(Some(DeliveryCursor {
        event_version: version.parse().map_err(|_| invalid())?,
        channel: channel.parse::<Channel>().map_err(|_| invalid())?,
        delivery_key: key.to_owned(),
    }))
}

/// The filter and page a `ListDeliveries` request asks for, validated.
fn listing_request(
    request: &v1::ListDeliveriesRequest,
) -> Result<(DeliveryFilter, Option<DeliveryCursor>, u32), Status> {
    let channel = tocsin_proto::subscribers::channel_filter("channel", request.channel)
        .map_err(domain_status)?;
    let states = request
        .states
        .iter()
        .map(|raw| tocsin_proto::deliveries::delivery_state("states", *raw))
        .collect::<Result<Vec<_>, _>>()
        .map_err(domain_status)?;
    let external_id = Some(request.external_id.trim())
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let page_size = crate::service::page_size(request.page_size)?;
    let filter = DeliveryFilter {
        channel,
        states,
        external_id,
        event_version: (request.event_version > 0).then_some(request.event_version),
    };
    Ok((filter, decode_token(&request.page_token)?, page_size))
}

/// One page of the incident's deliveries.
pub(crate) async fn list(
    store: &Store,
    incident: IncidentId,
    request: &v1::ListDeliveriesRequest,
) -> Result<v1::ListDeliveriesResponse, Status> {
    let (filter, after, page_size) = listing_request(request)?;
    let rows = store
        .list_deliveries(incident, &filter, after.as_ref(), page_size)
        .await
        .map_err(status)?;
    let next_page_token = match rows.last() {
        Some(last) if rows.len() == page_size as usize => encode_token(&last.cursor()),
        _ => String::new(),
    };
    Ok(v1::ListDeliveriesResponse {
        deliveries: rows.iter().map(delivery_to_wire).collect(),
        next_page_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let cursor = DeliveryCursor {
            event_version: 3,
            channel: Channel::Sms,
            delivery_key: "dlv_0123456789abcdef0123456789abcdef".into(),
        };
        assert_eq!(decode_token(&encode_token(&cursor)).unwrap(), Some(cursor));
        assert_eq!(decode_token("").unwrap(), None);
        for garbage in ["3", "x:sms:dlv_1", "3:fax:dlv_1", "3:sms"] {
            let err = decode_token(garbage).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{garbage}");
        }
    }

    #[test]
    fn listing_requests_are_validated_field_by_field() {
        let bad_state = v1::ListDeliveriesRequest {
            states: vec![0],
            ..Default::default()
        };
        let err = listing_request(&bad_state).unwrap_err();
        assert!(err.message().starts_with("states"), "{}", err.message());
        let too_big = v1::ListDeliveriesRequest {
            page_size: 5_000,
            ..Default::default()
        };
        let err = listing_request(&too_big).unwrap_err();
        assert!(err.message().starts_with("page_size"), "{}", err.message());
        let fine = v1::ListDeliveriesRequest {
            channel: v1::Channel::Webhook as i32,
            states: vec![v1::DeliveryState::Dead as i32],
            external_id: " acme ".into(),
            event_version: 2,
            ..Default::default()
        };
        let (filter, after, size) = listing_request(&fine).unwrap();
        assert_eq!(filter.channel, Some(Channel::Webhook));
        assert_eq!(filter.states, [DeliveryState::Dead]);
        assert_eq!(filter.external_id.as_deref(), Some("acme"));
        assert_eq!(filter.event_version, Some(2));
        assert_eq!((after, size), (None, crate::service::DEFAULT_PAGE_SIZE));
    }
}
