//! A bound on how deeply a script can make a parser recurse, checked on the raw text before any
//! parser sees it.
//!
//! Rhai's parser recurses once per nesting level, and so do the code that walks, formats and
//! drops its tree. Its own `max_expr_depth` counts brackets and operators, but not every
//! construct: a postfix chain (`a.b.b.b…`, `f()()()…`, `x[0][0]…`) of 20,000 links is one level
//! to Rhai and 20,000 frames of recursion, which overflows a native thread's stack and aborts
//! the whole process. Every parser of tenant text (the API's script check, the formatter, the
//! guest) therefore runs [`check_nesting`] first.
//!
//! The scan is a small lexer (comments, strings of every kind with their interpolations, raw
//! strings) that estimates the depth of the tree the script would parse to, from above: within
//! one level of brackets every operator character, every opening bracket and the keywords that
//! chain (`if`, `else`) may nest one level deeper than the last, until a separator (`;`, `,`, or
//! a new statement after `}`) starts a fresh expression; the estimate at a point is the sum of
//! these runs over the open brackets, plus their number. A script is refused where the
//! estimate first passes the limit, with that line and column.

/// The estimate [`check_nesting`] allows by default. Rhai's own expression depth (64 by
/// default) binds long before it for brackets and operators; this one stops what Rhai does not
/// count. 1,000 levels of the deepest recursion the parsers have (a postfix chain) take under
/// a quarter of a megabyte of native stack, and the guest's 1 MiB wasm stack traps cleanly
/// long before it matters.
pub const MAX_NESTING: u32 = 1_000;

/// Where a script nests past the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    /// The limit that was passed.
    pub limit: u32,
    /// 1-based, of the token where the estimate first passed the limit.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
}

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the script nests more than {} levels deep (brackets, operators and chained calls \
             within one expression): split the expression, or end statements with `;`",
            self.limit
        )
    }
}

impl std::error::Error for TooDeep {}

/// What an open level is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// `(`, `[`, `{` or `#{`.
    Bracket,
    /// `${` inside a backtick string: its `}` goes back into the string.
    Interpolation,
}

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
    line: u32,
    column: u32,
    /// Where the token being scanned starts: what a refusal reports.
    token: (u32, u32),
    limit: u32,
    /// Each open level and the run of its enclosing level when it opened.
    stack: Vec<(Open, u32)>,
    /// The current level's run.
    run: u32,
    /// Sum of the runs saved on the stack.
    saved: u32,
    /// The last significant token closed a bracket: a word that follows starts a statement.
    after_close: bool,
}

impl Scan<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.at + ahead).copied()
    }

    fn bump(&mut self) {
        if let Some(&b) = self.bytes.get(self.at) {
            self.at += 1;
            if b == b'\n' {
                self.line += 1;
                self.column = 1;
            } else if b & 0xC0 != 0x80 {
                // Columns count characters: continuation bytes of UTF-8 do not start one.
                self.column += 1;
            }
        }
    }

    fn too_deep(&self) -> TooDeep {
        TooDeep {
            limit: self.limit,
            line: self.token.0,
            column: self.token.1,
        }
    }

    fn check(&self) -> Result<(), TooDeep> {
        let depth = self.saved + self.run + self.stack.len() as u32;
        if depth > self.limit {
            return Err(self.too_deep());
        }
        Ok(())
    }

    /// One more link in the current expression's chain.
    fn link(&mut self) -> Result<(), TooDeep> {
        self.run = self.run.saturating_add(1);
        self.check()
    }

    fn open(&mut self, kind: Open) -> Result<(), TooDeep> {
        self.link()?;
        self.stack.push((kind, self.run));
        self.saved = self.saved.saturating_add(self.run);
        self.run = 0;
        self.check()
    }

    /// Closes the innermost level; returns what it was (`None`: nothing was open, which the
    /// parser will refuse on its own).
    fn close(&mut self) -> Option<Open> {
        let (kind, run) = self.stack.pop()?;
        self.saved = self.saved.saturating_sub(run);
        self.run = run;
        Some(kind)
    }

    fn skip_line_comment(&mut self) {
        while let Some(b) = self.peek(0) {
            if b == b'\n' {
                break;
            }
            self.bump();
        }
    }

    /// `/* … */`, which nest in Rhai.
    fn skip_block_comment(&mut self) {
        self.bump();
        self.bump();
        let mut depth = 1u32;
        while let Some(b) = self.peek(0) {
            if b == b'/' && self.peek(1) == Some(b'*') {
                depth += 1;
                self.bump();
            } else if b == b'*' && self.peek(1) == Some(b'/') {
                depth -= 1;
                self.bump();
                if depth == 0 {
                    self.bump();
                    return;
                }
            }
            self.bump();
        }
    }

    /// A `"…"` or `'…'` literal, escapes included.
    fn skip_quoted(&mut self, quote: u8) {
        self.bump();
        while let Some(b) = self.peek(0) {
            self.bump();
            if b == b'\\' {
                self.bump();
            } else if b == quote {
                return;
            }
        }
    }

    /// `#"…"#`, `##"…"##`, …: no escapes, ends at a quote followed by as many `#`.
    fn skip_raw(&mut self, hashes: usize) {
        for _ in 0..=hashes {
            self.bump();
        }
        while self.peek(0).is_some() {
            if self.peek(0) == Some(b'"') && (1..=hashes).all(|i| self.peek(i) == Some(b'#')) {
                for _ in 0..=hashes {
                    self.bump();
                }
                return;
            }
            self.bump();
        }
    }

    /// The text of a backtick string from where the scan stands; returns at its closing
    /// backtick (consumed) or just after a `${` (consumed, the interpolation opened).
    fn backtick_text(&mut self) -> Result<(), TooDeep> {
        while let Some(b) = self.peek(0) {
            match b {
                b'`' => {
                    self.bump();
                    return Ok(());
                }
                b'\\' => {
                    self.bump();
                    self.bump();
                }
                b'$' if self.peek(1) == Some(b'{') => {
                    self.token = (self.line, self.column);
                    self.bump();
                    self.bump();
                    return self.open(Open::Interpolation);
                }
                _ => self.bump(),
            }
        }
        Ok(())
    }

    fn word(&mut self) -> &[u8] {
        let start = self.at;
        while self
            .peek(0)
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
        {
            self.bump();
        }
        &self.bytes[start..self.at]
    }

    fn run_all(&mut self) -> Result<(), TooDeep> {
        while let Some(b) = self.peek(0) {
            self.token = (self.line, self.column);
            let after_close = std::mem::take(&mut self.after_close);
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => {
                    self.after_close = after_close;
                    self.bump();
                }
                b'/' if self.peek(1) == Some(b'/') => {
                    self.after_close = after_close;
                    self.skip_line_comment();
                }
                b'/' if self.peek(1) == Some(b'*') => {
                    self.after_close = after_close;
                    self.skip_block_comment();
                }
                b';' | b',' => {
                    self.run = 0;
                    self.bump();
                }
                b'"' | b'\'' => {
                    if after_close {
                        self.run = 0;
                    }
                    self.skip_quoted(b);
                }
                b'`' => {
                    if after_close {
                        self.run = 0;
                    }
                    self.bump();
                    self.backtick_text()?;
                }
                b'#' => {
                    let hashes = (0..).take_while(|&i| self.peek(i) == Some(b'#')).count();
                    match self.peek(hashes) {
                        Some(b'"') => self.skip_raw(hashes),
                        Some(b'{') if hashes == 1 => {
                            self.bump();
                            self.bump();
                            self.open(Open::Bracket)?;
                        }
                        _ => {
                            self.bump();
                            self.link()?;
                        }
                    }
                }
                b'(' | b'[' | b'{' => {
                    if after_close && b == b'{' {
                        self.run = 0;
                    }
                    self.bump();
                    self.open(Open::Bracket)?;
                }
                b')' | b']' | b'}' => {
                    self.bump();
                    if self.close() == Some(Open::Interpolation) {
                        self.backtick_text()?;
                    } else {
                        self.after_close = true;
                    }
                }
                b if b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 => {
                    let word = self.word();
                    let chains = matches!(word, b"if" | b"else" | b"switch" | b"in");
                    let continues = matches!(word, b"else" | b"in");
                    if after_close && !continues {
                        self.run = 0;
                    }
                    if chains {
                        self.link()?;
                    }
                }
                _ => {
                    // An operator character: `+`, `.`, `!`, `?`, `|`, `=`, …
                    self.bump();
                    self.link()?;
                }
            }
        }
        Ok(())
    }
}

/// Checks that `source` nests at most `limit` levels deep by the estimate of the module
/// documentation. Linear in the length of `source`, with no recursion of its own.
///
/// # Examples
///
/// ```
/// use picloud_shared::nesting::{MAX_NESTING, check_nesting};
///
/// assert!(check_nesting("fn handle(req) { req.query.name ?? `hi ${req.path}` }", MAX_NESTING).is_ok());
/// let chain = format!("fn handle(req) {{ req{} }}", ".x".repeat(20_000));
/// let err = check_nesting(&chain, MAX_NESTING).unwrap_err();
/// assert_eq!((err.line, err.limit), (1, MAX_NESTING));
/// ```
///
/// # Errors
///
/// [`TooDeep`] with the position where the estimate first passed `limit`.
pub fn check_nesting(source: &str, limit: u32) -> Result<(), TooDeep> {
    let mut scan = Scan {
        bytes: source.as_bytes(),
        at: 0,
        line: 1,
        column: 1,
        token: (1, 1),
        limit,
        stack: Vec::new(),
        run: 0,
        saved: 0,
        after_close: false,
    };
    scan.run_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(source: &str) -> bool {
        check_nesting(source, MAX_NESTING).is_ok()
    }

    #[test]
    fn ordinary_scripts_pass() {
        let script = r##"
            // a comment with ((((( and """ and `
            /* nested /* block */ comment ((( */
            const GREETING = "hello";
            fn handle(req) {
                let name = req.query.name ?? "world";
                let list = [1, 2, 3, 4].map(|x| x * 2 + 1).filter(|x| x > 2);
                if req.path == "/a" { return `a ${name} ${list.len()}`; }
                else if req.path == "/b" { return #{ status: 201, body: 'x' }; }
                switch req.method { "GET" => 1, _ => 2 }
                let raw = #"no "escapes" here ((("#;
                #{ status: 200, headers: #{ "content-type": "text/plain" }, body: `${global::GREETING} ${name}` }
            }
        "##;
        assert_eq!(check_nesting(script, MAX_NESTING), Ok(()));
    }

    #[test]
    fn long_flat_lists_and_statement_sequences_pass() {
        // 50,000 elements, 5,000 statements, 2,000 `if` statements without semicolons: wide,
        // not deep.
        let list = format!("let a = [{}];", vec!["1"; 50_000].join(", "));
        assert!(depth_ok(&list));
        let statements = "let x = 1 + 2 * 3;\n".repeat(5_000);
        assert!(depth_ok(&statements));
        let ifs = "if x == 1 { y += 1 }\n".repeat(2_000);
        assert!(depth_ok(&format!(
            "fn handle(req) {{ let x = 1; let y = 0; {ifs} y }}"
        )));
    }

    #[test]
    fn deep_shapes_are_refused_with_their_position() {
        let shapes = [
            format!(
                "fn handle(r){{ {}1{} }}",
                "(".repeat(2_000),
                ")".repeat(2_000)
            ),
            format!("fn handle(r){{ {} }}", vec!["1"; 20_000].join(" + ")),
            format!("fn handle(r){{ r{} }}", ".a".repeat(20_000)),
            format!("fn handle(r){{ f{} }}", "()".repeat(20_000)),
            format!("fn handle(r){{ x{} }}", "[0]".repeat(20_000)),
            format!("fn handle(r){{ {}x }}", "!".repeat(20_000)),
            format!("fn handle(r){{ {}x }}", "- ".repeat(20_000)),
            format!("fn handle(r){{ {}1 }}", "if a {} else ".repeat(5_000)),
            format!("let x = {}1{};", "[".repeat(2_000), "]".repeat(2_000)),
            format!("let x = {}1{};", "#{a:".repeat(2_000), "}".repeat(2_000)),
            format!("let x = {}1{};", "`${".repeat(2_000), "}`".repeat(2_000)),
            format!("let x = {}1;", "|| ".repeat(5_000)),
        ];
        for shape in &shapes {
            let err =
                check_nesting(shape, MAX_NESTING).expect_err(&format!("refused: {}", &shape[..60]));
            assert_eq!(err.line, 1);
            assert!(err.column > 10, "{err:?}");
        }
    }

    #[test]
    fn the_position_is_where_the_limit_is_passed() {
        let source = format!("let a = 1;\nlet b = c{};", ".d".repeat(20));
        let err = check_nesting(&source, 10).expect_err("deeper than 10");
        // `let b = c` then `.d` pairs: the 11th link (the `=`, then ten dots) passes 10; the
        // tenth dot is at column 10 + 2 × 9.
        assert_eq!((err.line, err.column, err.limit), (2, 28, 10));
    }

    #[test]
    fn unterminated_text_ends_the_scan_without_panicking() {
        for source in [
            "\"abc",
            "`abc ${ 1 + ",
            "/* open",
            "#\"raw",
            "'",
            "}}}))",
            "(((",
        ] {
            let _ = check_nesting(source, 5);
        }
    }
}
