//! `ListIncidents`: incidents by status, component, severity, kind and opening time, newest
//! first, with page tokens.

use tocsin_core::{IncidentId, Severity};
use tocsin_proto::v1;
use tocsin_store::{IncidentCursor, IncidentFilter, Store};
use tonic::Status;

use crate::service::page_size;
use crate::status::{domain_status, status};

/// A page token is the last incident of the previous page: `opened_at_nanos:incident_id`.
/// Opaque to clients, and stable: neither ever changes.
fn encode_token(cursor: &IncidentCursor) -> String {
    format!(
        "{}:{}",
        cursor.opened_at.unix_timestamp_nanos(),
        cursor.incident_id
    )
}

fn decode_token(raw: &str) -> Result<Option<IncidentCursor>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    let invalid = || Status::invalid_argument("page_token: not a token from a previous page");
    let (nanos, id) = raw.split_once(':').ok_or_else(invalid)?;
    let nanos: i128 = nanos.parse().map_err(|_| invalid())?;
    Ok(Some(IncidentCursor {
        opened_at: time::OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?,
        incident_id: id.parse::<IncidentId>().map_err(|_| invalid())?,
    }))
}

/// The filter a request asks for, validated.
#[allow(clippy::result_large_err)]
fn filter(request: &v1::ListIncidentsRequest) -> Result<IncidentFilter, Status> {
    let statuses = request
        .statuses
        .iter()
        .map(|raw| {
            tocsin_proto::status_in("statuses", *raw)?.ok_or_else(|| {
                tocsin_core::DomainError::invalid("statuses", "unspecified is not a status")
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(domain_status)?;
    let severities = match tocsin_proto::severity_in("min_severity", request.min_severity)
        .map_err(domain_status)?
    {
        None => Vec::new(),
        Some(min) => [Severity::Minor, Severity::Major, Severity::Critical]
            .into_iter()
            .filter(|s| *s >= min)
            .collect(),
    };
    let time = |field: &'static str, ts: Option<&prost_types::Timestamp>| {
        ts.map(|ts| tocsin_proto::to_offset_datetime(field, ts))
            .transpose()
            .map_err(domain_status)
    };
    let component = request.component.trim();
    Ok(IncidentFilter {
        statuses,
        component: (!component.is_empty()).then(|| component.to_owned()),
        severities,
        opened_after: time("opened_after", request.opened_after.as_ref())?,
        opened_before: time("opened_before", request.opened_before.as_ref())?,
        kind: tocsin_proto::kind_in("kind", request.kind).map_err(domain_status)?,
    })
}

/// Answers one `ListIncidents` request.
pub(crate) async fn list(
    store: &Store,
    request: &v1::ListIncidentsRequest,
) -> Result<v1::ListIncidentsResponse, Status> {
    let filter = filter(request)?;
    let after = decode_token(&request.page_token)?;
    let page_size = page_size(request.page_size)?;
    let incidents = store
        .list_incidents(&filter, after, page_size)
        .await
        .map_err(status)?;
    let next_page_token = match incidents.last() {
        Some(last) if incidents.len() == page_size as usize => encode_token(&IncidentCursor {
            opened_at: last.opened_at,
            incident_id: last.id,
        }),
        _ => String::new(),
    };
    Ok(v1::ListIncidentsResponse {
        incidents: incidents.iter().map(v1::Incident::from).collect(),
        next_page_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let cursor = IncidentCursor {
            opened_at: time::macros::datetime!(2026-12-07 10:00:00.123456789 UTC),
            incident_id: IncidentId::new(),
        };
        assert_eq!(decode_token(&encode_token(&cursor)).unwrap(), Some(cursor));
        assert_eq!(decode_token("").unwrap(), None);
        for garbage in ["x", "1:not-a-uuid", "nan:0190"] {
            assert!(decode_token(garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn a_minimum_severity_keeps_it_and_what_is_worse() {
        let request = v1::ListIncidentsRequest {
            min_severity: v1::Severity::Major as i32,
            statuses: vec![v1::IncidentStatus::Resolved as i32],
            component: "  api ".into(),
            ..Default::default()
        };
        let f = filter(&request).unwrap();
        assert_eq!(f.severities, [Severity::Major, Severity::Critical]);
        assert_eq!(f.statuses, [tocsin_core::IncidentStatus::Resolved]);
        assert_eq!(f.component.as_deref(), Some("api"));
        let unspecified = v1::ListIncidentsRequest {
            statuses: vec![0],
            ..Default::default()
        };
        assert_eq!(
            filter(&unspecified).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
