//! The connect-time half of the SSRF guard: a DNS resolver that never hands a forbidden
//! address to the HTTP client.
//!
//! Checking after resolution is what defeats DNS rebinding: whatever a name resolved to
//! when the customer registered it, the addresses the socket will use are the ones judged
//! here. Literal-IP URLs never reach a resolver, so the client checks those separately.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tocsin_core::network::{UrlPolicy, forbidden_range};

/// Every address a name resolved to was refused by the guard. The client turns this into a
/// permanent failure naming the range: retrying cannot help while the name points inside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves only to forbidden addresses ({ip} is in {range})")]
pub struct Refused {
    pub host: String,
    pub ip: IpAddr,
    pub range: &'static str,
}

/// Resolves with the system resolver (through tokio) and drops every address in a
/// forbidden range that the policy does not allow.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<UrlPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<UrlPolicy>) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in afterwards.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs = filter(&host, resolved, &policy)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Keeps the addresses the guard lets through, or explains why there are none.
pub(crate) fn filter(
    host: &str,
    resolved: Vec<SocketAddr>,
    policy: &UrlPolicy,
) -> Result<Vec<SocketAddr>, Refused> {
    let mut first_refused = None;
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|addr| match forbidden_range(addr.ip()) {
            Some(range) if !policy.permits_ip(addr.ip()) => {
                tracing::warn!(host, ip = %addr.ip(), range, "resolved address refused by the SSRF guard");
                first_refused.get_or_insert((addr.ip(), range));
                false
            }
            _ => true,
        })
        .collect();
    match (allowed.is_empty(), first_refused) {
        (true, Some((ip, range))) => Err(Refused {
            host: host.to_owned(),
            ip,
            range,
        }),
        _ => Ok(allowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), 0))
            .collect()
    }

    #[test]
    fn forbidden_addresses_are_dropped_and_public_ones_kept() {
        let strict = UrlPolicy::strict();
        let kept = filter(
            "mixed.example",
            addrs(&["10.0.0.1", "93.184.215.14", "::1"]),
            &strict,
        )
        .unwrap();
        assert_eq!(kept, addrs(&["93.184.215.14"]));
        let err = filter(
            "inside.example",
            addrs(&["169.254.169.254", "10.0.0.1"]),
            &strict,
        )
        .unwrap_err();
        assert_eq!(err.ip, "169.254.169.254".parse::<IpAddr>().unwrap());
        assert!(err.to_string().contains("metadata"), "{err}");
    }

    #[test]
    fn the_policy_lets_allow_listed_addresses_through() {
        let dev = UrlPolicy::strict().allow("127.0.0.1").unwrap();
        let kept = filter("localhost", addrs(&["127.0.0.1", "::1"]), &dev).unwrap();
        assert_eq!(kept, addrs(&["127.0.0.1"]));
    }
}
