//! The name resolution behind a webhook URL's check: every address its host resolves to must
//! be public (or allow-listed), shared by the API and the status page's sign-up so both
//! refuse the same URLs. The rules themselves are pure, in `tocsin_core::network`.

use tocsin_core::DomainError;
use tocsin_core::network::{UrlPolicy, forbidden_range};

/// Resolves `host` and refuses it when any address is in a forbidden range that `policy`
/// does not allow; `field` names the input in the error.
pub async fn resolve_publicly(
    policy: &UrlPolicy,
    field: &'static str,
    host: &str,
    port: u16,
) -> Result<(), DomainError> {
    if policy.permits_host(host) {
        return Ok(());
    }
    let invalid = |reason: String| DomainError::invalid(field, reason);
    let addresses = tokio::net::lookup_host((host, port)).await.map_err(|_| {
        invalid(format!(
            "{host} does not resolve; use a name with a public address"
        ))
    })?;
    for address in addresses {
        let ip = address.ip();
        if let Some(range) = forbidden_range(ip)
            && !policy.permits_ip(ip)
        {
            return Err(invalid(format!(
                "{host} resolves to {ip}, a {range} address; webhooks go to public addresses only"
            )));
        }
    }
    Ok(())
}
