//! SOCKS5 (RFC 1928), the part a local proxy needs: the client's greeting, its request,
//! and the server's replies. Sans-IO: each parser takes the bytes received so far and
//! returns a message and how many bytes it used, `Ok(None)` when more are needed, or an
//! error that says which reply (if any) the peer should get before the connection closes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const VERSION: u8 = 5;
/// Method "no authentication required".
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Method "username/password" (RFC 1929).
pub const METHOD_USER_PASS: u8 = 0x02;
/// "No acceptable methods": the client must close.
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;

const ATYP_V4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_V6: u8 = 4;

/// The client's first message: the authentication methods it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub methods: Vec<u8>,
}

impl Greeting {
    pub fn offers(&self, method: u8) -> bool {
        self.methods.contains(&method)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![VERSION, self.methods.len() as u8];
        v.extend_from_slice(&self.methods[..self.methods.len().min(255)]);
        v
    }
}

/// What the client asks the proxy to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
}

impl Command {
    fn code(self) -> u8 {
        match self {
            Command::Connect => 1,
            Command::Bind => 2,
            Command::UdpAssociate => 3,
        }
    }
}

/// A destination as the client names it. Domains are kept as names: resolving them is
/// the far end's business (that is what `socks5h`/`--socks5-hostname` asks for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Ip(IpAddr),
    Domain(String),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Domain(d) => f.write_str(d),
        }
    }
}

/// The client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub address: Address,
    pub port: u16,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![VERSION, self.command.code(), 0];
        encode_address(&mut v, &self.address, self.port);
        v
    }
}

/// The server's answer to a request (RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Succeeded = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    TtlExpired = 6,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

impl Reply {
    /// The reply, followed by the address the proxy bound (what it is matters little to
    /// clients of a CONNECT; 0.0.0.0:0 is usual when it is not known).
    pub fn encode(self, bound: SocketAddr) -> Vec<u8> {
        let mut v = vec![VERSION, self as u8, 0];
        encode_address(&mut v, &Address::Ip(bound.ip()), bound.port());
        v
    }
}

/// The server's choice of method, answering a [`Greeting`].
pub fn encode_method_selection(method: u8) -> [u8; 2] {
    [VERSION, method]
}

fn encode_address(v: &mut Vec<u8>, address: &Address, port: u16) {
    match address {
        Address::Ip(IpAddr::V4(ip)) => {
            v.push(ATYP_V4);
            v.extend_from_slice(&ip.octets());
        }
        Address::Ip(IpAddr::V6(ip)) => {
            v.push(ATYP_V6);
            v.extend_from_slice(&ip.octets());
        }
        Address::Domain(d) => {
            let d = &d.as_bytes()[..d.len().min(255)];
            v.push(ATYP_DOMAIN);
            v.push(d.len() as u8);
            v.extend_from_slice(d);
        }
    }
    v.extend_from_slice(&port.to_be_bytes());
}

/// What is wrong with the client's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Socks5Error {
    #[error("not SOCKS version 5 (version byte {0:#04x})")]
    Version(u8),
    #[error("greeting offers no authentication method")]
    NoMethods,
    #[error("unknown command {0:#04x}")]
    Command(u8),
    #[error("reserved byte is {0:#04x}, not 0")]
    Reserved(u8),
    #[error("unknown address type {0:#04x}")]
    AddressType(u8),
    #[error("empty domain name")]
    EmptyDomain,
    #[error("domain name is not UTF-8")]
    DomainNotUtf8,
}

impl Socks5Error {
    /// The reply to send before closing, where the protocol has one for this error.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Socks5Error::Command(_) => Some(Reply::CommandNotSupported),
            Socks5Error::AddressType(_) => Some(Reply::AddressTypeNotSupported),
            Socks5Error::EmptyDomain | Socks5Error::DomainNotUtf8 | Socks5Error::Reserved(_) => {
                Some(Reply::GeneralFailure)
            }
            Socks5Error::Version(_) | Socks5Error::NoMethods => None,
        }
    }
}

/// Parses the greeting: `VER NMETHODS METHODS…`.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(Greeting, usize)>, Socks5Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Socks5Error::Version(ver));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(Socks5Error::NoMethods);
    }
    let end = 2 + n as usize;
    let Some(methods) = buf.get(2..end) else {
        return Ok(None);
    };
    Ok(Some((
        Greeting {
            methods: methods.to_vec(),
        },
        end,
    )))
}

/// Parses a request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, Socks5Error> {
    let Some(head) = buf.get(..4) else {
        // check what is there already, so garbage fails fast
        return match buf.first() {
            Some(&v) if v != VERSION => Err(Socks5Error::Version(v)),
            _ => Ok(None),
        };
    };
    if head[0] != VERSION {
        return Err(Socks5Error::Version(head[0]));
    }
    let command = match head[1] {
        1 => Command::Connect,
        2 => Command::Bind,
        3 => Command::UdpAssociate,
        c => return Err(Socks5Error::Command(c)),
    };
    if head[2] != 0 {
        return Err(Socks5Error::Reserved(head[2]));
    }
    let (address, addr_end) = match head[3] {
        ATYP_V4 => {
            let Some(b) = buf.get(4..8) else {
                return Ok(None);
            };
            (Address::Ip(Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()), 8)
        }
        ATYP_V6 => {
            let Some(b) = buf.get(4..20) else {
                return Ok(None);
            };
            let mut octets = [0u8; 16];
            octets.copy_from_slice(b);
            (Address::Ip(Ipv6Addr::from(octets).into()), 20)
        }
        ATYP_DOMAIN => {
            let Some(&len) = buf.get(4) else {
                return Ok(None);
            };
            if len == 0 {
                return Err(Socks5Error::EmptyDomain);
            }
            let end = 5 + len as usize;
            let Some(name) = buf.get(5..end) else {
                return Ok(None);
            };
            let name = std::str::from_utf8(name).map_err(|_| Socks5Error::DomainNotUtf8)?;
            (Address::Domain(name.to_string()), end)
        }
        t => return Err(Socks5Error::AddressType(t)),
    };
    let Some(port) = buf.get(addr_end..addr_end + 2) else {
        return Ok(None);
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    Ok(Some((
        Request {
            command,
            address,
            port,
        },
        addr_end + 2,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_needs_all_its_bytes() {
        let g = [5, 2, METHOD_NO_AUTH, METHOD_USER_PASS, 0xAA];
        for cut in 0..4 {
            assert_eq!(parse_greeting(&g[..cut]), Ok(None), "cut {cut}");
        }
        let (greeting, used) = parse_greeting(&g).expect("valid").expect("complete");
        assert_eq!(used, 4);
        assert!(greeting.offers(METHOD_NO_AUTH) && !greeting.offers(1));
        assert_eq!(greeting.encode(), g[..4].to_vec());
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(Socks5Error::Version(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(Socks5Error::NoMethods));
    }

    #[test]
    fn requests_of_every_address_type_round_trip() {
        let cases = [
            Request {
                command: Command::Connect,
                address: Address::Ip(Ipv4Addr::new(127, 0, 0, 1).into()),
                port: 8080,
            },
            Request {
                command: Command::Connect,
                address: Address::Ip(Ipv6Addr::LOCALHOST.into()),
                port: 443,
            },
            Request {
                command: Command::UdpAssociate,
                address: Address::Domain("example.org".into()),
                port: 53,
            },
        ];
        for r in cases {
            let mut bytes = r.encode();
            bytes.push(0xEE); // the start of whatever follows
            for cut in 0..bytes.len() - 1 {
                assert_eq!(parse_request(&bytes[..cut]), Ok(None), "{r:?} cut {cut}");
            }
            let (parsed, used) = parse_request(&bytes).expect("valid").expect("complete");
            assert_eq!((parsed, used), (r, bytes.len() - 1));
        }
    }

    #[test]
    fn bad_requests_say_which_reply_to_send() {
        let e = parse_request(&[5, 9, 0, 1, 1, 2, 3, 4, 0, 80]).expect_err("command");
        assert_eq!(e.reply(), Some(Reply::CommandNotSupported));
        let e = parse_request(&[5, 1, 0, 7]).expect_err("atyp");
        assert_eq!(e.reply(), Some(Reply::AddressTypeNotSupported));
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0]),
            Err(Socks5Error::EmptyDomain)
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80]),
            Err(Socks5Error::DomainNotUtf8)
        );
        assert_eq!(parse_request(&[5, 1, 1, 1]), Err(Socks5Error::Reserved(1)));
        assert_eq!(parse_request(&[4]), Err(Socks5Error::Version(4)));
        assert_eq!(parse_request(&[4, 1, 0, 1]).expect_err("v4").reply(), None);
    }

    #[test]
    fn replies_encode_the_bound_address() {
        let v4: SocketAddr = "10.1.2.3:4660".parse().expect("addr");
        assert_eq!(
            Reply::Succeeded.encode(v4),
            vec![5, 0, 0, 1, 10, 1, 2, 3, 0x12, 0x34]
        );
        let v6: SocketAddr = "[::1]:1".parse().expect("addr");
        let r = Reply::HostUnreachable.encode(v6);
        assert_eq!((r[1], r[3], r.len()), (4, 4, 22));
        assert_eq!(encode_method_selection(METHOD_NO_AUTH), [5, 0]);
    }
}
