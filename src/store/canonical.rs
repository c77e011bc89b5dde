//! RFC 8785 (JSON Canonicalization Scheme) serialisation: the bytes the
//! hash chain hashes.
//!
//! Numbers are formatted by `serde_jcs` (the ECMAScript number formatting
//! the RFC requires). Everything else is done here, because `serde_jcs` 0.1
//! sorts object keys by their escaped UTF-8 bytes, while RFC 8785 sorts
//! them by UTF-16 code units of the unescaped key: the two disagree for
//! keys holding `"`, `\`, control characters, or characters above U+FFFF
//! next to U+E000–U+FFFF, and keys inside the evidence are chosen by
//! whoever wrote the audit event. With this, an auditor's own JCS library
//! reproduces the canonical text, and so the hash, from the finding JSON.
//!
//! One known difference from the RFC, shared with `serde_jcs`: an integer
//! beyond ±2^53 is written with all its digits, not rounded to the nearest
//! double. Audit events carry no such numbers in practice.
//!
//! Strings are written as serde_json writes them, which is what RFC 8785
//! asks: only `"`, `\` and control characters are escaped, as `\b \t \n \f
//! \r` or `\u00xx` with lowercase hex; nothing else (not `/`, not
//! non-ASCII).

use serde::Serialize;
use serde_json::Value;

/// RFC 8785 canonical JSON of `value`.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    let mut out = Vec::with_capacity(2048);
    write(&v, &mut out)?;
    // Only whole UTF-8 strings and ASCII punctuation were written.
    String::from_utf8(out).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

fn write(v: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) if n.is_f64() => serde_jcs::to_writer(&mut *out, n)?,
        // Integers print the same in every JSON serialiser.
        Value::Number(n) => serde_json::to_writer(&mut *out, n)?,
        Value::String(s) => serde_json::to_writer(&mut *out, s)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // serde_json's map is sorted by UTF-8 bytes, which is UTF-16
            // order unless a key has a character above U+FFFF.
            if entries
                .iter()
                .any(|(k, _)| k.chars().any(|c| c > '\u{ffff}'))
            {
                entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            } else {
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                write(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // RFC 8785 section 3.2.3's example, plus keys serde_jcs 0.1 gets wrong.
        let v = json!({
            "\u{20ac}": "Euro Sign",
            "\r": "Carriage Return",
            "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\u{1f600}": "Emoji: Grinning Face",
            "\u{0080}": "Control",
            "\u{00f6}": "Latin Small Letter O With Diaeresis",
            "\"": "quote",
            "A": "A",
        });
        let c = canonical_json(&v).unwrap();
        let keys: Vec<String> = {
            let order = [
                "\r",
                "\"",
                "1",
                "A",
                "\u{0080}",
                "\u{00f6}",
                "\u{20ac}",
                "\u{1f600}",
                "\u{fb33}",
            ];
            order
                .iter()
                .map(|k| serde_json::to_string(k).unwrap())
                .collect()
        };
        let mut pos = 0;
        for k in &keys {
            let at = c[pos..]
                .find(&format!("{k}:"))
                .unwrap_or_else(|| panic!("{k} out of order in {c}"));
            pos += at + k.len();
        }
    }

    #[test]
    fn rfc8785_values() {
        // RFC 8785 section 3.2.2's example, as text (numbers parse as f64).
        let text = r#"{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
                       "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
                       "literals": [null, true, false]}"#;
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            canonical_json(&v).unwrap(),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    #[test]
    fn serde_jcs_orders_hostile_keys_differently() {
        // Audit-event keys (labels, annotations, user.extra) are attacker
        // chosen. Whoever re-serialises a stored finding must use this
        // module (or the stored canonical text), never serde_jcs directly.
        let v = json!({"aZ": 1, "a\nb": 2});
        assert_eq!(canonical_json(&v).unwrap(), r#"{"a\nb":2,"aZ":1}"#);
        assert_eq!(serde_jcs::to_string(&v).unwrap(), r#"{"aZ":1,"a\nb":2}"#);
    }
}
