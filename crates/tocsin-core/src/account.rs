//! Messages about a reader's subscription itself, not about an incident: the confirmations a
//! self-service sign-up needs (double opt-in) and the answer to a sign-up for an address that
//! is already subscribed. They wait in PostgreSQL's `account_messages` (written by the status
//! page, never sent from its web request) and go out through the email and SMS workers, each
//! at most once: a send whose outcome is lost is not repeated, the visitor asks again.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::channel::Channel;

/// What one account message says; rendered per channel by its worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccountNotice {
    /// Confirm an email address by following the link.
    ConfirmEmail {
        company: String,
        confirm_url: String,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// The code that confirms a phone number, to type into the sign-up page.
    PhoneCode {
        company: String,
        code: String,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// Someone asked to subscribe an address that already hears from us: nothing changes,
    /// and its owner gets the way to their preferences instead of a second subscription.
    AlreadySubscribed {
        company: String,
        preferences_url: Option<String>,
        status_page_url: Option<String>,
    },
}

impl AccountNotice {
    /// The channel it goes out on.
    pub fn channel(&self, address_is_phone: bool) -> Channel {
        match self {
            AccountNotice::ConfirmEmail { .. } => Channel::Email,
            AccountNotice::PhoneCode { .. } => Channel::Sms,
            AccountNotice::AlreadySubscribed { .. } if address_is_phone => Channel::Sms,
            AccountNotice::AlreadySubscribed { .. } => Channel::Email,
        }
    }

    /// What it is, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AccountNotice::ConfirmEmail { .. } => "confirm_email",
            AccountNotice::PhoneCode { .. } => "phone_code",
            AccountNotice::AlreadySubscribed { .. } => "already_subscribed",
        }
    }

    /// The text message for it: short, one segment where the company's name allows.
    pub fn sms_text(&self) -> String {
        match self {
            AccountNotice::PhoneCode { company, code, .. } => format!(
                "{company} status: your code is {code}. It works for 30 minutes. \
                 Didn't ask for it? Ignore this text."
            ),
            AccountNotice::AlreadySubscribed { company, .. } => format!(
                "{company} status: this number already gets our status texts. \
                 Reply STOP to stop them."
            ),
            AccountNotice::ConfirmEmail {
                company,
                confirm_url,
                ..
            } => format!("{company} status: confirm your subscription at {confirm_url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn notices_round_trip_as_tagged_json_and_texts_name_the_company() {
        let code = AccountNotice::PhoneCode {
            company: "Acme".into(),
            code: "042917".into(),
            expires_at: datetime!(2026-12-08 10:30 UTC),
        };
        let json = serde_json::to_value(&code).unwrap();
        assert_eq!(json["kind"], "phone_code");
        assert_eq!(json["expires_at"], "2026-12-08T10:30:00Z");
        assert_eq!(serde_json::from_value::<AccountNotice>(json).unwrap(), code);
        assert!(
            code.sms_text()
                .starts_with("Acme status: your code is 042917.")
        );
        assert_eq!(code.channel(true), Channel::Sms);
        let known = AccountNotice::AlreadySubscribed {
            company: "Acme".into(),
            preferences_url: None,
            status_page_url: None,
        };
        assert_eq!(known.channel(false), Channel::Email);
        assert_eq!(known.channel(true), Channel::Sms);
        assert!(known.sms_text().contains("Reply STOP"));
    }
}
