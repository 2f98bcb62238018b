//! Typed bodies of the backend messages the proxy reads: ErrorResponse
//! (severity, SQLSTATE, message), ParameterStatus, ReadyForQuery's
//! transaction status, and — through [`decode`] — BackendKeyData and the
//! Authentication requests (SASL included) of the proxy's own upstream
//! logins. This is the one place each of them is read.
//!
//! Decoding is `postgres-protocol`'s (`Message::parse`), which checks every
//! length and string terminator and reports malformed input as an error,
//! never a panic. The relay reads only the few small frames it inspects;
//! rows and COPY data never come here.

use bytes::BytesMut;
use pgwire::messages::response::TransactionStatus;
use postgres_protocol::message::backend::{ErrorFields, Message};
use tokio_postgres::fallible_iterator::FallibleIterator;

use super::ProtocolError;

/// Tags `postgres-protocol` decodes; anything else is unexpected here.
const KNOWN: &[u8] = b"123ACcdDEGHIKnNRsStTZ";

/// Decode one whole backend frame (header included); `frame` is consumed.
pub fn decode(frame: &mut BytesMut) -> Result<Message, ProtocolError> {
    let tag = frame.first().copied().unwrap_or(0);
    if !KNOWN.contains(&tag) {
        return Err(ProtocolError::Unexpected(tag as char));
    }
    match Message::parse(frame) {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(ProtocolError::Truncated(tag as char)),
        Err(source) => Err(ProtocolError::Malformed {
            tag: tag as char,
            source,
        }),
    }
}

/// Decode a frame the relay holds in its buffer. The copy is the price of
/// `postgres-protocol`'s owned buffers; only small, rare frames (errors,
/// setting reports) come here.
fn decode_copy(frame: &[u8]) -> Option<Message> {
    decode(&mut BytesMut::from(frame)).ok()
}

/// An ErrorResponse as the proxy reads it. Fields the server left out are
/// empty; values are read as UTF-8, lossily.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// The non-localized severity (`V`), or the localized one (`S`) from
    /// servers older than 9.6.
    pub severity: String,
    /// The SQLSTATE (`C`).
    pub code: String,
    /// The primary message (`M`).
    pub message: String,
}

impl ServerError {
    /// Read the fields of an ErrorResponse (or NoticeResponse) body.
    pub fn from_fields(mut fields: ErrorFields<'_>) -> std::io::Result<ServerError> {
        let mut e = ServerError::default();
        let mut localized = None;
        while let Some(f) = fields.next()? {
            let value = || String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'V' => e.severity = value(),
                b'S' => localized = Some(value()),
                b'C' => e.code = value(),
                b'M' => e.message = value(),
                _ => {}
            }
        }
        if e.severity.is_empty() {
            e.severity = localized.unwrap_or_default();
        }
        Ok(e)
    }

    /// Read one whole ErrorResponse frame (header included).
    pub fn from_frame(frame: &[u8]) -> Option<ServerError> {
        match decode_copy(frame)? {
            Message::ErrorResponse(body) => ServerError::from_fields(body.fields()).ok(),
            _ => None,
        }
    }

    /// Severity FATAL or PANIC: the server is closing the connection.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }
}

/// A ParameterStatus: a reported setting and its new value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterStatus {
    pub name: String,
    pub value: String,
}

impl ParameterStatus {
    /// Read one whole ParameterStatus frame (header included). `None` when
    /// it is malformed or not UTF-8.
    pub fn from_frame(frame: &[u8]) -> Option<ParameterStatus> {
        match decode_copy(frame)? {
            Message::ParameterStatus(body) => Some(ParameterStatus {
                name: body.name().ok()?.to_string(),
                value: body.value().ok()?.to_string(),
            }),
            _ => None,
        }
    }
}

/// The transaction status of one whole ReadyForQuery frame (header
/// included): read in place, as it comes once per request.
#[inline]
pub fn ready_for_query(frame: &[u8]) -> Option<TransactionStatus> {
    match frame {
        [b'Z', 0, 0, 0, 5, status] => TransactionStatus::try_from(*status).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn error_fields_are_read_by_name() {
        let f = frame(b'E', b"SFATAL\0VFATAL\0C57P01\0Mterminating connection\0\0");
        let e = ServerError::from_frame(&f).expect("decodes");
        assert_eq!(
            (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
            ("FATAL", "57P01", "terminating connection")
        );
        assert!(e.is_fatal());
        // Localized severity only (pre-9.6), translated messages.
        let f = frame(b'E', b"SERROR\0C42601\0Msyntax\0\0");
        let e = ServerError::from_frame(&f).expect("decodes");
        assert_eq!(e.severity, "ERROR");
        assert!(!e.is_fatal());
    }

    #[test]
    fn malformed_bodies_are_not_read() {
        // No terminator, a value without NUL, trailing bytes.
        for body in [&b"SFATAL\0"[..], b"SFATAL", b"SFATAL\0\0x", b""] {
            assert_eq!(
                ServerError::from_frame(&frame(b'E', body)),
                None,
                "{body:?}"
            );
        }
        assert_eq!(ParameterStatus::from_frame(&frame(b'S', b"a\0")), None);
        assert_eq!(
            ParameterStatus::from_frame(&frame(b'S', b"a\0\xff\0")),
            None
        );
        assert_eq!(
            ParameterStatus::from_frame(&frame(b'S', b"TimeZone\0UTC\0")),
            Some(ParameterStatus {
                name: "TimeZone".into(),
                value: "UTC".into()
            })
        );
        assert_eq!(ServerError::from_frame(&frame(b'S', b"a\0b\0")), None);
        assert!(matches!(
            decode(&mut BytesMut::from(&frame(b'v', b"")[..])),
            Err(ProtocolError::Unexpected('v'))
        ));
    }

    #[test]
    fn ready_for_query_status() {
        assert_eq!(
            ready_for_query(&frame(b'Z', b"T")),
            Some(TransactionStatus::Transaction)
        );
        assert_eq!(ready_for_query(&frame(b'Z', b"x")), None);
        assert_eq!(ready_for_query(&frame(b'Z', b"II")), None);
    }
}
