//! Twilio's message statuses, parsed leniently, and what each means for a delivery.

use std::fmt;

/// A Twilio message status. Twilio adds statuses over time, so an unknown one is kept as
/// [`MessageStatus::Other`] rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    Queued,
    Accepted,
    Scheduled,
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    Read,
    Canceled,
    Receiving,
    Received,
    PartiallyDelivered,
    Other(String),
}

/// Where a message stands for the delivery ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The handset has it (or the carrier confirmed it).
    Delivered,
    /// It will not arrive.
    Failed,
    /// Still on its way; another callback may follow. `sent` stays here: many carriers never
    /// confirm delivery, so `sent` can be the last word, but it is not proof of arrival.
    InProgress,
}

impl MessageStatus {
    pub fn parse(s: &str) -> MessageStatus {
        match s {
            "queued" => Self::Queued,
            "accepted" => Self::Accepted,
            "scheduled" => Self::Scheduled,
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "undelivered" => Self::Undelivered,
            "failed" => Self::Failed,
            "read" => Self::Read,
            "canceled" => Self::Canceled,
            "receiving" => Self::Receiving,
            "received" => Self::Received,
            "partially_delivered" => Self::PartiallyDelivered,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Accepted => "accepted",
            Self::Scheduled => "scheduled",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
            Self::Failed => "failed",
            Self::Read => "read",
            Self::Canceled => "canceled",
            Self::Receiving => "receiving",
            Self::Received => "received",
            Self::PartiallyDelivered => "partially_delivered",
            Self::Other(s) => s,
        }
    }

    pub fn progress(&self) -> Progress {
        match self {
            Self::Delivered | Self::Read => Progress::Delivered,
            Self::Undelivered | Self::Failed | Self::Canceled => Progress::Failed,
            _ => Progress::InProgress,
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for MessageStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(MessageStatus::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_round_trip_and_classify() {
        for s in [
            "queued",
            "accepted",
            "sending",
            "sent",
            "delivered",
            "undelivered",
            "failed",
            "read",
            "canceled",
        ] {
            assert_eq!(MessageStatus::parse(s).as_str(), s);
        }
        assert_eq!(
            MessageStatus::parse("delivered").progress(),
            Progress::Delivered
        );
        assert_eq!(MessageStatus::parse("read").progress(), Progress::Delivered);
        assert_eq!(
            MessageStatus::parse("undelivered").progress(),
            Progress::Failed
        );
        assert_eq!(MessageStatus::parse("failed").progress(), Progress::Failed);
        assert_eq!(
            MessageStatus::parse("sent").progress(),
            Progress::InProgress
        );
        let new = MessageStatus::parse("teleported");
        assert_eq!(new, MessageStatus::Other("teleported".into()));
        assert_eq!(new.progress(), Progress::InProgress);
        let parsed: MessageStatus = serde_json::from_str("\"queued\"").unwrap();
        assert_eq!(parsed, MessageStatus::Queued);
    }
}
