//! The rule set's literal prefilter: which rules could possibly match an
//! event, decided with one aho-corasick pass over its raw JSON text.
//!
//! Each rule contributes the literals its `when` condition needs
//! (`Cond::needles`): at least one of them must occur in the text for the
//! rule to hold. Needles are made only of characters that no JSON encoder
//! escapes, and matching ignores ASCII case, so a needle is found whenever
//! the value is present. The one way around that is a value written with
//! `\u00XX` escapes for plain letters (legal JSON, emitted by no encoder,
//! but possible in raw request bodies such as patches): an event containing
//! such an escape skips the prefilter and meets every rule.

use aho_corasick::{AhoCorasick, MatchKind};

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
    pub fn get(&self, rule: usize) -> bool {
        self.all || self.rules.get(rule).copied().unwrap_or(true)
    }
}

impl Prefilter {
    /// `reqs[i]` is what active rule `i` needs (see `Cond::needles`).
    pub fn new(reqs: Vec<Option<Vec<String>>>) -> Prefilter {
        let mut all: Vec<String> = Vec::new();
        let mut rules = Vec::with_capacity(reqs.len());
        for req in reqs {
            rules.push(req.map(|needles| {
                needles
                    .into_iter()
                    .map(|n| {
                        let n = n.to_ascii_lowercase();
                        match all.iter().position(|x| *x == n) {
                            Some(i) => i,
                            None => {
                                all.push(n);
                                all.len() - 1
                            }
                        }
                    })
                    .collect()
            }));
        }
        let ac = if all.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&all)
                .ok()
        };
        Prefilter {
            needles: all.len(),
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
        for m in ac.find_overlapping_iter(raw) {
            present[m.pattern().as_usize()] = true;
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
            Some(vec!["exec".into(), "Attach".into()]),
            Some(vec!["impersonatedUser".into()]),
            None,
        ]);
        let c = p.candidates(r#"{"objectRef":{"subresource":"ATTACH"}}"#);
        assert!(c.get(0) && !c.get(1) && c.get(2));
        let c = p.candidates(r#"{"verb":"get"}"#);
        assert!(!c.get(0) && !c.get(1) && c.get(2));
    }

    #[test]
    fn escaped_letters_skip_the_prefilter() {
        let p = Prefilter::new(vec![Some(vec!["privileged".into()])]);
        assert!(!p.candidates(r#"{"a":"x \u0026 y"}"#).get(0));
        assert!(p.candidates(r#"{"\u0070rivileged":true}"#).get(0));
        assert!(p.candidates("").get(0));
    }
}
