//! A node that is not one of nodes.toml's seeds: it joins a running cluster through them
//! (`keelson node --name n5 --host 127.0.0.1 --cluster-port 4705 --ops-port 9106`). Its
//! address comes from the command line, checked here like a `[[node]]` entry would be.

use std::net::{IpAddr, SocketAddr};

use super::{valid_name, ClusterConfig, Member, Role};

/// Where a joining node listens and what it tells the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joining {
    /// The node, with the addresses it binds.
    pub member: Member,
    /// The host name or IP address peers dial (`--advertise-host`; default: the bind host).
    pub advertise_host: String,
}

impl ClusterConfig {
    /// This configuration, run as `name`, a node that joins through the seeds: binds `host`
    /// (an IP address) on the two ports, tells peers to dial `advertise` (a DNS name or an IP
    /// address; default `host`). Says which argument is wrong and why.
    pub fn join_as(
        mut self,
        name: &str,
        host: &str,
        advertise: Option<&str>,
        cluster_port: u16,
        ops_port: u16,
    ) -> Result<Self, String> {
        if !valid_name(name) {
            return Err(format!(
                "--name {name:?}: a node name is 1 to 32 lower-case letters, digits and '-', starting with a letter"
            ));
        }
        if self.members().any(|m| m.name == name) {
            return Err(format!(
                "--name {name}: \"{name}\" is already in the config file; start it without --host, or pick another name"
            ));
        }
        let ip: IpAddr = host.parse().map_err(|_| {
            format!("--host {host:?}: the address to bind must be an IP address (give a DNS name as --advertise-host)")
        })?;
        for (flag, port) in [("--cluster-port", cluster_port), ("--ops-port", ops_port)] {
            if port == 0 {
                return Err(format!("{flag} 0: give the port to listen on (1-65535)"));
            }
        }
        if cluster_port == ops_port {
            return Err(format!("--cluster-port and --ops-port are both {ops_port}"));
        }
        let member = Member {
            name: name.to_string(),
            role: Role::Node,
            host: advertise.unwrap_or(host).to_string(),
            cluster_addr: SocketAddr::new(ip, cluster_port),
            ops_addr: SocketAddr::new(ip, ops_port),
        };
        // Members reached by name that bind every address are on machines of their own.
        let elsewhere =
            |m: &Member| m.host.parse::<IpAddr>().is_err() && m.cluster_addr.ip().is_unspecified();
        for m in self.members().filter(|m| !elsewhere(m)) {
            for taken in [m.cluster_addr, m.ops_addr] {
                if taken == member.cluster_addr || taken == member.ops_addr {
                    return Err(format!(
                        "{taken} is already {}'s in the config file",
                        m.name
                    ));
                }
            }
        }
        let advertise_host = advertise.unwrap_or(host).to_string();
        if advertise_host.is_empty()
            || advertise_host.len() > 253
            || !advertise_host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(format!(
                "--advertise-host {advertise_host:?}: give a DNS name or an IP address"
            ));
        }
        self.joining = Some(Joining {
            member,
            advertise_host,
        });
        Ok(self)
    }

    /// The node named `name`: a seed of the file, or the joining node.
    pub fn node(&self, name: &str) -> Option<&Member> {
        self.nodes
            .iter()
            .chain(self.joining.as_ref().map(|j| &j.member))
            .find(|n| n.name == name)
    }
}
