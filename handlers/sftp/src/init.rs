//! A token in `SSH_FXP_INIT`, sans-IO: how an `alknet/sftp` session without a client
//! certificate names its identity.
//!
//! SFTP v3's `SSH_FXP_INIT` is `byte 1, uint32 version`, then extension pairs (`string
//! name, string data`; draft-ietf-secsh-filexfer-02, section 4), which OpenSSH's client
//! never sends and servers ignore when they do not know them. `alknet connect --alpn
//! alknet/sftp --token T` appends one, [`TOKEN_EXTENSION`], to the `INIT` the local
//! `sftp` writes ([`with_token`]); the server reads it back ([`token_of`]) before it
//! answers with `SSH_FXP_VERSION`, and the stream stays plain SFTP v3. A client
//! certificate with an SFTP scope takes precedence, as over WebTransport's `?token=`.
//!
//! Memory: [`token_of`] borrows from the packet the frame decoder already bounded by
//! `sftp.max_packet`; [`with_token`] copies one `INIT` (at most [`MAX_INIT`] bytes).

/// The `INIT` extension carrying the token (a name with `@`, as vendor extensions are
/// named).
pub const TOKEN_EXTENSION: &str = "token@alknet";

/// Largest `INIT` packet (length prefix included) the client side rewrites: OpenSSH's is 9
/// bytes; anything this long is not an `INIT` to rewrite.
pub const MAX_INIT: usize = 64 * 1024;

/// The packet type of `SSH_FXP_INIT`, the first packet of every session.
pub const SSH_FXP_INIT: u8 = 1;

/// An `INIT` that cannot carry or give a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    #[error("the first packet is not SSH_FXP_INIT")]
    NotInit,
    #[error("SSH_FXP_INIT is truncated")]
    Truncated,
    #[error("SSH_FXP_INIT is longer than {MAX_INIT} bytes")]
    TooLong,
    #[error("SSH_FXP_INIT names {TOKEN_EXTENSION} twice")]
    TwoTokens,
    #[error("the {TOKEN_EXTENSION} extension is not UTF-8")]
    NotUtf8,
}

/// The token of an `INIT` packet (type byte first, no length prefix: what the frame
/// decoder yields), if it carries one.
pub fn token_of(init: &[u8]) -> Result<Option<&str>, InitError> {
    let (&kind, rest) = init.split_first().ok_or(InitError::Truncated)?;
    if kind != SSH_FXP_INIT {
        return Err(InitError::NotInit);
    }
    let mut rest = rest.get(4..).ok_or(InitError::Truncated)?;
    let mut token = None;
    while !rest.is_empty() {
        let (name, after) = string(rest)?;
        let (data, after) = string(after)?;
        rest = after;
        if name == TOKEN_EXTENSION.as_bytes() {
            if token.is_some() {
                return Err(InitError::TwoTokens);
            }
            token = Some(std::str::from_utf8(data).map_err(|_| InitError::NotUtf8)?);
        }
    }
    Ok(token)
}

/// The length (prefix included) of the first packet in `buf`, once all of it is there.
pub fn first_packet_len(buf: &[u8]) -> Option<usize> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let total = len.checked_add(4)?;
    (buf.len() >= total).then_some(total)
}

/// `packet` (an `INIT` with its length prefix, as a client writes it) with the token
/// extension appended.
pub fn with_token(packet: &[u8], token: &str) -> Result<Vec<u8>, InitError> {
    if packet.len() > MAX_INIT {
        return Err(InitError::TooLong);
    }
    let total = first_packet_len(packet).ok_or(InitError::Truncated)?;
    if total != packet.len() {
        return Err(InitError::Truncated);
    }
    if token_of(&packet[4..])?.is_some() {
        return Err(InitError::TwoTokens);
    }
    let mut out = Vec::with_capacity(packet.len() + 8 + TOKEN_EXTENSION.len() + token.len());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&packet[4..]);
    for s in [TOKEN_EXTENSION.as_bytes(), token.as_bytes()] {
        let len = u32::try_from(s.len()).map_err(|_| InitError::TooLong)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(s);
    }
    if out.len() > MAX_INIT {
        return Err(InitError::TooLong);
    }
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// An SSH `string` (`uint32` length, bytes) and what follows it.
fn string(buf: &[u8]) -> Result<(&[u8], &[u8]), InitError> {
    let len = u32::from_be_bytes(
        buf.get(..4)
            .ok_or(InitError::Truncated)?
            .try_into()
            .map_err(|_| InitError::Truncated)?,
    ) as usize;
    let rest = &buf[4..];
    if rest.len() < len {
        return Err(InitError::Truncated);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenSSH's `INIT`: length 5, type 1, version 3.
    const OPENSSH_INIT: [u8; 9] = [0, 0, 0, 5, 1, 0, 0, 0, 3];

    #[test]
    fn a_token_goes_in_and_comes_back() {
        assert_eq!(token_of(&OPENSSH_INIT[4..]), Ok(None));
        let with = with_token(&OPENSSH_INIT, "s3cret/+ x").expect("rewrite");
        assert_eq!(first_packet_len(&with), Some(with.len()));
        assert_eq!(&with[4..9], &OPENSSH_INIT[4..]);
        assert_eq!(token_of(&with[4..]), Ok(Some("s3cret/+ x")));
        // other extensions around it are skipped
        let mut other = with.clone();
        for s in [&b"x@y"[..], b"z"] {
            other.extend_from_slice(&(s.len() as u32).to_be_bytes());
            other.extend_from_slice(s);
        }
        assert_eq!(token_of(&other[4..]), Ok(Some("s3cret/+ x")));
    }

    #[test]
    fn refuses_what_is_not_one_whole_init() {
        assert_eq!(token_of(&[]), Err(InitError::Truncated));
        assert_eq!(token_of(&[3, 0, 0, 0, 3]), Err(InitError::NotInit));
        assert_eq!(token_of(&[1, 0, 0]), Err(InitError::Truncated));
        // an extension name longer than what is left
        assert_eq!(
            token_of(&[1, 0, 0, 0, 3, 0, 0, 0, 9, b'a']),
            Err(InitError::Truncated)
        );
        // a name without its data
        assert_eq!(
            token_of(&[1, 0, 0, 0, 3, 0, 0, 0, 1, b'a']),
            Err(InitError::Truncated)
        );
        let with = with_token(&OPENSSH_INIT, "t").expect("rewrite");
        assert_eq!(with_token(&with, "u"), Err(InitError::TwoTokens));
        let mut twice = with.clone();
        twice.extend_from_slice(&with[9..]);
        assert_eq!(token_of(&twice[4..]), Err(InitError::TwoTokens));
        assert_eq!(
            with_token(&OPENSSH_INIT[..8], "t"),
            Err(InitError::Truncated)
        );
        assert_eq!(
            with_token(&[0, 0, 0, 5, 3, 0, 0, 0, 3], "t"),
            Err(InitError::NotInit)
        );
        assert_eq!(
            with_token(&OPENSSH_INIT, &"t".repeat(MAX_INIT)),
            Err(InitError::TooLong)
        );
        let mut bad = with_token(&OPENSSH_INIT, "t").expect("rewrite");
        let at = bad.len() - 1;
        bad[at] = 0xff;
        assert_eq!(token_of(&bad[4..]), Err(InitError::NotUtf8));
    }

    #[test]
    fn first_packet_len_waits_for_the_whole_packet() {
        assert_eq!(first_packet_len(&OPENSSH_INIT[..3]), None);
        assert_eq!(first_packet_len(&OPENSSH_INIT[..8]), None);
        assert_eq!(first_packet_len(&OPENSSH_INIT), Some(9));
        let mut two = OPENSSH_INIT.to_vec();
        two.extend_from_slice(&OPENSSH_INIT);
        assert_eq!(first_packet_len(&two), Some(9));
        assert_eq!(first_packet_len(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}
