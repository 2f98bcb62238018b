//! Typed bodies of the frontend messages the proxy reads: during the login
//! the password messages (`PasswordMessage`, `SASLInitialResponse`), and
//! after it `Query`, `Parse` and `FunctionCall`, the statements the runtime
//! policy and the migration audit see. This is the one place each of them
//! is read.
//!
//! They are read in place (every statement passes here) and exactly: the
//! policy classifies the bytes the server will execute, so a body with
//! anything the server would read differently (bytes after an embedded NUL,
//! a parameter-type list that does not fill the message) is reported as not
//! [`exact`](Query::exact), and the policy refuses it. The audit logs what a
//! lenient reading finds.

use super::take_cstr;

/// A `PasswordMessage` body: one NUL-terminated string (a migration
/// login's token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordMessage<'a> {
    /// The password, or `None` when it is not a terminated UTF-8 string.
    pub password: Option<&'a str>,
}

impl<'a> PasswordMessage<'a> {
    pub fn read(body: &'a [u8]) -> PasswordMessage<'a> {
        let mut b = body;
        let password = take_cstr(&mut b).and_then(|t| std::str::from_utf8(t).ok());
        PasswordMessage { password }
    }
}

/// A `SASLInitialResponse` body: the mechanism's name, then an Int32
/// length (-1 = no data) and that many bytes, nothing after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a str,
    pub data: &'a [u8],
}

impl<'a> SaslInitialResponse<'a> {
    /// `None` when the body is not exactly that layout (or the length is
    /// -1: SCRAM's client-first-message is never empty).
    pub fn read(body: &'a [u8]) -> Option<SaslInitialResponse<'a>> {
        let mut b = body;
        let mechanism = std::str::from_utf8(take_cstr(&mut b)?).ok()?;
        let (len, data) = b.split_first_chunk::<4>()?;
        let len = usize::try_from(i32::from_be_bytes(*len)).ok()?;
        (len == data.len()).then_some(SaslInitialResponse { mechanism, data })
    }
}

/// A `Query` body: one NUL-terminated string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// The text up to the first NUL (empty if there is none).
    pub text: &'a [u8],
    /// The body is exactly the text and its terminator.
    pub exact: bool,
}

impl<'a> Query<'a> {
    pub fn read(body: &'a [u8]) -> Query<'a> {
        let mut b = body;
        let text = take_cstr(&mut b).unwrap_or_default();
        Query {
            text,
            exact: body.last() == Some(&0) && text.len() + 1 == body.len(),
        }
    }
}

/// A `Parse` body: statement name, text, an Int16 count and that many Int32
/// parameter type OIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    /// The statement text (empty if the body ends before it).
    pub text: &'a [u8],
    /// The body is exactly that layout, nothing more or less.
    pub exact: bool,
}

impl<'a> Parse<'a> {
    pub fn read(body: &'a [u8]) -> Parse<'a> {
        let mut b = body;
        let (Some(name), Some(text)) = (take_cstr(&mut b), take_cstr(&mut b)) else {
            return Parse {
                name: b"",
                text: b"",
                exact: false,
            };
        };
        let count = b
            .get(..2)
            .map(|n| i16::from_be_bytes([n[0], n[1]]))
            .and_then(|n| usize::try_from(n).ok());
        Parse {
            name,
            text,
            exact: count.is_some_and(|n| b.len() == 2 + 4 * n),
        }
    }
}

/// A `FunctionCall` body, as far as the proxy reads it: the function OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionCall {
    /// 0 when the body is too short to hold one.
    pub oid: i32,
}

impl FunctionCall {
    pub fn read(body: &[u8]) -> FunctionCall {
        let oid = body
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        FunctionCall { oid }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(body: &[u8]) -> Option<&[u8]> {
        let q = Query::read(body);
        q.exact.then_some(q.text)
    }

    fn parse(body: &[u8]) -> Option<(&[u8], &[u8])> {
        let p = Parse::read(body);
        p.exact.then_some((p.name, p.text))
    }

    #[test]
    fn message_texts_are_read_whole_or_not_at_all() {
        assert_eq!(query(b"SELECT 1\0"), Some(&b"SELECT 1"[..]));
        assert_eq!(query(b"SELECT 1\0DROP TABLE t\0"), None);
        assert_eq!(query(b"SELECT 1"), None);
        assert_eq!(query(b""), None);
        assert_eq!(
            parse(b"s\0SELECT $1\0\0\x01\0\0\0\x17"),
            Some((&b"s"[..], &b"SELECT $1"[..]))
        );
        assert_eq!(
            parse(b"\0SELECT 1\0\0\0"),
            Some((&b""[..], &b"SELECT 1"[..]))
        );
        assert_eq!(parse(b"\0SELECT 1\0DROP TABLE t\0\0\0"), None);
        assert_eq!(parse(b"\0SELECT 1\0\0\x01"), None);
        assert_eq!(parse(b"\0SELECT 1\0\xff\xff"), None);
    }

    #[test]
    fn the_lenient_reading_is_what_the_audit_logs() {
        assert_eq!(Query::read(b"SELECT 1\0junk").text, b"SELECT 1");
        assert_eq!(Query::read(b"SELECT 1").text, b"");
        assert_eq!(Parse::read(b"s\0SELECT 2\0").text, b"SELECT 2");
        assert_eq!(Parse::read(b"s").text, b"");
        assert_eq!(FunctionCall::read(b"\0\0\x03\xbc rest").oid, 956);
        assert_eq!(FunctionCall::read(b"\0\0").oid, 0);
    }
}
