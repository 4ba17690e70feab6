//! Loopback addresses and free ports for fleets.
//!
//! Each fleet takes a random block `127.A.B.*` of the loopback network and asks the kernel for a
//! free port on every address it hands out, so fleets in concurrent test processes neither share
//! an address nor race for a port. Nothing here ever leaves 127.0.0.0/8.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

/// Hosts per third octet: the fourth octet runs 1..=250, clear of .0 and .255.
const HOSTS_PER_OCTET: u32 = 250;

/// A random block of loopback addresses, handed out one at a time.
#[derive(Debug)]
pub struct AddressBlock {
    second: u8,
    third: u8,
    handed_out: u32,
}

impl AddressBlock {
    pub fn random() -> AddressBlock {
        let random = random_u64();
        AddressBlock {
            // 127.0.* and 127.1.* are left alone: people and tools use those.
            second: 10 + (random % 241) as u8,
            third: (random >> 8) as u8,
            handed_out: 0,
        }
    }

    /// The next unused address of the block.
    pub fn next_address(&mut self) -> Ipv4Addr {
        let index = self.handed_out;
        self.handed_out += 1;
        let third = self.third.wrapping_add((index / HOSTS_PER_OCTET) as u8);
        let fourth = 1 + (index % HOSTS_PER_OCTET) as u8;
        Ipv4Addr::new(127, self.second, third, fourth)
    }

    /// The next address with a port that nothing listens on at the moment.
    pub fn next_free_socket(&mut self) -> SocketAddrV4 {
        let address = self.next_address();
        SocketAddrV4::new(address, free_port(address))
    }
}

/// A non-blocking listener on a fresh loopback address and a port the kernel picked, for
/// fixtures whose accepting thread polls for a stop request.
pub fn fresh_listener() -> (TcpListener, SocketAddrV4) {
    let address = AddressBlock::random().next_address();
    let listener = TcpListener::bind((address, 0))
        .unwrap_or_else(|e| panic!("cannot listen on {address}: {e}"));
    let socket = match listener.local_addr() {
        Ok(std::net::SocketAddr::V4(socket)) => socket,
        other => panic!("unexpected local address {other:?}"),
    };
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("cannot make the listener non-blocking: {e}"));
    (listener, socket)
}

/// Asks the kernel for a port that is free on `address`, then lets it go again, so that the
/// caller can hand it to a server that takes a fixed `address:port` (sshd does).
pub fn free_port(address: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind((address, 0))
        .unwrap_or_else(|e| panic!("cannot bind a loopback port on {address}: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the port bound on {address}: {e}"))
        .port()
}

/// Random bits from the kernel, enough to keep concurrent fleets and stale processes apart.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .unwrap_or_else(|e| panic!("cannot read /dev/urandom: {e}"));
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_on_loopback_and_skip_network_and_broadcast_octets() {
        let mut block = AddressBlock {
            second: 200,
            third: 255,
            handed_out: 0,
        };
        let addresses: Vec<Ipv4Addr> = (0..600).map(|_| block.next_address()).collect();
        assert_eq!(addresses[0], Ipv4Addr::new(127, 200, 255, 1));
        assert_eq!(addresses[249], Ipv4Addr::new(127, 200, 255, 250));
        assert_eq!(addresses[250], Ipv4Addr::new(127, 200, 0, 1));
        for address in &addresses {
            assert!(address.is_loopback(), "{address}");
            assert!((1..=250).contains(&address.octets()[3]), "{address}");
        }
        let distinct: std::collections::HashSet<_> = addresses.iter().collect();
        assert_eq!(distinct.len(), addresses.len());
    }

    #[test]
    fn random_blocks_stay_clear_of_the_common_loopback_ranges() {
        for _ in 0..100 {
            let block = AddressBlock::random();
            assert!((10..=250).contains(&block.second), "{block:?}");
        }
    }
}
