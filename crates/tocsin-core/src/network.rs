//! Which network addresses a webhook may reach, and what a webhook URL must look like.
//!
//! A webhook URL is chosen by a customer, and Tocsin's workers run inside a private network
//! next to its database, its bus and the cloud's metadata service. Without a guard a customer
//! could point a webhook at any of those and read or poke them through our workers (SSRF).
//! The guard has two halves, both built on [`forbidden_range`]:
//!
//! - When a URL is registered, [`WebhookUrl::parse`] refuses the obvious forms early, so the
//!   customer hears about it at once: a loopback or private literal address however it is
//!   spelled, names such as `localhost` or `*.internal`, plain http, credentials.
//! - When a worker connects, the channel checks every resolved address again. Only that
//!   check is authoritative: a name can resolve to a public address at registration and to
//!   `127.0.0.1` later (DNS rebinding).
//!
//! [`UrlPolicy`] is the explicit escape hatch for development and tests: hosts or networks
//! listed there may be reached despite being private, and over plain http. It is empty by
//! default, which is the strict policy production runs with.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use url::{Host, Url};

use crate::error::DomainError;

/// The longest webhook URL accepted. Long enough for any real endpoint with a token in its
/// query, short enough that a URL can't be used to store data in our database.
pub const MAX_URL_LEN: usize = 2048;

/// The reserved IPv4 ranges, most specific first so the metadata address gets its own name.
#[rustfmt::skip]
const V4_RANGES: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(169, 254, 169, 254), 32, "cloud metadata service (169.254.169.254)"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast (255.255.255.255)"),
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" (0.0.0.0/8)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private network (10.0.0.0/8)"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "carrier-grade NAT (100.64.0.0/10)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback (127.0.0.0/8)"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local (169.254.0.0/16)"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private network (172.16.0.0/12)"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments (192.0.0.0/24)"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation (192.0.2.0/24)"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast (192.88.99.0/24)"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private network (192.168.0.0/16)"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking (198.18.0.0/15)"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation (198.51.100.0/24)"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation (203.0.113.0/24)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast (224.0.0.0/4)"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved (240.0.0.0/4)"),
];

/// The reserved IPv6 ranges that never carry a webhook, checked after the forms that embed
/// an IPv4 address (mapped, compatible, NAT64, 6to4), which are judged by that address.
/// Teredo comes before the wider IETF block so it keeps its own name.
#[rustfmt::skip]
const V6_RANGES: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, "local-use NAT64 (64:ff9b:1::/48)"),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, "discard-only (100::/64)"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, "Teredo tunnelling (2001::/32)"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, "IETF protocol assignments (2001::/23)"),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, "documentation (2001:db8::/32)"),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "documentation (3fff::/20)"),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, "unique local (fc00::/7)"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local (fe80::/10)"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local (fec0::/10)"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast (ff00::/8)"),
];

/// The name of the reserved range `ip` belongs to, or `None` for a public unicast address.
///
/// IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`) are judged by the IPv4
/// address inside, because that is where a packet to them ends up. Anything outside the
/// global unicast block `2000::/3` is refused: nothing public lives there.
///
/// For those embedding forms the name returned is the embedded IPv4 range's, since that is
/// what a connection would reach; callers print the address beside it.
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = ip.to_bits();
    V4_RANGES
        .iter()
        .find(|(net, prefix, _)| prefix_matches_v4(bits, net.to_bits(), *prefix))
        .map(|(_, _, name)| *name)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = ip.to_bits();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    // The forms below embed an IPv4 address in their low or middle bits.
    let embedded = |shift: u32| Ipv4Addr::from_bits((bits >> shift) as u32);
    if bits >> 32 == 0xffff {
        return forbidden_v4(embedded(0));
    }
    if bits >> 32 == 0 {
        return forbidden_v4(embedded(0));
    }
    if bits >> 32 == 0x0064_ff9b << 64 {
        return forbidden_v4(embedded(0));
    }
    if bits >> 112 == 0x2002 {
        return forbidden_v4(embedded(80));
    }
    if let Some((_, _, name)) = V6_RANGES
        .iter()
        .find(|(net, prefix, _)| prefix_matches_v6(bits, net.to_bits(), *prefix))
    {
        return Some(name);
    }
    if bits >> 125 != 0b001 {
        return Some("not global unicast (outside 2000::/3)");
    }
    None
}

fn prefix_matches_v4(addr: u32, net: u32, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    addr & mask == net & mask
}

fn prefix_matches_v6(addr: u128, net: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    addr & mask == net & mask
}

/// An IP network in CIDR notation (`127.0.0.0/8`, `::1/128`); a bare address is a network
/// of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Whether `ip` lies in this network. An IPv4-mapped IPv6 address also counts as its
    /// IPv4 address, so allowing `127.0.0.1` allows `::ffff:127.0.0.1` too: both reach the
    /// same socket.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_exactly(ip) || self.contains_exactly(unmap(ip))
    }

    fn contains_exactly(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches_v4(ip.to_bits(), net.to_bits(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches_v6(ip.to_bits(), net.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

impl FromStr for IpNetwork {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            DomainError::invalid(
                "network",
                format!("{s:?} is not an IP address or CIDR network"),
            )
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(invalid)?,
            None => max,
        };
        Ok(IpNetwork { addr, prefix })
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for; anything else unchanged.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Hosts and networks a webhook may reach although they are private, and over plain http.
///
/// The default is empty: the strict policy production runs with. Development and tests list
/// what they need (`127.0.0.1`, `localhost`, a compose network's CIDR) explicitly, so an
/// allow-listed address is always a decision someone wrote down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    hosts: Vec<String>,
    networks: Vec<IpNetwork>,
}

impl UrlPolicy {
    /// The strict policy: nothing private is reachable, https only.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Whether nothing is allow-listed.
    pub fn is_strict(&self) -> bool {
        self.hosts.is_empty() && self.networks.is_empty()
    }

    /// Allows one entry: an IP address, a CIDR network, or a host name (matched exactly,
    /// case-insensitively).
    pub fn allow(mut self, entry: &str) -> Result<Self, DomainError> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(DomainError::invalid(
                "url_policy",
                "an allow-list entry is empty",
            ));
        }
        let looks_like_network = entry.contains('/') || entry.parse::<IpAddr>().is_ok();
        if looks_like_network {
            self.networks.push(entry.parse()?);
        } else {
            self.hosts.push(normalise_host(entry));
        }
        Ok(self)
    }

    /// Builds a policy from a comma-separated list, as it comes from configuration.
    pub fn from_list(list: &str) -> Result<Self, DomainError> {
        list.split(',')
            .filter(|entry| !entry.trim().is_empty())
            .try_fold(Self::strict(), |policy, entry| policy.allow(entry))
    }

    /// Whether this address is allow-listed. The connect-time guard asks this for every
    /// resolved address in a forbidden range.
    pub fn permits_ip(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(ip))
    }

    /// Whether this host, a name or an address literal (brackets allowed), is allow-listed.
    pub fn permits_host(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.permits_ip(ip);
        }
        let host = normalise_host(host);
        self.hosts.contains(&host)
    }

    fn permits(&self, host: &Host<&str>) -> bool {
        match host {
            Host::Domain(name) => self.permits_host(name),
            Host::Ipv4(ip) => self.permits_ip(IpAddr::V4(*ip)),
            Host::Ipv6(ip) => self.permits_ip(IpAddr::V6(*ip)),
        }
    }
}

/// Host names compare lowercase and without the trailing dot of a fully-qualified name, so
/// `LOCALHOST.` cannot slip past a check for `localhost`.
fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Name suffixes that only ever resolve inside a private network.
const INTERNAL_SUFFIXES: &[&str] = &[".localhost", ".local", ".internal"];

/// A webhook endpoint that passed the registration checks. The connect-time guard still
/// applies: this type says the URL is well-formed and not obviously internal, not that every
/// address its name resolves to is public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Checks `input` as a webhook endpoint under `policy`.
    pub fn parse(input: &str, policy: &UrlPolicy) -> Result<WebhookUrl, DomainError> {
        let invalid = |reason: String| DomainError::invalid("webhook_url", reason);
        if input.len() > MAX_URL_LEN {
            return Err(invalid(format!(
                "is {} characters long; the limit is {MAX_URL_LEN}",
                input.len()
            )));
        }
        let url = Url::parse(input).map_err(|e| invalid(format!("is not a valid URL: {e}")))?;
        let host = url
            .host()
            .ok_or_else(|| invalid("has no host".to_owned()))?;
        let allowed = policy.permits(&host);
        // The host comes first so that `http://127.0.0.1/` is refused for what it reaches,
        // which is the more useful reason, rather than for its scheme.
        if !allowed {
            check_host(&host).map_err(invalid)?;
        }
        match url.scheme() {
            "https" => {}
            "http" if allowed => {}
            "http" => {
                return Err(invalid(
                    "must use https; plain http is only for allow-listed development hosts".into(),
                ));
            }
            other => return Err(invalid(format!("must use https, not {other}"))),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "must not contain credentials; put a token in a header or the query".into(),
            ));
        }
        if url.fragment().is_some() {
            return Err(invalid(
                "must not contain a fragment (#...); it is never sent to the server".into(),
            ));
        }
        Ok(WebhookUrl(url))
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn into_url(self) -> Url {
        self.0
    }

    /// The host's address when the URL names one literally. A literal address never goes
    /// through a resolver, so the connect-time guard must check it on its own.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        literal_ip(&self.0)
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// The address a URL's host names literally, if it does (`http://10.0.0.1/`, `http://[::1]/`).
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(_) => None,
    }
}

/// Refuses a host that is not allow-listed when it is a forbidden literal address or a name
/// that only resolves internally.
fn check_host(host: &Host<&str>) -> Result<(), String> {
    let ip = match host {
        Host::Ipv4(ip) => IpAddr::V4(*ip),
        Host::Ipv6(ip) => IpAddr::V6(*ip),
        Host::Domain(name) => {
            let name = normalise_host(name);
            if name == "localhost"
                || INTERNAL_SUFFIXES
                    .iter()
                    .any(|suffix| name.ends_with(suffix))
            {
                return Err(format!(
                    "host {name:?} only resolves inside a private network"
                ));
            }
            if !name.contains('.') {
                return Err(format!(
                    "host {name:?} is a single-label name, which resolves through local search domains; use a fully-qualified name"
                ));
            }
            return Ok(());
        }
    };
    match forbidden_range(ip) {
        Some(range) => Err(format!("address {ip} is in a forbidden range: {range}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
