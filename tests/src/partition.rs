//! [`Partition`]: a network namespace of the test's own, joined to this one by a veth pair, for
//! hosts whose network a test can cut for real and restore. (Unlike [`crate::netns`], whose
//! namespace nothing outside can reach, this one is reachable until it is cut.)
//!
//! The namespace side of the pair carries the hosts' addresses; this side carries one address
//! of the same /24, so the kernel routes the hosts' addresses over the pair. Cutting brings this
//! side of the link down: its route goes, packets to the hosts go nowhere, and established
//! connections stall exactly as on a real partition (nothing tells either end); restoring
//! brings it up again and the route comes back. The addresses come from 198.18.0.0/15, the
//! range set aside for network tests (RFC 2544), in a random /24 so that concurrent tests keep
//! apart. Traffic never leaves the pair. Dropping a `Partition` deletes the namespace, which removes
//! the pair with it. Needs root and `ip` (iproute2).

use std::net::Ipv4Addr;
use std::process::Command;

use crate::loopback::random_u64;
use crate::tools;

/// A namespace and the veth pair that joins it to this one.
#[derive(Debug)]
pub struct Partition {
    name: String,
    /// This side of the pair: the one a cut brings down.
    link: String,
    /// The /24 in use: 198.18.0.0/15 is 512 of them.
    second: u8,
    third: u8,
    hosts: usize,
}

impl Partition {
    /// A namespace with `hosts` addresses, reachable from here.
    pub fn create(hosts: usize) -> Partition {
        assert!(
            (1..=250).contains(&hosts),
            "1 to 250 addresses per namespace"
        );
        let random = random_u64();
        let tag = format!("{:06x}", random & 0xff_ffff);
        let netns = Partition {
            name: format!("volley-test-{tag}"),
            link: format!("vt{tag}"),
            second: 18 + (random >> 24) as u8 % 2,
            third: (random >> 32) as u8,
            hosts,
        };
        let inside = format!("vt{tag}n");
        netns.ip(&["netns", "add", &netns.name]);
        netns.ip(&[
            "link",
            "add",
            &netns.link,
            "type",
            "veth",
            "peer",
            "name",
            &inside,
            "netns",
            &netns.name,
        ]);
        let this_side = format!("{}/24", netns.gateway());
        netns.ip(&["addr", "add", &this_side, "dev", &netns.link]);
        netns.ip(&["link", "set", &netns.link, "up"]);
        for index in 0..hosts {
            let address = format!("{}/24", netns.address(index));
            netns.ip_inside(&["addr", "add", &address, "dev", &inside]);
        }
        netns.ip_inside(&["link", "set", &inside, "up"]);
        netns.ip_inside(&["link", "set", "lo", "up"]);
        netns
    }

    /// The namespace's name, for `ip netns exec NAME ...`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address of host `index` (from 0), inside the namespace.
    pub fn address(&self, index: usize) -> Ipv4Addr {
        assert!(
            index < self.hosts,
            "the namespace has {} addresses",
            self.hosts
        );
        Ipv4Addr::new(198, self.second, self.third, 2 + index as u8)
    }

    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        (0..self.hosts).map(|index| self.address(index)).collect()
    }

    /// Cuts the hosts off: this side of the link goes down.
    pub fn cut(&self) {
        self.ip(&["link", "set", &self.link, "down"]);
    }

    /// Joins them again.
    pub fn restore(&self) {
        self.ip(&["link", "set", &self.link, "up"]);
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, self.second, self.third, 1)
    }

    fn ip(&self, args: &[&str]) {
        tools::run_tool(Command::new(tools::ip()).args(args));
    }

    fn ip_inside(&self, args: &[&str]) {
        tools::run_tool(
            Command::new(tools::ip())
                .args(["-n", &self.name])
                .args(args),
        );
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let deleted = Command::new(tools::ip())
            .args(["netns", "delete", &self.name])
            .status();
        if !matches!(deleted, Ok(status) if status.success()) {
            eprintln!("could not delete the network namespace {}", self.name);
        }
    }
}
