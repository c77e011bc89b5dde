//! Kubernetes' own shapes: a bare `Event`, an `EventList`, a JSON array of
//! events, JSON lines. Parsing them is `AuditEvent::parse` plus the
//! dispatcher in `decode`; what lives here is reading what can still be
//! read from an event that arrived cut short or too large.

/// Finds the `auditID` in the first bytes of a (possibly truncated or
/// oversized) event, so that a quarantined event can still be named.
/// Returns `None` unless a plausible id (1..=128 bytes of `[A-Za-z0-9-_.:]`)
/// follows `"auditID"`.
pub fn sniff_audit_id(bytes: &[u8]) -> Option<&str> {
    let finder = memchr::memmem::Finder::new(b"\"auditID\"");
    let mut from = 0;
    while let Some(i) = finder.find(&bytes[from..]) {
        let mut p = from + i + 9;
        from = p;
        while p < bytes.len() && bytes[p].is_ascii_whitespace() {
            p += 1;
        }
        if bytes.get(p) != Some(&b':') {
            continue;
        }
        p += 1;
        while p < bytes.len() && bytes[p].is_ascii_whitespace() {
            p += 1;
        }
        if bytes.get(p) != Some(&b'"') {
            continue;
        }
        let start = p + 1;
        let len = bytes[start..]
            .iter()
            .take(129)
            .position(|&b| !(b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))?;
        if (1..=128).contains(&len) && bytes.get(start + len) == Some(&b'"') {
            return std::str::from_utf8(&bytes[start..start + len]).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_from_a_prefix() {
        let b = br#"{"kind":"Event","auditID" : "4f1c-9a","stage":"ResponseComplete","requestObject":{"da"#;
        assert_eq!(sniff_audit_id(b), Some("4f1c-9a"));
    }

    #[test]
    fn rejects_implausible_ids() {
        assert_eq!(sniff_audit_id(br#"{"auditID":"<script>"}"#), None);
        assert_eq!(sniff_audit_id(br#"{"auditID":"abc"#), None);
        assert_eq!(sniff_audit_id(br#"{"auditID":5}"#), None);
        assert_eq!(sniff_audit_id(b""), None);
    }
}
