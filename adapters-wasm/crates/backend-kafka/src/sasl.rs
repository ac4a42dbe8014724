//! SASL authentication, sans I/O: the PLAIN message (RFC 4616) and the client side of
//! SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677) without channel binding, as Kafka
//! brokers speak them inside `SaslAuthenticate` requests.
//!
//! The password never appears in any message or error of this module; the [`Debug`] of
//! [`Sasl`] masks it. Passwords are used as given (no SASLprep), like the Java client.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// A SASL mechanism the adapter speaks (`--option sasl_mechanism=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `PLAIN`: the user name and password in one message (only safe over TLS).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl Mechanism {
    /// Every mechanism, in the order messages list them.
    pub const ALL: [Mechanism; 3] = [Self::Plain, Self::ScramSha256, Self::ScramSha512];

    /// The name the broker knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism called `name` (in any letter case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

/// The mechanism and the credentials (from `KAFKA_USERNAME` / `KAFKA_PASSWORD`).
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    /// How to authenticate.
    pub mechanism: Mechanism,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sasl({} as `{}`, password ****)",
            self.mechanism.name(),
            self.username
        )
    }
}

impl Sasl {
    /// The PLAIN message: no authorization identity, the user name, the password.
    pub fn plain_message(&self) -> Vec<u8> {
        format!("\0{}\0{}", self.username, self.password).into_bytes()
    }
}

/// A hash function of SCRAM: `H` and `HMAC` over it.
#[derive(Clone, Copy)]
struct Hash {
    /// `HMAC(key, data)`.
    hmac: fn(&[u8], &[u8]) -> Vec<u8>,
    /// `H(data)`.
    digest: fn(&[u8]) -> Vec<u8>,
}

/// Defines `HMAC(key, data)` over the digest `$d`.
macro_rules! hmac_with {
    ($d:ty) => {
        |key: &[u8], data: &[u8]| {
            let mut mac = Hmac::<$d>::new_from_slice(key).expect("HMAC takes a key of any length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    };
}

const SHA256: Hash = Hash {
    hmac: hmac_with!(Sha256),
    digest: |data| Sha256::digest(data).to_vec(),
};

const SHA512: Hash = Hash {
    hmac: hmac_with!(Sha512),
    digest: |data| Sha512::digest(data).to_vec(),
};

impl Hash {
    /// `Hi(password, salt, iterations)`: PBKDF2 with HMAC, one block.
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut block = salt.to_vec();
        block.extend_from_slice(&1u32.to_be_bytes());
        let mut u = (self.hmac)(password, &block);
        let mut result = u.clone();
        for _ in 1..iterations {
            u = (self.hmac)(password, &u);
            result.iter_mut().zip(&u).for_each(|(r, x)| *r ^= x);
        }
        result
    }
}

/// The client side of one SCRAM exchange: [`Scram::client_first`], then
/// [`Scram::client_final`] with the server's first message, then
/// [`Scram::verify_server_final`] with its last.
pub struct Scram {
    /// The hash of the mechanism.
    hash: Hash,
    /// The password.
    password: String,
    /// `n=USER,r=CNONCE`.
    client_first_bare: String,
    /// The client's nonce.
    client_nonce: String,
    /// The server's signature the last message must carry, once computed.
    server_signature: Option<Vec<u8>>,
}

/// Iterations a server may ask for at most (Kafka allows 4096 to 16384); more would
/// stall the adapter for a long time on a hostile or broken server.
const MAX_ITERATIONS: u32 = 1 << 20;

impl Scram {
    /// Starts an exchange for `sasl` (a SCRAM mechanism) with a fresh printable
    /// `client_nonce`.
    pub fn new(sasl: &Sasl, client_nonce: &str) -> Self {
        let hash = match sasl.mechanism {
            Mechanism::ScramSha512 => SHA512,
            _ => SHA256,
        };
        let user = sasl.username.replace('=', "=3D").replace(',', "=2C");
        Self {
            hash,
            password: sasl.password.clone(),
            client_first_bare: format!("n={user},r={client_nonce}"),
            client_nonce: client_nonce.to_string(),
            server_signature: None,
        }
    }

    /// The first message: no channel binding, no authorization identity.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Answers the server's first message (`r=NONCE,s=SALT,i=ITERATIONS`) with the
    /// proof that the client knows the password.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "the server's first SCRAM message is not UTF-8".to_string())?;
        let attribute = |name: char| {
            server_first
                .split(',')
                .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
        };
        if let Some(error) = attribute('e') {
            return Err(format!("the server refused the user: {error}"));
        }
        if server_first.starts_with("m=") {
            return Err("the server asks for a SCRAM extension this client does not know".into());
        }
        let nonce = attribute('r')
            .filter(|n| n.starts_with(&self.client_nonce) && n.len() > self.client_nonce.len())
            .ok_or("the server's SCRAM nonce does not extend the client's")?;
        let salt = attribute('s')
            .and_then(|s| BASE64.decode(s).ok())
            .ok_or("the server's SCRAM salt is missing or not base64")?;
        let iterations = attribute('i')
            .and_then(|i| i.parse::<u32>().ok())
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or("the server's SCRAM iteration count is missing or out of range")?;

        let Hash { hmac, digest } = self.hash;
        let salted = self.hash.hi(self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        self.server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server's last message (`v=SIGNATURE`): the server knew the password
    /// too. An `e=` message is the server's refusal.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(server_final);
        if let Some(error) = text.strip_prefix("e=") {
            return Err(format!("the server refused the credentials: {error}"));
        }
        let signature = text.strip_prefix("v=").and_then(|v| BASE64.decode(v).ok());
        match (signature, &self.server_signature) {
            (Some(got), Some(expected)) if &got == expected => Ok(()),
            _ => Err("the server's SCRAM signature is wrong: it does not know the password (is something between the client and the broker?)".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(mechanism: Mechanism, username: &str, password: &str) -> Sasl {
        Sasl {
            mechanism,
            username: username.into(),
            password: password.into(),
        }
    }

    /// RFC 7677, section 3: the SCRAM-SHA-256 example exchange.
    #[test]
    fn scram_sha_256_follows_the_rfc_7677_example() {
        let mut scram = Scram::new(
            &sasl(Mechanism::ScramSha256, "user", "pencil"),
            "rOprNGfwEbeRWgbNEkqO",
        );
        assert_eq!(scram.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = scram.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram
            .verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        let e = scram
            .verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(e.contains("signature is wrong"), "{e}");
        let e = scram.verify_server_final(b"e=invalid-proof").unwrap_err();
        assert_eq!(e, "the server refused the credentials: invalid-proof");
    }

    /// `Hi` with one iteration and 4096 is PBKDF2-HMAC-SHA-256; vectors of RFC 7914
    /// section 11 (`passwd`, `salt`, c = 1) and of the RFC 7677 example's salted password.
    #[test]
    fn hi_is_pbkdf2() {
        let out = SHA256.hi(b"passwd", b"salt", 1);
        assert_eq!(
            out[..8],
            [0x55, 0xac, 0x04, 0x6e, 0x56, 0xe3, 0x08, 0x9f],
            "{out:02x?}"
        );
        assert_eq!(SHA512.hi(b"p", b"s", 2).len(), 64);
    }

    /// SCRAM-SHA-512 has no RFC example: a server written from RFC 5802 section 3
    /// checks the client's proof from the stored key alone, and signs back.
    #[test]
    fn scram_sha_512_proves_the_password_to_a_server() {
        let (salt, iterations) = (b"0123456789abcdef", 4096);
        let salted = SHA512.hi(b"s3cret=,", salt, iterations);
        let stored_key = Sha512::digest((SHA512.hmac)(&salted, b"Client Key")).to_vec();
        let server_key = (SHA512.hmac)(&salted, b"Server Key");
        let check = |password: &str| -> Result<(), String> {
            let mut scram = Scram::new(&sasl(Mechanism::ScramSha512, "a=b,c", password), "cn");
            let first = String::from_utf8(scram.client_first()).unwrap();
            assert_eq!(first, "n,,n=a=3Db=2Cc,r=cn");
            let server_first = format!("r=cnSN,s={},i={iterations}", BASE64.encode(salt));
            let last = String::from_utf8(scram.client_final(server_first.as_bytes())?).unwrap();
            let (without_proof, proof) = last.split_once(",p=").unwrap();
            assert_eq!(without_proof, "c=biws,r=cnSN");
            let auth_message = format!("{},{server_first},{without_proof}", &first[3..]);
            let signature = (SHA512.hmac)(&stored_key, auth_message.as_bytes());
            let client_key: Vec<u8> = BASE64
                .decode(proof)
                .unwrap()
                .iter()
                .zip(&signature)
                .map(|(p, s)| p ^ s)
                .collect();
            if Sha512::digest(&client_key).to_vec() != stored_key {
                return Err("invalid-proof".into());
            }
            let server_signature = (SHA512.hmac)(&server_key, auth_message.as_bytes());
            scram.verify_server_final(format!("v={}", BASE64.encode(server_signature)).as_bytes())
        };
        check("s3cret=,").unwrap();
        assert_eq!(check("wrong").unwrap_err(), "invalid-proof");
    }

    #[test]
    fn a_bad_server_first_message_is_refused() {
        let mut scram = Scram::new(&sasl(Mechanism::ScramSha256, "u", "p"), "abc");
        for (message, why) in [
            ("e=unknown-user", "refused the user: unknown-user"),
            ("m=ext,r=abcd,s=AA==,i=1", "extension"),
            ("r=xyz1,s=AA==,i=4096", "does not extend"),
            ("r=abc,s=AA==,i=4096", "does not extend"),
            ("r=abcd,s=!,i=4096", "salt"),
            ("r=abcd,s=AA==,i=0", "iteration"),
            ("r=abcd,s=AA==,i=99999999", "iteration"),
            ("r=abcd,s=AA==", "iteration"),
        ] {
            let e = scram.client_final(message.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{message}: {e}");
        }
    }

    #[test]
    fn plain_and_names() {
        let s = sasl(Mechanism::Plain, "alice", "pw");
        assert_eq!(s.plain_message(), b"\0alice\0pw");
        assert_eq!(format!("{s:?}"), "Sasl(PLAIN as `alice`, password ****)");
        assert_eq!(
            Mechanism::from_name("scram-sha-512"),
            Some(Mechanism::ScramSha512)
        );
        assert_eq!(Mechanism::from_name("GSSAPI"), None);
    }
}
