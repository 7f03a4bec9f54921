//! `[gateway]` and `[[node]]`: the cluster's members, their names and addresses, and the check
//! that no two of them (nor anything a section outside the runtime listens on) share a port.
//!
//! ```text
//! every [[node]], then [gateway] ─▶ name valid, unique ─▶ host, ops_host are IPs
//!                                 ─▶ cluster / ops / http port claimed in Ports ─▶ Member
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// `[gateway]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Process name in the cluster.
    #[serde(default = "default_gateway_name")]
    pub name: String,
    /// IP address every gateway port binds to.
    pub host: String,
    /// Port of the public HTTP API.
    pub http_port: u16,
    /// Port for cluster traffic.
    pub cluster_port: u16,
    /// Port of `/metrics`, `/health`, `/ready`.
    pub ops_port: u16,
    /// IP address the ops port binds to; default: `host` when it is loopback, else 127.0.0.1.
    #[serde(default)]
    pub ops_host: Option<String>,
}

/// `[[node]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Unique node name: lower-case letters, digits and `-`.
    pub name: String,
    /// Where peers reach the node: an IP address (it also binds it), or a DNS name (resolved
    /// again whenever it is dialled, so a node that restarts with a new address is found; give
    /// `bind_host` then).
    pub host: String,
    /// IP address the node binds (e.g. "0.0.0.0" in a container); default: `host`.
    #[serde(default)]
    pub bind_host: Option<String>,
    /// Port for cluster traffic.
    pub cluster_port: u16,
    /// Port of `/metrics`, `/health`, `/ready`.
    pub ops_port: u16,
    /// IP address the ops port binds to; default: `host` when it is loopback, else 127.0.0.1.
    #[serde(default)]
    pub ops_host: Option<String>,
}

fn default_gateway_name() -> String {
    "gateway".to_string()
}

/// What a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Hosts shards.
    Node,
    /// Routes HTTP requests; hosts no shards.
    Gateway,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Gateway => "gateway",
        }
    }
}

/// One process of the cluster, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique name.
    pub name: String,
    /// Node or gateway.
    pub role: Role,
    /// Where peers dial it: an IP address or a DNS name (`host` as written).
    pub host: String,
    /// Cluster transport address it binds.
    pub cluster_addr: SocketAddr,
    /// Ops endpoint address.
    pub ops_addr: SocketAddr,
}

/// A member name: 1 to 32 lower-case letters, digits and `-`, starting with a letter.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Who listens on which address: `node "n1" (cluster)`.
#[derive(Debug, Default)]
pub(super) struct Ports(HashMap<SocketAddr, String>);

impl Ports {
    /// The name of whoever listens on `addr` (`node "n1"`), if anyone does.
    pub(super) fn owner(&self, addr: &SocketAddr) -> Option<&str> {
        let owner = self.0.get(addr)?;
        Some(owner.split(" (").next().unwrap_or(owner))
    }

    /// Claims `port` on `ip` for `label`'s `what` port; `None` (with the problem) when it is 0
    /// or taken, or when the address is unknown. A member on a machine of its own (`own`) only
    /// has its port checked: it shares no address with the others.
    fn claim(
        &mut self,
        label: &str,
        what: &str,
        (ip, own): (Option<IpAddr>, bool),
        port: u16,
        problems: &mut Vec<String>,
    ) -> Option<SocketAddr> {
        if port == 0 {
            problems.push(format!("{label}: {what} port must not be 0"));
            return None;
        }
        let addr = SocketAddr::new(ip?, port);
        if own {
            return Some(addr);
        }
        if let Some(owner_name) = self.owner(&addr) {
            problems.push(format!(
                "{label}: {what} port {port} already used by {owner_name}"
            ));
            return None;
        }
        self.0.insert(addr, format!("{label} ({what})"));
        Some(addr)
    }
}

/// One process as written, whichever table it comes from.
struct Endpoint<'a> {
    label: String,
    name: &'a String,
    host: &'a String,
    bind_host: Option<&'a String>,
    role: Role,
    cluster_port: u16,
    ops_port: u16,
    ops_host: &'a Option<String>,
    http_port: Option<u16>,
}

impl<'a> Endpoint<'a> {
    fn node(n: &'a RawNode) -> Self {
        Endpoint {
            label: format!("node \"{}\"", n.name),
            name: &n.name,
            host: &n.host,
            bind_host: n.bind_host.as_ref(),
            role: Role::Node,
            cluster_port: n.cluster_port,
            ops_port: n.ops_port,
            ops_host: &n.ops_host,
            http_port: None,
        }
    }

    fn gateway(g: &'a RawGateway) -> Self {
        Endpoint {
            label: format!("gateway \"{}\"", g.name),
            name: &g.name,
            host: &g.host,
            bind_host: None,
            role: Role::Gateway,
            cluster_port: g.cluster_port,
            ops_port: g.ops_port,
            ops_host: &g.ops_host,
            http_port: Some(g.http_port),
        }
    }

    /// True when `host` is a DNS name (only a node's may be).
    fn named(&self) -> bool {
        self.host.parse::<IpAddr>().is_err()
    }

    /// The address it binds (`bind_host`, else `host`); 127.0.0.254 is refused.
    fn ip(&self, problems: &mut Vec<String>) -> Option<IpAddr> {
        let label = &self.label;
        if self.named() {
            let dns_ok = self.role == Role::Node
                && self.host.len() <= 253
                && self.host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !dns_ok {
                let what = if self.role == Role::Node {
                    "an IP address or a DNS name"
                } else {
                    "an IP address"
                };
                problems.push(format!("{label}: host \"{}\" is not {what}", self.host));
                return None;
            }
            if self.bind_host.is_none() && self.host != "localhost" {
                problems.push(format!(
                    "{label}: host \"{}\" is a DNS name: give bind_host, the IP address the node binds (e.g. \"0.0.0.0\")",
                    self.host
                ));
                return None;
            }
        }
        let host = match self.bind_host {
            Some(b) => b.as_str(),
            // `localhost` binds loopback.
            None if self.host == "localhost" => "127.0.0.1",
            None => self.host.as_str(),
        };
        let Ok(ip) = host.parse::<IpAddr>() else {
            problems.push(format!(
                "{label}: bind_host \"{host}\" is not an IP address"
            ));
            return None;
        };
        if ip == IpAddr::from([127, 0, 0, 254]) {
            problems.push(format!(
                "{label}: host 127.0.0.254 is reserved (each process parks an internal listener there)"
            ));
        }
        Some(ip)
    }

    /// The ops port (metrics, health, views) stays on loopback unless named otherwise.
    fn ops_ip(&self, ip: Option<IpAddr>, problems: &mut Vec<String>) -> Option<IpAddr> {
        match self.ops_host {
            Some(h) => match h.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    problems.push(format!(
                        "{}: ops_host \"{h}\" is not an IP address",
                        self.label
                    ));
                    None
                }
            },
            None => ip.map(|ip| {
                if ip.is_loopback() {
                    ip
                } else {
                    IpAddr::from([127, 0, 0, 1])
                }
            }),
        }
    }
}

/// The members as checked: nodes in file order, then the gateway (absent when it has problems).
#[derive(Debug, Default)]
pub(super) struct Placed {
    /// Every member without a problem in its addresses, nodes first, the gateway last.
    pub members: Vec<Member>,
    /// The gateway's HTTP address.
    pub gateway_http: Option<SocketAddr>,
    /// Every address claimed so far.
    pub ports: Ports,
    /// Every member's host address (for the loopback-only rules).
    pub ips: Vec<IpAddr>,
}

/// Checks every node and the gateway: names, addresses, ports.
pub(super) fn validate(
    nodes: &[RawNode],
    gateway: &RawGateway,
    problems: &mut Vec<String>,
) -> Placed {
    if nodes.is_empty() {
        problems.push("node: at least one [[node]] is required".to_string());
    }
    let mut placed = Placed::default();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let endpoints = nodes
        .iter()
        .map(Endpoint::node)
        .chain(std::iter::once(Endpoint::gateway(gateway)));
    for (i, e) in endpoints.enumerate() {
        let label = &e.label;
        if !valid_name(e.name) {
            problems.push(format!(
                "{label}: name must be 1-32 characters of a-z, 0-9 and '-', starting with a letter"
            ));
        }
        if names.insert(e.name.as_str(), i).is_some() {
            problems.push(format!("{label}: name is used more than once"));
        }
        let ip = e.ip(problems);
        placed.ips.extend(ip);
        if e.named() && e.host != "localhost" {
            // Reached by name: never a loopback-only member.
            placed.ips.push(IpAddr::from([0, 0, 0, 0]));
        }
        let ops_ip = e.ops_ip(ip, problems);
        let ports = &mut placed.ports;
        // A member binding every address of its own machine (reached by name) shares no
        // ports with the others: their machines are other ones.
        let own_machine = e.named() && ip.is_some_and(|ip| ip.is_unspecified());
        let cluster_addr = ports.claim(
            label,
            "cluster",
            (ip, own_machine),
            e.cluster_port,
            problems,
        );
        let ops_own = own_machine && ops_ip.is_some_and(|ip| ip.is_unspecified());
        let ops_addr = ports.claim(label, "ops", (ops_ip, ops_own), e.ops_port, problems);
        if let Some(p) = e.http_port {
            placed.gateway_http = ports.claim(label, "http", (ip, false), p, problems);
        }
        if let (Some(cluster_addr), Some(ops_addr)) = (cluster_addr, ops_addr) {
            placed.members.push(Member {
                name: e.name.clone(),
                role: e.role,
                host: e.host.clone(),
                cluster_addr,
                ops_addr,
            });
        }
    }
    placed
}
