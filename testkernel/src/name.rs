//! A fixed-capacity context name (no allocation: names are read from
//! interrupt and fatal-error paths).

use core::fmt;

/// Capacity of a context name in bytes (Redox's `Context::name` is an
/// `ArrayString<32>`).
pub const NAME_CAP: usize = 32;

/// A UTF-8 name of at most [`NAME_CAP`] bytes.
#[derive(Clone, Copy)]
pub struct Name {
    buf: [u8; NAME_CAP],
    len: u8,
}

impl Name {
    /// The empty name.
    pub const fn empty() -> Self {
        Self { buf: [0; NAME_CAP], len: 0 }
    }

    /// `s`, cut at a character boundary to fit.
    pub fn new(s: &str) -> Self {
        let mut n = Self::empty();
        let mut end = s.len().min(NAME_CAP);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        n.buf[..end].copy_from_slice(&s.as_bytes()[..end]);
        n.len = end as u8;
        n
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("?")
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
