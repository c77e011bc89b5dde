//! EKS: CloudWatch Logs subscription payloads.
//!
//! `{"messageType":"DATA_MESSAGE","owner","logGroup":"/aws/eks/<cluster>/cluster",
//! "logStream","subscriptionFilters","logEvents":[{"id","timestamp","message"}]}`
//! where `message` is one audit event as a string. `CONTROL_MESSAGE`
//! payloads (CloudWatch checking the destination) are skipped. A message
//! that CloudWatch cut at its event-size limit ends in `[Truncated...]`: it
//! is reported as truncated, with its auditID when one can be read. Other
//! EKS control-plane streams (authenticator, controller manager) carry text
//! lines, not audit events: skipped and counted.

use std::borrow::Cow;

use serde::Deserialize;

use super::{Dispatch, Error, Problem, ProblemKind, sniff_audit_id};
use crate::event::Envelope;

const TRUNCATED_MARK: &str = "[Truncated...]";

/// The payload's fields that come before `logEvents`.
#[derive(Debug, Default)]
pub(super) struct Head {
    control: bool,
    cluster: Option<String>,
}

impl Head {
    /// Reads the head from the payload (or its members before `logEvents`).
    pub(super) fn parse(bytes: &[u8]) -> Head {
        #[derive(Deserialize)]
        struct Raw<'a> {
            #[serde(borrow, default, rename = "messageType")]
            message_type: Option<Cow<'a, str>>,
            #[serde(borrow, default, rename = "logGroup")]
            log_group: Option<Cow<'a, str>>,
        }
        let Ok(raw) = serde_json::from_slice::<Raw<'_>>(bytes) else {
            return Head::default();
        };
        Head {
            control: raw.message_type.as_deref() == Some("CONTROL_MESSAGE"),
            cluster: raw
                .log_group
                .as_deref()
                .and_then(cluster_from_log_group)
                .map(str::to_owned),
        }
    }
}

/// `/aws/eks/<cluster>/cluster` → `<cluster>`.
pub(super) fn cluster_from_log_group(group: &str) -> Option<&str> {
    let name = group.strip_prefix("/aws/eks/")?.strip_suffix("/cluster")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// One `logEvents[]` element.
pub(super) fn log_event(d: &mut Dispatch<'_, '_>, bytes: &[u8], line: u64, head: &Head) {
    #[derive(Deserialize)]
    struct LogEvent<'a> {
        #[serde(borrow)]
        message: Cow<'a, str>,
    }
    let ev = match serde_json::from_slice::<LogEvent<'_>>(bytes) {
        Ok(ev) => ev,
        Err(e) => {
            return d.malformed(
                line,
                bytes,
                Error::Envelope {
                    envelope: "cloudwatch",
                    reason: format!("a logEvents[] element without a string 'message': {e}"),
                },
            );
        }
    };
    let message = ev.message.trim();
    if head.control || message.starts_with("CWL CONTROL MESSAGE") {
        return d.skipped(line, "cloudwatch control message");
    }
    if message.ends_with(TRUNCATED_MARK) {
        let sample = &message.as_bytes()[..message.len().min(super::framing::SAMPLE_BYTES)];
        return d.sink.problem(&Problem {
            kind: ProblemKind::Truncated,
            line,
            error: Error::Truncated {
                size: message.len(),
            },
            sample,
            audit_id: sniff_audit_id(message.as_bytes()),
        });
    }
    if !message.starts_with('{') {
        return d.skipped(line, "non-audit log line (EKS control-plane text log)");
    }
    d.event_text(message, line, Envelope::CloudWatch, head.cluster.as_deref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        assert_eq!(
            cluster_from_log_group("/aws/eks/prod-eu-1/cluster"),
            Some("prod-eu-1")
        );
        assert_eq!(cluster_from_log_group("/aws/eks//cluster"), None);
        assert_eq!(cluster_from_log_group("/aws/lambda/x"), None);
    }
}
