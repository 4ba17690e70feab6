//! Words for a POSIX shell on a remote host: every script Volley sends (the remote-stop wrapper,
//! the agent install's steps) quotes what it did not write itself through here.

/// Quotes one word for a POSIX shell: single quotes, with `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for c in word.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoted_words_come_back_unchanged_through_sh() {
        for word in ["plain", "", "it's", "a b\tc", "$HOME `id` \"q\" \\ ;|&*?"] {
            let output = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .expect("/bin/sh runs");
            assert_eq!(String::from_utf8_lossy(&output.stdout), word);
        }
    }
}
