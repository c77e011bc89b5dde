//! The fast path of [`AuditEvent::parse`](super::AuditEvent::parse): a
//! hand-written reader for the shape API servers write, about twice the
//! speed of serde's derive on it (the decoder's single largest cost).
//!
//! It answers only when it is sure. Whenever the text strays from that
//! shape (an escaped field name, a field of an unexpected type, a field
//! given twice, nesting past [`MAX_DEPTH`], invalid JSON anywhere, text
//! after the event) it returns `None`, and serde's derive, the reference,
//! parses the text and decides, with its error messages. So this reader
//! never has to reproduce an error, only a success; a test holds it to
//! serde's result on every event the repository holds and on mutations of
//! them (`event::tests`).
//!
//! Strings without escapes are borrowed from the input; escaped strings
//! are decoded here (an invalid escape or a lone surrogate goes to serde).
//! Unknown fields and bodies are skipped, checked as JSON; bodies are kept
//! as their text (`RawJson`).

use std::borrow::Cow;

use super::{AuditEvent, ObjectRef, RawJson, ResponseStatus, Short, Stage, UserInfo};

/// Deepest nesting skipped here; deeper values go to serde (whose limit is
/// 128).
const MAX_DEPTH: u32 = 64;

/// Parses `raw`, or `None` when serde should.
pub fn parse(raw: &str) -> Option<AuditEvent<'_>> {
    let mut r = Reader {
        s: raw,
        b: raw.as_bytes(),
        i: 0,
    };
    let mut ev = AuditEvent::default();
    let mut seen = 0u32;
    r.fields(|r, key| {
        let bit = match key {
            "kind" => 0,
            "apiVersion" => 1,
            "level" => 2,
            "auditID" => 3,
            "stage" => 4,
            "requestURI" => 5,
            "verb" => 6,
            "user" => 7,
            "impersonatedUser" => 8,
            "sourceIPs" => 9,
            "userAgent" => 10,
            "objectRef" => 11,
            "responseStatus" => 12,
            "requestObject" => 13,
            "responseObject" => 14,
            "requestReceivedTimestamp" => 15,
            "stageTimestamp" => 16,
            "annotations" => 17,
            "authenticationMetadata" => 18,
            _ => return r.skip(0),
        };
        once(&mut seen, bit)?;
        match bit {
            0 => ev.kind = r.opt_string()?,
            1 => ev.api_version = r.opt_string()?,
            2 => ev.level = r.opt_string()?,
            3 => ev.audit_id = r.opt_string()?,
            4 => ev.stage = r.opt_string()?.map(|s| stage(&s)),
            5 => ev.request_uri = r.opt_string()?,
            6 => ev.verb = r.opt_string()?,
            // `user` is not optional: null goes to serde (an error).
            7 => ev.user = r.user()?,
            8 => ev.impersonated_user = r.or_null(|r| r.user().map(Box::new))?,
            9 => ev.source_ips = r.str_list()?,
            10 => ev.user_agent = r.opt_string()?,
            11 => ev.object_ref = r.or_null(Reader::object_ref)?,
            12 => ev.response_status = r.or_null(Reader::response_status)?,
            13 => ev.request_object = r.or_null(Reader::raw_value)?,
            14 => ev.response_object = r.or_null(Reader::raw_value)?,
            15 => ev.request_received_timestamp = r.opt_string()?,
            16 => ev.stage_timestamp = r.opt_string()?,
            17 => {
                r.or_null(|r| {
                    r.map(|r, k| {
                        let v = r.string()?;
                        ev.annotations.push((k, v));
                        Some(())
                    })
                })?;
            }
            _ => ev.authentication_metadata = r.or_null(Reader::raw_value)?,
        }
        Some(())
    })?;
    r.ws();
    if r.i != r.b.len() {
        return None;
    }
    ev.raw = raw;
    Some(ev)
}

fn once(seen: &mut u32, bit: u32) -> Option<()> {
    if *seen & (1 << bit) != 0 {
        return None;
    }
    *seen |= 1 << bit;
    Some(())
}

fn stage(s: &str) -> Stage {
    match s {
        "RequestReceived" => Stage::RequestReceived,
        "ResponseStarted" => Stage::ResponseStarted,
        "ResponseComplete" => Stage::ResponseComplete,
        "Panic" => Stage::Panic,
        _ => Stage::Unknown,
    }
}

/// The first index at or after `j` holding `"`, `\` or a control
/// character (which JSON strings may not hold raw), or `b.len()`.
fn skip_plain(b: &[u8], mut j: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Eight bytes at a time: a zero byte after XOR with the quote or the
    // backslash, or a byte below 0x20, ends the plain run.
    while let Some(chunk) = b.get(j..j + 8) {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(bytes);
        let q = x ^ (ONES * u64::from(b'"'));
        let bs = x ^ (ONES * u64::from(b'\\'));
        let hit = (q.wrapping_sub(ONES) & !q)
            | (bs.wrapping_sub(ONES) & !bs)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let hit = hit & HIGH;
        if hit != 0 {
            // The lowest flagged byte is a true hit (borrows only flag
            // bytes above one).
            return j + (hit.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while let Some(&c) = b.get(j) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return j;
        }
        j += 1;
    }
    j
}

/// The text of a JSON string (between its quotes) with its escapes
/// decoded; `None` for an invalid escape or a lone surrogate, which serde
/// refuses too.
fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    decode_escapes(text, Some(&mut out))?;
    Some(out)
}

/// Decodes the escapes of `text` into `out`, or only checks them when
/// `out` is `None`.
fn decode_escapes(text: &str, mut out: Option<&mut String>) -> Option<()> {
    let b = text.as_bytes();
    let mut i = 0;
    let push = |c: char, out: &mut Option<&mut String>| {
        if let Some(o) = out.as_deref_mut() {
            o.push(c);
        }
    };
    while i < b.len() {
        let j = memchr::memchr(b'\\', &b[i..]).map_or(b.len(), |k| i + k);
        let plain = text.get(i..j)?;
        if let Some(o) = out.as_deref_mut() {
            o.push_str(plain);
        }
        if j == b.len() {
            break;
        }
        i = j + 2;
        match b.get(j + 1)? {
            b'"' => push('"', &mut out),
            b'\\' => push('\\', &mut out),
            b'/' => push('/', &mut out),
            b'b' => push('\u{8}', &mut out),
            b'f' => push('\u{c}', &mut out),
            b'n' => push('\n', &mut out),
            b'r' => push('\r', &mut out),
            b't' => push('\t', &mut out),
            b'u' => {
                let hi = hex4(b.get(i..i + 4)?)?;
                i += 4;
                let c = match hi {
                    0xD800..=0xDBFF => {
                        if b.get(i..i + 2)? != b"\\u" {
                            return None;
                        }
                        let lo = hex4(b.get(i + 2..i + 6)?)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return None;
                        }
                        i += 6;
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => char::from_u32(hi)?,
                };
                push(c, &mut out);
            }
            _ => return None,
        }
    }
    Some(())
}

fn hex4(h: &[u8]) -> Option<u32> {
    h.iter().try_fold(0u32, |n, &c| {
        let d = (c as char).to_digit(16)?;
        Some(n * 16 + d)
    })
}

struct Reader<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.b.get(self.i..self.i + word.len())? == word).then(|| self.i += word.len())
    }

    /// A string at the cursor: its text between the quotes, the quoted
    /// text, and whether it holds escapes.
    fn string_raw(&mut self) -> Option<(&'a str, &'a str, bool)> {
        if self.peek()? != b'"' {
            return None;
        }
        let open = self.i;
        let mut j = open + 1;
        let mut escaped = false;
        loop {
            j = skip_plain(self.b, j);
            match self.b.get(j)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    j += 2;
                }
                _ => return None,
            }
        }
        self.i = j + 1;
        Some((self.s.get(open + 1..j)?, self.s.get(open..j + 1)?, escaped))
    }

    fn string(&mut self) -> Option<Cow<'a, str>> {
        let (text, _, escaped) = self.string_raw()?;
        if escaped {
            unescape(text).map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(text))
        }
    }

    fn opt_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        self.string().map(Some)
    }

    /// `null` as `None`, else what `f` reads.
    fn or_null<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        f(self).map(Some)
    }

    /// An object whose field names have no escapes: `f` reads each value.
    fn fields(&mut self, mut f: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.members(|r, (key, _, escaped)| if escaped { None } else { f(r, key) })
    }

    /// An object of any keys (annotations, `extra`): `f` reads each value.
    fn map(&mut self, mut f: impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>) -> Option<()> {
        self.members(|r, (key, _, escaped)| {
            let key = if escaped {
                Cow::Owned(unescape(key)?)
            } else {
                Cow::Borrowed(key)
            };
            f(r, key)
        })
    }

    fn members(
        &mut self,
        mut f: impl FnMut(&mut Self, (&'a str, &'a str, bool)) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.string_raw()?;
            self.eat(b':')?;
            f(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A list of strings: an array, a lone string, or null (as serde's
    /// `StrList` takes them).
    fn str_list<const N: usize>(&mut self) -> Option<Short<Cow<'a, str>, N>> {
        let mut out = Short::new();
        match self.peek()? {
            b'n' => self.literal(b"null")?,
            b'"' => out.push(self.string()?),
            b'[' => {
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(out);
                }
                loop {
                    out.push(self.string()?);
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
        Some(out)
    }

    fn user(&mut self) -> Option<UserInfo<'a>> {
        let mut u = UserInfo::default();
        let mut seen = 0u32;
        self.fields(|r, key| {
            match key {
                "username" => {
                    once(&mut seen, 0)?;
                    u.username = r.opt_string()?;
                }
                "uid" => {
                    once(&mut seen, 1)?;
                    u.uid = r.opt_string()?;
                }
                "groups" => {
                    once(&mut seen, 2)?;
                    u.groups = r.str_list()?;
                }
                "extra" => {
                    once(&mut seen, 3)?;
                    r.or_null(|r| {
                        r.map(|r, k| {
                            let v = r.str_list()?;
                            u.extra.push((k, v));
                            Some(())
                        })
                    })?;
                }
                _ => r.skip(0)?,
            }
            Some(())
        })?;
        Some(u)
    }

    fn object_ref(&mut self) -> Option<ObjectRef<'a>> {
        let mut o = ObjectRef::default();
        let mut seen = 0u32;
        self.fields(|r, key| {
            let (bit, slot) = match key {
                "resource" => (0, &mut o.resource),
                "namespace" => (1, &mut o.namespace),
                "name" => (2, &mut o.name),
                "uid" => (3, &mut o.uid),
                "apiGroup" => (4, &mut o.api_group),
                "apiVersion" => (5, &mut o.api_version),
                "resourceVersion" => (6, &mut o.resource_version),
                "subresource" => (7, &mut o.subresource),
                _ => return r.skip(0),
            };
            once(&mut seen, bit)?;
            *slot = r.opt_string()?;
            Some(())
        })?;
        Some(o)
    }

    fn response_status(&mut self) -> Option<ResponseStatus<'a>> {
        let mut st = ResponseStatus::default();
        let mut seen = 0u32;
        self.fields(|r, key| {
            let (bit, slot) = match key {
                "code" => {
                    once(&mut seen, 0)?;
                    st.code = r.or_null(Reader::int)?;
                    return Some(());
                }
                "status" => (1, &mut st.status),
                "reason" => (2, &mut st.reason),
                "message" => (3, &mut st.message),
                _ => return r.skip(0),
            };
            once(&mut seen, bit)?;
            *slot = r.opt_string()?;
            Some(())
        })?;
        Some(st)
    }

    /// An integer written plainly (`403`, `-1`); anything else (a
    /// fraction, an exponent, a leading zero, out of range) goes to serde.
    fn int(&mut self) -> Option<i64> {
        self.ws();
        let start = self.i;
        let digits_at = start + usize::from(self.b.get(start) == Some(&b'-'));
        let mut j = digits_at;
        while self.b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        let digits = j - digits_at;
        if digits == 0
            || (self.b.get(digits_at) == Some(&b'0') && (digits > 1 || digits_at > start))
            || matches!(self.b.get(j), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        self.i = j;
        self.s.get(start..j)?.parse().ok()
    }

    /// A value kept as raw JSON text (request and response bodies),
    /// checked as it is skipped.
    fn raw_value(&mut self) -> Option<RawJson<'a>> {
        self.ws();
        let start = self.i;
        self.skip(0)?;
        Some(RawJson::checked(self.s.get(start..self.i)?))
    }

    /// Skips one JSON value, checking it.
    fn skip(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => {
                let (text, _, escaped) = self.string_raw()?;
                if escaped {
                    decode_escapes(text, None)?;
                }
            }
            b'{' if depth < MAX_DEPTH => self.members(|r, (text, _, escaped)| {
                if escaped {
                    decode_escapes(text, None)?;
                }
                r.skip(depth + 1)
            })?,
            b'[' if depth < MAX_DEPTH => {
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        }
        Some(())
    }

    /// A JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let b = self.b;
        let mut j = self.i;
        let digits = |j: &mut usize| {
            let from = *j;
            while b.get(*j).is_some_and(u8::is_ascii_digit) {
                *j += 1;
            }
            *j - from
        };
        if b.get(j) == Some(&b'-') {
            j += 1;
        }
        match b.get(j) {
            Some(b'0') => j += 1,
            Some(b'1'..=b'9') => {
                digits(&mut j);
            }
            _ => return None,
        }
        if b.get(j) == Some(&b'.') {
            j += 1;
            if digits(&mut j) == 0 {
                return None;
            }
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            j += 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if digits(&mut j) == 0 {
                return None;
            }
        }
        self.i = j;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_runs_stop_at_quotes_backslashes_and_controls() {
        for (text, at) in [
            ("abcdefghijklmnop\"", 16),
            ("abc\\def", 3),
            ("abcdefghij\u{1}x", 10),
            ("abcdefgh", 8),
            ("", 0),
            ("é€𝄞 plain \"", "é€𝄞 plain ".len()),
        ] {
            assert_eq!(skip_plain(text.as_bytes(), 0), at, "{text:?}");
        }
    }

    #[test]
    fn escapes_decode_as_serde_decodes_them() {
        for text in [
            r#"plain"#,
            r#"RBAC: allowed by ClusterRoleBinding \"api\" of ClusterRole \"api\""#,
            r#"/api?watch=true\u0026resourceVersion=1"#,
            r#"\\ \/ \b \f \n \r \t \u00e9 \ud83d\ude00 end"#,
            r#"\u0000"#,
        ] {
            let want: String = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            assert_eq!(unescape(text).as_deref(), Some(want.as_str()), "{text}");
        }
        for bad in [
            r#"\ud800"#,
            r#"\udc00x"#,
            r#"\ud800\u0041"#,
            r#"\x"#,
            r#"\u12"#,
            r#"\u12g4"#,
        ] {
            assert!(serde_json::from_str::<String>(&format!("\"{bad}\"")).is_err());
            assert_eq!(unescape(bad), None, "{bad}");
        }
    }

    #[test]
    fn integers_only_when_plain() {
        let int = |t: &str| {
            Reader {
                s: t,
                b: t.as_bytes(),
                i: 0,
            }
            .int()
        };
        assert_eq!(int("403"), Some(403));
        assert_eq!(int("-1"), Some(-1));
        assert_eq!(int("0"), Some(0));
        for t in [
            "403.0",
            "4e2",
            "0403",
            "-0",
            "-",
            "99999999999999999999",
            "x",
        ] {
            assert_eq!(int(t), None, "{t}");
        }
    }
}
