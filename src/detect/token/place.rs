//! Where a request came from: which `sourceIPs` entry to believe, and what
//! that address is to the cluster (its pod network, a node, a trusted
//! address, or outside).
//!
//! `sourceIPs` lists the X-Forwarded-For values first and the connection's
//! remote address last. Only the last is what the API server saw; the
//! others are whatever the client wrote. The address used is the rightmost
//! entry that is not a configured trusted proxy, so a stolen token cannot
//! pass as internal by sending `X-Forwarded-For: 10.244.1.5`.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::ClusterConfig;

/// The address a request is attributed to, and the forwarded-for values
/// the client added before it (left to right).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub addr: IpAddr,
    pub forwarded: Vec<IpAddr>,
}

/// Picks the address to believe from `sourceIPs`. Unparseable entries are
/// client-written text and are skipped; when every entry is a trusted
/// proxy, the leftmost is the client.
pub fn pick(source_ips: &[impl AsRef<str>], proxies: &[IpNet]) -> Option<Source> {
    let ips: Vec<IpAddr> = source_ips
        .iter()
        .filter_map(|s| s.as_ref().trim().parse::<IpAddr>().ok())
        // `::ffff:10.244.1.5` is 10.244.1.5 (some envelopes write it so).
        .map(|ip| ip.to_canonical())
        .collect();
    let pos = ips
        .iter()
        .rposition(|ip| !proxies.iter().any(|n| n.contains(ip)))
        .or(if ips.is_empty() { None } else { Some(0) })?;
    Some(Source {
        addr: ips[pos],
        forwarded: ips[..pos].to_vec(),
    })
}

/// A cluster's networks, as the detectors ask about them.
pub struct Networks<'c> {
    cfg: Option<&'c ClusterConfig>,
}

impl<'c> Networks<'c> {
    pub fn new(cfg: Option<&'c ClusterConfig>) -> Self {
        Networks { cfg }
    }

    fn configured(&self) -> bool {
        self.cfg.is_some_and(ClusterConfig::has_networks)
    }

    /// Some networks configured, but not both the pod and the node ones.
    fn partial(&self) -> bool {
        self.cfg
            .is_some_and(|c| c.pod_cidrs.is_empty() || c.node_cidrs.is_empty())
    }

    fn any(nets: Option<&[IpNet]>, addr: &IpAddr) -> bool {
        nets.is_some_and(|n| n.iter().any(|n| n.contains(addr)))
    }

    /// Allowed to use service-account tokens although outside the cluster.
    pub fn trusted(&self, addr: &IpAddr) -> bool {
        Self::any(self.cfg.map(|c| &c.trusted_cidrs[..]), addr)
    }

    /// In the pod networks: the configured pod CIDRs; with no pod CIDRs
    /// configured, any internal address could be a pod's.
    pub fn pod(&self, addr: &IpAddr) -> bool {
        match self.cfg {
            Some(c) if !c.pod_cidrs.is_empty() => Self::any(Some(&c.pod_cidrs), addr),
            _ => self.internal(addr) && !self.trusted(addr),
        }
    }

    /// Could be a node's address: in the node CIDRs, or with none
    /// configured, an internal address outside the pod and service CIDRs.
    /// Only such addresses are learned as a node's (a node credential used
    /// from the internet must not teach that the internet is the node).
    pub fn node_candidate(&self, addr: &IpAddr) -> bool {
        match self.cfg {
            Some(c) if !c.node_cidrs.is_empty() => Self::any(Some(&c.node_cidrs), addr),
            Some(c) => {
                self.internal(addr)
                    && !Self::any(Some(&c.pod_cidrs), addr)
                    && !Self::any(Some(&c.service_cidrs), addr)
                    && !self.trusted(addr)
            }
            None => self.internal(addr),
        }
    }

    /// Inside the cluster: loopback (the control plane's own clients), the
    /// configured pod, node and service networks, or, with none
    /// configured, the private ranges. Trusted addresses are not internal;
    /// they are trusted.
    pub fn internal(&self, addr: &IpAddr) -> bool {
        if addr.is_loopback() {
            return true;
        }
        match self.cfg {
            Some(c) if self.configured() => {
                Self::any(Some(&c.pod_cidrs), addr)
                    || Self::any(Some(&c.node_cidrs), addr)
                    || Self::any(Some(&c.service_cidrs), addr)
                    // Pods or nodes not configured: where they live is
                    // unknown, so the private ranges still count.
                    || (self.partial() && private(addr))
            }
            _ => private(addr),
        }
    }

    /// A sentence on what counts as internal, for a finding's details.
    pub fn describe(&self) -> &'static str {
        if self.configured() && self.partial() {
            "the configured networks and the private address ranges (pod or node networks not configured)"
        } else if self.configured() {
            "the configured pod, node and service networks"
        } else {
            "the private address ranges (no networks configured for this cluster)"
        }
    }
}

/// RFC 1918, shared address space (RFC 6598, used by some CNIs and GKE),
/// link-local, IPv6 unique-local and link-local.
pub fn private(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private() || a.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            let s = a.segments()[0];
            (s & 0xfe00) == 0xfc00
                || (s & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped()
                    .is_some_and(|v4| private(&IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_net;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rightmost_untrusted_address_is_used() {
        let proxies = vec![parse_net("10.0.255.0/24").unwrap()];
        // A client claiming an internal address through X-Forwarded-For.
        let s = pick(&["10.244.1.5", "203.0.113.9"], &proxies).unwrap();
        assert_eq!(s.addr, ip("203.0.113.9"));
        assert_eq!(s.forwarded, vec![ip("10.244.1.5")]);
        // Behind a trusted proxy, the address the proxy saw.
        let s = pick(&["10.244.1.5", "198.51.100.7", "10.0.255.3"], &proxies).unwrap();
        assert_eq!(s.addr, ip("198.51.100.7"));
        // No proxies configured: the forwarded value is never believed.
        let s = pick(&["198.51.100.7", "10.0.255.3"], &[]).unwrap();
        assert_eq!(s.addr, ip("10.0.255.3"));
        assert_eq!(pick(&["not-an-ip"], &proxies), None);
        assert_eq!(
            pick(&["10.0.255.3"], &proxies).unwrap().addr,
            ip("10.0.255.3")
        );
        assert_eq!(
            pick(&["::ffff:10.244.1.5"], &[]).unwrap().addr,
            ip("10.244.1.5")
        );
    }

    #[test]
    fn classification_with_and_without_networks() {
        let none = Networks::new(None);
        assert!(none.internal(&ip("10.1.2.3")) && none.internal(&ip("100.64.0.1")));
        assert!(none.internal(&ip("fd00::1")) && none.internal(&ip("::1")));
        assert!(!none.internal(&ip("203.0.113.9")) && !none.internal(&ip("100.128.0.1")));
        let cfg = crate::config::ClusterConfig {
            pod_cidrs: vec![parse_net("10.244.0.0/16").unwrap()],
            node_cidrs: vec![parse_net("10.0.0.0/20").unwrap()],
            trusted_cidrs: vec![parse_net("192.0.2.10").unwrap()],
            ..Default::default()
        };
        let n = Networks::new(Some(&cfg));
        assert!(n.pod(&ip("10.244.3.4")) && !n.pod(&ip("10.0.0.4")));
        assert!(n.node_candidate(&ip("10.0.0.4")) && !n.node_candidate(&ip("10.244.3.4")));
        // Configured networks replace the private ranges.
        assert!(!n.internal(&ip("172.16.0.1")));
        // Only pods configured: nodes may be anywhere private.
        let pods_only = crate::config::ClusterConfig {
            pod_cidrs: vec![parse_net("10.244.0.0/16").unwrap()],
            ..Default::default()
        };
        let p = Networks::new(Some(&pods_only));
        assert!(p.internal(&ip("10.0.1.11")) && p.node_candidate(&ip("10.0.1.11")));
        assert!(!p.node_candidate(&ip("10.244.1.1")) && !p.internal(&ip("203.0.113.1")));
        assert!(n.trusted(&ip("192.0.2.10")) && !n.internal(&ip("192.0.2.10")));
    }
}
