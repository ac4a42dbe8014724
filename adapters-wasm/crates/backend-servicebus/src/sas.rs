//! Shared Access Signature tokens, as the Service Bus REST reference describes them:
//! `SharedAccessSignature sr=<url-encoded resource uri>&sig=<url-encoded base64
//! HMAC-SHA256>&se=<expiry>&skn=<key name>`, where the HMAC of the string
//! `<url-encoded resource uri> + "\n" + <expiry>` is keyed with the SAS key's UTF-8
//! bytes (the key is used as given, not base64-decoded).

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;

/// What url-encoding leaves alone: letters, digits and `-_.~` (RFC 3986 unreserved).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How long a token is valid, in seconds.
pub const LIFETIME_SECS: u64 = 3600;

/// A cached token is made anew when it has less than this many seconds left.
const REFRESH_MARGIN_SECS: u64 = 300;

/// Url-encodes `text` as one URI component (`/`, `:`, `+`, `=` and the like all encoded).
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// Makes the `Authorization` header value that grants access to `resource_uri` (and
/// everything below it) until `expiry`, in seconds since the Unix epoch.
pub fn token(resource_uri: &str, key_name: &str, key: &str, expiry: u64) -> String {
    let resource = encode(resource_uri);
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("{resource}\n{expiry}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "SharedAccessSignature sr={resource}&sig={}&se={expiry}&skn={}",
        encode(&signature),
        encode(key_name)
    )
}

/// Makes and caches tokens for one SAS policy.
pub struct Signer {
    /// The policy's name (`skn`).
    key_name: String,
    /// The policy's key.
    key: String,
    /// Tokens made so far, by resource URI, with their expiry.
    tokens: HashMap<String, (u64, String)>,
}

impl Signer {
    /// Makes a signer for the policy `key_name` with `key`.
    pub fn new(key_name: String, key: String) -> Self {
        Self {
            key_name,
            key,
            tokens: HashMap::new(),
        }
    }

    /// Returns a token for `resource_uri` that is valid for at least a few more
    /// minutes at `now` (seconds since the Unix epoch), reusing a cached one if it is.
    pub fn authorization(&mut self, resource_uri: &str, now: u64) -> String {
        if let Some((expiry, token)) = self.tokens.get(resource_uri) {
            if *expiry > now + REFRESH_MARGIN_SECS {
                return token.clone();
            }
        }
        let expiry = now + LIFETIME_SECS;
        let made = token(resource_uri, &self.key_name, &self.key, expiry);
        self.tokens
            .insert(resource_uri.to_string(), (expiry, made.clone()));
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python's standard library:
    ///
    /// ```text
    /// sr = urllib.parse.quote("https://my-ns.servicebus.windows.net/orders", safe="")
    /// sig = base64.b64encode(hmac.new(b"fake+Key/Value==",
    ///         (sr + "\n" + "1700000000").encode(), hashlib.sha256).digest())
    /// "SharedAccessSignature sr=%s&sig=%s&se=1700000000&skn=RootManageSharedAccessKey"
    ///     % (sr, urllib.parse.quote(sig, safe=""))
    /// ```
    #[test]
    fn matches_an_independently_computed_token() {
        assert_eq!(
            token(
                "https://my-ns.servicebus.windows.net/orders",
                "RootManageSharedAccessKey",
                "fake+Key/Value==",
                1_700_000_000
            ),
            "SharedAccessSignature \
             sr=https%3A%2F%2Fmy-ns.servicebus.windows.net%2Forders\
             &sig=bRjimN%2FIbMeP12vIcmLmJwLN8Z3WJYz1NEkLma4XJ1I%3D\
             &se=1700000000&skn=RootManageSharedAccessKey"
        );
    }

    #[test]
    fn encodes_everything_but_unreserved_characters() {
        assert_eq!(encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(
            encode("http://h:1/a b+c=&é"),
            "http%3A%2F%2Fh%3A1%2Fa%20b%2Bc%3D%26%C3%A9"
        );
    }

    #[test]
    fn caches_tokens_until_they_are_about_to_expire() {
        let mut signer = Signer::new("policy".into(), "key".into());
        let first = signer.authorization("http://h/q", 1_000);
        assert!(
            first.contains(&format!("se={}", 1_000 + LIFETIME_SECS)),
            "{first}"
        );
        assert_eq!(signer.authorization("http://h/q", 1_000 + 3_000), first);
        let other = signer.authorization("http://h/r", 1_000);
        assert_ne!(other, first);
        let renewed = signer.authorization("http://h/q", 1_000 + 3_400);
        assert!(
            renewed.contains(&format!("se={}", 4_400 + LIFETIME_SECS)),
            "{renewed}"
        );
    }
}
