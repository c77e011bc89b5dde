//! Decoding an audit event does not allocate per field: strings borrow from
//! the input (unless they hold JSON escapes), and the short lists an event
//! carries (groups, sourceIPs, user.extra, annotations) live inline.
//!
//! A counting allocator, per thread, around `AuditEvent::parse` of a typical
//! service-account event (this test binary holds only this test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"2f1e5c7a-8b9d-4e3f-a1b2-c3d4e5f6a7b8","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/payments/configmaps/app-config","verb":"get","user":{"username":"system:serviceaccount:payments:api","uid":"6a1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e","groups":["system:serviceaccounts","system:serviceaccounts:payments","system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["JTI=7f3c2a1b-9d8e-4c5b-a6f7-e8d9c0b1a2f3"],"authentication.kubernetes.io/node-name":["ip-10-0-1-23.eu-west-1.compute.internal"],"authentication.kubernetes.io/node-uid":["0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f"],"authentication.kubernetes.io/pod-name":["api-7d9f8c6b5-x2kqp"],"authentication.kubernetes.io/pod-uid":["1a2b3c4d-5e6f-7a8b-9c0d-e1f2a3b4c5d6"]}},"sourceIPs":["10.244.1.17"],"userAgent":"api/v2.3.1 (linux/amd64) kubernetes/abcdef0","objectRef":{"resource":"configmaps","namespace":"payments","name":"app-config","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-28T02:24:14.520017Z","stageTimestamp":"2026-11-28T02:24:14.523190Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by RoleBinding \"api-config/payments\" of Role \"config-reader\" to ServiceAccount \"api/payments\""}}"#;

/// Allocations made while parsing `raw` (and validating the result).
fn allocations(raw: &str) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    let ev = kaudit::event::AuditEvent::parse(raw).unwrap();
    assert!(ev.validate().is_ok());
    assert_eq!(ev.user.extra.len(), 5);
    assert_eq!(ev.user.groups.len(), 3);
    let n = ALLOCATIONS.with(Cell::get) - before;
    drop(ev);
    n
}

#[test]
fn parsing_an_event_does_not_allocate_per_field() {
    // Warm up anything lazily initialised.
    let _ = kaudit::event::AuditEvent::parse(EVENT).unwrap();
    // Without JSON escapes: nothing is copied.
    let plain = EVENT
        .replace(r#"\"api-config/payments\""#, "api-config/payments")
        .replace(r#"\"config-reader\""#, "config-reader")
        .replace(r#"\"api/payments\""#, "api/payments");
    assert!(!plain.contains('\\'));
    assert_eq!(allocations(&plain), 0, "an event without escapes");
    // The reason annotation holds escaped quotes: that one string is copied
    // (serde_json unescapes it into a growing scratch buffer, then the copy);
    // per-field allocation would cost more than ten.
    let n = allocations(EVENT);
    assert!(
        n <= 4,
        "{n} allocations for an event with one escaped string"
    );
}
