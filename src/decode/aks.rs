//! AKS: Azure diagnostic-settings records, as Event Hubs (or a storage
//! account) delivers them: `{"records":[{"time","resourceId","category",
//! "operationName","properties":{"log":"<event>","stream","pod"}}]}`.
//! Only the categories `kube-audit` and `kube-audit-admin` carry audit
//! events; the others (kube-apiserver, cluster-autoscaler, ...) carry klog
//! text and are skipped. The cluster is the last segment of `resourceId`
//! (`.../MANAGEDCLUSTERS/<NAME>`, which Azure writes upper-case).

use std::borrow::Cow;

use serde::Deserialize;

use super::{Dispatch, Error};
use crate::event::Envelope;

const AUDIT_CATEGORIES: [&str; 2] = ["kube-audit", "kube-audit-admin"];

pub(super) fn record(d: &mut Dispatch<'_, '_>, bytes: &[u8], line: u64) {
    #[derive(Deserialize)]
    struct Record<'a> {
        #[serde(borrow, default)]
        category: Option<Cow<'a, str>>,
        #[serde(borrow, default, rename = "resourceId")]
        resource_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        properties: Properties<'a>,
    }
    #[derive(Deserialize)]
    struct Properties<'a> {
        #[serde(borrow, default)]
        log: Option<Cow<'a, str>>,
    }
    let rec = match serde_json::from_slice::<Record<'_>>(bytes) {
        Ok(r) => r,
        Err(e) => {
            return d.malformed(
                line,
                bytes,
                Error::Envelope {
                    envelope: "aks",
                    reason: format!("a record that is not a diagnostic-settings record: {e}"),
                },
            );
        }
    };
    let category = rec.category.as_deref().unwrap_or("");
    if !AUDIT_CATEGORIES
        .iter()
        .any(|c| c.eq_ignore_ascii_case(category))
    {
        return d.skipped(line, "aks record of a non-audit category");
    }
    let Some(log) = rec.log_text() else {
        return d.malformed(
            line,
            bytes,
            Error::Envelope {
                envelope: "aks",
                reason: "a kube-audit record without a string 'properties.log'".into(),
            },
        );
    };
    let cluster = rec
        .resource_id
        .as_deref()
        .and_then(cluster_from_resource_id);
    d.event_text(log, line, Envelope::Aks, cluster);

    impl<'a> Record<'a> {
        fn log_text(&self) -> Option<&str> {
            self.properties.log.as_deref()
        }
    }
}

/// `/SUBSCRIPTIONS/../MANAGEDCLUSTERS/AKS-PROD-1` → `AKS-PROD-1` (the
/// dispatcher lower-cases cluster names).
fn cluster_from_resource_id(id: &str) -> Option<&str> {
    let name = id.trim_end_matches('/').rsplit('/').next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_from_resource_ids() {
        assert_eq!(
            cluster_from_resource_id(
                "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AKS-PROD-1"
            ),
            Some("AKS-PROD-1")
        );
        assert_eq!(cluster_from_resource_id(""), None);
    }
}
