//! Contact points checked on the way in, with errors that name the field and say what to fix.
//!
//! The rules for email addresses and phone numbers are `tocsin_core::contact`'s, shared with
//! the status page's sign-up; webhook URLs must be https on a public address, checked on the literal host
//! and again on every address the name resolves to, unless the development allow-list permits
//! it. The worker checks addresses again at connect time, so a name that later resolves
//! somewhere private (DNS rebinding) is refused then too.

use std::collections::HashMap;
use tocsin_core::network::{UrlPolicy, WebhookUrl};
use tocsin_core::{Contacts, DomainError};
use tocsin_proto::v1;

/// Checks contacts, remembering webhook host resolutions across calls (one import resolves
/// each host once).
#[derive(Debug)]
pub(crate) struct ContactChecker<'a> {
    policy: &'a UrlPolicy,
    resolved: HashMap<(String, u16), Result<(), DomainError>>,
}

impl<'a> ContactChecker<'a> {
    pub(crate) fn new(policy: &'a UrlPolicy) -> Self {
        Self {
            policy,
            resolved: HashMap::new(),
        }
    }

    /// Validates and normalises every contact point given; empty strings mean "none".
    pub(crate) async fn check(
        &mut self,
        wire: Option<v1::Contacts>,
    ) -> Result<Contacts, DomainError> {
        let wire = wire.unwrap_or_default();
        let email = non_empty(wire.email).map(|raw| email(&raw)).transpose()?;
        let phone = non_empty(wire.phone).map(|raw| phone(&raw)).transpose()?;
        let webhook_url = match non_empty(wire.webhook_url) {
            Some(raw) => Some(self.webhook_url(&raw).await?),
            None => None,
        };
        Ok(Contacts {
            email,
            phone,
            webhook_url,
        })
    }

    async fn webhook_url(&mut self, raw: &str) -> Result<String, DomainError> {
        let url = WebhookUrl::parse(raw, self.policy).map_err(|e| match e {
            DomainError::Invalid { reason, .. } => {
                DomainError::invalid("contacts.webhook_url", reason)
            }
            other => other,
        })?;
        if url.literal_ip().is_none() {
            let host = url.as_url().host_str().unwrap_or_default().to_owned();
            let port = url.as_url().port_or_known_default().unwrap_or(443);
            let key = (host.clone(), port);
            if !self.resolved.contains_key(&key) {
                let verdict = tocsin_runtime::dns::resolve_publicly(
                    self.policy,
                    "contacts.webhook_url",
                    &host,
                    port,
                )
                .await;
                self.resolved.insert(key.clone(), verdict);
            }
            self.resolved[&key].clone()?;
        }
        Ok(url.as_str().to_owned())
    }
}

fn non_empty(raw: String) -> Option<String> {
    let trimmed = raw.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn email(raw: &str) -> Result<String, DomainError> {
    tocsin_core::contact::email("contacts.email", raw)
}

fn phone(raw: &str) -> Result<String, DomainError> {
    tocsin_core::contact::phone("contacts.phone", raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contacts(email: &str, phone: &str, url: &str) -> Option<v1::Contacts> {
        Some(v1::Contacts {
            email: email.into(),
            phone: phone.into(),
            webhook_url: url.into(),
        })
    }

    async fn check(policy: &UrlPolicy, wire: Option<v1::Contacts>) -> Result<Contacts, String> {
        ContactChecker::new(policy)
            .check(wire)
            .await
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn good_contacts_are_normalised() {
        let strict = UrlPolicy::strict();
        let c = check(
            &strict,
            contacts(
                " ops@example.com ",
                "+1 415 555 2671",
                "https://93.184.216.34/hook",
            ),
        )
        .await
        .unwrap();
        assert_eq!(c.email.as_deref(), Some("ops@example.com"));
        assert_eq!(c.phone.as_deref(), Some("+14155552671"));
        assert_eq!(c.webhook_url.as_deref(), Some("https://93.184.216.34/hook"));
        assert_eq!(check(&strict, None).await.unwrap(), Contacts::default());
    }

    #[tokio::test]
    async fn bad_contacts_name_the_field() {
        let strict = UrlPolicy::strict();
        for (wire, field) in [
            (contacts("not-an-address", "", ""), "contacts.email"),
            (contacts("a@b@c", "", ""), "contacts.email"),
            (contacts("", "4155552671", ""), "contacts.phone"),
            (contacts("", "+1 123", ""), "contacts.phone"),
            (
                contacts("", "", "http://93.184.216.34/hook"),
                "contacts.webhook_url",
            ),
            (
                contacts("", "", "https://127.0.0.1/hook"),
                "contacts.webhook_url",
            ),
            (
                contacts("", "", "https://[::ffff:10.0.0.1]/hook"),
                "contacts.webhook_url",
            ),
            (
                contacts("", "", "https://169.254.169.254/latest"),
                "contacts.webhook_url",
            ),
            (
                contacts("", "", "https://localhost/hook"),
                "contacts.webhook_url",
            ),
        ] {
            let err = check(&strict, wire.clone()).await.unwrap_err();
            assert!(err.contains(field), "{wire:?}: {err}");
        }
    }

    #[tokio::test]
    async fn the_development_allow_list_admits_local_receivers() {
        let dev = UrlPolicy::from_list("127.0.0.1").unwrap();
        let c = check(&dev, contacts("", "", "http://127.0.0.1:9000/hooks/a"))
            .await
            .unwrap();
        assert_eq!(
            c.webhook_url.as_deref(),
            Some("http://127.0.0.1:9000/hooks/a")
        );
    }
}
