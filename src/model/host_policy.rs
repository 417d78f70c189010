//! Where cameras may be: an allow/deny list of networks (CIDRs) and host names, applied to the address camgate
//! actually connects to.
//!
//! A request names a camera URL, and camgate dials it from inside the network it sits in — which may hold the
//! gateway's own services (loopback), the cloud's metadata service (169.254.169.254, fd00:ec2::254) or other
//! machines no web page should reach. So by default the loopback, link-local, "this host" and cloud metadata
//! addresses are refused ([`HostPolicy::DEFAULT_DENY`]), and operators can allow or deny more.
//!
//! Rules:
//! - a **name rule** (`cam.example.com`, or `*.cams.example.com` for every name under it) matches the host name
//!   written in the URL and decides alone: an allowed name is trusted whatever it resolves to, a denied one is
//!   refused;
//! - otherwise every address the name resolves to is judged by the **network rules**: the most specific
//!   matching rule (longest prefix) wins, an allow on a tie (so allowing exactly a default-denied range, as test
//!   rigs do with `127.0.0.0/8`, opens it); an address no rule matches is allowed. `0.0.0.0/0` and `::/0` in
//!   `deny` turn the list into an allow-list.
//!
//! IPv4 addresses written as IPv6 (`::ffff:127.0.0.1`) are judged as the IPv4 address they are. The check is
//! made on the request (400 naming `ip` or `input`) and again on the addresses resolved when the camera
//! connects, and the connection is made to one of those very addresses, so a name that resolves elsewhere later
//! (DNS rebinding) is still caught.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(IpNet { addr: canonical(addr), prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One entry of an allow or deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// A network.
    Net(IpNet),
    /// A host name, lowercase; with `subdomains`, every name under it (written `*.example.com`).
    Name {
        /// The name.
        name: String,
        /// Whether names under it match too.
        subdomains: bool,
    },
}

impl HostRule {
    fn matches_name(&self, host: &str) -> bool {
        match self {
            HostRule::Name { name, subdomains: false } => host.eq_ignore_ascii_case(name),
            HostRule::Name { name, subdomains: true } => {
                host.len() > name.len() + 1
                    && host.to_ascii_lowercase().ends_with(name.as_str())
                    && host.as_bytes()[host.len() - name.len() - 1] == b'.'
            }
            HostRule::Net(_) => false,
        }
    }
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(s: &str) -> Result<HostRule, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(HostRule::Net(net));
        }
        let (name, subdomains) = match s.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        if !valid {
            return Err(format!("{s:?} is neither a CIDR network, an address, nor a host name (or *.name)"));
        }
        Ok(HostRule::Name { name: name.to_ascii_lowercase(), subdomains })
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostRule::Net(net) => write!(f, "{net}"),
            HostRule::Name { name, subdomains: true } => write!(f, "*.{name}"),
            HostRule::Name { name, subdomains: false } => f.write_str(name),
        }
    }
}

/// Why a camera host was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused: the name, or the address.
    pub host: String,
    /// The rule that refused it, as written.
    pub rule: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "camera host {} is refused by camera_hosts.deny {:?}", self.host, self.rule)
    }
}

/// What the name rules say about a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameVerdict {
    /// An allow rule names it: trusted, whatever it resolves to.
    Allowed,
    /// A deny rule names it.
    Refused(Refusal),
    /// No name rule: judge the addresses it resolves to.
    ByAddress,
}

/// The allow and deny lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    allow: Vec<HostRule>,
    deny: Vec<HostRule>,
}

impl Default for HostPolicy {
    /// [`DEFAULT_DENY`](Self::DEFAULT_DENY) and nothing allowed beyond what it leaves.
    fn default() -> Self {
        HostPolicy::new(&[], &Self::DEFAULT_DENY).expect("the built-in rules parse")
    }
}

impl HostPolicy {
    /// What is refused unless allowed: loopback, "this host", link-local (where cloud metadata services live),
    /// and the IPv6 address of AWS's metadata service.
    pub const DEFAULT_DENY: [&'static str; 7] =
        ["127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "::1/128", "::/128", "fe80::/10", "fd00:ec2::254/128"];

    /// A policy from written rules; errors name the rule.
    pub fn new<S: AsRef<str>>(allow: &[S], deny: &[S]) -> Result<HostPolicy, String> {
        let parse = |rules: &[S]| rules.iter().map(|r| r.as_ref().parse()).collect::<Result<Vec<HostRule>, String>>();
        Ok(HostPolicy { allow: parse(allow)?, deny: parse(deny)? })
    }

    /// A policy that allows every host (nothing denied). For tests of code that does not care.
    pub fn allow_all() -> HostPolicy {
        HostPolicy { allow: Vec::new(), deny: Vec::new() }
    }

    /// This policy with `rules` added to the allow list.
    pub fn allowing<S: AsRef<str>>(mut self, rules: &[S]) -> Result<HostPolicy, String> {
        for rule in rules {
            self.allow.push(rule.as_ref().parse()?);
        }
        Ok(self)
    }

    /// What the name rules say about `host` (a DNS name as written in a URL).
    pub fn check_name(&self, host: &str) -> NameVerdict {
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(rule) = self.deny.iter().find(|r| r.matches_name(host)) {
            return NameVerdict::Refused(Refusal { host: host.to_owned(), rule: rule.to_string() });
        }
        if self.allow.iter().any(|r| r.matches_name(host)) {
            return NameVerdict::Allowed;
        }
        NameVerdict::ByAddress
    }

    /// Whether camgate may connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(ip);
        fn best(rules: &[HostRule], ip: IpAddr) -> Option<(u8, &HostRule)> {
            rules
                .iter()
                .filter_map(|r| match r {
                    HostRule::Net(net) if net.contains(ip) => Some((net.prefix, r)),
                    _ => None,
                })
                .max_by_key(|(prefix, _)| *prefix)
        }
        match (best(&self.allow, ip), best(&self.deny, ip)) {
            (Some((allowed, _)), Some((denied, _))) if allowed >= denied => Ok(()),
            (_, Some((_, rule))) => Err(Refusal { host: ip.to_string(), rule: rule.to_string() }),
            _ => Ok(()),
        }
    }

    /// The rules, as written (for `check-config` and the docs).
    pub fn rules(&self) -> (Vec<String>, Vec<String>) {
        (self.allow.iter().map(ToString::to_string).collect(), self.deny.iter().map(ToString::to_string).collect())
    }
}

/// IPv4-mapped IPv6 addresses are the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Loopback, for test rigs and the demo: `127.0.0.0/8` and `::1`.
pub const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_refuses_loopback_link_local_and_metadata() {
        let policy = HostPolicy::default();
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "169.254.169.254",
            "::1",
            "::",
            "fe80::1",
            "::ffff:127.0.0.1",
            "fd00:ec2::254",
        ] {
            assert!(policy.check_ip(ip(bad)).is_err(), "{bad}");
        }
        for good in ["10.0.0.5", "192.168.1.64", "8.8.8.8", "2001:db8::1", "::ffff:10.0.0.5"] {
            assert!(policy.check_ip(ip(good)).is_ok(), "{good}");
        }
        assert_eq!(policy.check_ip(ip("169.254.169.254")).unwrap_err().rule, "169.254.0.0/16");
    }

    #[test]
    fn the_most_specific_rule_wins_and_allow_wins_a_tie() {
        let policy = HostPolicy::new(&["10.1.0.0/16"], &["0.0.0.0/0", "10.1.2.0/24"]).unwrap();
        assert!(policy.check_ip(ip("10.1.9.9")).is_ok(), "allowed subnet");
        assert!(policy.check_ip(ip("10.1.2.3")).is_err(), "a denied hole in it");
        assert!(policy.check_ip(ip("10.2.0.1")).is_err(), "everything else, with 0.0.0.0/0 denied");
    }

    #[test]
    fn allowing_loopback_opens_exactly_loopback() {
        // What test rigs run with: CAMGATE_ALLOW_CAMERA_HOSTS=127.0.0.0/8.
        let rig = HostPolicy::default().allowing(&["127.0.0.0/8"]).unwrap();
        assert!(rig.check_ip(ip("127.0.0.1")).is_ok());
        assert!(rig.check_ip(ip("::ffff:127.0.0.1")).is_ok());
        assert!(rig.check_ip(ip("::1")).is_err(), "IPv6 loopback stays refused");
        assert!(rig.check_ip(ip("169.254.169.254")).is_err());
    }

    #[test]
    fn names_decide_before_addresses() {
        let policy = HostPolicy::new(&["cams.example.com"], &["*.internal", "metadata.google.internal"]).unwrap();
        assert_eq!(policy.check_name("cams.example.com"), NameVerdict::Allowed);
        assert!(matches!(policy.check_name("db.internal"), NameVerdict::Refused(_)));
        assert!(matches!(policy.check_name("Metadata.Google.Internal."), NameVerdict::Refused(_)));
        assert_eq!(policy.check_name("internal"), NameVerdict::ByAddress, "*.x does not match x itself");
        assert_eq!(policy.check_name("cam1.example.com"), NameVerdict::ByAddress);
    }

    #[test]
    fn rules_parse_or_say_why_not() {
        for good in ["10.0.0.0/8", "10.0.0.5", "::1", "fe80::/10", "cam.local", "*.cams.example.com"] {
            assert!(good.parse::<HostRule>().is_ok(), "{good}");
        }
        for bad in ["10.0.0.0/33", "::/129", "", "a b", "*.", "http://x", "10.0.0.0/x"] {
            assert!(bad.parse::<HostRule>().is_err(), "{bad}");
        }
    }
}
