//! The rule set's prefilter: which rules could possibly match an event,
//! decided before any rule is evaluated.
//!
//! Two tests, each a necessary condition of a rule's `when`:
//! - **The index** (`Cond::keys`): a rule that can hold only when the
//!   event's verb, resource, subresource, API group, user name or response code is one
//!   of a few values, or only when the event impersonates or carries some
//!   annotation, is filed under those values, and an event meets only the
//!   rules filed under its own values (a few hash lookups on parsed
//!   fields). Most rules are indexed, and most events (a kubelet's `get`, a
//!   controller's `watch`) meet none of them.
//! - **The needles** (`Cond::needles`), for the rules the index cannot
//!   narrow well: literals of which at least one must occur in the raw JSON
//!   text, found in one aho-corasick pass, run only when such a rule is
//!   still a candidate. Needles are made only of characters that no JSON
//!   encoder escapes, and come only from case-sensitive tests, so a needle
//!   is found whenever the value is present; matching is exact, which lets
//!   the automaton use its vectorised prefilter. The one way around that is
//!   a value written with `\u00XX` escapes for plain letters (legal JSON,
//!   emitted by no encoder, but possible in raw request bodies such as
//!   patches): an event containing such an escape skips the needles.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, Input, MatchKind};

use super::field::Key;
use crate::event::AuditEvent;

/// Above this share (events in a thousand, `Key::share`) an index entry is
/// not trusted alone: the rule's needles are tested too.
const LOOSE_KEYS: u32 = 300;

/// What active rule `i` needs for it to be worth evaluating.
#[derive(Debug, Default)]
pub struct Requirement {
    /// (field, value) pairs of which one must hold (`Cond::keys`).
    pub keys: Option<Vec<(Key, String)>>,
    /// Literals of which one must occur in the text (`Cond::needles`).
    pub needles: Option<Vec<String>>,
}

/// The index and the needles of all rules.
#[derive(Debug)]
pub struct Prefilter {
    rules: usize,
    /// Rules no index entry narrows: candidates of every event.
    unindexed: Vec<u64>,
    /// Per key field, the rules filed under each value.
    index: Vec<(Key, Index)>,
    /// Rules that also need one of their needles.
    needy: Vec<u64>,
    ac: Option<AhoCorasick>,
    needles: usize,
    /// Per active rule: the needle ids it needs one of (empty: none).
    rule_needles: Vec<Vec<usize>>,
}

/// One key's values and the rules filed under each.
type Index = HashMap<String, Vec<u64>, ahash::RandomState>;

/// Which active rules an event is a candidate for.
pub struct Candidates {
    all: bool,
    words: Vec<u64>,
}

impl Candidates {
    /// Every rule is a candidate.
    pub fn everything() -> Candidates {
        Candidates {
            all: true,
            words: Vec::new(),
        }
    }
    pub fn get(&self, rule: usize) -> bool {
        self.all
            || self
                .words
                .get(rule / 64)
                .is_none_or(|w| w & (1 << (rule % 64)) != 0)
    }
}

fn words(rules: usize) -> Vec<u64> {
    vec![0; rules.div_ceil(64)]
}

fn set(words: &mut [u64], rule: usize) {
    words[rule / 64] |= 1 << (rule % 64);
}

impl Prefilter {
    /// `reqs[i]` is what active rule `i` needs.
    pub fn new(reqs: Vec<Requirement>) -> Prefilter {
        let rules = reqs.len();
        let mut unindexed = words(rules);
        let mut needy = words(rules);
        let mut index: Vec<(Key, Index)> = Vec::new();
        let mut needle_reqs: Vec<Option<Vec<String>>> = Vec::with_capacity(rules);
        for (i, req) in reqs.into_iter().enumerate() {
            let loose = req
                .keys
                .as_ref()
                .is_none_or(|ks| ks.iter().map(|(k, v)| k.share(v)).sum::<u32>() > LOOSE_KEYS);
            match req.keys {
                Some(keys) => {
                    for (key, value) in keys {
                        let at = match index.iter().position(|(k, _)| *k == key) {
                            Some(at) => at,
                            None => {
                                index.push((key, Index::default()));
                                index.len() - 1
                            }
                        };
                        let entry = index[at].1.entry(value).or_insert_with(|| words(rules));
                        set(entry, i);
                    }
                }
                None => set(&mut unindexed, i),
            }
            if loose && req.needles.is_some() {
                set(&mut needy, i);
                needle_reqs.push(req.needles);
            } else {
                needle_reqs.push(None);
            }
        }
        let (ac, needles, rule_needles) = compile_needles(needle_reqs);
        Prefilter {
            rules,
            unindexed,
            index,
            needy,
            ac,
            needles,
            rule_needles,
        }
    }

    /// The rules `ev` (its fields, and its JSON text `ev.raw`) may match.
    pub fn candidates(&self, ev: &AuditEvent<'_>) -> Candidates {
        let mut words = self.unindexed.clone();
        for (key, map) in &self.index {
            key.values(ev, &mut |v| {
                if let Some(filed) = map.get(v) {
                    words.iter_mut().zip(filed).for_each(|(w, f)| *w |= f);
                }
            });
        }
        let needed = words.iter().zip(&self.needy).any(|(w, n)| w & n != 0);
        if needed && let Some(present) = self.present(ev.raw) {
            for (i, ids) in self.rule_needles.iter().enumerate() {
                if !ids.is_empty()
                    && words[i / 64] & (1 << (i % 64)) != 0
                    && !ids.iter().any(|&n| present[n])
                {
                    words[i / 64] &= !(1 << (i % 64));
                }
            }
        }
        debug_assert_eq!(words.len(), self.rules.div_ceil(64));
        Candidates { all: false, words }
    }

    /// Which needles occur in `raw`; `None` when the text cannot be
    /// trusted to show them (every needle counts as present).
    fn present(&self, raw: &str) -> Option<Vec<bool>> {
        let ac = self.ac.as_ref()?;
        if raw.is_empty() || has_escaped_plain_char(raw.as_bytes()) {
            return None;
        }
        let mut present = vec![false; self.needles];
        let mut missing = self.needles;
        let mut at = 0;
        while missing > 0 {
            let Some(m) = ac.find(Input::new(raw).span(at..raw.len())) else {
                break;
            };
            let p = &mut present[m.pattern().as_usize()];
            if !*p {
                *p = true;
                missing -= 1;
            }
            at = m.start() + 1;
        }
        Some(present)
    }
}

/// The automaton of all rules' needles, how many there are, and per rule
/// the ids of the needles it needs one of.
fn compile_needles(
    reqs: Vec<Option<Vec<String>>>,
) -> (Option<AhoCorasick>, usize, Vec<Vec<usize>>) {
    let mut all: Vec<String> = Vec::new();
    let mut rules: Vec<Vec<usize>> = Vec::with_capacity(reqs.len());
    for req in reqs {
        rules.push(
            req.unwrap_or_default()
                .into_iter()
                .map(|n| match all.iter().position(|x| *x == n) {
                    Some(i) => i,
                    None => {
                        all.push(n);
                        all.len() - 1
                    }
                })
                .collect(),
        );
    }
    // A needle that contains another is replaced by the one it contains
    // (its presence implies the other's: the candidate set can only grow).
    // Then no needle contains another, at most one needle can match at any
    // position, and a leftmost search restarted one byte after each match
    // start finds every needle present, with the automaton's fast
    // prefilter between matches.
    let minimal: Vec<usize> = (0..all.len())
        .map(|i| {
            (0..all.len())
                .filter(|&j| all[i].contains(all[j].as_str()))
                .min_by_key(|&j| (all[j].len(), j))
                .unwrap_or(i)
        })
        .collect();
    let mut kept: Vec<String> = Vec::new();
    let mut remap = vec![0; all.len()];
    for (i, &m) in minimal.iter().enumerate() {
        remap[i] = match kept.iter().position(|k| *k == all[m]) {
            Some(p) => p,
            None => {
                kept.push(all[m].clone());
                kept.len() - 1
            }
        };
    }
    for ids in &mut rules {
        for id in ids.iter_mut() {
            *id = remap[*id];
        }
        ids.sort_unstable();
        ids.dedup();
    }
    let ac = if kept.is_empty() {
        None
    } else {
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(&kept)
            .ok()
    };
    (ac, kept.len(), rules)
}

/// Whether the text holds `\u00XX` for a letter, digit or `_ . : -`.
fn has_escaped_plain_char(b: &[u8]) -> bool {
    let finder = memchr::memmem::Finder::new(b"\\u00");
    finder.find_iter(b).any(|i| {
        let hex = b
            .get(i + 4..i + 6)
            .and_then(|h| std::str::from_utf8(h).ok());
        hex.and_then(|h| u8::from_str_radix(h, 16).ok())
            .is_some_and(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(&c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needles(n: &[&str]) -> Requirement {
        Requirement {
            keys: None,
            needles: Some(n.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn keys(k: &[(Key, &str)]) -> Requirement {
        Requirement {
            keys: Some(k.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()),
            needles: None,
        }
    }

    fn candidates(p: &Prefilter, raw: &str) -> Candidates {
        p.candidates(&AuditEvent::parse(raw).unwrap())
    }

    #[test]
    fn picks_rules_by_needles() {
        let p = Prefilter::new(vec![
            needles(&["exec", "ATTACH"]),
            needles(&["impersonatedUser"]),
            Requirement::default(),
        ]);
        let c = candidates(&p, r#"{"objectRef":{"subresource":"ATTACH"}}"#);
        assert!(c.get(0) && !c.get(1) && c.get(2));
        let c = candidates(&p, r#"{"verb":"get"}"#);
        assert!(!c.get(0) && !c.get(1) && c.get(2));
    }

    #[test]
    fn picks_rules_by_index() {
        let p = Prefilter::new(vec![
            keys(&[(Key::Subresource, "exec"), (Key::Subresource, "attach")]),
            keys(&[(Key::Verb, "impersonate")]),
            keys(&[
                (Key::Resource, "secrets"),
                (Key::Username, "system:anonymous"),
            ]),
            Requirement::default(),
        ]);
        let c = candidates(
            &p,
            r#"{"verb":"create","objectRef":{"resource":"pods","subresource":"attach"}}"#,
        );
        assert!(c.get(0) && !c.get(1) && !c.get(2) && c.get(3));
        // Parsed values, not text: an escaped letter still finds its entry.
        let c = candidates(&p, r#"{"verb":"imperson\u0061te","user":{"username":"x"}}"#);
        assert!(!c.get(0) && c.get(1) && !c.get(2) && c.get(3));
        let c = candidates(
            &p,
            r#"{"verb":"get","user":{"username":"system:anonymous"}}"#,
        );
        assert!(!c.get(0) && !c.get(1) && c.get(2) && c.get(3));
        // "secrets" in the text but not as the resource: not a candidate.
        let c = candidates(
            &p,
            r#"{"verb":"get","requestURI":"/api/v1/secrets","objectRef":{"resource":"pods"}}"#,
        );
        assert!(!c.get(2));
    }

    #[test]
    fn verb_and_resource_together() {
        let p = Prefilter::new(vec![keys(&[
            (Key::VerbResource, "create\0pods"),
            (Key::VerbResource, "patch\0pods"),
        ])]);
        let ev = |v: &str, r: &str| format!(r#"{{"verb":"{v}","objectRef":{{"resource":"{r}"}}}}"#);
        assert!(candidates(&p, &ev("create", "pods")).get(0));
        assert!(candidates(&p, &ev("patch", "pods")).get(0));
        assert!(!candidates(&p, &ev("get", "pods")).get(0));
        assert!(!candidates(&p, &ev("create", "secrets")).get(0));
        assert!(!candidates(&p, r#"{"verb":"create"}"#).get(0));
        // Longer than the stack buffer: still found.
        let long = "x".repeat(200);
        let p = Prefilter::new(vec![keys(&[(
            Key::VerbResource,
            &format!("create\0{long}"),
        )])]);
        assert!(candidates(&p, &ev("create", &long)).get(0));
    }

    #[test]
    fn loose_index_entries_also_need_needles() {
        let p = Prefilter::new(vec![Requirement {
            keys: Some(vec![(Key::Verb, "get".into()), (Key::Verb, "list".into())]),
            needles: Some(vec!["privileged".into()]),
        }]);
        assert!(!candidates(&p, r#"{"verb":"get"}"#).get(0));
        assert!(!candidates(&p, r#"{"verb":"create","x":"privileged"}"#).get(0));
        assert!(candidates(&p, r#"{"verb":"get","x":"privileged"}"#).get(0));
    }

    #[test]
    fn many_rules_span_several_words() {
        let reqs = (0..130)
            .map(|i| {
                if i % 2 == 0 {
                    keys(&[(Key::Verb, "delete")])
                } else {
                    keys(&[(Key::Verb, "create")])
                }
            })
            .collect();
        let p = Prefilter::new(reqs);
        let c = candidates(&p, r#"{"verb":"create"}"#);
        assert!((0..130).all(|i| c.get(i) == (i % 2 == 1)));
    }

    #[test]
    fn overlapping_and_nested_needles_are_all_found() {
        let p = Prefilter::new(vec![
            needles(&["abc"]),
            needles(&["cde"]),
            needles(&["bcd"]),
            needles(&["xxabcdexx"]),
            needles(&["zzz"]),
        ]);
        let c = candidates(&p, r#"{"x":"..abcde.."}"#);
        assert!(c.get(0) && c.get(1) && c.get(2), "overlapping occurrences");
        // "xxabcdexx" is absent, but it contains "abc", which is present:
        // a superset of the true candidates, never a subset.
        assert!(c.get(3));
        assert!(!c.get(4));
        let c = candidates(&p, r#"{"x":"..ab.."}"#);
        assert!(!c.get(0) && !c.get(3));
    }

    #[test]
    fn escaped_letters_skip_the_needles() {
        let p = Prefilter::new(vec![needles(&["privileged"])]);
        assert!(!candidates(&p, r#"{"a":"x \u0026 y"}"#).get(0));
        assert!(candidates(&p, r#"{"\u0070rivileged":true}"#).get(0));
    }
}
