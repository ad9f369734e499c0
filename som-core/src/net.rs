//! Network addresses: the CIDR ranges operators name trusted proxies with.

/// Parses `10.0.0.1`, `10.0.0.0/8`, `::1` or `fd00::/8` into a network address and prefix length.
pub fn parse_cidr(raw: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, prefix) = match raw.trim().split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (raw.trim(), None),
    };
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
        None => max,
    };
    Some((addr, prefix))
}

/// Whether `ip` lies in the network `(net, prefix)`. IPv4-mapped IPv6 addresses count as IPv4.
pub fn cidr_contains((net, prefix): (std::net::IpAddr, u8), ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let bits = |a: IpAddr| match a {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32u32),
        IpAddr::V6(v6) => (u128::from(v6), 128u32),
    };
    let ((n, n_len), (i, i_len)) = (bits(net), bits(ip));
    if n_len != i_len {
        return false;
    }
    let prefix = u32::from(prefix).min(n_len);
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    n & mask == i & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_v4_mapped_too() {
        let net = parse_cidr("10.0.0.0/8").unwrap();
        assert!(cidr_contains(net, "10.1.2.3".parse().unwrap()));
        assert!(cidr_contains(net, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!cidr_contains(net, "11.0.0.1".parse().unwrap()));
        assert!(cidr_contains(parse_cidr("fd00::/8").unwrap(), "fd12::1".parse().unwrap()));
        assert!(cidr_contains(parse_cidr("0.0.0.0/0").unwrap(), "1.2.3.4".parse().unwrap()));
    }
}
