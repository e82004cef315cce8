//! Sets of request methods (RFC 9110 §9) as a route allows them: a bit per method, tested per
//! request without parsing text, with the `Allow` field value (RFC 9110 §10.2.1) kept beside
//! the bits for 405 answers.

/// The methods a set can name, in bit order.
const NAMES: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The bit of a method name; 0 for a method outside [`NAMES`] (an extension method).
#[inline]
fn bit(method: &str) -> u16 {
    match method {
        "GET" => 1,
        "HEAD" => 1 << 1,
        "POST" => 1 << 2,
        "PUT" => 1 << 3,
        "DELETE" => 1 << 4,
        "CONNECT" => 1 << 5,
        "OPTIONS" => 1 << 6,
        "TRACE" => 1 << 7,
        "PATCH" => 1 << 8,
        _ => 0,
    }
}

/// The bit of a method name at compile time; a name outside [`NAMES`] fails the build.
const fn const_bit(name: &[u8]) -> u16 {
    let mut i = 0;
    while i < NAMES.len() {
        if crate::const_bytes_eq(NAMES[i].as_bytes(), name) {
            return 1 << i;
        }
        i += 1;
    }
    panic!("unknown method in an Allow list");
}

/// A set of allowed methods and its `Allow` field value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Methods {
    bits: u16,
    allow: &'static str,
}

impl Methods {
    /// The set an `Allow` value names: method names separated by `", "` (`"GET, HEAD"`),
    /// written in answers as given. Meant for constants: an unknown name or another separator
    /// panics (at compile time in a `const`).
    pub const fn new(allow: &'static str) -> Methods {
        let text = allow.as_bytes();
        let mut bits = 0;
        let (mut start, mut i) = (0, 0);
        while i <= text.len() {
            if i == text.len() || text[i] == b',' {
                let (_, rest) = text.split_at(start);
                let (name, _) = rest.split_at(i - start);
                bits |= const_bit(name);
                if i < text.len() {
                    assert!(
                        i + 1 < text.len() && text[i + 1] == b' ',
                        "separate with \", \""
                    );
                    i += 1;
                }
                start = i + 1;
            }
            i += 1;
        }
        Methods { bits, allow }
    }

    /// Whether `method` (case-sensitive, RFC 9110 §9.1) is in the set.
    #[inline]
    pub fn permits(self, method: &str) -> bool {
        self.bits & bit(method) != 0
    }

    /// The `Allow` field value.
    pub fn allow(self) -> &'static str {
        self.allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_permit_exactly_the_methods_they_name() {
        const GET_HEAD_PUT: Methods = Methods::new("GET, HEAD, PUT");
        for (set, text) in [
            (GET_HEAD_PUT, "GET, HEAD, PUT"),
            (Methods::new("POST"), "POST"),
            (Methods::new("GET, HEAD"), "GET, HEAD"),
            (Methods::new("PATCH, DELETE"), "PATCH, DELETE"),
        ] {
            assert_eq!(set.allow(), text);
            for name in NAMES
                .iter()
                .copied()
                .chain(["get", "Post", "BREW", "", "GET "])
            {
                // The textual rule the bits replace.
                let named = text.split(", ").any(|a| a == name);
                assert_eq!(set.permits(name), named, "{text}: {name}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "unknown method")]
    fn an_unknown_name_is_refused() {
        let _ = Methods::new("GET, BREW");
    }

    #[test]
    #[should_panic(expected = "separate with")]
    fn another_separator_is_refused() {
        let _ = Methods::new("GET,HEAD");
    }
}
