//! Decoding: bytes in any supported envelope to [`AuditEvent`]s.
//!
//! Input: a byte stream (a file, stdin, a Kafka message, an HTTP body),
//! plain or gzip. Output: calls on a [`Sink`]: each audit event, each input
//! that is not one (with the reason and a sample of its bytes), each
//! non-audit record an envelope carries (skipped and counted).
//!
//! The envelope is recognised by shape, per value:
//!
//! | shape | module |
//! |---|---|
//! | `Event`, `EventList` (`items`), a JSON array, JSON lines | `k8s` |
//! | `{"messageType","logGroup","logEvents":[{"message"}]}` (EKS) | `cloudwatch` |
//! | `{"records":[{"data": base64}]}` (Firehose HTTP endpoint) | `firehose` |
//! | `{"protoPayload":{"serviceName":"k8s.io"}}`, Pub/Sub push (GKE) | `gke` |
//! | `{"records":[{"category","properties":{"log"}}]}` (AKS) | `aks` |
//! | `{"message": "<event>"}` (Vector), `{"log": "<event>"}` (Fluent Bit) | `wrapped` |
//!
//! Framing (cutting the stream into values, streaming big arrays, size caps)
//! is in `framing`. Nothing here panics on input, and nothing is dropped
//! silently: every byte ends up in an event, a problem or a skip count.

mod aks;
mod cloudwatch;
mod firehose;
pub mod framing;
mod gke;
mod k8s;
mod wrapped;

use std::borrow::Cow;
use std::io::{self, BufReader, Read};

use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{AuditEvent, Envelope};
use framing::{Caps, Frame};

pub use k8s::sniff_audit_id;

/// Size limits (DESIGN.md, "Size").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// One audit event; larger ones are quarantined as oversized.
    pub max_event_bytes: usize,
    /// One line or top-level value that may hold a whole envelope.
    pub max_document_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 8 << 20,
            max_document_bytes: 64 << 20,
        }
    }
}

/// What a decoder needs to know about the input it reads.
#[derive(Debug, Clone, Default)]
pub struct Context<'c> {
    /// The input's name (a path, `-`, a source name), set on every event.
    pub source: &'c str,
    /// The cluster set by the source; wins over the envelope's.
    pub cluster: Option<&'c str>,
    /// The cluster for events that name none (the config's `cluster`).
    pub default_cluster: Option<&'c str>,
    pub limits: Limits,
    /// Evaluate RequestReceived events: the source's audit policy omits
    /// the later stages.
    pub request_received: bool,
    /// The envelopes this source may send (a source configured for one
    /// shape); an event that came in another is refused as malformed.
    /// `None`: any shape ([`expected_envelopes`]).
    pub expect: Option<&'static [Envelope]>,
    /// Set when decoding a payload nested in another envelope.
    nested: Option<Nested>,
}

/// The envelopes a source's configured `envelope` name allows: `auto` and
/// `field:NAME` (the field is taken out by the source) allow any; `None`
/// for a name that is not one.
pub fn expected_envelopes(name: &str) -> Option<Option<&'static [Envelope]>> {
    const RAW: &[Envelope] = &[Envelope::Event, Envelope::EventList, Envelope::Array];
    Some(match name {
        "auto" => None,
        "raw" | "eventlist" => Some(RAW),
        "cloudwatch" => Some(&[Envelope::CloudWatch]),
        "firehose" => Some(&[Envelope::Firehose]),
        "aks" => Some(&[Envelope::Aks]),
        "gke" => Some(&[Envelope::Gke, Envelope::GkePubSub]),
        n if n.starts_with("field:") => None,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy)]
struct Nested {
    /// The envelope that carried the payload (reported on its events).
    via: Envelope,
    /// The outer input's line, reported for everything inside.
    line: u64,
    depth: u8,
}

impl<'c> Context<'c> {
    pub fn new(limits: Limits) -> Self {
        Context {
            limits,
            ..Context::default()
        }
    }

    /// The same context for another input.
    pub fn for_source<'s>(&self, source: &'s str) -> Context<'s>
    where
        'c: 's,
    {
        Context {
            source,
            ..self.clone()
        }
    }
}

/// Why some input is not an audit event.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("not an audit event: {0}")]
    NotAuditEvent(String),
    #[error("invalid UTF-8 at byte {offset}")]
    InvalidUtf8 { offset: usize },
    #[error("{0}")]
    Structure(String),
    #[error(
        "{what} of {size} bytes is over the {limit}-byte cap (decode.max_event_bytes / max_document_bytes)"
    )]
    Oversized {
        what: &'static str,
        size: u64,
        limit: usize,
    },
    #[error(
        "the log pipeline truncated this event (CloudWatch '[Truncated...]'); it was {size} bytes when cut"
    )]
    Truncated { size: usize },
    #[error("{envelope}: {reason}")]
    Envelope {
        envelope: &'static str,
        reason: String,
    },
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    #[error("line {line}: read error: {source}")]
    Read { line: u64, source: io::Error },
}

/// What kind of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Not an audit event (or not even JSON).
    Malformed,
    /// Over a size cap (an evasion trick: padding).
    Oversized,
    /// Cut short by the log pipeline before it reached us.
    Truncated,
}

/// An input that did not yield an audit event.
#[derive(Debug)]
pub struct Problem<'a> {
    pub kind: ProblemKind,
    /// 1-based line where the offending value began.
    pub line: u64,
    pub error: Error,
    /// The first bytes of the offending input (capped), for the quarantine.
    pub sample: &'a [u8],
    /// The auditID, when one could be read from what arrived.
    pub audit_id: Option<&'a str>,
}

/// Receives what a decoder finds.
pub trait Sink {
    /// One audit event. It borrows the decoder's buffer: copy what you keep.
    fn event(&mut self, event: &AuditEvent<'_>);
    /// An input that is not an audit event.
    fn problem(&mut self, problem: &Problem<'_>);
    /// A record an envelope carries that is not an audit event by design
    /// (CloudWatch control messages, klog lines in AKS, ...).
    fn skipped(&mut self, line: u64, what: &'static str);
}

/// Decodes everything in `input` (plain or gzip) into `sink`.
///
/// # Errors
/// Only read errors, including a corrupt or truncated gzip stream; what was
/// decoded before the error has been delivered to the sink.
pub fn decode<R: Read>(input: R, ctx: &Context<'_>, sink: &mut dyn Sink) -> Result<(), Error> {
    // Peek at two bytes (a pipe may deliver one at a time) to spot gzip.
    let mut input = input;
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match input.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    let gzip = got == 2 && magic == [0x1f, 0x8b];
    let input = BufReader::with_capacity(
        64 * 1024,
        io::Cursor::new(magic[..got].to_vec()).chain(input),
    );
    let caps = Caps {
        value: ctx.limits.max_event_bytes,
        document: ctx.limits.max_document_bytes,
    };
    let mut d = Dispatch {
        ctx,
        sink,
        array: Array::None,
    };
    let result = if gzip && ctx.nested.is_some() {
        // A gzip payload inside an envelope (Firehose, Pub/Sub) inflates to
        // at most one document: a compression bomb costs bounded time. What
        // is cut off ends inside a value and is reported as malformed.
        let limit = ctx.limits.max_document_bytes as u64;
        framing::frame(MultiGzDecoder::new(input).take(limit), caps, &mut |f| {
            d.frame(f)
        })
    } else if gzip {
        framing::frame(MultiGzDecoder::new(input), caps, &mut |f| d.frame(f))
    } else {
        framing::frame(input, caps, &mut |f| d.frame(f))
    };
    result.map_err(|e| Error::Read {
        line: e.line,
        source: e.source,
    })
}

/// Which array is being streamed, and what its elements are.
enum Array {
    None,
    /// A top-level JSON array: each element is any value.
    Top,
    /// `EventList.items`: each element is an event.
    Items,
    /// CloudWatch `logEvents`.
    LogEvents(cloudwatch::Head),
    /// Firehose or AKS `records`.
    Records,
    /// A streamed array in an object that is no envelope we know.
    Unknown,
}

/// Routes frames to the envelope decoders and results to the sink.
pub(crate) struct Dispatch<'c, 's> {
    ctx: &'c Context<'c>,
    sink: &'s mut dyn Sink,
    array: Array,
}

impl<'c> Dispatch<'c, '_> {
    fn frame(&mut self, f: Frame<'_>) {
        match f {
            Frame::Value { bytes, line } => self.value(bytes, self.line(line), Envelope::Event, 0),
            Frame::ArrayStart { head, key, line } => {
                self.array = match (head, key) {
                    (None, _) => Array::Top,
                    (Some(_), "items") => Array::Items,
                    (Some(h), "logEvents") => Array::LogEvents(cloudwatch::Head::parse(h)),
                    (Some(_), "records") => Array::Records,
                    (Some(_), _) => Array::Unknown,
                };
                let _ = line;
            }
            Frame::Element { bytes, line } => {
                let line = self.line(line);
                match std::mem::replace(&mut self.array, Array::None) {
                    Array::Top => {
                        self.value(bytes, line, Envelope::Array, 0);
                        self.array = Array::Top;
                    }
                    Array::Items => {
                        self.event_bytes(bytes, line, Envelope::EventList, None);
                        self.array = Array::Items;
                    }
                    Array::LogEvents(head) => {
                        cloudwatch::log_event(self, bytes, line, &head);
                        self.array = Array::LogEvents(head);
                    }
                    Array::Records => {
                        self.record(bytes, line);
                        self.array = Array::Records;
                    }
                    Array::Unknown | Array::None => {
                        self.malformed(
                            line,
                            bytes,
                            Error::NotAuditEvent(
                                "an array element of an object that is no known envelope".into(),
                            ),
                        );
                        self.array = Array::Unknown;
                    }
                }
            }
            Frame::ArrayEnd => self.array = Array::None,
            Frame::Oversized {
                sample,
                size,
                limit,
                line,
            } => {
                let what = if limit == self.ctx.limits.max_event_bytes {
                    "event"
                } else {
                    "input value"
                };
                self.sink.problem(&Problem {
                    kind: ProblemKind::Oversized,
                    line: self.line(line),
                    error: Error::Oversized { what, size, limit },
                    sample,
                    audit_id: sniff_audit_id(sample),
                });
            }
            Frame::Invalid {
                error,
                sample,
                line,
            } => {
                let line = self.line(line);
                self.malformed(line, sample, Error::Structure(error));
            }
        }
    }

    /// The line to report: the outer input's when nested.
    fn line(&self, line: u64) -> u64 {
        self.ctx.nested.map_or(line, |n| n.line)
    }

    fn envelope(&self, own: Envelope) -> Envelope {
        self.ctx.nested.map_or(own, |n| n.via)
    }

    pub(crate) fn malformed(&mut self, line: u64, sample: &[u8], error: Error) {
        let sample = &sample[..sample.len().min(framing::SAMPLE_BYTES)];
        self.sink.problem(&Problem {
            kind: ProblemKind::Malformed,
            line,
            error,
            sample,
            audit_id: sniff_audit_id(sample),
        });
    }

    pub(crate) fn skipped(&mut self, line: u64, what: &'static str) {
        self.sink.skipped(line, what);
    }

    /// Delivers an event after setting its cluster and origin.
    pub(crate) fn emit<'a>(
        &mut self,
        mut ev: AuditEvent<'a>,
        line: u64,
        envelope: Envelope,
        envelope_cluster: Option<&'a str>,
    ) where
        'c: 'a,
    {
        let cluster = self
            .ctx
            .cluster
            .or(envelope_cluster)
            .or(self.ctx.default_cluster)
            .filter(|c| !c.is_empty());
        ev.cluster = cluster.map(|c| {
            if c.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(c.to_ascii_lowercase())
            } else {
                Cow::Borrowed(c)
            }
        });
        let envelope = self.envelope(envelope);
        if let Some(allowed) = self.ctx.expect
            && !allowed.contains(&envelope)
        {
            // Shaped like another source's data: not taken from here.
            let error = Error::NotAuditEvent(format!(
                "this source takes {} envelopes; this event came as {}",
                allowed
                    .iter()
                    .map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                envelope.as_str()
            ));
            let id = ev.audit_id();
            return self.sink.problem(&Problem {
                kind: ProblemKind::Malformed,
                line,
                error,
                sample: id.as_bytes(),
                audit_id: Some(id),
            });
        }
        ev.origin.envelope = envelope;
        ev.origin.line = line;
        ev.source = self.ctx.source;
        ev.outcome_at_request = self.ctx.request_received;
        self.sink.event(&ev);
    }

    /// One complete value of unknown shape: an event or an envelope.
    fn value(&mut self, bytes: &[u8], line: u64, envelope: Envelope, depth: u8) {
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                return self.malformed(
                    line,
                    bytes,
                    Error::InvalidUtf8 {
                        offset: e.valid_up_to(),
                    },
                );
            }
        };
        if text.starts_with('[') {
            return self.array_value(text, line, depth);
        }
        let event_err = if bytes.len() <= self.ctx.limits.max_event_bytes {
            match AuditEvent::parse(text) {
                Ok(ev) => match ev.validate() {
                    Ok(()) => return self.emit(ev, line, envelope, None),
                    Err(reason) => Error::NotAuditEvent(reason.into()),
                },
                Err(e) => json_error(e),
            }
        } else {
            Error::Oversized {
                what: "event",
                size: bytes.len() as u64,
                limit: self.ctx.limits.max_event_bytes,
            }
        };
        if matches!(event_err, Error::NotJson(_)) {
            return self.malformed(line, bytes, event_err);
        }
        if self.envelope_value(text, line) {
            return;
        }
        if let Error::Oversized { .. } = event_err {
            let sample = &bytes[..bytes.len().min(framing::SAMPLE_BYTES)];
            return self.sink.problem(&Problem {
                kind: ProblemKind::Oversized,
                line,
                error: event_err,
                sample,
                audit_id: sniff_audit_id(sample),
            });
        }
        self.malformed(line, bytes, event_err);
    }

    /// A JSON array held in memory (a JSON line that is an array).
    fn array_value(&mut self, text: &str, line: u64, depth: u8) {
        if depth > 0 {
            return self.malformed(
                line,
                text.as_bytes(),
                Error::NotAuditEvent("an array nested in an array".into()),
            );
        }
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => {
                for item in items {
                    self.value(item.get().as_bytes(), line, Envelope::Array, depth + 1);
                }
            }
            Err(e) => self.malformed(line, text.as_bytes(), json_error(e)),
        }
    }

    /// Tries `text` as each envelope; returns false when it is none.
    fn envelope_value(&mut self, text: &str, line: u64) -> bool {
        #[derive(Deserialize)]
        struct Probe<'a> {
            #[serde(borrow, default)]
            items: Option<Vec<&'a RawValue>>,
            #[serde(borrow, default)]
            records: Option<Vec<&'a RawValue>>,
            #[serde(borrow, default, rename = "logEvents")]
            log_events: Option<Vec<&'a RawValue>>,
            #[serde(borrow, default, rename = "protoPayload")]
            proto_payload: Option<&'a RawValue>,
            #[serde(borrow, default)]
            message: Option<&'a RawValue>,
            #[serde(borrow, default)]
            log: Option<&'a RawValue>,
        }
        let Ok(probe) = serde_json::from_str::<Probe<'_>>(text) else {
            return false;
        };
        if let Some(events) = probe.log_events {
            let head = cloudwatch::Head::parse(text.as_bytes());
            for ev in events {
                cloudwatch::log_event(self, ev.get().as_bytes(), line, &head);
            }
        } else if let Some(records) = probe.records {
            for r in records {
                self.record(r.get().as_bytes(), line);
            }
        } else if let Some(items) = probe.items {
            for item in items {
                self.event_bytes(item.get().as_bytes(), line, Envelope::EventList, None);
            }
        } else if probe.proto_payload.is_some() {
            gke::log_entry(self, text, line, Envelope::Gke);
        } else if let Some(message) = probe.message.filter(|m| m.get().starts_with('{')) {
            // A Pub/Sub push carries `message.data` (base64); a shipper that
            // parsed the line (Vector's parse_json) puts the event itself
            // under `message`.
            if gke::is_pubsub_message(message) {
                gke::pubsub_push(self, message, line);
            } else {
                self.event_text(message.get(), line, Envelope::Wrapped, None);
            }
        } else if let Some(inner) = probe
            .message
            .or(probe.log)
            .filter(|m| m.get().starts_with('"'))
        {
            wrapped::record(self, inner, line);
        } else {
            return false;
        }
        true
    }

    /// One `records[]` element: Firehose (`data`) or AKS (`properties`).
    fn record(&mut self, bytes: &[u8], line: u64) {
        #[derive(Deserialize)]
        struct Shape<'a> {
            #[serde(borrow, default)]
            data: Option<&'a RawValue>,
            #[serde(borrow, default)]
            properties: Option<&'a RawValue>,
        }
        let shape = std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| serde_json::from_str::<Shape<'_>>(t).ok());
        match shape {
            Some(Shape { data: Some(d), .. }) => firehose::record(self, d, line),
            Some(Shape {
                properties: Some(_),
                ..
            }) => aks::record(self, bytes, line),
            _ => self.malformed(
                line,
                bytes,
                Error::NotAuditEvent(
                    "a records[] element with neither 'data' (Firehose) nor 'properties' (AKS)"
                        .into(),
                ),
            ),
        }
    }

    /// Bytes that must be one audit event (an `EventList` item, a string
    /// an envelope carried).
    pub(crate) fn event_bytes(
        &mut self,
        bytes: &[u8],
        line: u64,
        envelope: Envelope,
        cluster: Option<&str>,
    ) {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.event_text(text, line, envelope, cluster),
            Err(e) => self.malformed(
                line,
                bytes,
                Error::InvalidUtf8 {
                    offset: e.valid_up_to(),
                },
            ),
        }
    }

    pub(crate) fn event_text(
        &mut self,
        text: &str,
        line: u64,
        envelope: Envelope,
        cluster: Option<&str>,
    ) {
        if text.len() > self.ctx.limits.max_event_bytes {
            let sample = &text.as_bytes()[..text.len().min(framing::SAMPLE_BYTES)];
            return self.sink.problem(&Problem {
                kind: ProblemKind::Oversized,
                line,
                error: Error::Oversized {
                    what: "event",
                    size: text.len() as u64,
                    limit: self.ctx.limits.max_event_bytes,
                },
                sample,
                audit_id: sniff_audit_id(sample),
            });
        }
        match AuditEvent::parse(text) {
            Ok(ev) => match ev.validate() {
                Ok(()) => self.emit(ev, line, envelope, cluster),
                Err(reason) => {
                    self.malformed(line, text.as_bytes(), Error::NotAuditEvent(reason.into()))
                }
            },
            Err(e) => self.malformed(line, text.as_bytes(), json_error(e)),
        }
    }

    /// Decodes a payload nested in an envelope (Firehose data, Pub/Sub
    /// data) with the full decoder: it may be gzip, JSON lines or a document.
    pub(crate) fn nested(&mut self, payload: &[u8], line: u64, via: Envelope) {
        let depth = self.ctx.nested.map_or(0, |n| n.depth);
        if depth >= 2 {
            return self.malformed(
                line,
                payload,
                Error::NotAuditEvent("envelopes nested more than two deep".into()),
            );
        }
        let ctx = Context {
            nested: Some(Nested {
                via,
                line,
                depth: depth + 1,
            }),
            ..self.ctx.clone()
        };
        if let Err(e) = decode(payload, &ctx, self.sink) {
            self.malformed(line, payload, e);
        }
    }
}

/// Classifies a serde_json error: syntax means "not JSON", data means
/// "JSON, but not an audit event".
fn json_error(e: serde_json::Error) -> Error {
    match e.classify() {
        serde_json::error::Category::Data => Error::NotAuditEvent(e.to_string()),
        _ => Error::NotJson(e),
    }
}

#[cfg(test)]
mod tests;
