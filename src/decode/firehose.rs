//! EKS via Kinesis Data Firehose: an HTTP-endpoint delivery request,
//! `{"requestId","timestamp","records":[{"data":"<base64>"}]}`. Each `data`
//! is base64 of what the stream carried: for a CloudWatch Logs subscription,
//! a gzip'd subscription payload. The decoded bytes go through the full
//! decoder, so gzip, JSON lines and raw events work too.

use std::borrow::Cow;

use base64::Engine;
use serde_json::value::RawValue;

use super::{Dispatch, Error};
use crate::event::Envelope;

/// One `records[]` element whose `data` is `data`.
pub(super) fn record(d: &mut Dispatch<'_, '_>, data: &RawValue, line: u64) {
    let text = match serde_json::from_str::<Cow<'_, str>>(data.get()) {
        Ok(t) => t,
        Err(_) => return bad(d, data, line, "'data' is not a string".into()),
    };
    match base64::engine::general_purpose::STANDARD.decode(text.trim().as_bytes()) {
        Ok(payload) => d.nested(&payload, line, Envelope::Firehose),
        Err(e) => bad(d, data, line, format!("'data' is not base64: {e}")),
    }
}

fn bad(d: &mut Dispatch<'_, '_>, data: &RawValue, line: u64, reason: String) {
    d.malformed(
        line,
        data.get().as_bytes(),
        Error::Envelope {
            envelope: "firehose",
            reason,
        },
    );
}
