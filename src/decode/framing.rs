//! Framing: cutting a byte stream into JSON values without parsing them.
//!
//! Input: any `Read` (already un-gzipped). Output: [`Frame`]s handed to a
//! callback, each borrowing the framer's buffer for the duration of the call.
//! Two modes, chosen from the first bytes:
//!
//! - **lines** (JSON lines, what `--audit-log-path` writes): one value per
//!   line; a bad line costs exactly that line. This is the fast path: a
//!   `memchr` for the newline, nothing else.
//! - **document** (pretty-printed events, a JSON array, an `EventList`, a
//!   CloudWatch or AKS payload saved to a file): values are cut by
//!   structure. A top-level array, and the `items` / `records` / `logEvents`
//!   array of a top-level object, are streamed element by element, so a file
//!   holding one huge `EventList` is never held in memory whole.
//!
//! Memory is bounded: a value larger than its cap is skipped while scanning
//! (only a sample is kept) and reported as [`Frame::Oversized`]. Whether a
//! value is an audit event is not decided here (see `decode::dispatch`).

use std::io::{self, Read};

use memchr::memchr;

/// Keys of a top-level object whose array value is streamed.
pub const STREAMED_KEYS: [&str; 3] = ["items", "records", "logEvents"];

/// How much of a bad or oversized value is kept for the quarantine.
pub const SAMPLE_BYTES: usize = 64 * 1024;

const READ_CHUNK: usize = 64 * 1024;
/// The first read's size: a Kafka message or a webhook body is framed by a
/// framer of its own, and zero-filling 64 KiB for each (twice: its bytes,
/// then the end) cost more than decoding it. Each read that fills its
/// buffer doubles the next, up to [`READ_CHUNK`], so a file reaches full
/// reads after four.
const FIRST_CHUNK: usize = 4 * 1024;

/// One framed piece of input.
#[derive(Debug)]
pub enum Frame<'b> {
    /// A complete top-level value: a JSON line, or a document value.
    Value { bytes: &'b [u8], line: u64 },
    /// A top-level array (`head` is `None`) or an object's `key` array
    /// (`head` holds the object's members before it, closed with `}`) begins.
    ArrayStart {
        head: Option<&'b [u8]>,
        key: &'b str,
        line: u64,
    },
    /// One element of the array being streamed.
    Element { bytes: &'b [u8], line: u64 },
    /// The streamed array ended (also after a structural error inside it).
    ArrayEnd,
    /// A value over its size cap; `sample` holds its first bytes.
    Oversized {
        sample: &'b [u8],
        size: u64,
        limit: usize,
        line: u64,
    },
    /// Bytes that are not a JSON value where one was expected.
    Invalid {
        error: String,
        sample: &'b [u8],
        line: u64,
    },
}

/// Size caps for framing.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// A single event, or an element of a streamed array.
    pub value: usize,
    /// A line or top-level value that may be a whole envelope.
    pub document: usize,
}

/// Frames `input`, calling `on_frame` for each piece. Only read errors
/// (including a corrupt gzip stream underneath) are returned.
pub fn frame<R: Read>(
    input: R,
    caps: Caps,
    on_frame: &mut dyn FnMut(Frame<'_>),
) -> Result<(), ReadError> {
    let mut f = Framer {
        input,
        buf: Vec::with_capacity(FIRST_CHUNK),
        chunk: FIRST_CHUNK,
        start: 0,
        line: 1,
        eof: false,
        caps,
        eof_failures: 0,
        drained: 0,
    };
    let result = f.run(on_frame);
    result.map_err(|source| ReadError {
        line: f.line,
        source,
    })
}

/// A read error (or a corrupt compressed stream) and the line reached.
#[derive(Debug)]
pub struct ReadError {
    pub line: u64,
    pub source: io::Error,
}

const BOM: &[u8] = b"\xef\xbb\xbf";

struct Framer<R> {
    input: R,
    buf: Vec<u8>,
    /// The size of the next read.
    chunk: usize,
    /// Everything before `start` has been handed out.
    start: usize,
    /// Line number at `start`.
    line: u64,
    eof: bool,
    caps: Caps,
    /// Values that ran to the end of input unfinished. After two, the rest
    /// of the input is read as lines: rescanning to the end from every
    /// later line would take quadratic time.
    eof_failures: u32,
    /// Bytes dropped from the front of `buf` so far.
    drained: u64,
}

/// Why a value could not be framed.
enum Cut {
    /// Over the cap: the value was skipped; sample, size, first line.
    Oversized(Vec<u8>, u64, u64),
    /// Not well-formed at the structural level.
    Invalid(&'static str),
    /// Over the cap, not yet skipped: the scanner state so far.
    TooBig(Scan),
}

impl<R: Read> Framer<R> {
    /// Reads more input; returns false at end of input.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let len = self.buf.len();
        self.buf.resize(len + self.chunk, 0);
        loop {
            match self.input.read(&mut self.buf[len..]) {
                Ok(0) => {
                    self.buf.truncate(len);
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.buf.truncate(len + n);
                    if n == self.chunk {
                        self.chunk = (self.chunk * 2).min(READ_CHUNK);
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(len);
                    self.eof = true;
                    return Err(e);
                }
            }
        }
    }

    /// Marks everything before `pos` as handed out, counting its lines.
    fn advance(&mut self, pos: usize) {
        debug_assert!(pos >= self.start);
        self.line += memchr::memchr_iter(b'\n', &self.buf[self.start..pos]).count() as u64;
        self.start = pos;
    }

    /// Drops handed-out bytes; positions held by the caller become invalid.
    fn compact(&mut self) {
        if self.start > 0 && (self.start >= READ_CHUNK || self.start == self.buf.len()) {
            self.buf.drain(..self.start);
            self.drained += self.start as u64;
            self.start = 0;
        }
    }

    /// Skips whitespace from `pos`; returns the position of the next byte,
    /// or `None` at end of input.
    fn skip_ws(&mut self, mut pos: usize) -> io::Result<Option<usize>> {
        loop {
            while pos < self.buf.len() {
                if !self.buf[pos].is_ascii_whitespace() {
                    return Ok(Some(pos));
                }
                pos += 1;
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn run(&mut self, on_frame: &mut dyn FnMut(Frame<'_>)) -> io::Result<()> {
        self.fill()?;
        if self.buf.starts_with(BOM) {
            self.start = BOM.len();
        }
        if self.detect_lines()? {
            self.lines(on_frame)
        } else {
            self.document(on_frame)
        }
    }

    /// Decides between lines and document mode from the first value.
    fn detect_lines(&mut self) -> io::Result<bool> {
        let Some(first) = self.skip_ws(self.start)? else {
            return Ok(true);
        };
        match self.buf[first] {
            b'[' => return Ok(false),
            b'{' => {}
            _ => return Ok(true),
        }
        // Look at the first line, up to 1 MiB.
        let newline = loop {
            if let Some(i) = memchr(b'\n', &self.buf[first..]) {
                break Some(first + i);
            }
            if self.buf.len() - first > 1 << 20 || !self.fill()? {
                break None;
            }
        };
        let Some(nl) = newline else {
            // One line longer than the probe (or the whole input): a JSON
            // line holding a big event. Lines mode keeps a broken one from
            // swallowing what follows.
            return Ok(true);
        };
        if complete_value(&self.buf[first..nl]) {
            return Ok(true); // the first line holds a complete value
        }
        // An incomplete first line followed by a line that is a complete
        // value on its own is a broken JSON line, not a pretty-printed
        // document (whose second line is `"key": ...` or an item with a
        // trailing comma).
        let second = loop {
            if let Some(i) = memchr(b'\n', &self.buf[nl + 1..]) {
                break nl + 1 + i;
            }
            if self.buf.len() - nl > 1 << 20 || !self.fill()? {
                break self.buf.len();
            }
        };
        Ok(self.buf.get(nl + 1) == Some(&b'{') && complete_value(&self.buf[nl + 1..second]))
    }

    fn lines(&mut self, on_frame: &mut dyn FnMut(Frame<'_>)) -> io::Result<()> {
        let mut searched = self.start;
        loop {
            if let Some(i) = memchr(b'\n', &self.buf[searched..]) {
                let end = searched + i;
                let line = trim(&self.buf[self.start..end]);
                if line.len() > self.caps.document {
                    on_frame(Frame::Oversized {
                        sample: &line[..SAMPLE_BYTES.min(line.len())],
                        size: line.len() as u64,
                        limit: self.caps.document,
                        line: self.line,
                    });
                } else if !line.is_empty() {
                    on_frame(Frame::Value {
                        bytes: line,
                        line: self.line,
                    });
                }
                self.start = end + 1;
                self.line += 1;
                searched = self.start;
                if self.start >= READ_CHUNK {
                    self.compact();
                    searched = self.start;
                }
                continue;
            }
            searched = self.buf.len();
            if self.buf.len() - self.start > self.caps.document {
                self.skip_long_line(on_frame)?;
                searched = self.start;
                continue;
            }
            if !self.fill()? {
                let line = trim(&self.buf[self.start..]);
                if !line.is_empty() {
                    on_frame(Frame::Value {
                        bytes: line,
                        line: self.line,
                    });
                }
                self.start = self.buf.len();
                return Ok(());
            }
        }
    }

    /// Discards the rest of a line over the cap, reporting it once.
    fn skip_long_line(&mut self, on_frame: &mut dyn FnMut(Frame<'_>)) -> io::Result<()> {
        let sample = self.buf
            [self.start..self.start + SAMPLE_BYTES.min(self.buf.len() - self.start)]
            .to_vec();
        let line = self.line;
        let mut size = 0u64;
        loop {
            if let Some(i) = memchr(b'\n', &self.buf[self.start..]) {
                size += i as u64;
                self.start += i + 1;
                self.line += 1;
                break;
            }
            size += (self.buf.len() - self.start) as u64;
            self.start = self.buf.len();
            self.compact();
            if !self.fill()? {
                break;
            }
        }
        on_frame(Frame::Oversized {
            sample: &sample,
            size,
            limit: self.caps.document,
            line,
        });
        self.compact();
        Ok(())
    }

    fn document(&mut self, on_frame: &mut dyn FnMut(Frame<'_>)) -> io::Result<()> {
        loop {
            if self.eof_failures >= 2 {
                return self.lines(on_frame);
            }
            self.compact();
            let Some(pos) = self.skip_ws(self.start)? else {
                return Ok(());
            };
            self.advance(pos);
            match self.buf[pos] {
                b'[' => {
                    on_frame(Frame::ArrayStart {
                        head: None,
                        key: "",
                        line: self.line,
                    });
                    self.advance(pos + 1);
                    let ok = self.array(on_frame)?;
                    on_frame(Frame::ArrayEnd);
                    if !ok {
                        self.resync()?;
                    }
                }
                b'{' => {
                    if !self.object(on_frame)? {
                        self.resync()?;
                    }
                }
                _ => {
                    self.invalid("expected a JSON object or array", on_frame);
                    self.resync()?;
                }
            }
        }
    }

    /// Reports the bytes at `start` (up to the end of the line) as invalid.
    fn invalid(&mut self, error: &str, on_frame: &mut dyn FnMut(Frame<'_>)) {
        let rest = &self.buf[self.start..];
        let end = memchr(b'\n', rest).unwrap_or(rest.len()).min(SAMPLE_BYTES);
        on_frame(Frame::Invalid {
            error: error.to_owned(),
            sample: trim(&rest[..end]),
            line: self.line,
        });
    }

    /// After a structural error: skip to the next line that starts (in its
    /// first column) with `{` or `[`, where a new document plausibly begins.
    fn resync(&mut self) -> io::Result<()> {
        loop {
            let from = self.start;
            if let Some(i) = memchr(b'\n', &self.buf[from..]) {
                let next = from + i + 1;
                loop {
                    if next < self.buf.len() {
                        break;
                    }
                    if !self.fill()? {
                        self.advance(self.buf.len());
                        return Ok(());
                    }
                }
                self.advance(next);
                if matches!(self.buf[next], b'{' | b'[') {
                    return Ok(());
                }
                continue;
            }
            self.advance(self.buf.len());
            self.compact();
            if !self.fill()? {
                return Ok(());
            }
        }
    }

    /// Streams the elements of an array whose `[` was consumed. Returns
    /// false after a structural error (already reported).
    fn array(&mut self, on_frame: &mut dyn FnMut(Frame<'_>)) -> io::Result<bool> {
        let mut want_comma = false;
        loop {
            self.compact();
            let Some(pos) = self.skip_ws(self.start)? else {
                self.advance(self.buf.len());
                on_frame(Frame::Invalid {
                    error: "input ends inside an array".into(),
                    sample: b"",
                    line: self.line,
                });
                return Ok(true);
            };
            self.advance(pos);
            match self.buf[pos] {
                b']' => {
                    self.advance(pos + 1);
                    return Ok(true);
                }
                b',' if want_comma => {
                    self.advance(pos + 1);
                    want_comma = false;
                    continue;
                }
                _ if want_comma => {
                    self.invalid("expected ',' or ']' between array elements", on_frame);
                    return Ok(false);
                }
                _ => {}
            }
            match self.value(pos, self.caps.value)? {
                Ok(end) => {
                    on_frame(Frame::Element {
                        bytes: &self.buf[pos..end],
                        line: self.line,
                    });
                    self.advance(end);
                }
                Err(cut) => {
                    let cut = match cut {
                        Cut::TooBig(scan) => self.discard(pos, scan)?,
                        cut => cut,
                    };
                    if !self.report_cut(cut, self.caps.value, on_frame) {
                        return Ok(false);
                    }
                }
            }
            want_comma = true;
        }
    }

    /// Reports a cut value; returns false when framing must resync.
    fn report_cut(&mut self, cut: Cut, limit: usize, on_frame: &mut dyn FnMut(Frame<'_>)) -> bool {
        match cut {
            Cut::Oversized(sample, size, line) => {
                on_frame(Frame::Oversized {
                    sample: &sample,
                    size,
                    limit,
                    line,
                });
                true
            }
            Cut::Invalid(error) => {
                self.invalid(error, on_frame);
                false
            }
            // Callers skip an over-cap value before reporting it.
            Cut::TooBig(_) => {
                self.invalid("value over the size cap", on_frame);
                false
            }
        }
    }

    /// Frames the value starting at `pos`, within `cap` bytes. On success
    /// the value is `buf[pos..end]`; nothing is consumed either way.
    fn value(&mut self, pos: usize, cap: usize) -> io::Result<Result<usize, Cut>> {
        let mut scan = Scan::default();
        let mut at = pos;
        loop {
            match scan.feed(&self.buf[at..]) {
                Ok(Some(n)) => return Ok(Ok(at + n)),
                Ok(None) => {}
                Err(e) => return Ok(Err(Cut::Invalid(e))),
            }
            at = self.buf.len();
            if at - pos > cap {
                return Ok(Err(Cut::TooBig(scan)));
            }
            if !self.fill()? {
                if scan.is_scalar() {
                    return Ok(Ok(at));
                }
                self.eof_failures += 1;
                return Ok(Err(Cut::Invalid("input ends inside a JSON value")));
            }
        }
    }

    /// Skips the rest of a value being scanned from `pos`, keeping a sample.
    fn discard(&mut self, pos: usize, mut scan: Scan) -> io::Result<Cut> {
        self.advance(pos);
        let line = self.line;
        let sample = self.buf[pos..self.buf.len().min(pos + SAMPLE_BYTES)].to_vec();
        let mut size = (self.buf.len() - pos) as u64;
        self.advance(self.buf.len());
        self.compact();
        loop {
            if !self.fill()? {
                self.advance(self.buf.len());
                return Ok(Cut::Oversized(sample, size, line));
            }
            match scan.feed(&self.buf[self.start..]) {
                Ok(Some(n)) => {
                    size += n as u64;
                    self.advance(self.start + n);
                    return Ok(Cut::Oversized(sample, size, line));
                }
                Ok(None) => {
                    size += (self.buf.len() - self.start) as u64;
                    self.advance(self.buf.len());
                    self.compact();
                }
                Err(_) => {
                    // Broken inside an oversized value: report the size and
                    // let the caller go on after it.
                    return Ok(Cut::Oversized(sample, size, line));
                }
            }
        }
    }

    /// Frames a top-level object at `start`. Returns false after a
    /// structural error (already reported).
    fn object(&mut self, on_frame: &mut dyn FnMut(Frame<'_>)) -> io::Result<bool> {
        let obj = self.start;
        let cap = self.caps.document;
        let mut pos = obj + 1;
        let mut after_member = false;
        loop {
            let Some(p) = self.skip_ws(pos)? else {
                self.invalid("input ends inside a JSON object", on_frame);
                self.advance(self.buf.len());
                return Ok(true);
            };
            pos = p;
            match self.buf[pos] {
                b'}' => {
                    on_frame(Frame::Value {
                        bytes: &self.buf[obj..pos + 1],
                        line: self.line,
                    });
                    self.advance(pos + 1);
                    return Ok(true);
                }
                b',' if after_member => {
                    pos += 1;
                    after_member = false;
                    continue;
                }
                b'"' if !after_member => {}
                _ => {
                    self.invalid(
                        "expected a member name, ',' or '}' in a JSON object",
                        on_frame,
                    );
                    return Ok(false);
                }
            }
            let member = pos;
            let key_end = match self.value(pos, cap.saturating_sub(pos - obj))? {
                Ok(end) => end,
                Err(Cut::TooBig(_)) => return self.skip_object(obj, cap, on_frame),
                Err(cut) => return Ok(self.report_cut(cut, cap, on_frame)),
            };
            let Some(colon) = self.skip_ws(key_end)? else {
                self.invalid("input ends inside a JSON object", on_frame);
                return Ok(false);
            };
            if self.buf[colon] != b':' {
                self.invalid("expected ':' after a member name", on_frame);
                return Ok(false);
            }
            let Some(vpos) = self.skip_ws(colon + 1)? else {
                self.invalid("input ends inside a JSON object", on_frame);
                return Ok(false);
            };
            let key = &self.buf[member + 1..key_end - 1];
            if self.buf[vpos] == b'[' {
                // A CloudWatch payload whose `logGroup` (the cluster) comes
                // after `logEvents` (sorted keys) is read whole instead:
                // streaming would decode the events before their cluster is
                // known. Such payloads are small (CloudWatch caps them).
                let needs_tail = key == b"logEvents"
                    && memchr::memmem::find(&self.buf[obj..member], b"\"logGroup\"").is_none();
                if let Some(k) = STREAMED_KEYS
                    .iter()
                    .find(|k| k.as_bytes() == key)
                    .filter(|_| !needs_tail)
                {
                    let mut head = trim(&self.buf[obj..member]).to_vec();
                    if head.last() == Some(&b',') {
                        head.pop();
                    }
                    head.push(b'}');
                    on_frame(Frame::ArrayStart {
                        head: Some(&head),
                        key: k,
                        line: self.line,
                    });
                    self.advance(vpos + 1);
                    let ok = self.array(on_frame)?;
                    on_frame(Frame::ArrayEnd);
                    if !ok {
                        return Ok(false);
                    }
                    return self.object_tail();
                }
            }
            let room = cap.saturating_sub(vpos - obj);
            match self.value(vpos, room)? {
                Ok(end) if end - obj <= cap => {
                    pos = end;
                    after_member = true;
                }
                Ok(_) | Err(Cut::TooBig(_)) => return self.skip_object(obj, cap, on_frame),
                Err(cut) => return Ok(self.report_cut(cut, cap, on_frame)),
            }
        }
    }

    /// Skips a top-level object at `obj` (== `start`) that is over the cap.
    fn skip_object(
        &mut self,
        obj: usize,
        cap: usize,
        on_frame: &mut dyn FnMut(Frame<'_>),
    ) -> io::Result<bool> {
        debug_assert_eq!(obj, self.start);
        // Skip to the next line where a document starts (column 0), not by
        // structure: an unbalanced line in a misread file would otherwise
        // take everything after it along.
        let line = self.line;
        let sample = self.buf[obj..self.buf.len().min(obj + SAMPLE_BYTES)].to_vec();
        let drained_before = self.drained;
        self.resync()?;
        let size = (self.drained + self.start as u64).saturating_sub(drained_before + obj as u64);
        on_frame(Frame::Oversized {
            sample: &sample,
            size,
            limit: cap,
            line,
        });
        Ok(true)
    }

    /// Skips the members after a streamed array up to the object's `}`.
    fn object_tail(&mut self) -> io::Result<bool> {
        let mut scan = Scan::nested(1);
        loop {
            match scan.feed(&self.buf[self.start..]) {
                Ok(Some(n)) => {
                    self.advance(self.start + n);
                    return Ok(true);
                }
                Ok(None) => {
                    self.advance(self.buf.len());
                    self.compact();
                    if !self.fill()? {
                        return Ok(true);
                    }
                }
                Err(_) => return Ok(false),
            }
        }
    }
}

/// Whether `line` is exactly one complete JSON value (and whitespace).
fn complete_value(line: &[u8]) -> bool {
    let line = trim(line);
    let mut scan = Scan::default();
    matches!(scan.feed(line), Ok(Some(n)) if n == line.len())
        || (scan.is_scalar() && !line.is_empty())
}

/// Trims ASCII whitespace (including a CR before the newline).
fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// A resumable structural scanner: finds where one JSON value ends.
#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    depth: u32,
    in_str: bool,
    esc: bool,
    scalar: bool,
}

impl Scan {
    /// A scanner already `depth` containers deep (for skipping the rest of
    /// an object).
    fn nested(depth: u32) -> Self {
        Scan {
            depth,
            ..Scan::default()
        }
    }

    fn is_scalar(&self) -> bool {
        self.scalar && self.depth == 0 && !self.in_str
    }

    /// Feeds the next bytes; returns the offset just past the value's end
    /// when it ends within `bytes`.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if self.in_str {
                // Jump to the next byte that matters inside a string.
                match memchr::memchr3(b'"', b'\\', b'\n', &bytes[i..]) {
                    None => {
                        if self.esc {
                            self.esc = false;
                        }
                        return Ok(None);
                    }
                    Some(j) if self.esc && j == 0 => {
                        self.esc = false;
                        i += 1;
                        continue;
                    }
                    Some(j) => {
                        self.esc = false;
                        i += j;
                        match bytes[i] {
                            b'\\' => self.esc = true,
                            b'\n' => return Err("line break inside a JSON string"),
                            _ => {
                                self.in_str = false;
                                if self.depth == 0 {
                                    return Ok(Some(i + 1));
                                }
                            }
                        }
                        i += 1;
                        continue;
                    }
                }
            }
            match b {
                b'"' => {
                    if self.scalar && self.depth == 0 {
                        return Err("unexpected '\"' after a value");
                    }
                    self.in_str = true;
                }
                b'{' | b'[' => {
                    if self.scalar && self.depth == 0 {
                        return Ok(Some(i));
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    if self.depth == 0 {
                        return if self.scalar {
                            Ok(Some(i))
                        } else {
                            Err("unbalanced closing bracket")
                        };
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Ok(Some(i + 1));
                    }
                }
                b',' | b':' if self.depth == 0 => {
                    return if self.scalar {
                        Ok(Some(i))
                    } else {
                        Err("expected a JSON value")
                    };
                }
                b' ' | b'\t' | b'\r' | b'\n' => {
                    if self.scalar && self.depth == 0 {
                        return Ok(Some(i));
                    }
                }
                _ => {
                    if self.depth == 0 {
                        self.scalar = true;
                    }
                }
            }
            i += 1;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum F {
        Value(String, u64),
        Start(Option<String>, String),
        Element(String, u64),
        End,
        Oversized(u64, u64),
        Invalid(u64),
    }

    fn run_caps(input: &[u8], caps: Caps) -> Vec<F> {
        let mut out = Vec::new();
        frame(input, caps, &mut |f| {
            out.push(match f {
                Frame::Value { bytes, line } => {
                    F::Value(String::from_utf8_lossy(bytes).into(), line)
                }
                Frame::ArrayStart { head, key, .. } => F::Start(
                    head.map(|h| String::from_utf8_lossy(h).into()),
                    key.to_owned(),
                ),
                Frame::Element { bytes, line } => {
                    F::Element(String::from_utf8_lossy(bytes).into(), line)
                }
                Frame::ArrayEnd => F::End,
                Frame::Oversized { size, line, .. } => F::Oversized(size, line),
                Frame::Invalid { line, .. } => F::Invalid(line),
            })
        })
        .unwrap();
        out
    }

    fn run(input: &str) -> Vec<F> {
        run_caps(
            input.as_bytes(),
            Caps {
                value: 1 << 20,
                document: 1 << 20,
            },
        )
    }

    fn v(s: &str, line: u64) -> F {
        F::Value(s.into(), line)
    }

    #[test]
    fn json_lines() {
        let out = run("{\"a\":1}\n\n{\"b\":2}\r\nnot json\n{\"c\":3}");
        assert_eq!(
            out,
            [
                v("{\"a\":1}", 1),
                v("{\"b\":2}", 3),
                v("not json", 4),
                v("{\"c\":3}", 5)
            ]
        );
    }

    #[test]
    fn broken_first_line_stays_line_mode() {
        let out = run("{\"a\":\n{\"b\":2}\n");
        assert_eq!(out, [v("{\"a\":", 1), v("{\"b\":2}", 2)]);
    }

    #[test]
    fn pretty_printed_values() {
        let out = run("{\n  \"a\": {\"x\": \"}\"},\n  \"b\": [1, 2]\n}\n{\n \"c\": 3\n}\n");
        assert_eq!(
            out,
            [
                v("{\n  \"a\": {\"x\": \"}\"},\n  \"b\": [1, 2]\n}", 1),
                v("{\n \"c\": 3\n}", 5)
            ]
        );
    }

    #[test]
    fn top_level_array_is_streamed() {
        let out = run("[\n {\"a\": 1},\n {\"b\": \"]\"}\n]\n");
        assert_eq!(
            out,
            [
                F::Start(None, "".into()),
                F::Element("{\"a\": 1}".into(), 2),
                F::Element("{\"b\": \"]\"}".into(), 3),
                F::End
            ]
        );
    }

    #[test]
    fn envelope_arrays_are_streamed_with_their_head() {
        let out = run(
            "{\n \"kind\": \"EventList\",\n \"metadata\": {},\n \"items\": [\n  {\"a\": 1},\n  {\"b\": 2}\n ],\n \"tail\": {\"x\": [1]}\n}\n",
        );
        assert_eq!(
            out,
            [
                F::Start(
                    Some("{\n \"kind\": \"EventList\",\n \"metadata\": {}}".into()),
                    "items".into()
                ),
                F::Element("{\"a\": 1}".into(), 5),
                F::Element("{\"b\": 2}".into(), 6),
                F::End
            ]
        );
    }

    #[test]
    fn other_arrays_are_not_streamed() {
        let out = run("{\n \"groups\": [\"a\"],\n \"auditID\": \"x\"\n}");
        assert_eq!(
            out,
            [v("{\n \"groups\": [\"a\"],\n \"auditID\": \"x\"\n}", 1)]
        );
    }

    #[test]
    fn oversized_line_is_skipped_and_next_line_read() {
        let big = format!("{{\"a\":\"{}\"}}\n{{\"b\":1}}\n", "x".repeat(300_000));
        let out = run_caps(
            big.as_bytes(),
            Caps {
                value: 1000,
                document: 1000,
            },
        );
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], F::Oversized(s, 1) if s >= 300_000));
        assert_eq!(out[1], v("{\"b\":1}", 2));
    }

    #[test]
    fn oversized_array_element_is_skipped() {
        let big = format!("[\n{{\"a\":\"{}\"}},\n{{\"b\":1}}\n]", "x".repeat(200_000));
        let out = run_caps(
            big.as_bytes(),
            Caps {
                value: 1000,
                document: 1000,
            },
        );
        assert!(
            matches!(out[1], F::Oversized(s, 2) if s >= 200_000),
            "{out:?}"
        );
        assert_eq!(out[2], F::Element("{\"b\":1}".into(), 3));
    }

    #[test]
    fn oversized_pretty_object_is_skipped() {
        let big = format!(
            "{{\n\"a\": \"{}\"\n}}\n{{\n\"b\": 1\n}}\n",
            "x".repeat(200_000)
        );
        let out = run_caps(
            big.as_bytes(),
            Caps {
                value: 1000,
                document: 1000,
            },
        );
        assert!(
            matches!(out[0], F::Oversized(s, 1) if s >= 200_000),
            "{out:?}"
        );
        assert_eq!(out[1], v("{\n\"b\": 1\n}", 4));
    }

    #[test]
    fn structural_error_resyncs_at_next_document() {
        let out = run("{\n \"a\" 1\n}\n{\n \"b\": 2\n}\n");
        assert_eq!(out, [F::Invalid(1), v("{\n \"b\": 2\n}", 4)]);
    }

    #[test]
    fn truncated_document_is_reported() {
        let out = run("[\n {\"a\": 1},\n {\"b\": ");
        assert_eq!(out[1], F::Element("{\"a\": 1}".into(), 2));
        assert!(matches!(out[2], F::Invalid(_)), "{out:?}");
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let deep = format!("[{}1{}]", "[".repeat(100_000), "]".repeat(100_000));
        let out = run(&deep);
        assert!(matches!(out[1], F::Element(..)));
    }

    #[test]
    fn a_leading_bom_is_ignored() {
        let out = run("\u{feff}{\n  \"a\": 1\n}\n");
        assert_eq!(out, [v("{\n  \"a\": 1\n}", 1)]);
    }

    #[test]
    fn eventlist_with_one_item_per_line_is_a_document() {
        let out = run("{\"kind\":\"EventList\",\"items\":[\n{\"a\":1},\n{\"b\":2}\n]}\n");
        assert_eq!(
            out,
            [
                F::Start(Some("{\"kind\":\"EventList\"}".into()), "items".into()),
                F::Element("{\"a\":1}".into(), 2),
                F::Element("{\"b\":2}".into(), 3),
                F::End
            ]
        );
    }

    #[test]
    fn a_long_first_line_means_json_lines() {
        // An unbalanced line must not swallow the lines after it.
        let big = format!(
            "{{\"a\":\"{}\"}}\n{{\"b\":[1,\n{{\"c\":3}}\n",
            "x".repeat(1_200_000)
        );
        let out = run_caps(
            big.as_bytes(),
            Caps {
                value: 2 << 20,
                document: 2 << 20,
            },
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[2], v("{\"c\":3}", 3));
    }

    #[test]
    fn an_oversized_document_value_skips_to_the_next_document_only() {
        let text = format!(
            "{{\n\"a\": \"{}\",\n\"b\": [1,\n}}\n{{\n\"c\": 3\n}}\n",
            "x".repeat(5000)
        );
        let out = run_caps(
            text.as_bytes(),
            Caps {
                value: 1000,
                document: 1000,
            },
        );
        assert!(matches!(out[0], F::Oversized(_, 1)), "{out:?}");
        assert_eq!(out[1], v("{\n\"c\": 3\n}", 5));
    }

    #[test]
    fn unfinished_values_do_not_take_quadratic_time() {
        // `[` then many lines that never close: each would otherwise be
        // rescanned to the end of input.
        let text = format!("[\n{}", "{\"a\":[1,\n".repeat(20_000));
        let start = std::time::Instant::now();
        let out = run(&text);
        assert!(
            out.len() >= 20_000 - 2,
            "every line is reported: {}",
            out.len()
        );
        // A loose bound (a debug build does this in well under a second);
        // quadratic behaviour takes minutes.
        assert!(start.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn scan_finds_value_ends() {
        let mut s = Scan::default();
        assert_eq!(s.feed(br#"{"a":"b\"}"}xyz"#), Ok(Some(12)));
        let mut s = Scan::default();
        assert_eq!(s.feed(br#"{"a":"b\"#), Ok(None));
        assert_eq!(s.feed(br#""}"}, 1"#), Ok(Some(4)));
        let mut s = Scan::default();
        assert_eq!(s.feed(b"123,"), Ok(Some(3)));
    }
}
