//! NKey authentication: a user's ed25519 key signs the `nonce` of the server's `INFO`.
//!
//! Two forms come from the environment at run time, never from the composed file:
//! `NATS_NKEY`, a user NKey seed (`SU...`), for a server that lists the user's public key
//! (`authorization { users = [ { nkey: U... } ] }`), and `NATS_CREDS`, the *content* of a
//! `.creds` file (the user JWT and its seed), for a server in operator (JWT) mode. The
//! client sends `nkey` (the public key) or `jwt`, and `sig`, in `CONNECT`.
//!
//! An NKey is the base32 (RFC 4648, no padding) of a prefix, the key and a CRC-16/XMODEM
//! of both, little-endian. A seed's two prefix bytes carry the seed marker (`S`) and the
//! key's type (`U` for a user); a public key has one prefix byte, its type. The seed's 32
//! bytes are an ed25519 secret key; the signature travels as unpadded base64url.
//!
//! Nothing here ever formats a seed: errors name the variable and what is wrong, and the
//! [`Debug`] of a key shows its public key only.

use std::fmt;

use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{json, Value};

/// The type byte of a seed (`S`), in the high five bits of its first byte.
const SEED_PREFIX: u8 = 18 << 3;

/// The type byte of a user key (`U`).
const USER_PREFIX: u8 = 20 << 3;

/// The RFC 4648 base32 alphabet.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A user's NKey, able to sign the server's nonce.
#[derive(Clone)]
pub struct NKey {
    /// The ed25519 key the seed holds.
    key: SigningKey,
}

impl NKey {
    /// Reads a user seed (`SU...`). The error says what is wrong, never what the seed is.
    pub fn from_seed(seed: &str) -> Result<Self, String> {
        let raw = base32_decode(seed.trim())
            .ok_or("it is not base32 (a user seed is 58 characters starting with `SU`)")?;
        let [first, second, ref rest @ ..] = raw[..] else {
            return Err("it is too short to be an NKey seed".into());
        };
        let Some((body, crc)) = rest.split_last_chunk::<2>() else {
            return Err("it is too short to be an NKey seed".into());
        };
        if crc16(&raw[..raw.len() - 2]) != u16::from_le_bytes(*crc) {
            return Err("its checksum is wrong (is it truncated or mistyped?)".into());
        }
        if first & 0b1111_1000 != SEED_PREFIX {
            return Err(
                "it is not a seed (a seed starts with `S`; a public key cannot sign)".into(),
            );
        }
        let kind = (first & 0b111) << 5 | (second & 0b1111_1000) >> 3;
        if kind != USER_PREFIX {
            let letter = BASE32[usize::from(kind >> 3)] as char;
            return Err(format!(
                "it is the seed of an `{letter}` key; the client needs a user seed (`SU...`)"
            ));
        }
        let secret: [u8; 32] = body
            .try_into()
            .map_err(|_| "it has the wrong length for an ed25519 seed".to_string())?;
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// The public key (`U...`), which the server's configuration lists.
    pub fn public_key(&self) -> String {
        let mut raw = vec![USER_PREFIX];
        raw.extend_from_slice(self.key.verifying_key().as_bytes());
        raw.extend_from_slice(&crc16(&raw).to_le_bytes());
        base32_encode(&raw)
    }

    /// Signs `nonce`; the signature as `CONNECT`'s `sig` carries it (unpadded base64url).
    pub fn sign(&self, nonce: &str) -> String {
        let signature = self.key.sign(nonce.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature.to_bytes())
    }
}

impl fmt::Debug for NKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NKey({}, seed ****)", self.public_key())
    }
}

impl PartialEq for NKey {
    fn eq(&self, other: &Self) -> bool {
        self.key.verifying_key() == other.key.verifying_key()
    }
}

impl Eq for NKey {}

/// What signs the server's nonce, and what `CONNECT` says the key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// `NATS_NKEY`: the public key goes in `nkey`.
    NKey(NKey),
    /// `NATS_CREDS`: the user JWT goes in `jwt`, signed for by the seed next to it.
    Creds {
        /// The user JWT (public: the server checks it against the account's key).
        jwt: String,
        /// The user's key.
        key: NKey,
    },
}

impl Signer {
    /// Reads `NATS_CREDS` (a `.creds` file's content) or `NATS_NKEY` (a user seed);
    /// `None` when neither is set.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let var = |name| env(name).filter(|v: &String| !v.trim().is_empty());
        match (var("NATS_CREDS"), var("NATS_NKEY")) {
            (Some(_), Some(_)) => Err(
                "both NATS_CREDS and NATS_NKEY are set: set NATS_CREDS for a server with JWT accounts, or NATS_NKEY for one that lists NKey users, not both".into(),
            ),
            (Some(creds), None) => {
                let (jwt, seed) = parse_creds(&creds)?;
                let key = NKey::from_seed(seed)
                    .map_err(|why| format!("NATS_CREDS: the user NKey seed in it is unusable: {why}"))?;
                Ok(Some(Self::Creds {
                    jwt: jwt.to_string(),
                    key,
                }))
            }
            (None, Some(seed)) => NKey::from_seed(&seed)
                .map(|key| Some(Self::NKey(key)))
                .map_err(|why| format!("NATS_NKEY is not a usable user NKey seed: {why}")),
            (None, None) => Ok(None),
        }
    }

    /// Adds the key (`nkey` or `jwt`) and the signature of the server's `nonce` (`sig`)
    /// to the `CONNECT` options. A server that sent no nonce asks for no signature.
    pub fn sign_connect(&self, options: &mut Value, nonce: Option<&str>) {
        let key = match self {
            Self::NKey(key) => {
                options["nkey"] = json!(key.public_key());
                key
            }
            Self::Creds { jwt, key } => {
                options["jwt"] = json!(jwt);
                key
            }
        };
        if let Some(nonce) = nonce {
            options["sig"] = json!(key.sign(nonce));
        }
    }
}

/// Finds the user JWT and the seed in a `.creds` file: each is the first non-empty line
/// after a `-----BEGIN ...-----` line naming `JWT` or `SEED` (unless it is the `END`).
fn parse_creds(text: &str) -> Result<(&str, &str), String> {
    let mut lines = text.lines().map(str::trim);
    let (mut jwt, mut seed) = (None, None);
    while let Some(line) = lines.next() {
        if !(line.starts_with("---") && line.contains("BEGIN")) {
            continue;
        }
        let slot = if line.contains("JWT") {
            &mut jwt
        } else if line.contains("SEED") {
            &mut seed
        } else {
            continue;
        };
        *slot = lines
            .by_ref()
            .find(|l| !l.is_empty())
            .filter(|l| !l.starts_with("---"));
    }
    match (jwt, seed) {
        (Some(jwt), Some(seed)) => Ok((jwt, seed)),
        (None, _) => Err("NATS_CREDS has no user JWT in a `-----BEGIN NATS USER JWT-----` block: set it to the content of a `.creds` file (NATS_CREDS=\"$(cat user.creds)\")".into()),
        (_, None) => Err("NATS_CREDS has no seed in a `-----BEGIN USER NKEY SEED-----` block: set it to the content of a `.creds` file (NATS_CREDS=\"$(cat user.creds)\")".into()),
    }
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum of an NKey.
fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0, |crc, &byte| {
        (0..8).fold(crc ^ u16::from(byte) << 8, |crc, _| match crc & 0x8000 {
            0 => crc << 1,
            _ => crc << 1 ^ 0x1021,
        })
    })
}

/// Decodes unpadded RFC 4648 base32; `None` on a character outside the alphabet.
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let value = BASE32.iter().position(|&b| b == c)?;
        buffer = buffer << 5 | value as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// Encodes `data` as unpadded RFC 4648 base32.
fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0);
    for &byte in data {
        buffer = buffer << 8 | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[(buffer >> bits) as usize & 31] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[(buffer << (5 - bits)) as usize & 31] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key of `kind` made by the nkeys crate (NATS's own Rust implementation) from
    /// `n` (its random key generation is not built for wasm32).
    fn key(kind: nkeys::KeyPairType, n: u8) -> nkeys::KeyPair {
        nkeys::KeyPair::new_from_raw(kind, [n.wrapping_mul(37) ^ 0x5a; 32]).unwrap()
    }

    fn user() -> nkeys::KeyPair {
        key(nkeys::KeyPairType::User, 1)
    }

    fn env<'a>(pairs: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn base32_round_trips() {
        // RFC 4648 section 10, without the padding.
        for (plain, coded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), coded);
            assert_eq!(base32_decode(coded).unwrap(), plain.as_bytes());
        }
        assert_eq!(base32_decode("MZ1"), None);
    }

    #[test]
    fn crc16_is_xmodem() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn a_user_seed_gives_the_public_key_and_signatures_nkeys_agrees_with() {
        for n in 0..20 {
            let theirs = key(nkeys::KeyPairType::User, n);
            let ours = NKey::from_seed(&theirs.seed().unwrap()).unwrap();
            assert_eq!(ours.public_key(), theirs.public_key());
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(ours.sign("nonce"))
                .unwrap();
            theirs.verify(b"nonce", &sig).unwrap();
            assert!(theirs.verify(b"other", &sig).is_err());
        }
    }

    #[test]
    fn bad_seeds_are_refused_without_showing_them() {
        let (user, account) = (user(), key(nkeys::KeyPairType::Account, 2));
        let (seed, public) = (user.seed().unwrap(), user.public_key());
        let mut mistyped = seed.clone();
        let flipped = if &mistyped[10..11] == "A" { "B" } else { "A" };
        mistyped.replace_range(10..11, flipped);
        for (seed, why) in [
            ("SU!", "not base32"),
            ("SU", "too short"),
            (&mistyped[..], "checksum"),
            (&public[..], "not a seed"),
            (&account.seed().unwrap()[..], "seed of an `A` key"),
        ] {
            let e = NKey::from_seed(seed).unwrap_err();
            assert!(e.contains(why), "{seed}: {e}");
            assert!(!e.contains(seed), "{e}");
        }
        let shown = format!("{:?}", NKey::from_seed(&seed).unwrap());
        assert!(shown.contains(&public) && !shown.contains(&seed), "{shown}");
    }

    #[test]
    fn creds_content_gives_the_jwt_and_the_key() {
        let seed = user().seed().unwrap();
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAi.eyJqdGki.sig\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        );
        let signer = Signer::from_env(env(&[("NATS_CREDS", creds.clone())]))
            .unwrap()
            .unwrap();
        let mut options = json!({});
        signer.sign_connect(&mut options, Some("abc"));
        assert_eq!(options["jwt"], "eyJ0eXAi.eyJqdGki.sig");
        assert_eq!(options["sig"], NKey::from_seed(&seed).unwrap().sign("abc"));
        assert!(options.get("nkey").is_none());
        // Windows line ends, too.
        let crlf = creds.replace('\n', "\r\n");
        assert_eq!(
            Signer::from_env(env(&[("NATS_CREDS", crlf)])).unwrap(),
            Some(signer)
        );
        let e = Signer::from_env(env(&[("NATS_CREDS", "just text".into())])).unwrap_err();
        assert!(
            e.contains("no user JWT in a `-----BEGIN NATS USER JWT-----`"),
            "{e}"
        );
        let no_seed = creds.replace(&seed, "");
        let e = Signer::from_env(env(&[("NATS_CREDS", no_seed)])).unwrap_err();
        assert!(
            e.contains("no seed in a `-----BEGIN USER NKEY SEED-----`"),
            "{e}"
        );
        let bad_seed = creds.replace(&seed, &seed[..40]);
        let e = Signer::from_env(env(&[("NATS_CREDS", bad_seed)])).unwrap_err();
        assert!(e.starts_with("NATS_CREDS: the user NKey seed"), "{e}");
        assert!(!e.contains(&seed[..40]), "{e}");
    }

    #[test]
    fn an_nkey_seed_gives_the_public_key_and_signature() {
        let user = user();
        let (seed, public) = (user.seed().unwrap(), user.public_key());
        let signer = Signer::from_env(env(&[("NATS_NKEY", format!("{seed}\n"))]))
            .unwrap()
            .unwrap();
        let mut options = json!({});
        signer.sign_connect(&mut options, Some("abc"));
        assert_eq!(options["nkey"], public);
        assert!(options["sig"].is_string());
        let mut options = json!({});
        signer.sign_connect(&mut options, None);
        assert_eq!(options, json!({ "nkey": public }));
        let e = Signer::from_env(env(&[("NATS_NKEY", "SUxyz".into())])).unwrap_err();
        assert!(
            e.starts_with("NATS_NKEY is not a usable user NKey seed"),
            "{e}"
        );
        let both = [("NATS_NKEY", seed), ("NATS_CREDS", "x".into())];
        assert!(Signer::from_env(env(&both))
            .unwrap_err()
            .contains("not both"));
        assert_eq!(
            Signer::from_env(env(&[("NATS_NKEY", " ".into())])),
            Ok(None)
        );
    }
}
