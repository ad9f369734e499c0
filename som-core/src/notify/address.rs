//! Where webhooks may go: public addresses only, unless the operator allows private ones
//! (`SOM_WEBHOOK_ALLOW_PRIVATE=1`), so that an endpoint's URL cannot make SOM call into the
//! network it runs in (server-side request forgery). The check runs on every address a name
//! resolves to, at the moment of the call (a name that resolved to a public address when the
//! endpoint was made may resolve to a private one later).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Every refusal's message contains this, so that a refusal can be told from a network failure.
pub const REFUSED: &str = "is refused";

/// Why an address is refused, or `None` when it is public.
pub fn private_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address written as IPv6 (::ffff:10.0.0.1, ::10.0.0.1, 64:ff9b::10.0.0.1)
            // reaches the IPv4 host: judge that one.
            if let Some(v4) = embedded_v4(v6) {
                return v4_kind(v4);
            }
            v6_kind(v6)
        }
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("a broadcast, multicast or reserved address")
    } else if (a == 192 && b == 0 && c == 0) || (a == 198 && (18..20).contains(&b)) {
        Some("a special-purpose address")
    } else if ip.is_documentation() {
        Some("a documentation address")
    } else {
        None
    }
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("a documentation address")
    } else if first == 0x2001 && ip.segments()[1] == 0 {
        // Teredo: an IPv4 address (obfuscated) tunnelled through a relay.
        Some("a Teredo tunnel address")
    } else {
        None
    }
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // IPv4-compatible (::a.b.c.d, deprecated but routable by some stacks), NAT64 (64:ff9b::/96).
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(low);
    }
    // NAT64, the well-known prefix (64:ff9b::/96) and the local-use one (64:ff9b:1::/48).
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1) {
        return Some(low);
    }
    // 6to4 (2002::/16): the IPv4 address is in bits 16-47.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// Whether `ip` may be called: any address when `allow_private`, otherwise public ones.
/// Unspecified and multicast addresses are never called.
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    match private_kind(ip) {
        None => Ok(()),
        Some(kind) if kind.starts_with("an unspecified") || kind.contains("multicast") => {
            Err(format!("{ip} {REFUSED}: it is {kind}, which is never called"))
        }
        Some(_) if allow_private => Ok(()),
        Some(kind) => Err(format!("{ip} {REFUSED}: it is {kind}; set SOM_WEBHOOK_ALLOW_PRIVATE=on to allow it")),
    }
}

/// The addresses `host` resolves to that may be called; an error when there are none (naming
/// the first refused one).
pub async fn resolve_allowed(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host} could not be resolved: {e}"))?
        .collect();
    let mut refused = None;
    let allowed: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| match check_ip(a.ip(), allow_private) {
            Ok(()) => true,
            Err(why) => {
                refused.get_or_insert(why);
                false
            }
        })
        .collect();
    if allowed.is_empty() {
        return Err(match refused {
            Some(why) => format!("{host} resolves to {why}"),
            None => format!("{host} resolves to no address"),
        });
    }
    Ok(allowed)
}

/// Whether `host` (a URL's host) names this machine: `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.to_ascii_lowercase().ends_with(".localhost")
        || bare
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || embedded_v4(ip_v6(ip)).is_some_and(|v| v.is_loopback()))
}

fn ip_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A resolver for the webhook client that drops the addresses it may not call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs = resolve_allowed(name.as_str(), 0, allow).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_refused() {
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(check_ip(ip(refused), false).is_err(), "{refused} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(check_ip(ip(public), false), Ok(()), "{public}");
        }
    }

    #[test]
    fn allowing_private_addresses_still_never_calls_unspecified_or_multicast_ones() {
        for allowed in ["127.0.0.1", "10.0.0.1", "::1", "fe80::1", "::ffff:192.168.0.1"] {
            assert_eq!(check_ip(ip(allowed), true), Ok(()), "{allowed}");
        }
        for never in ["0.0.0.0", "::", "224.0.0.1", "ff02::1"] {
            assert!(check_ip(ip(never), true).is_err(), "{never}");
        }
        let refused = check_ip(ip("10.1.2.3"), false).unwrap_err();
        assert!(refused.contains("SOM_WEBHOOK_ALLOW_PRIVATE") && refused.contains(REFUSED), "{refused}");
    }

    #[tokio::test]
    async fn names_are_judged_by_every_address_they_resolve_to() {
        // `localhost` resolves (from /etc/hosts, without a DNS server) to loopback addresses.
        let refused = resolve_allowed("localhost", 443, false).await.unwrap_err();
        assert!(refused.contains("loopback"), "{refused}");
        let allowed = resolve_allowed("localhost", 443, true).await.unwrap();
        assert!(allowed.iter().all(|a| a.ip().is_loopback() && a.port() == 443));
        // An address literal resolves to itself.
        assert!(resolve_allowed("10.0.0.7", 80, false).await.unwrap_err().contains("private"));
        assert!(resolve_allowed("::ffff:127.0.0.1", 80, false).await.is_err());
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for local in ["localhost", "LOCALHOST", "api.localhost", "127.0.0.1", "[::1]", "::ffff:127.0.0.1"] {
            assert!(is_loopback_host(local), "{local}");
        }
        for remote in ["example.com", "10.0.0.1", "localhost.example.com", "[fe80::1]"] {
            assert!(!is_loopback_host(remote), "{remote}");
        }
    }
}
