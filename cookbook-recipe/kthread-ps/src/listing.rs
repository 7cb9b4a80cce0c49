//! What the `sys:` listings share: a header line, then one row per line.

use std::fmt;

/// A `sys:` listing whose data lines parse into `Self`.
pub trait Listing: Sized {
    /// The words of the header line, as `split_whitespace` gives them.
    const HEADER: &'static [&'static str];

    /// Headers of earlier formats of the file that are still read; a file
    /// that starts with `OLD_HEADERS[i]` has its lines parsed by
    /// [`Listing::parse_old_row`] with `i`.
    const OLD_HEADERS: &'static [&'static [&'static str]] = &[];

    /// Parse one data line (without its line ending).
    fn parse_row(line: &str) -> Result<Self, String>;

    /// Parse one data line of the earlier format `OLD_HEADERS[format]`
    /// (default: as a current one).
    fn parse_old_row(line: &str, format: usize) -> Result<Self, String> {
        let _ = format;
        Self::parse_row(line)
    }
}

/// A line that could not be used, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub msg: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

/// The rows of a listing, and what was wrong with it (lenient parsing only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<T> {
    /// One per usable data line, in file order.
    pub rows: Vec<T>,
    /// Lines skipped or suspect, in file order; each message says which.
    pub warnings: Vec<LineError>,
}

/// Parse a whole listing. The first non-blank line must be the header
/// (`#` comment lines may precede it, as in annotated samples), the current
/// one or one of [`Listing::OLD_HEADERS`], which says how the rows are
/// read; blank lines are ignored. With `strict`, the first bad line is the error;
/// otherwise bad lines are skipped and reported in [`Parsed::warnings`] (a
/// missing header is reported too, and a first line that parses as a row is
/// kept).
pub fn parse<T: Listing>(text: &str, strict: bool) -> Result<Parsed<T>, LineError> {
    let mut out = Parsed { rows: Vec::new(), warnings: Vec::new() };
    let report = |mut e: LineError, warnings: &mut Vec<LineError>| {
        if strict {
            return Err(e);
        }
        e.msg.push_str(" (line skipped)");
        warnings.push(e);
        Ok(())
    };
    let want = T::HEADER.join(" ");
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty()).peekable();
    // Annotations of a saved sample: `#` lines before the header.
    while lines.next_if(|(_, l)| l.starts_with('#')).is_some() {}
    // `None`: the current format; `Some(i)`: `OLD_HEADERS[i]`.
    let mut format = None;
    let parse_row = |l: &str, format: Option<usize>| match format {
        None => T::parse_row(l),
        Some(i) => T::parse_old_row(l, i),
    };
    match lines.next() {
        None => {
            let e = LineError { line: 1, msg: format!("empty file, expected the header line `{want}`") };
            if strict {
                return Err(e);
            }
            out.warnings.push(e);
        }
        Some((_, l)) if l.split_whitespace().eq(T::HEADER.iter().copied()) => {}
        Some((_, l)) if T::OLD_HEADERS.iter().any(|h| l.split_whitespace().eq(h.iter().copied())) => {
            format = T::OLD_HEADERS.iter().position(|h| l.split_whitespace().eq(h.iter().copied()));
        }
        Some((n, l)) => {
            let e = LineError { line: n, msg: format!("expected the header line `{want}`") };
            match T::parse_row(l) {
                Ok(row) if !strict => {
                    out.warnings
                        .push(LineError { line: n, msg: format!("no header line (expected `{want}`); read as a row") });
                    out.rows.push(row);
                }
                _ => report(e, &mut out.warnings)?,
            }
        }
    }
    for (n, l) in lines {
        match parse_row(l, format) {
            Ok(row) => out.rows.push(row),
            Err(msg) => report(LineError { line: n, msg }, &mut out.warnings)?,
        }
    }
    Ok(out)
}

/// Parse a decimal column, naming it in the error.
pub fn num<T: std::str::FromStr>(column: &str, word: &str) -> Result<T, String> {
    word.parse().map_err(|_| format!("{column}: `{word}` is not a number"))
}
