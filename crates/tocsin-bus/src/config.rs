//! Names of streams and subjects, derived from one prefix.

use std::time::Duration;

use tocsin_core::{Channel, IncidentId, Lane};

use crate::BusError;

/// Where Tocsin's streams and subjects live on a NATS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    prefix: String,
    /// JetStream's `Nats-Msg-Id` de-duplication window. 2 minutes by default, as the server's.
    pub duplicate_window: Duration,
    /// How long events stay in the stream. The log keeps them forever; this only bounds disk.
    pub events_max_age: Duration,
    /// Stream replicas: 1 on one server, 3 on a JetStream cluster.
    pub replicas: usize,
    /// How long to wait for a publish acknowledgement or an API reply.
    pub ack_timeout: Duration,
    /// Publishes whose acks may be outstanding at once.
    pub max_ack_inflight: usize,
}

impl BusConfig {
    /// `prefix` names everything: subjects `<prefix>.events.<incident>`, stream `<PREFIX>_EVENTS`.
    /// It must be 1-32 characters of `a-z`, `0-9`, `_`.
    pub fn new(prefix: impl Into<String>) -> Result<Self, BusError> {
        let prefix = prefix.into();
        let valid = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(BusError::InvalidConfig(format!(
                "prefix {prefix:?} must be 1-32 characters of a-z, 0-9 and _"
            )));
        }
        Ok(Self {
            prefix,
            duplicate_window: Duration::from_secs(120),
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
            ack_timeout: Duration::from_secs(5),
            max_ack_inflight: 1024,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream holding every incident event.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.prefix.to_ascii_uppercase())
    }

    /// The subject of one incident's events. One subject per incident keeps per-incident
    /// order visible to consumers and lets a reader filter one incident cheaply.
    pub fn event_subject(&self, incident_id: IncidentId) -> String {
        format!("{}.events.{}", self.prefix, incident_id)
    }

    /// Matches every incident's events.
    pub fn events_subjects(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// The work-queue stream of delivery jobs, one subject per channel.
    pub fn deliveries_stream(&self) -> String {
        format!("{}_DELIVERIES", self.prefix.to_ascii_uppercase())
    }

    /// The subject of one channel's delivery jobs in one lane. The bulk lane keeps the
    /// subject jobs had before lanes existed (`<prefix>.deliveries.<channel>`); the others add
    /// the lane (`….<channel>.small`). Neither filter overlaps another, as a work-queue stream
    /// requires of its consumers.
    pub fn delivery_subject(&self, channel: Channel, lane: Lane) -> String {
        match lane {
            Lane::Bulk => format!("{}.deliveries.{}", self.prefix, channel),
            _ => format!("{}.deliveries.{}.{}", self.prefix, channel, lane),
        }
    }

    /// Matches every channel's delivery jobs.
    pub fn deliveries_subjects(&self) -> String {
        format!("{}.deliveries.>", self.prefix)
    }

    /// The stream of dead letters: jobs that exhausted their retries or failed for good,
    /// kept for inspection and alerting (the ledger is what replays read).
    pub fn dead_letters_stream(&self) -> String {
        format!("{}_DEAD", self.prefix.to_ascii_uppercase())
    }

    /// The subject of one channel's dead letters.
    pub fn dead_letter_subject(&self, channel: Channel) -> String {
        format!("{}.dead.{}", self.prefix, channel)
    }

    /// The durable consumer every resolver replica shares.
    pub fn resolver_consumer(&self) -> String {
        "resolver".to_owned()
    }

    /// Every durable consumer the services create, with its stream: the resolver's, and
    /// each channel's workers' in each lane.
    pub fn consumers(&self) -> Vec<(String, String)> {
        let mut consumers = vec![(self.events_stream(), self.resolver_consumer())];
        for channel in Channel::ALL {
            for lane in Lane::ALL {
                consumers.push((
                    self.deliveries_stream(),
                    self.worker_consumer(channel, lane),
                ));
            }
        }
        consumers
    }

    /// The durable consumer every worker replica of one channel shares for one lane
    /// (`email-worker` for bulk, as before lanes; `email-worker-small`, …).
    pub fn worker_consumer(&self, channel: Channel, lane: Lane) -> String {
        match lane {
            Lane::Bulk => format!("{channel}-worker"),
            _ => format!("{channel}-worker-{lane}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_names_stream_and_subjects() {
        let c = BusConfig::new("t_1").unwrap();
        assert_eq!(c.events_stream(), "T_1_EVENTS");
        assert_eq!(c.events_subjects(), "t_1.events.>");
        let id = IncidentId::new();
        assert_eq!(c.event_subject(id), format!("t_1.events.{id}"));
        assert_eq!(c.deliveries_stream(), "T_1_DELIVERIES");
        assert_eq!(
            c.delivery_subject(Channel::Sms, Lane::Bulk),
            "t_1.deliveries.sms"
        );
        assert_eq!(
            c.delivery_subject(Channel::Sms, Lane::Small),
            "t_1.deliveries.sms.small"
        );
        assert_eq!(c.worker_consumer(Channel::Sms, Lane::Bulk), "sms-worker");
        assert_eq!(
            c.worker_consumer(Channel::Sms, Lane::Critical),
            "sms-worker-critical"
        );
        assert_eq!(c.deliveries_subjects(), "t_1.deliveries.>");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "a.b", "A", "x y", &"x".repeat(33)] {
            assert!(BusConfig::new(bad).is_err(), "{bad:?}");
        }
    }
}
