use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn refused(input: &str, policy: &UrlPolicy) -> String {
    match WebhookUrl::parse(input, policy) {
        Ok(url) => panic!("{input} was accepted as {url}"),
        Err(DomainError::Invalid { field, reason }) => {
            assert_eq!(field, "webhook_url");
            reason
        }
        Err(other) => panic!("{input}: unexpected error {other:?}"),
    }
}

fn dev_policy() -> UrlPolicy {
    UrlPolicy::from_list("127.0.0.1, ::1, localhost, 10.1.0.0/16").unwrap()
}

#[test]
fn every_reserved_ipv4_range_is_named() {
    let cases = [
        ("0.0.0.0", "this network"),
        ("0.1.2.3", "this network"),
        ("10.0.0.1", "10.0.0.0/8"),
        ("10.255.255.255", "10.0.0.0/8"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("169.254.169.254", "metadata"),
        ("169.254.0.1", "link-local"),
        ("172.16.0.1", "172.16.0.0/12"),
        ("172.31.255.255", "172.16.0.0/12"),
        ("192.0.0.8", "IETF"),
        ("192.0.2.1", "documentation"),
        ("192.88.99.1", "6to4 relay"),
        ("192.168.1.1", "192.168.0.0/16"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.254", "reserved"),
        ("255.255.255.255", "broadcast"),
    ];
    for (addr, expected) in cases {
        let range = forbidden_range(ip(addr)).unwrap_or_else(|| panic!("{addr} passed"));
        assert!(
            range.contains(expected),
            "{addr}: {range:?} does not mention {expected:?}"
        );
    }
}

#[test]
fn ipv4_range_edges_are_exact() {
    for addr in [
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "198.17.255.255",
    ] {
        assert_eq!(forbidden_range(ip(addr)), None, "{addr}");
    }
    for addr in [
        "192.0.1.1",
        "192.167.255.255",
        "192.169.0.0",
        "223.255.255.255",
        "11.0.0.0",
    ] {
        assert_eq!(forbidden_range(ip(addr)), None, "{addr}");
    }
}

#[test]
fn public_addresses_pass() {
    for addr in [
        "1.1.1.1",
        "8.8.8.8",
        "93.184.215.14",
        "151.101.1.69",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4007:80f::200e",
        // Embedding forms are judged by the IPv4 address inside.
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ] {
        assert_eq!(forbidden_range(ip(addr)), None, "{addr}");
    }
}

#[test]
fn every_reserved_ipv6_range_is_named() {
    let cases = [
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "10.0.0.0/8"),
        ("::127.0.0.1", "loopback"),
        ("::10.1.2.3", "10.0.0.0/8"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("64:ff9b:1::808:808", "local-use NAT64"),
        ("2002:7f00:1::", "loopback"),
        ("2002:a00:1::1", "10.0.0.0/8"),
        ("2002:c0a8:101::", "192.168.0.0/16"),
        ("2001::1", "Teredo"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("2001:2::1", "IETF"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("100::1", "discard"),
        ("fc00::1", "unique local"),
        ("fd12:3456:789a::1", "unique local"),
        ("fe80::1", "link-local"),
        ("febf:ffff::1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("ff05::1:3", "multicast"),
        ("4000::1", "not global unicast"),
    ];
    for (addr, expected) in cases {
        let range = forbidden_range(ip(addr)).unwrap_or_else(|| panic!("{addr} passed"));
        assert!(
            range.contains(expected),
            "{addr}: {range:?} does not mention {expected:?}"
        );
    }
}

#[test]
fn https_public_urls_are_accepted() {
    let strict = UrlPolicy::strict();
    for input in [
        "https://hooks.example.com/tocsin",
        "https://hooks.example.com:8443/a/b?token=xyz",
        "https://8.8.8.8/hook",
        "https://[2606:4700:4700::1111]/hook",
        "https://EXAMPLE.com/",
    ] {
        let url = WebhookUrl::parse(input, &strict).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(url.as_url().scheme(), "https");
    }
    assert_eq!(
        WebhookUrl::parse("https://EXAMPLE.com/", &strict)
            .unwrap()
            .as_str(),
        "https://example.com/"
    );
    assert_eq!(
        WebhookUrl::parse("https://8.8.8.8/", &strict)
            .unwrap()
            .literal_ip(),
        Some(ip("8.8.8.8"))
    );
    assert_eq!(
        WebhookUrl::parse("https://example.com/", &strict)
            .unwrap()
            .literal_ip(),
        None
    );
}

#[test]
fn every_attacker_form_of_an_internal_address_is_refused() {
    let strict = UrlPolicy::strict();
    let cases = [
        ("https://127.0.0.1/", "loopback"),
        ("https://127.1/", "loopback"),
        ("https://127.0.0.1./", "loopback"),
        ("https://[0:0:0:0:0:0:0:1]/", "loopback"),
        ("https://[::1]/", "loopback"),
        ("https://0.0.0.0/", "this network"),
        ("https://0/", "this network"),
        ("https://10.0.0.5/", "10.0.0.0/8"),
        ("https://172.16.3.4/", "172.16.0.0/12"),
        ("https://192.168.0.1/", "192.168.0.0/16"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://100.64.1.1/", "carrier-grade NAT"),
        ("https://2130706433/", "loopback"),
        ("https://0x7f000001/", "loopback"),
        ("https://0x7f.0.0.1/", "loopback"),
        ("https://0177.0.0.1/", "loopback"),
        ("https://017700000001/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[::ffff:7f00:1]/", "loopback"),
        ("https://[64:ff9b::7f00:1]/", "loopback"),
        ("https://[64:ff9b::127.0.0.1]/", "loopback"),
        ("https://[2002:7f00:1::]/", "loopback"),
        ("https://[fc00::1]/", "unique local"),
        ("https://[fd00::abcd]/", "unique local"),
        ("https://[fe80::1]/", "link-local"),
    ];
    for (input, expected) in cases {
        let reason = refused(input, &strict);
        assert!(reason.contains("forbidden range"), "{input}: {reason}");
        assert!(
            reason.contains(expected),
            "{input}: {reason:?} does not mention {expected:?}"
        );
    }
}

#[test]
fn internal_names_are_refused() {
    let strict = UrlPolicy::strict();
    for input in [
        "https://localhost/",
        "https://LOCALHOST./",
        "https://api.localhost/",
        "https://printer.local/",
        "https://metadata.google.internal/computeMetadata/v1/",
    ] {
        let reason = refused(input, &strict);
        assert!(reason.contains("private network"), "{input}: {reason}");
    }
    assert!(refused("https://intranet/", &strict).contains("single-label"));
}

#[test]
fn malformed_or_unsafe_urls_are_refused_with_a_reason() {
    let strict = UrlPolicy::strict();
    assert!(refused("http://hooks.example.com/", &strict).contains("https"));
    assert!(refused("http://127.0.0.1:8080/", &strict).contains("loopback"));
    assert!(refused("ftp://hooks.example.com/", &strict).contains("not ftp"));
    assert!(refused("file:///etc/passwd", &strict).contains("host"));
    assert!(refused("https://user:pw@hooks.example.com/", &strict).contains("credentials"));
    assert!(refused("https://user@hooks.example.com/", &strict).contains("credentials"));
    assert!(refused("https://hooks.example.com/#frag", &strict).contains("fragment"));
    assert!(refused("not a url", &strict).contains("not a valid URL"));
    assert!(refused("https://[::1/", &strict).contains("not a valid URL"));
    let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_LEN));
    assert!(refused(&long, &strict).contains("limit is 2048"));
    let just_fits = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_LEN - 26));
    assert_eq!(just_fits.len(), MAX_URL_LEN);
    WebhookUrl::parse(&just_fits, &strict).unwrap();
}

#[test]
fn the_allow_list_opens_exactly_what_it_names() {
    let dev = dev_policy();
    for input in [
        "http://127.0.0.1:8080/hook",
        "http://[::1]:8080/hook",
        "http://localhost:3000/",
        "http://LocalHost:3000/",
        "http://10.1.2.3/",
        "https://[::ffff:127.0.0.1]/",
    ] {
        WebhookUrl::parse(input, &dev).unwrap_or_else(|e| panic!("{input}: {e}"));
    }
    // Neighbours of the allowed entries stay refused, and http stays refused for public hosts.
    assert!(refused("http://127.0.0.2/", &dev).contains("loopback"));
    assert!(refused("https://127.0.0.2/", &dev).contains("loopback"));
    assert!(refused("https://10.2.0.1/", &dev).contains("10.0.0.0/8"));
    assert!(refused("https://api.localhost/", &dev).contains("private network"));
    assert!(refused("http://hooks.example.com/", &dev).contains("https"));
    // Credentials and fragments are refused even for allow-listed hosts.
    assert!(refused("http://u:p@127.0.0.1/", &dev).contains("credentials"));
}

#[test]
fn policy_matching_for_the_connect_time_guard() {
    let dev = dev_policy();
    assert!(dev.permits_ip(ip("127.0.0.1")));
    assert!(dev.permits_ip(ip("::ffff:127.0.0.1")));
    assert!(dev.permits_ip(ip("::1")));
    assert!(dev.permits_ip(ip("10.1.255.255")));
    assert!(!dev.permits_ip(ip("10.2.0.0")));
    assert!(!dev.permits_ip(ip("127.0.0.2")));
    assert!(dev.permits_host("localhost"));
    assert!(dev.permits_host("localhost."));
    assert!(dev.permits_host("[::1]"));
    assert!(!dev.permits_host("example.com"));

    let strict = UrlPolicy::default();
    assert!(strict.is_strict());
    assert!(!strict.permits_ip(ip("127.0.0.1")));
    assert!(!strict.permits_host("localhost"));
    assert!(!dev.is_strict());
}

#[test]
fn policy_entries_are_validated() {
    assert!(UrlPolicy::from_list("").unwrap().is_strict());
    assert!(UrlPolicy::strict().allow(" ").is_err());
    assert!(UrlPolicy::strict().allow("10.0.0.0/33").is_err());
    assert!(UrlPolicy::strict().allow("10.0.0/8").is_err());
    assert!(UrlPolicy::strict().allow("::/129").is_err());
    let any_v4 = UrlPolicy::strict().allow("0.0.0.0/0").unwrap();
    assert!(any_v4.permits_ip(ip("192.168.1.1")));
    assert!(!any_v4.permits_ip(ip("::1")));
    assert_eq!(
        "fd00::/8".parse::<IpNetwork>().unwrap().to_string(),
        "fd00::/8"
    );
}
