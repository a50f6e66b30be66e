//! One CSV line into fields (RFC 4180 quoting, no line breaks inside fields): enough for the
//! shipped tables and for users' hourly intensity exports, strict about malformed quoting.
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

/// Split `line` on commas; `"a, b"` is one field and `""` inside quotes is a literal quote.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
        } else {
            match c {
                ',' => {
                    out.push(std::mem::take(&mut field));
                    was_quoted = false;
                }
                '"' if field.trim().is_empty() && !was_quoted => {
                    field.clear();
                    quoted = true;
                    was_quoted = true;
                }
                '"' => return Err(format!("stray quote in field {}", out.len() + 1)),
                _ if was_quoted && !c.is_whitespace() => {
                    return Err(format!(
                        "text after a closing quote in field {}",
                        out.len() + 1
                    ))
                }
                _ => field.push(c),
            }
        }
    }
    if quoted {
        return Err(format!("unterminated quote in field {}", out.len() + 1));
    }
    out.push(field);
    Ok(out)
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
        let f = split(line).map_err(|e| err(n, e))?;
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
    use super::{clip, excerpt, split, EXCERPT_CHARS};

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
    fn rejects_malformed_quoting() {
        assert!(split(r#""open,b"#).unwrap_err().contains("unterminated"));
        assert!(split(r#"a"b,c"#).unwrap_err().contains("stray"));
        assert!(split(r#""a"b,c"#)
            .unwrap_err()
            .contains("after a closing quote"));
    }
}
