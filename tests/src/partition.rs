//! [`Partition`]: a network namespace of the test's own, joined to this one by a veth pair, for
//! hosts whose network a test can cut for real and restore, or for thousands of host addresses
//! served by a few processes. (Unlike [`crate::netns`], whose namespace nothing outside can
//! reach, this one is reachable until it is cut.)
//!
//! Two shapes. [`Partition::create`]: the namespace side of the pair carries the hosts'
//! addresses, and this side one address of the same /24, so the kernel routes the hosts'
//! addresses over the pair. [`Partition::serving_range`]: the namespace takes every address of
//! a /16 as its own (a `local` route for the whole range, the kernel's "AnyIP"), this side routes
//! the range over the pair, and a process inside listening on `0.0.0.0` answers on all of them:
//! every host of a rig has an address of its own, as in a real fleet, with few processes.
//!
//! Cutting brings this side of the link down: its routes go, packets to the hosts go nowhere,
//! and established connections stall exactly as on a real partition (nothing tells either end);
//! restoring brings it up again and the routes come back. The addresses come from
//! 198.18.0.0/15, the range set aside for network tests (RFC 2544): a random /24 of
//! 198.18.0.0/16 for `create` (so that concurrent tests keep apart), 198.19.0.0/16 for
//! `serving_range`. Traffic never leaves the pair. Dropping a `Partition` deletes the
//! namespace, which removes the pair with it. Needs root and `ip` (iproute2).

use std::net::Ipv4Addr;
use std::process::Command;

use crate::loopback::random_u64;
use crate::tools;

/// Addresses per third octet in a range: the fourth runs 1..=250.
const PER_OCTET: usize = 250;

/// A namespace and the veth pair that joins it to this one.
#[derive(Debug)]
pub struct Partition {
    name: String,
    /// This side of the pair: the one a cut brings down.
    link: String,
    /// The namespace's side of the pair.
    inside: String,
    shape: Shape,
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// `hosts` addresses in 198.18.`third`.0/24, from .2; this side is .1.
    Hosts { third: u8, hosts: usize },
    /// Every address of 198.19.0.0/16; the pair itself is 198.18.255.252/30.
    Range,
}

impl Partition {
    /// A namespace with `hosts` addresses, reachable from here.
    pub fn create(hosts: usize) -> Partition {
        assert!(
            (1..=PER_OCTET).contains(&hosts),
            "1 to {PER_OCTET} addresses per namespace"
        );
        let third = (random_u64() >> 32) as u8 % 250;
        let partition = Partition::joined(Shape::Hosts { third, hosts });
        partition.ip(&[
            "addr",
            "add",
            &format!("198.18.{third}.1/24"),
            "dev",
            &partition.link,
        ]);
        for address in partition.addresses() {
            let address = format!("{address}/24");
            partition.ip_inside(&["addr", "add", &address, "dev", &partition.inside]);
        }
        partition.up();
        partition
    }

    /// A namespace that answers on every address of 198.19.0.0/16 (see the module).
    pub fn serving_range() -> Partition {
        let partition = Partition::joined(Shape::Range);
        partition.ip(&["addr", "add", "198.18.255.253/30", "dev", &partition.link]);
        partition.ip_inside(&["addr", "add", "198.18.255.254/30", "dev", &partition.inside]);
        partition.ip_inside(&["route", "add", "local", "198.19.0.0/16", "dev", "lo"]);
        partition.up();
        partition.ip(&["route", "add", "198.19.0.0/16", "via", "198.18.255.254"]);
        partition
    }

    /// A namespace and its pair, down, without addresses.
    fn joined(shape: Shape) -> Partition {
        let tag = format!("{:06x}", random_u64() & 0xff_ffff);
        let partition = Partition {
            name: format!("volley-test-{tag}"),
            link: format!("vt{tag}"),
            inside: format!("vt{tag}n"),
            shape,
        };
        partition.ip(&["netns", "add", &partition.name]);
        partition.ip(&[
            "link",
            "add",
            &partition.link,
            "type",
            "veth",
            "peer",
            "name",
            &partition.inside,
            "netns",
            &partition.name,
        ]);
        partition
    }

    fn up(&self) {
        self.ip(&["link", "set", &self.link, "up"]);
        self.ip_inside(&["link", "set", &self.inside, "up"]);
        self.ip_inside(&["link", "set", "lo", "up"]);
    }

    /// The namespace's name, for `ip netns exec NAME ...`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address of host `index` (from 0), inside the namespace: one of those it was created
    /// with, or of a range (up to 64,000 of them).
    pub fn address(&self, index: usize) -> Ipv4Addr {
        let octet = |value: usize| u8::try_from(value).expect("an octet");
        match self.shape {
            Shape::Hosts { third, hosts } => {
                assert!(index < hosts, "the namespace has {hosts} addresses");
                Ipv4Addr::new(198, 18, third, octet(2 + index))
            }
            Shape::Range => Ipv4Addr::new(
                198,
                19,
                octet(index / PER_OCTET),
                octet(1 + index % PER_OCTET),
            ),
        }
    }

    /// The addresses it was created with (none for a range: every one of it is).
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        match self.shape {
            Shape::Hosts { hosts, .. } => (0..hosts).map(|index| self.address(index)).collect(),
            Shape::Range => Vec::new(),
        }
    }

    /// Cuts the hosts off: this side of the link goes down.
    pub fn cut(&self) {
        self.ip(&["link", "set", &self.link, "down"]);
    }

    /// Joins them again.
    pub fn restore(&self) {
        self.ip(&["link", "set", &self.link, "up"]);
        if let Shape::Range = self.shape {
            // A route through a link that went down went with it.
            self.ip(&["route", "replace", "198.19.0.0/16", "via", "198.18.255.254"]);
        }
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
