//! Shipper wrappers: a record whose `message` (Vector's file source) or
//! `log` (Fluent Bit's tail input, Docker's json-file) field holds the audit
//! event as a JSON string. The other keys (`@timestamp`, `host`, `file`,
//! `source_type`, ...) are the shipper's and are ignored.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::{Dispatch, Error};
use crate::event::Envelope;

/// `inner` is the raw JSON string value of `message` or `log`.
pub(super) fn record(d: &mut Dispatch<'_, '_>, inner: &RawValue, line: u64) {
    let text = match serde_json::from_str::<Cow<'_, str>>(inner.get()) {
        Ok(t) => t,
        Err(e) => {
            return d.malformed(
                line,
                inner.get().as_bytes(),
                Error::Envelope {
                    envelope: "wrapped",
                    reason: format!("the wrapped string is not valid: {e}"),
                },
            );
        }
    };
    let text = text.trim();
    if !text.starts_with('{') {
        return d.malformed(
            line,
            text.as_bytes(),
            Error::NotAuditEvent("a shipper record whose message is not a JSON object".into()),
        );
    }
    d.event_text(text, line, Envelope::Wrapped, None);
}
