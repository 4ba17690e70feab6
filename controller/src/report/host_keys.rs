//! The host keys `--accept-new-host-keys` recorded during a run, one line each on stderr before
//! the summary, so that the operator sees what is trusted from now on.

use std::io::{self, Write};

use crate::event::LearnedHostKey;

pub fn write_learned_host_keys(out: &mut impl Write, keys: &[LearnedHostKey]) -> io::Result<()> {
    for key in keys {
        writeln!(
            out,
            "volley: recorded new host key for {} ({}): {} {}",
            key.host, key.address, key.key_type, key.fingerprint
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key() {
        let key = |host: &str, address: &str| LearnedHostKey {
            host: host.to_string(),
            address: address.to_string(),
            key_type: "ED25519".to_string(),
            fingerprint: "SHA256:abc".to_string(),
        };
        let mut out = Vec::new();
        write_learned_host_keys(
            &mut out,
            &[key("web01", "10.0.0.1:22"), key("bastion", "[::1]:2222")],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "volley: recorded new host key for web01 (10.0.0.1:22): ED25519 SHA256:abc\n\
             volley: recorded new host key for bastion ([::1]:2222): ED25519 SHA256:abc\n"
        );
    }
}
