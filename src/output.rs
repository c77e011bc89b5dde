//! How the CLI prints findings: a table for people, JSON lines for tools.
//!
//! Every field of a finding may carry attacker-chosen text, so everything
//! printed as text goes through [`terminal_safe`]: control characters
//! (ANSI escape sequences, carriage returns that overwrite a line) and
//! Unicode bidirectional overrides are shown escaped, never interpreted.

use std::borrow::Cow;
use std::io::{self, Write};

use crate::finding::Finding;

/// The output formats of `scan` and `findings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table, one finding per line.
    Text,
    /// One finding JSON object per line.
    Jsonl,
}

/// Writes findings in one format.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    header_done: bool,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: Format) -> Self {
        Printer {
            out,
            format,
            header_done: false,
        }
    }

    pub fn finding(&mut self, f: &Finding) -> io::Result<()> {
        match self.format {
            Format::Jsonl => {
                let line = serde_json::to_string(f)?;
                self.out.write_all(json_terminal_safe(&line).as_bytes())?;
                self.out.write_all(b"\n")
            }
            Format::Text => {
                if !self.header_done {
                    self.header_done = true;
                    writeln!(
                        self.out,
                        "{:<27} {:<8} {:<32} {:<14} SUMMARY",
                        "TIME", "SEVERITY", "RULE", "CLUSTER"
                    )?;
                }
                writeln!(
                    self.out,
                    "{:<27} {:<8} {:<32} {:<14} {}",
                    terminal_safe(f.time.as_deref().unwrap_or("-")),
                    f.severity.as_str(),
                    terminal_safe(&f.rule_id),
                    terminal_safe(&f.cluster),
                    terminal_safe(&f.summary),
                )
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// JSON text with C1 controls and bidirectional overrides written as
/// `\uXXXX` escapes: the same JSON, safe to print on a terminal (serde_json
/// already escapes C0 controls). These characters only occur inside
/// strings, where the escape means the same character.
pub fn json_terminal_safe(json: &str) -> Cow<'_, str> {
    fn bad(c: char) -> bool {
        matches!(c, '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{2028}' | '\u{2029}')
    }
    if !json.chars().any(bad) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Escapes what a terminal would interpret: C0 and C1 control characters,/// DEL, and the Unicode bidirectional controls (Trojan Source).
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    fn bad(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
    }
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls() {
        assert_eq!(terminal_safe("plain text"), "plain text");
        assert_eq!(terminal_safe("a\u{1b}[31mred"), "a\\u{1b}[31mred");
        assert_eq!(terminal_safe("x\ry"), "x\\u{d}y");
        assert_eq!(terminal_safe("\u{202e}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(terminal_safe("\u{9b}2J"), "\\u{9b}2J");
        let json = serde_json::to_string("a\u{9b}2J\u{202e}b").unwrap();
        let safe = json_terminal_safe(&json);
        assert_eq!(safe, r#""a\u009b2J\u202eb""#);
        assert_eq!(
            serde_json::from_str::<String>(&safe).unwrap(),
            "a\u{9b}2J\u{202e}b"
        );
    }
}
