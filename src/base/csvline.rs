//! CSV through the `csv` crate: one line into fields (RFC 4180 quoting, no line breaks inside
//! fields; the shipped tables and users' hourly intensity exports), a shipped table with its
//! cited sources, and rows into CSV text (every CSV file joulebench writes).
//! Also `excerpt`, how every CSV reader quotes input in an error: at most `EXCERPT_CHARS`
//! characters of it, so one garbage line of any length stays one short error line.

/// The most characters of an input line (or field) an error message quotes.
pub const EXCERPT_CHARS: usize = 120;

/// `s` quoted for an error message: Rust-escaped (control characters cannot break the line),
/// cut to its first `EXCERPT_CHARS` characters with `...` and its full length when longer.
pub fn excerpt(s: &str) -> String {
    let (head, rest) = cut(s);
    format!("{head:?}{rest}")
}

/// `s` unquoted for an error message where it is known to be a number or a timestamp: as it is
/// (control characters escaped), cut like `excerpt`.
pub fn clip(s: &str) -> String {
    let (head, rest) = cut(s);
    if head.chars().any(char::is_control) {
        format!("{}{rest}", head.escape_debug())
    } else {
        format!("{head}{rest}")
    }
}

/// The first `EXCERPT_CHARS` characters of `s` and what to say after them.
fn cut(s: &str) -> (&str, String) {
    match s.char_indices().nth(EXCERPT_CHARS) {
        None => (s, String::new()),
        Some((at, _)) => (&s[..at], format!("... ({} bytes)", s.len())),
    }
}

/// A CSV line that cannot be split.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CsvLineError {
    /// The `csv` crate's reason.
    #[error("{0}")]
    Csv(String),
    #[error("a line break inside a quoted field")]
    LineBreak,
    #[error("unterminated quote in field {0}")]
    Unterminated(usize),
}

/// Split one CSV line into its fields with the `csv` crate (RFC 4180: `"a, b"` is one field,
/// `""` inside quotes is a literal quote). A quote left open to the end of the line is an
/// error (the line would otherwise swallow the rest of the row silently).
pub fn split(line: &str) -> Result<Vec<String>, CsvLineError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Ok(vec![String::new()]),
        Err(e) => return Err(CsvLineError::Csv(e.to_string())),
    }
    if reader.position().byte() < line.len() as u64 {
        return Err(CsvLineError::LineBreak);
    }
    if line.matches('"').count() % 2 == 1 {
        return Err(CsvLineError::Unterminated(record.len()));
    }
    Ok(record.iter().map(str::to_string).collect())
}

/// CSV text built row by row with one `csv` crate writer: a field holding a comma, quote, CR
/// or LF is quoted, inner quotes doubled; `\n` after each row. Every CSV file joulebench writes
/// goes through it.
pub struct CsvText(csv::Writer<Vec<u8>>);

impl Default for CsvText {
    fn default() -> Self {
        CsvText(
            csv::WriterBuilder::new()
                .flexible(true)
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new()),
        )
    }
}

impl CsvText {
    pub fn row<F: AsRef<[u8]>>(&mut self, fields: impl IntoIterator<Item = F>) {
        self.0
            .write_record(fields)
            .expect("writing CSV into memory cannot fail");
    }

    pub fn finish(self) -> String {
        let bytes = self
            .0
            .into_inner()
            .expect("flushing CSV into memory cannot fail");
        String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
    }
}

/// Rows as CSV text, in one go (`CsvText`).
pub fn write_rows<R, F>(rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator<Item = F>,
    F: AsRef<[u8]>,
{
    let mut w = CsvText::default();
    for row in rows {
        w.row(row);
    }
    w.finish()
}

/// Source id to citation, from a table's `# source <id> = <citation>` lines.
pub type Sources = std::collections::BTreeMap<String, String>;
/// A data row: its 1-based line number and its fields.
pub type Row = (usize, Vec<String>);
/// A shipped table with cited sources: `# source <id> = <citation>` comment lines, blank lines,
/// then the header `want` and rows of exactly that many fields. Returns the sources and each
/// data row with its 1-based line number; `err(line, reason)` builds the caller's error.
pub fn sourced_rows<E>(
    text: &str,
    want: &[&str],
    err: impl Fn(usize, String) -> E,
) -> Result<(Sources, Vec<Row>), E> {
    let mut sources = Sources::new();
    let mut rows = Vec::new();
    let mut header_seen = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end_matches('\r');
        if let Some(c) = line.strip_prefix('#') {
            if let Some(def) = c.trim().strip_prefix("source ") {
                let (id, cite) = def
                    .split_once(" = ")
                    .ok_or_else(|| err(n, "source line without ' = '".into()))?;
                sources.insert(id.trim().to_string(), cite.trim().to_string());
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let f = split(line).map_err(|e| err(n, e.to_string()))?;
        if !header_seen {
            if f != want {
                return Err(err(n, format!("header must be {}", want.join(","))));
            }
            header_seen = true;
            continue;
        }
        if f.len() != want.len() {
            return Err(err(
                n,
                format!("expected {} fields, found {}", want.len(), f.len()),
            ));
        }
        rows.push((n, f));
    }
    Ok((sources, rows))
}

#[cfg(test)]
mod tests {
    use super::{clip, excerpt, split, write_rows, CsvLineError, EXCERPT_CHARS};

    #[test]
    fn excerpts_are_short_quoted_and_whole_characters() {
        assert_eq!(excerpt("a,b"), "\"a,b\"");
        assert_eq!(excerpt("x\ny"), "\"x\\ny\"");
        let long = "é".repeat(10_000_000);
        let e = excerpt(&long);
        assert!(e.len() < 4 * EXCERPT_CHARS, "{}", e.len());
        assert!(e.ends_with("... (20000000 bytes)"), "{e}");
        assert_eq!(e.matches('é').count(), EXCERPT_CHARS);
        assert_eq!(clip("-5"), "-5");
        let c = clip(&"9".repeat(20_000_000));
        assert_eq!(
            c,
            format!("{}... (20000000 bytes)", "9".repeat(EXCERPT_CHARS))
        );
        assert_eq!(clip("a\nb"), "a\\nb");
        let exact = "x".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), format!("{exact:?}"));
    }

    #[test]
    fn splits_plain_and_quoted_fields() {
        assert_eq!(split("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            split(r#"SE3,"Sweden (South, Stockholm)",27.0"#).unwrap(),
            ["SE3", "Sweden (South, Stockholm)", "27.0"]
        );
        assert_eq!(split(r#""say ""hi""",x"#).unwrap(), [r#"say "hi""#, "x"]);
        assert_eq!(split("").unwrap(), [""]);
    }

    #[test]
    fn rejects_an_open_quote() {
        assert_eq!(split(r#""open,b"#), Err(CsvLineError::Unterminated(1)));
        assert_eq!(split(r#"a,"b""c"#), Err(CsvLineError::Unterminated(2)));
    }

    #[test]
    fn writes_what_it_reads() {
        let rows = [
            vec!["a", "b,c", "say \"hi\"", "", "x\ny", "r\rs"],
            vec!["1", "2", "3", "4", "5", "6"],
        ];
        let text = write_rows(rows.iter().map(|r| r.iter()));
        assert_eq!(
            text,
            "a,\"b,c\",\"say \"\"hi\"\"\",,\"x\ny\",\"r\rs\"\n1,2,3,4,5,6\n"
        );
        assert_eq!(
            split("a,\"b,c\",\"say \"\"hi\"\"\",").unwrap(),
            ["a", "b,c", "say \"hi\"", ""]
        );
    }
}
