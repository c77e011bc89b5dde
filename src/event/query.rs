//! The query string of an event's `requestURI`, form-decoded.
//!
//! `application/x-www-form-urlencoded` rules, as the API server reads them:
//! `+` is a space, then percent-decoding; repeated keys (`command=`,
//! `ports=`) keep their order. Invalid percent escapes are kept literally and
//! invalid UTF-8 is replaced, never an error: an attacker chooses these bytes.

use std::borrow::Cow;

/// A parsed query: ordered key/value pairs borrowing from the URI.
#[derive(Debug, Default, Clone)]
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    /// Parses the query part of `uri` (everything after the first `?`).
    pub fn parse(uri: &'a str) -> Self {
        let Some((_, q)) = uri.split_once('?') else {
            return Query::default();
        };
        // A fragment is never sent to a server, but a hostile log line may
        // carry one: it is not part of the query.
        let q = q.split_once('#').map_or(q, |(q, _)| q);
        Query {
            pairs: form_urlencoded::parse(q.as_bytes()).collect(),
        }
    }

    /// Every value of `key`, in order.
    pub fn values<'s>(&'s self, key: &'s str) -> impl Iterator<Item = Cow<'a, str>> + 's {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// The first value of `key`.
    pub fn first(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// All pairs in order.
    pub fn pairs(&self) -> &[(Cow<'a, str>, Cow<'a, str>)] {
        &self.pairs
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// The path of `uri`, without the query.
pub fn path(uri: &str) -> &str {
    uri.split_once('?').map_or(uri, |(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_is_space_then_percent_decoding() {
        let q = Query::parse("/x?command=sh&command=-c&command=echo+hi%2Bthere%20now&tty=true");
        let cmd: Vec<_> = q.values("command").collect();
        assert_eq!(cmd, ["sh", "-c", "echo hi+there now"]);
        assert_eq!(q.first("tty"), Some("true"));
    }

    #[test]
    fn repeated_ports_keep_order() {
        let q = Query::parse("/api/v1/namespaces/db/pods/pg-0/portforward?ports=5432&ports=8080");
        let ports: Vec<_> = q.values("ports").collect();
        assert_eq!(ports, ["5432", "8080"]);
    }

    #[test]
    fn hostile_escapes_do_not_fail() {
        let q = Query::parse("/x?command=%ZZ%&command=%ff%fe&=&&a");
        let cmd: Vec<_> = q.values("command").collect();
        assert_eq!(cmd[0], "%ZZ%");
        assert_eq!(cmd[1], "\u{fffd}\u{fffd}");
        assert_eq!(q.first("a"), Some(""));
    }

    #[test]
    fn no_query() {
        assert!(Query::parse("/api/v1/pods").is_empty());
        assert_eq!(path("/api/v1/pods?watch=1"), "/api/v1/pods");
    }
}
