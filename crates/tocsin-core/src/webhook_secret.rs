//! The written form of a Standard Webhooks signing secret, `whsec_<base64 of the key>`,
//! shared by the webhook worker (which signs with it) and whatever creates one (the API,
//! the status page's sign-up): the key's randomness comes from the caller, since this crate
//! does no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The prefix that marks a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The key size Tocsin generates: 256 bits (the specification allows 192 to 512).
pub const GENERATED_KEY_LEN: usize = 32;

/// `key` in its `whsec_<base64>` form.
pub fn encode(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_is_written_with_its_prefix_in_standard_base64() {
        assert_eq!(super::encode(&[0xfb, 0xff]), "whsec_+/8=");
    }
}
