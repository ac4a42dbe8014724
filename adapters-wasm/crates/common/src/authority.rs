//! The `[user[:password]@]host[:port]` part of a TCP broker URL, read the same way by every
//! backend that speaks to its broker over `std::net` (NATS, MQTT, AMQP, Redis).

use percent_encoding::percent_decode_str;

/// The credentials and address a broker URL's authority names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The percent-decoded user, when the authority has `user@` or `user:password@`.
    pub user: Option<String>,
    /// The percent-decoded password, when the authority has `user:password@` (it may be
    /// empty: `user:@`).
    pub password: Option<String>,
    /// `host:port`, with the default port when none is given.
    pub address: String,
}

impl Authority {
    /// Parses `authority` (what stands between `scheme://` and the path or query), with
    /// `default_port` when it names none. The error is the reason, for the backend's own
    /// "invalid broker URL" message.
    pub fn parse(authority: &str, default_port: u16) -> Result<Self, String> {
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let decode = |text: &str| {
            percent_decode_str(text)
                .decode_utf8()
                .map(|t| t.into_owned())
                .map_err(|_| "credentials are not UTF-8 after percent-decoding".to_string())
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':')) {
            None => (None, None),
            Some(Some((user, password))) => (Some(decode(user)?), Some(decode(password)?)),
            Some(None) => (Some(decode(userinfo.unwrap_or_default())?), None),
        };
        let (host, port) = match host_port.rsplit_once(':') {
            // `[::1]` alone ends in `]`; `[::1]:4222` splits at its last `:`.
            Some((host, port)) if !host.ends_with(':') && !port.ends_with(']') => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("bad port `{port}`"))?;
                (host, port)
            }
            _ => (host_port, default_port),
        };
        if host.is_empty() {
            return Err("no host".to_string());
        }
        Ok(Authority {
            user,
            password,
            address: format!("{host}:{port}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_credentials_host_and_port() {
        let a = Authority::parse("al%40ice:p%3Ass@h:7000", 1).unwrap();
        assert_eq!(a.user.as_deref(), Some("al@ice"));
        assert_eq!(a.password.as_deref(), Some("p:ss"));
        assert_eq!(a.address, "h:7000");
        let a = Authority::parse("tok@[::1]", 4222).unwrap();
        assert_eq!((a.user.as_deref(), a.password), (Some("tok"), None));
        assert_eq!(a.address, "[::1]:4222");
        let a = Authority::parse("u:@[::1]:5", 1).unwrap();
        assert_eq!(a.password.as_deref(), Some(""));
        assert_eq!(a.address, "[::1]:5");
        assert_eq!(Authority::parse("h", 9).unwrap().address, "h:9");
    }

    #[test]
    fn says_what_is_wrong() {
        assert_eq!(Authority::parse("h:0", 1).unwrap_err(), "bad port `0`");
        assert_eq!(Authority::parse("h:x", 1).unwrap_err(), "bad port `x`");
        assert_eq!(Authority::parse("u:p@", 1).unwrap_err(), "no host");
        assert_eq!(Authority::parse(":5", 1).unwrap_err(), "no host");
        assert_eq!(
            Authority::parse("u:%FF@h", 1).unwrap_err(),
            "credentials are not UTF-8 after percent-decoding"
        );
    }
}
