//! The request line that opens every `alknet/git` stream, as git-daemon reads it
//! (`Documentation/gitprotocol-pack.adoc`, "Git Transport"):
//!
//! ```text
//! pkt-line( "git-upload-pack" SP "/team/repo.git" NUL "host=example.org" NUL
//!           [ NUL "version=2" NUL ] [ "alknet-token=…" NUL ] )
//! ```
//!
//! Sans-IO and written for a hostile peer: the caller pushes whatever bytes arrived and
//! gets the request once its pkt-line is complete, with how many of the pushed bytes it
//! used (the rest belong to the git conversation that follows). The pkt-line framing is
//! `gix-packetline`'s. The decoder never reserves what a length prefix claims: it copies
//! only bytes that arrived, and refuses a line longer than its limit
//! ([`MAX_REQUEST_LINE`] by default) as soon as the prefix announces it, so it holds at most
//! that many bytes.

use gix_packetline::decode::{self, Stream};
use gix_packetline::PacketLineRef;

/// Longest request pkt-line accepted, length prefix included. Paths are at most a few
/// hundred bytes; git-daemon's own bound is a pkt-line's (65520).
pub const MAX_REQUEST_LINE: usize = 8192;

/// Largest payload of one pkt-line (`gitprotocol-common`: 65520 minus the 4-byte prefix).
pub const MAX_PKT_PAYLOAD: usize = 65516;

/// The extra parameter carrying a bearer token (`git-remote-alknet` sends it when
/// `alknet.token` or `ALKNET_TOKEN` is set).
pub const TOKEN_PARAMETER: &str = "alknet-token";

/// The git service a stream asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `git-upload-pack`: clone, fetch, ls-remote.
    UploadPack,
    /// `git-receive-pack`: push.
    ReceivePack,
}

impl Service {
    /// The name on the wire (`git-upload-pack`).
    pub fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }

    /// The `git` subcommand serving it (`upload-pack`).
    pub fn subcommand(self) -> &'static str {
        match self {
            Service::UploadPack => "upload-pack",
            Service::ReceivePack => "receive-pack",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"git-upload-pack" => Some(Service::UploadPack),
            b"git-receive-pack" => Some(Service::ReceivePack),
            _ => None,
        }
    }
}

/// A decoded request line.
#[derive(Clone, PartialEq, Eq)]
pub struct GitRequest {
    pub service: Service,
    /// The repository path as sent (`/team/repo.git`); `alknet-git`'s `repo` module
    /// says what is accepted.
    pub path: String,
    /// The `host=` parameter, if sent (informational; virtual hosting is not served).
    pub host: Option<String>,
    /// The protocol version asked for with `version=N` (0, 1 or 2); `None` for v0.
    pub version: Option<u8>,
    /// A bearer token from the `alknet-token=` parameter. Never logged.
    pub token: Option<String>,
}

impl std::fmt::Debug for GitRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRequest")
            .field("service", &self.service)
            .field("path", &self.path)
            .field("host", &self.host)
            .field("version", &self.version)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a request line was refused. The display text goes to the client in an `ERR` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid pkt-line: {0}")]
    PktLine(String),
    #[error("request line too long: {len} bytes (limit {max})")]
    TooLong { len: usize, max: usize },
    #[error("expected a request line, got a {0} packet")]
    SpecialPacket(&'static str),
    #[error("the stream ended inside the request line")]
    Truncated,
    #[error("unsupported service {0:?} (git-upload-pack and git-receive-pack are served)")]
    UnknownService(String),
    #[error("malformed request line: {0}")]
    Malformed(&'static str),
    #[error("parameter {0:?} is given twice")]
    DuplicateParameter(&'static str),
}

/// What [`RequestDecoder::push`] made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The line is not complete yet: push more.
    NeedMore,
    /// The request, and how many bytes of the last push it used; the rest of that push
    /// is the start of the git conversation.
    Done {
        request: GitRequest,
        consumed: usize,
    },
}

/// Decodes the request line of one stream. Single use: after `Done` or an error, the
/// decoder has nothing more to say.
#[derive(Debug)]
pub struct RequestDecoder {
    max: usize,
    buf: Vec<u8>,
}

impl Default for RequestDecoder {
    fn default() -> Self {
        Self::new(MAX_REQUEST_LINE)
    }
}

impl RequestDecoder {
    /// A decoder refusing lines longer than `max` bytes (prefix included; at least the
    /// 4-byte prefix plus one byte, at most a pkt-line's 65520).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.clamp(5, MAX_PKT_PAYLOAD + 4),
            buf: Vec::new(),
        }
    }

    /// Takes bytes that arrived; copies only those belonging to the request line.
    pub fn push(&mut self, data: &[u8]) -> Result<Progress, RequestError> {
        let mut used = 0;
        loop {
            match decode::streaming(&self.buf).map_err(|e| RequestError::PktLine(e.to_string()))? {
                Stream::Complete { line, .. } => {
                    let request = parse_line(line)?;
                    return Ok(Progress::Done {
                        request,
                        consumed: used,
                    });
                }
                Stream::Incomplete { bytes_needed } => {
                    let len = self.buf.len() + bytes_needed;
                    if len > self.max {
                        return Err(RequestError::TooLong { len, max: self.max });
                    }
                    let rest = &data[used..];
                    if rest.is_empty() {
                        return Ok(Progress::NeedMore);
                    }
                    let take = bytes_needed.min(rest.len());
                    self.buf.extend_from_slice(&rest[..take]);
                    used += take;
                }
            }
        }
    }

    /// The stream ended: an error, since the line is not complete (or `push` would have
    /// said `Done`).
    pub fn finish(&self) -> RequestError {
        RequestError::Truncated
    }
}

fn parse_line(line: PacketLineRef<'_>) -> Result<GitRequest, RequestError> {
    let data = match line {
        PacketLineRef::Data(d) => d,
        PacketLineRef::Flush => return Err(RequestError::SpecialPacket("flush")),
        PacketLineRef::Delimiter => return Err(RequestError::SpecialPacket("delimiter")),
        PacketLineRef::ResponseEnd => return Err(RequestError::SpecialPacket("response-end")),
    };
    parse_request(data)
}

/// Parses a request line's payload (without the pkt-line prefix).
pub fn parse_request(data: &[u8]) -> Result<GitRequest, RequestError> {
    let (head, params) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let head = head.strip_suffix(b"\n").unwrap_or(head);
    let space = head
        .iter()
        .position(|&b| b == b' ')
        .ok_or(RequestError::Malformed("no space between service and path"))?;
    let (name, path) = (&head[..space], &head[space + 1..]);
    let service = Service::from_name(name)
        .ok_or_else(|| RequestError::UnknownService(String::from_utf8_lossy(name).into_owned()))?;
    if path.is_empty() {
        return Err(RequestError::Malformed("empty repository path"));
    }
    let path = std::str::from_utf8(path)
        .map_err(|_| RequestError::Malformed("repository path is not UTF-8"))?
        .to_string();
    let mut request = GitRequest {
        service,
        path,
        host: None,
        version: None,
        token: None,
    };
    // NUL-terminated fields; an empty one separates the host from the extra parameters.
    let mut extra = false;
    let params = params.strip_suffix(b"\0").unwrap_or(params);
    if params.is_empty() {
        return Ok(request);
    }
    for field in params.split(|&b| b == 0) {
        if field.is_empty() {
            if extra {
                return Err(RequestError::Malformed("empty extra parameter"));
            }
            extra = true;
            continue;
        }
        let field = std::str::from_utf8(field)
            .map_err(|_| RequestError::Malformed("parameter is not UTF-8"))?;
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        if !extra {
            // git-daemon ignores what it does not know here, and so do we
            if key == "host" {
                set_once(&mut request.host, "host", value.to_string())?;
            }
            continue;
        }
        match key {
            "version" => {
                let v = match value {
                    "0" => 0,
                    "1" => 1,
                    "2" => 2,
                    _ => return Err(RequestError::Malformed("unknown protocol version")),
                };
                set_once(&mut request.version, "version", v)?;
            }
            TOKEN_PARAMETER => {
                if value.is_empty() {
                    return Err(RequestError::Malformed("empty alknet-token"));
                }
                set_once(&mut request.token, TOKEN_PARAMETER, value.to_string())?;
            }
            // future parameters git may send: ignored, as git-daemon does
            _ => {}
        }
    }
    Ok(request)
}

fn set_once<T>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), RequestError> {
    if slot.is_some() {
        return Err(RequestError::DuplicateParameter(name));
    }
    *slot = Some(value);
    Ok(())
}

/// One pkt-line: 4 hex digits of length (prefix included), then `payload`. A payload over
/// [`MAX_PKT_PAYLOAD`] is cut there (only our own messages are encoded here).
pub fn encode_pkt_line(payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_PKT_PAYLOAD)];
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Longest message put in an `ERR` line: long enough for any of ours, short enough for a
/// terminal.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// An `ERR` pkt-line, which git shows as `fatal: remote error: MSG`.
pub fn error_line(message: &str) -> Vec<u8> {
    let mut msg = message.replace(['\n', '\r', '\0'], " ");
    if msg.len() > MAX_ERROR_MESSAGE {
        let mut cut = MAX_ERROR_MESSAGE;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
    }
    encode_pkt_line(format!("ERR {msg}\n").as_bytes())
}

/// The request line a client sends (what `git-remote-alknet` writes, and git itself with
/// `ext::…%G`).
pub fn encode_request(
    service: Service,
    path: &str,
    host: Option<&str>,
    version: Option<u8>,
    token: Option<&str>,
) -> Vec<u8> {
    let mut line = Vec::new();
    line.extend_from_slice(service.name().as_bytes());
    line.push(b' ');
    line.extend_from_slice(path.as_bytes());
    line.push(0);
    if let Some(h) = host {
        line.extend_from_slice(b"host=");
        line.extend_from_slice(h.as_bytes());
        line.push(0);
    }
    if version.is_some() || token.is_some() {
        line.push(0);
        if let Some(v) = version {
            line.extend_from_slice(format!("version={v}").as_bytes());
            line.push(0);
        }
        if let Some(t) = token {
            line.extend_from_slice(TOKEN_PARAMETER.as_bytes());
            line.push(b'=');
            line.extend_from_slice(t.as_bytes());
            line.push(0);
        }
    }
    encode_pkt_line(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<(GitRequest, usize), RequestError> {
        let mut d = RequestDecoder::default();
        match d.push(bytes)? {
            Progress::Done { request, consumed } => Ok((request, consumed)),
            Progress::NeedMore => Err(d.finish()),
        }
    }

    #[test]
    fn daemon_style_lines_as_git_sends_them() {
        // what git sends for git://host/repo.git (and ext::…%G/repo.git)
        let line = b"0033git-upload-pack /project.git\0host=myserver.com\0";
        let (r, used) = decode_all(line).expect("valid");
        assert_eq!(used, line.len());
        assert_eq!(r.service, Service::UploadPack);
        assert_eq!(r.path, "/project.git");
        assert_eq!(r.host.as_deref(), Some("myserver.com"));
        assert_eq!(r.version, None);
        // protocol v2, and without host
        let line = encode_request(Service::UploadPack, "/a/b.git", None, Some(2), None);
        let (r, _) = decode_all(&line).expect("valid");
        assert_eq!(
            (r.path.as_str(), r.host, r.version),
            ("/a/b.git", None, Some(2))
        );
        let line = encode_request(
            Service::ReceivePack,
            "/r.git",
            Some("h:1"),
            None,
            Some("secret"),
        );
        let (r, _) = decode_all(&line).expect("valid");
        assert_eq!(r.service, Service::ReceivePack);
        assert_eq!(r.token.as_deref(), Some("secret"));
        assert!(!format!("{r:?}").contains("secret"), "token never shown");
        // a bare line without NUL, and one with a newline, as old clients send
        assert_eq!(
            parse_request(b"git-upload-pack /x.git\n")
                .expect("valid")
                .path,
            "/x.git"
        );
    }

    #[test]
    fn byte_by_byte_with_the_conversation_behind_it() {
        let mut bytes = encode_request(Service::UploadPack, "/r.git", Some("h"), Some(2), None);
        let line_len = bytes.len();
        bytes.extend_from_slice(b"0014command=ls-refs\n");
        let mut d = RequestDecoder::default();
        for (i, b) in bytes.iter().enumerate() {
            match d.push(std::slice::from_ref(b)).expect("valid") {
                Progress::NeedMore => assert!(i + 1 < line_len),
                Progress::Done { request, consumed } => {
                    assert_eq!(i + 1, line_len);
                    assert_eq!(consumed, 1);
                    assert_eq!(request.version, Some(2));
                    return;
                }
            }
        }
        panic!("never completed");
    }

    #[test]
    fn leftover_is_not_consumed() {
        let mut bytes = encode_request(Service::UploadPack, "/r.git", None, None, None);
        let line_len = bytes.len();
        bytes.extend_from_slice(b"0000rest");
        let (_, used) = decode_all(&bytes).expect("valid");
        assert_eq!(used, line_len);
    }

    #[test]
    fn hostile_lines_are_refused() {
        let too_long = RequestDecoder::new(100).push(b"0100").expect_err("long");
        assert_eq!(too_long, RequestError::TooLong { len: 256, max: 100 });
        // past what a pkt-line can be at all
        assert!(matches!(decode_all(b"ffff"), Err(RequestError::PktLine(_))));
        // refused on the prefix alone: nothing of the claimed body was needed
        assert!(matches!(
            RequestDecoder::default().push(b"fff0"),
            Err(RequestError::TooLong { .. })
        ));
        assert!(matches!(decode_all(b"zzzz"), Err(RequestError::PktLine(_))));
        assert!(matches!(decode_all(b"0003"), Err(RequestError::PktLine(_))));
        assert_eq!(
            decode_all(b"0000").expect_err("flush"),
            RequestError::SpecialPacket("flush")
        );
        assert_eq!(
            decode_all(b"0001").expect_err("delim"),
            RequestError::SpecialPacket("delimiter")
        );
        assert_eq!(
            decode_all(b"00").expect_err("short"),
            RequestError::Truncated
        );
        assert_eq!(
            decode_all(b"0010git-upl").expect_err("short"),
            RequestError::Truncated
        );
        let bad = |payload: &[u8]| decode_all(&encode_pkt_line(payload)).expect_err("bad");
        assert!(matches!(
            bad(b"git-upload-pack"),
            RequestError::Malformed(_)
        ));
        assert!(matches!(
            bad(b"git-upload-pack \0"),
            RequestError::Malformed(_)
        ));
        assert!(matches!(
            bad(b"git-upload-archive /r\0"),
            RequestError::UnknownService(_)
        ));
        assert!(matches!(
            bad(b"rm -rf /\0"),
            RequestError::UnknownService(_)
        ));
        assert!(matches!(
            bad(b"git-upload-pack /\xff\0"),
            RequestError::Malformed(_)
        ));
        assert!(matches!(
            bad(b"git-upload-pack /r\0host=a\0host=b\0"),
            RequestError::DuplicateParameter("host")
        ));
        assert!(matches!(
            bad(b"git-upload-pack /r\0\0version=2\0version=2\0"),
            RequestError::DuplicateParameter("version")
        ));
        assert!(matches!(
            bad(b"git-upload-pack /r\0\0version=9\0"),
            RequestError::Malformed(_)
        ));
        assert!(matches!(
            bad(b"git-upload-pack /r\0\0version=2\0\0x\0"),
            RequestError::Malformed(_)
        ));
        // unknown parameters are ignored, as git-daemon does
        let r =
            decode_all(&encode_pkt_line(b"git-upload-pack /r\0x=1\0\0future=3\0")).expect("valid");
        assert_eq!((r.0.host, r.0.version), (None, None));
    }

    #[test]
    fn error_lines_are_single_bounded_pkt_lines() {
        assert_eq!(
            error_line("no such repository"),
            b"001bERR no such repository\n"
        );
        let long = error_line(&"é\n".repeat(5000));
        assert!(long.len() <= MAX_ERROR_MESSAGE + 10);
        let text = std::str::from_utf8(&long[4..]).expect("utf8 kept whole");
        assert_eq!(text.matches('\n').count(), 1, "one line");
        assert_eq!(
            usize::from_str_radix(std::str::from_utf8(&long[..4]).expect("hex"), 16).expect("hex"),
            long.len()
        );
    }
}
