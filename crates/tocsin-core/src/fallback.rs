//! Fallback notices: when one of a subscriber's channels stops working for them (their webhook
//! endpoint is disabled, or their email or texts dead-letter), they are told on another
//! channel they chose, once per cause, with the reason and how to get it working again.
//!
//! A fallback notice is a delivery like any other (a ledger row with its own key, a trail
//! entry, a job), told apart by the [`DeliveryNotice`] it carries. It lives beside the
//! incident's messages, not in their sequence: it neither supersedes them nor waits for them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::channel::Channel;
use crate::fanout::DeliveryKey;
use crate::ids::{IncidentId, SubscriberId};
use crate::preferences::Preferences;
use crate::subscriber::Contacts;

/// What a delivery tells when it is not its event's own message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeliveryNotice {
    /// The subscriber's `failed_channel` stopped working for them.
    ChannelFailed {
        failed_channel: Channel,
        reason: String,
    },
}

/// The channel to tell a subscriber on when `failed` stopped working: email first, then
/// SMS, among the channels they chose and have an address for. Never a webhook: a machine
/// would not read "your webhook stopped working" to a person. `None` when they have no other.
pub fn fallback_channel(
    preferences: &Preferences,
    contacts: &Contacts,
    failed: Channel,
) -> Option<Channel> {
    [Channel::Email, Channel::Sms].into_iter().find(|channel| {
        *channel != failed
            && preferences.channels.contains(channel)
            && contacts.address(*channel).is_some()
    })
}

/// The key of the fallback notice about `failed` for one subscriber and incident: once per
/// cause, however many of the incident's messages failed on that channel.
pub fn fallback_key(
    incident: IncidentId,
    subscriber: SubscriberId,
    failed: Channel,
    to: Channel,
) -> DeliveryKey {
    let input = format!("tocsin.fallback.v1|{incident}|{subscriber}|{failed}|{to}");
    let digest = Sha256::digest(input.as_bytes());
    DeliveryKey::from_digest(&digest)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::change::Severity;
    use crate::preferences::ComponentFilter;

    fn prefs(channels: &[Channel]) -> Preferences {
        Preferences {
            channels: channels.iter().copied().collect::<BTreeSet<_>>(),
            components: ComponentFilter::All,
            min_severity: Severity::Minor,
            kinds: BTreeMap::new(),
            quiet_hours: None,
        }
    }

    fn contacts(email: bool, phone: bool) -> Contacts {
        Contacts {
            email: email.then(|| "ada@example.test".to_owned()),
            phone: phone.then(|| "+14155550100".to_owned()),
            webhook_url: Some("https://hooks.example.test/a".into()),
        }
    }

    #[test]
    fn email_first_then_sms_never_the_failed_one_nor_a_webhook() {
        let all = prefs(&[Channel::Email, Channel::Sms, Channel::Webhook]);
        assert_eq!(
            fallback_channel(&all, &contacts(true, true), Channel::Webhook),
            Some(Channel::Email)
        );
        assert_eq!(
            fallback_channel(&all, &contacts(true, true), Channel::Email),
            Some(Channel::Sms)
        );
        assert_eq!(
            fallback_channel(&all, &contacts(false, true), Channel::Webhook),
            Some(Channel::Sms),
            "no address, no email"
        );
        assert_eq!(
            fallback_channel(
                &prefs(&[Channel::Webhook, Channel::Sms]),
                &contacts(true, false),
                Channel::Webhook
            ),
            None,
            "email not chosen, no phone: nobody to tell"
        );
        assert_eq!(
            fallback_channel(&all, &contacts(true, true), Channel::Sms),
            Some(Channel::Email)
        );
        assert_eq!(
            fallback_channel(
                &prefs(&[Channel::Sms, Channel::Webhook]),
                &contacts(true, true),
                Channel::Sms
            ),
            None,
            "never a webhook"
        );
    }

    #[test]
    fn one_key_per_cause_and_stable() {
        let incident =
            IncidentId::from_uuid("01890a5d-ac96-774b-bcce-b302099a8057".parse().unwrap());
        let subscriber =
            SubscriberId::from_uuid("01890a5d-ac96-774b-bcce-b302099a8058".parse().unwrap());
        let key = fallback_key(incident, subscriber, Channel::Webhook, Channel::Email);
        assert_eq!(
            key,
            fallback_key(incident, subscriber, Channel::Webhook, Channel::Email)
        );
        assert_ne!(
            key,
            fallback_key(incident, subscriber, Channel::Sms, Channel::Email)
        );
        assert!(
            key.as_str().starts_with("dlv_") && key.as_str().len() == 36,
            "{key}"
        );
        let notice = DeliveryNotice::ChannelFailed {
            failed_channel: Channel::Webhook,
            reason: "410 Gone".into(),
        };
        assert_eq!(
            serde_json::to_value(&notice).unwrap(),
            serde_json::json!({"kind": "channel_failed", "failed_channel": "webhook", "reason": "410 Gone"})
        );
    }
}
