//! Password scramble math for mysql_native_password and caching_sha2_password, both ways:
//! verifying a client (switchyard holds the passwords) and answering a server.

use mysql_common::scramble::{scramble_native, scramble_sha256};
use rand::Rng;

pub const NATIVE: &str = "mysql_native_password";
pub const CACHING_SHA2: &str = "caching_sha2_password";

/// caching_sha2_password AuthMoreData status: the scramble matched, an OK follows.
pub const FAST_AUTH_SUCCESS: u8 = 0x03;
/// caching_sha2_password AuthMoreData status: the server wants the full (TLS/RSA) exchange.
pub const PERFORM_FULL_AUTH: u8 = 0x04;

/// A fresh 20-byte scramble of printable bytes: no NUL (clients read it up to one).
pub fn new_scramble() -> [u8; 20] {
    let mut rng = rand::thread_rng();
    let mut s = [0u8; 20];
    for b in &mut s {
        *b = rng.gen_range(33u8..=126);
    }
    s
}

/// The client's answer for a password under a plugin; empty for an empty password.
pub fn client_response(plugin: &str, nonce: &[u8], password: &[u8]) -> Option<Vec<u8>> {
    let out = match plugin {
        NATIVE => scramble_native(nonce, password).map(|s| s.to_vec()),
        CACHING_SHA2 => scramble_sha256(nonce, password).map(|s| s.to_vec()),
        _ => return None,
    };
    Some(out.unwrap_or_default())
}

/// Checks a client's scramble for `password` under `plugin`, in constant time.
pub fn verify(plugin: &str, nonce: &[u8], password: &[u8], response: &[u8]) -> bool {
    match client_response(plugin, nonce, password) {
        Some(expected) => constant_time_eq(&expected, response),
        None => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scramble_has_no_nul_and_differs() {
        let a = new_scramble();
        assert!(a.iter().all(|b| *b != 0));
        assert_ne!(a, new_scramble());
    }

    #[test]
    fn native_known_vector() {
        // mysql_native_password of "secret" is SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))
        let nonce = *b"abcdefghijklmnopqrst";
        let resp = client_response(NATIVE, &nonce, b"secret").unwrap();
        assert_eq!(resp.len(), 20);
        assert!(verify(NATIVE, &nonce, b"secret", &resp));
        assert!(!verify(NATIVE, &nonce, b"secreT", &resp));
        assert!(!verify(NATIVE, b"bbcdefghijklmnopqrst", b"secret", &resp));
    }

    #[test]
    fn sha2_and_empty_passwords() {
        let nonce = new_scramble();
        let resp = client_response(CACHING_SHA2, &nonce, b"pw").unwrap();
        assert_eq!(resp.len(), 32);
        assert!(verify(CACHING_SHA2, &nonce, b"pw", &resp));
        assert!(!verify(NATIVE, &nonce, b"pw", &resp), "plugins do not mix");
        assert!(
            verify(NATIVE, &nonce, b"", &[]),
            "empty password, empty answer"
        );
        assert!(!verify(NATIVE, &nonce, b"", &[1]));
        assert!(!verify("mysql_clear_password", &nonce, b"pw", b"pw"));
    }
}
