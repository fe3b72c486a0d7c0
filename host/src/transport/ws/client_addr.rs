//! The client's address behind trusted proxies: from a peer listed in
//! `trusted_proxies`, the address a load balancer reports in `Forwarded`
//! (RFC 7239) or, without it, `X-Forwarded-For`; from any other peer, the
//! peer itself. The list is read from the right (the hop nearest to Wharf),
//! skipping trusted proxies: the first address that is not one is the
//! client's, so a client cannot choose its address by sending the header
//! itself (anything it wrote lies to the left of what the proxies added).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From CIDRs (`10.0.0.0/8`) or single addresses (`127.0.0.1`, `::1`);
    /// the error names the entry that is neither.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, (usize, String)> {
        let nets = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| (i, format!("`{e}` is not an address or a CIDR block (e.g. 10.0.0.0/8)")))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies(nets))
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client's address for a request from `peer` with `headers`; the
    /// port is 0 when the proxy did not say it.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let hops = forwarded(headers).or_else(|| x_forwarded_for(headers)).unwrap_or_default();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(addr) => {
                    client = *addr;
                    if !self.trusts(addr.ip()) {
                        break;
                    }
                }
                // An address the proxy hid or wrote badly: the hop that
                // reported it is as far as the chain can be believed.
                None => break,
            }
        }
        client
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The `for=` of every element of every `Forwarded` header, in order;
/// `None` without the header.
fn forwarded(headers: &HeaderMap) -> Option<Vec<Option<SocketAddr>>> {
    let mut out = Vec::new();
    let mut any = false;
    for value in headers.get_all(http::header::FORWARDED) {
        any = true;
        let Ok(value) = value.to_str() else {
            out.push(None);
            continue;
        };
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim().trim_matches('"'))
            });
            if let Some(node) = node {
                out.push(node_addr(node));
            }
        }
    }
    any.then_some(out)
}

/// The addresses of every `X-Forwarded-For` header, in order; `None`
/// without the header.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<SocketAddr>>> {
    let mut out = Vec::new();
    let mut any = false;
    for value in headers.get_all("x-forwarded-for") {
        any = true;
        match value.to_str() {
            Ok(v) => out.extend(v.split(',').map(|a| node_addr(a.trim()))),
            Err(_) => out.push(None),
        }
    }
    any.then_some(out)
}

/// `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1`, `[2001:db8::1]:4711`;
/// `None` for `unknown`, an obfuscated name (`_hidden`) or garbage.
fn node_addr(node: &str) -> Option<SocketAddr> {
    if let Ok(a) = node.parse::<SocketAddr>() {
        return Some(SocketAddr::new(canonical(a.ip()), a.port()));
    }
    let bare = node.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(node);
    let ip: IpAddr = bare.parse().ok()?;
    Some(SocketAddr::new(canonical(ip), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let t = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(t.client(addr("10.1.2.3:5000"), &h), addr("203.0.113.7:0"));
        assert_eq!(t.client(addr("127.0.0.1:5000"), &h), addr("203.0.113.7:0"));
        assert_eq!(t.client(addr("192.0.2.1:5000"), &h), addr("192.0.2.1:5000"), "an untrusted peer is the client");
        assert_eq!(TrustedProxies::default().client(addr("10.1.2.3:5000"), &h), addr("10.1.2.3:5000"));
        assert_eq!(t.client(addr("10.1.2.3:5000"), &HeaderMap::new()), addr("10.1.2.3:5000"), "no header: the peer");
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = proxies(&["10.0.0.0/8"]);
        // A client that forges the header only adds to the left.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.5")]);
        assert_eq!(t.client(addr("10.0.0.9:1"), &h), addr("203.0.113.7:0"));
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "203.0.113.8")]);
        assert_eq!(t.client(addr("10.0.0.9:1"), &h), addr("203.0.113.8:0"), "several headers are one list");
        let h = headers(&[("x-forwarded-for", "10.0.0.1, 10.0.0.2")]);
        assert_eq!(t.client(addr("10.0.0.9:1"), &h), addr("10.0.0.1:0"), "all trusted: the farthest");
        let h = headers(&[("x-forwarded-for", "203.0.113.7, unknown, 10.0.0.2")]);
        assert_eq!(t.client(addr("10.0.0.9:1"), &h), addr("10.0.0.2:0"), "a hidden hop ends the chain");
    }

    #[test]
    fn reads_forwarded_before_x_forwarded_for() {
        let t = proxies(&["10.0.0.0/8", "::1"]);
        let h = headers(&[
            ("forwarded", "for=1.1.1.1, for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.3"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(t.client(addr("[::1]:9"), &h), addr("[2001:db8::7]:4711"));
        let h = headers(&[("forwarded", "for=_hidden;by=10.0.0.1")]);
        assert_eq!(t.client(addr("10.0.0.9:1"), &h), addr("10.0.0.9:1"));
        let h = headers(&[("forwarded", "For=\"198.51.100.2\"")]);
        assert_eq!(t.client(addr("[::ffff:10.0.0.9]:1"), &h), addr("198.51.100.2:0"), "IPv4 as IPv6 is IPv4");
    }

    #[test]
    fn a_bad_entry_is_named() {
        let entries = vec!["10.0.0.0/8".to_string(), "not-an-ip".to_string()];
        let (i, why) = TrustedProxies::parse(&entries).unwrap_err();
        assert_eq!(i, 1);
        assert!(why.contains("not-an-ip"), "{why}");
        assert!(proxies(&["::1/128", "192.168.0.1"]).trusts("192.168.0.1".parse().unwrap()));
    }
}
