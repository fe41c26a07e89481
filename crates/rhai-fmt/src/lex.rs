//! Rhai's tokens as the formatter needs them: every byte of the source belongs to a token or
//! to the whitespace between two, comments are tokens, and string literals (interpolated ones
//! whole, with their `${…}` parts) are single tokens left untouched.

/// Which bracket a group is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bracket {
    /// `(` … `)`
    Paren,
    /// `[` or `?[` … `]`
    Square,
    /// `{` … `}`: a block, or a `switch` body
    Brace,
    /// `#{` … `}`: an object map
    Map,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An identifier or a keyword.
    Word,
    Number,
    /// A string (plain, raw, or interpolated with backticks) or a character literal.
    Str,
    /// `//` to the end of the line, doc comments (`///`, `//!`) included.
    LineComment,
    /// `/* … */`, nested ones included.
    BlockComment,
    /// Any operator or punctuation but the ones below.
    Op,
    Comma,
    Semi,
    Open(Bracket),
    Close(Bracket),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: Kind,
    pub text: &'a str,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
    /// Line breaks between the previous token and this one.
    pub newlines_before: u32,
}

/// A lexing failure; the input was already accepted by Rhai's parser, so this means the
/// formatter does not know a construct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub message: String,
    pub line: u32,
    pub column: u32,
}

/// Operators, longest first so that the first match is the longest.
const OPERATORS: &[&str] = &[
    "**=", "<<=", ">>=", "..=", "?.", "??", "::", "=>", "->", "..", "==", "!=", "<=", ">=", "&&",
    "||", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "**", "<<", ">>", "+", "-", "*", "/",
    "%", "=", "<", ">", "!", "&", "|", "^", ".", "?", ":", "@", "$", "~",
];

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: u32,
    column: u32,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn error(&self, message: impl Into<String>) -> LexError {
        LexError {
            message: message.into(),
            line: self.line,
            column: self.column,
        }
    }

    /// Skips whitespace; returns the line breaks skipped.
    fn whitespace(&mut self) -> u32 {
        let mut newlines = 0;
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            if c == '\n' {
                newlines += 1;
            }
            self.bump();
        }
        newlines
    }

    fn token(&mut self) -> Result<Option<Token<'a>>, LexError> {
        let newlines_before = self.whitespace();
        let (start, line, column) = (self.pos, self.line, self.column);
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        let kind = match c {
            '/' if self.peek_at(1) == Some('/') => {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
                Kind::LineComment
            }
            '/' if self.peek_at(1) == Some('*') => {
                self.block_comment()?;
                Kind::BlockComment
            }
            '"' => {
                self.quoted('"')?;
                Kind::Str
            }
            '\'' => {
                self.quoted('\'')?;
                Kind::Str
            }
            '`' => {
                self.interpolated()?;
                Kind::Str
            }
            '#' if self.peek_at(1) == Some('{') => {
                self.bump();
                self.bump();
                Kind::Open(Bracket::Map)
            }
            '#' if matches!(self.peek_at(1), Some('"' | '#')) => {
                self.raw_string()?;
                Kind::Str
            }
            '?' if self.peek_at(1) == Some('[') => {
                self.bump();
                self.bump();
                Kind::Open(Bracket::Square)
            }
            '(' | '[' | '{' => {
                self.bump();
                Kind::Open(match c {
                    '(' => Bracket::Paren,
                    '[' => Bracket::Square,
                    _ => Bracket::Brace,
                })
            }
            ')' | ']' | '}' => {
                self.bump();
                Kind::Close(match c {
                    ')' => Bracket::Paren,
                    ']' => Bracket::Square,
                    _ => Bracket::Brace,
                })
            }
            ',' => {
                self.bump();
                Kind::Comma
            }
            ';' => {
                self.bump();
                Kind::Semi
            }
            c if c.is_ascii_digit() => {
                self.number();
                Kind::Number
            }
            c if c.is_alphabetic() || c == '_' => {
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.bump();
                }
                Kind::Word
            }
            _ => {
                let rest = &self.src[self.pos..];
                // `!in` is one operator, as in Rhai's own tokenizer, unless a word goes on.
                let not_in = rest.starts_with("!in")
                    && !rest[3..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_');
                let op = if not_in {
                    Some(&"!in")
                } else {
                    OPERATORS.iter().find(|op| rest.starts_with(**op))
                };
                let Some(op) = op else {
                    return Err(self.error(format!("unexpected character {c:?}")));
                };
                for _ in 0..op.chars().count() {
                    self.bump();
                }
                Kind::Op
            }
        };
        Ok(Some(Token {
            kind,
            text: &self.src[start..self.pos],
            line,
            column,
            newlines_before,
        }))
    }

    fn block_comment(&mut self) -> Result<(), LexError> {
        let mut depth = 0u32;
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some('/'), Some('*')) => {
                    self.bump();
                    self.bump();
                    depth += 1;
                }
                (Some('*'), Some('/')) => {
                    self.bump();
                    self.bump();
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                (Some(_), _) => {
                    self.bump();
                }
                // Rhai accepts a block comment left open at the end of the script.
                (None, _) => return Ok(()),
            }
        }
    }

    /// A `"…"` string or a `'…'` character, escapes included (a doubled `"` is one).
    fn quoted(&mut self, quote: char) -> Result<(), LexError> {
        self.bump();
        loop {
            match self.bump() {
                Some('\\') => {
                    self.bump();
                }
                Some('"') if quote == '"' && self.peek() == Some('"') => {
                    self.bump();
                }
                Some(c) if c == quote => return Ok(()),
                Some(_) => {}
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// `#"…"#`, with as many `#` on each side.
    fn raw_string(&mut self) -> Result<(), LexError> {
        let mut hashes = 0;
        while self.peek() == Some('#') {
            self.bump();
            hashes += 1;
        }
        if self.bump() != Some('"') {
            return Err(self.error("expected a raw string"));
        }
        loop {
            match self.bump() {
                Some('"') => {
                    let mut n = 0;
                    while n < hashes && self.peek() == Some('#') {
                        self.bump();
                        n += 1;
                    }
                    if n == hashes {
                        return Ok(());
                    }
                }
                Some(_) => {}
                None => return Err(self.error("unterminated raw string")),
            }
        }
    }

    /// A backtick string; its `${…}` parts are code, lexed until their closing brace.
    fn interpolated(&mut self) -> Result<(), LexError> {
        self.bump();
        loop {
            match self.peek() {
                // A doubled backtick is one, inside the string.
                Some('`') if self.peek_at(1) == Some('`') => {
                    self.bump();
                    self.bump();
                }
                Some('`') => {
                    self.bump();
                    return Ok(());
                }
                // No escapes: a backtick string is verbatim to Rhai (`\` is a backslash).
                Some('$') if self.peek_at(1) == Some('{') => {
                    self.bump();
                    self.bump();
                    let mut depth = 1u32;
                    while depth > 0 {
                        let Some(t) = self.token()? else {
                            return Err(self.error("unterminated interpolation"));
                        };
                        match t.kind {
                            Kind::Open(_) => depth += 1,
                            Kind::Close(_) => depth -= 1,
                            _ => {}
                        }
                    }
                }
                Some(_) => {
                    self.bump();
                }
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// A number, consumed the way Rhai's tokenizer does (`tokenizer.rs`, the digit case): `_`
    /// anywhere after the first digit, one `.` (followed by a digit, or by a symbol: `1.`), one
    /// exponent with an optional sign, `0x`/`0o`/`0b` right after a leading `0`.
    fn number(&mut self) {
        let first = self.peek();
        self.bump();
        let mut digits = 1;
        let mut radix = false;
        let mut valid: fn(char) -> bool = |c| c.is_ascii_digit();
        let (mut period, mut exponent) = (false, false);
        while let Some(c) = self.peek() {
            match c {
                '_' => {
                    self.bump();
                }
                c if valid(c) => {
                    self.bump();
                    digits += 1;
                }
                '.' if !period && !radix => match self.peek_at(1) {
                    Some(d) if d.is_ascii_digit() => {
                        self.bump();
                        period = true;
                    }
                    Some('_' | '.') | None => break,
                    Some(d) if !d.is_alphabetic() => {
                        self.bump();
                        period = true;
                    }
                    Some(_) => break,
                },
                'e' | 'E' if !exponent && !radix => match self.peek_at(1) {
                    Some(d) if d.is_ascii_digit() => {
                        self.bump();
                        exponent = true;
                        period = true;
                    }
                    Some('+' | '-') => {
                        self.bump();
                        self.bump();
                        exponent = true;
                        period = true;
                    }
                    _ => break,
                },
                'x' | 'o' | 'b' | 'X' | 'O' | 'B' if first == Some('0') && digits <= 1 => {
                    self.bump();
                    radix = true;
                    digits += 1;
                    valid = match c {
                        'x' | 'X' => |c| c.is_ascii_hexdigit(),
                        'o' | 'O' => |c| matches!(c, '0'..='7'),
                        _ => |c| matches!(c, '0' | '1'),
                    };
                }
                _ => break,
            }
        }
    }
}

/// Every token of `src`, comments included.
///
/// # Errors
///
/// When a token is not one the formatter knows (the position says where).
pub fn tokens(src: &str) -> Result<Vec<Token<'_>>, LexError> {
    let mut lexer = Lexer {
        src,
        pos: 0,
        line: 1,
        column: 1,
    };
    let mut out = Vec::new();
    while let Some(t) = lexer.token()? {
        out.push(t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<&str> {
        tokens(src)
            .expect("lexes")
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn operators_numbers_and_ranges() {
        assert_eq!(
            texts("a+=b**2; x?.y ?? 0..=10; 1..2; 1.5e-3; 0xFF_FF; 1_000"),
            [
                "a", "+=", "b", "**", "2", ";", "x", "?.", "y", "??", "0", "..=", "10", ";", "1",
                "..", "2", ";", "1.5e-3", ";", "0xFF_FF", ";", "1_000"
            ]
        );
    }

    #[test]
    fn strings_stay_whole() {
        assert_eq!(
            texts(r##"let s = `a ${ `b ${c}` + "}" } d`; "q\"x"; 'c'; #"raw "q""#; '\n'"##),
            [
                "let",
                "s",
                "=",
                r#"`a ${ `b ${c}` + "}" } d`"#,
                ";",
                r#""q\"x""#,
                ";",
                "'c'",
                ";",
                r###"#"raw "q""#"###,
                ";",
                r"'\n'"
            ]
        );
    }

    #[test]
    fn comments_are_tokens_and_newlines_are_counted() {
        let t = tokens("a // one\n\n/* two /* nested */ */ b /// doc").expect("lexes");
        let kinds: Vec<Kind> = t.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Word,
                Kind::LineComment,
                Kind::BlockComment,
                Kind::Word,
                Kind::LineComment
            ]
        );
        assert_eq!(t[2].newlines_before, 2);
        assert_eq!((t[3].line, t[3].column), (3, 24));
    }

    #[test]
    fn maps_and_null_safe_index_open_groups() {
        let t = tokens("#{a: 1}?[0]").expect("lexes");
        assert_eq!(t[0].kind, Kind::Open(Bracket::Map));
        assert_eq!(t[5].kind, Kind::Open(Bracket::Square));
        assert_eq!(t[5].text, "?[");
    }
}
