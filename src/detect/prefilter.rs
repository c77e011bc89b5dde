//! The rule set's literal prefilter: which rules could possibly match an
//! event, decided with one aho-corasick pass over its raw JSON text.
//!
//! Each rule contributes the literals its `when` condition needs
//! (`Cond::needles`): at least one of them must occur in the text for the
//! rule to hold. Needles are made only of characters that no JSON encoder
//! escapes, and come only from case-sensitive tests, so a needle is found
//! whenever the value is present; matching is exact, which lets the
//! automaton use its vectorised prefilter. The one way around that is a value written with
//! `\u00XX` escapes for plain letters (legal JSON, emitted by no encoder,
//! but possible in raw request bodies such as patches): an event containing
//! such an escape skips the prefilter and meets every rule.

use aho_corasick::{AhoCorasick, Input, MatchKind};

/// Needles of all rules, and which rule needs which.
#[derive(Debug)]
pub struct Prefilter {
    ac: Option<AhoCorasick>,
    needles: usize,
    /// Per active rule: the needle ids it needs one of, or None (always run).
    rules: Vec<Option<Vec<usize>>>,
}

/// Which active rules an event is a candidate for.
pub struct Candidates {
    all: bool,
    rules: Vec<bool>,
}

impl Candidates {
    /// Every rule is a candidate.
    pub fn everything() -> Candidates {
        Candidates {
            all: true,
            rules: Vec::new(),
        }
    }
    pub fn get(&self, rule: usize) -> bool {
        self.all || self.rules.get(rule).copied().unwrap_or(true)
    }
}

impl Prefilter {
    /// `reqs[i]` is what active rule `i` needs (see `Cond::needles`).
    pub fn new(reqs: Vec<Option<Vec<String>>>) -> Prefilter {
        let mut all: Vec<String> = Vec::new();
        let mut rules: Vec<Option<Vec<usize>>> = Vec::with_capacity(reqs.len());
        for req in reqs {
            rules.push(req.map(|needles| {
                needles
                    .into_iter()
                    .map(|n| match all.iter().position(|x| *x == n) {
                        Some(i) => i,
                        None => {
                            all.push(n);
                            all.len() - 1
                        }
                    })
                    .collect()
            }));
        }
        // A needle that contains another is replaced by the one it
        // contains (its presence implies the other's: the candidate set can
        // only grow). Then no needle contains another, at most one needle
        // can match at any position, and a leftmost search restarted one
        // byte after each match start finds every needle present, with the
        // automaton's fast prefilter between matches.
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
        for ids in rules.iter_mut().flatten() {
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
        Prefilter {
            needles: kept.len(),
            rules,
            ac,
        }
    }

    /// The rules `raw` (an event's JSON text) may match.
    pub fn candidates(&self, raw: &str) -> Candidates {
        let Some(ac) = &self.ac else {
            return Candidates {
                all: true,
                rules: Vec::new(),
            };
        };
        if raw.is_empty() || has_escaped_plain_char(raw.as_bytes()) {
            return Candidates {
                all: true,
                rules: Vec::new(),
            };
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
        let rules = self
            .rules
            .iter()
            .map(|r| r.as_ref().is_none_or(|ids| ids.iter().any(|&i| present[i])))
            .collect();
        Candidates { all: false, rules }
    }
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

    #[test]
    fn picks_rules_by_needles() {
        let p = Prefilter::new(vec![
            Some(vec!["exec".into(), "ATTACH".into()]),
            Some(vec!["impersonatedUser".into()]),
            None,
        ]);
        let c = p.candidates(r#"{"objectRef":{"subresource":"ATTACH"}}"#);
        assert!(c.get(0) && !c.get(1) && c.get(2));
        let c = p.candidates(r#"{"verb":"get"}"#);
        assert!(!c.get(0) && !c.get(1) && c.get(2));
    }

    #[test]
    fn overlapping_and_nested_needles_are_all_found() {
        let p = Prefilter::new(vec![
            Some(vec!["abc".into()]),
            Some(vec!["cde".into()]),
            Some(vec!["bcd".into()]),
            Some(vec!["xxabcdexx".into()]),
            Some(vec!["zzz".into()]),
        ]);
        let c = p.candidates("..abcde..");
        assert!(c.get(0) && c.get(1) && c.get(2), "overlapping occurrences");
        // "xxabcdexx" is absent, but it contains "abc", which is present:
        // a superset of the true candidates, never a subset.
        assert!(c.get(3));
        assert!(!c.get(4));
        let c = p.candidates("..ab..");
        assert!(!c.get(0) && !c.get(3));
    }

    #[test]
    fn escaped_letters_skip_the_prefilter() {
        let p = Prefilter::new(vec![Some(vec!["privileged".into()])]);
        assert!(!p.candidates(r#"{"a":"x \u0026 y"}"#).get(0));
        assert!(p.candidates(r#"{"\u0070rivileged":true}"#).get(0));
        assert!(p.candidates("").get(0));
    }
}
