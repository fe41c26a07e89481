//! A small layout language in the Wadler/Prettier style: text, line breaks that are a space
//! (or nothing) when their group fits on the line, hard breaks, indentation and groups.

/// Columns a line may take.
pub const WIDTH: usize = 100;
/// Columns a tab counts for.
pub const TAB: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doc {
    Text(String),
    /// A space when flat, a line break when broken.
    Line,
    /// Nothing when flat, a line break when broken.
    Soft,
    /// Always a line break; the group around it cannot be flat.
    Hard,
    /// An empty line (two breaks); only between statements.
    Blank,
    /// `text` only when the enclosing group is broken (a trailing comma).
    IfBroken(&'static str),
    /// One more tab for the breaks inside.
    Indent(Vec<Doc>),
    /// Flat if all of it fits on the current line, else broken.
    Group(Vec<Doc>),
}

impl Doc {
    pub fn text(s: impl Into<String>) -> Self {
        Self::Text(s.into())
    }
}

/// The width of `docs` laid out flat, or `None` if they cannot be flat (a hard break).
fn flat_width(docs: &[Doc]) -> Option<usize> {
    let mut w = 0;
    for d in docs {
        w += match d {
            Doc::Text(s) => {
                if s.contains('\n') {
                    return None;
                }
                s.chars().count()
            }
            Doc::Line => 1,
            Doc::Soft | Doc::IfBroken(_) => 0,
            Doc::Hard | Doc::Blank => return None,
            Doc::Indent(inner) | Doc::Group(inner) => flat_width(inner)?,
        };
    }
    Some(w)
}

struct Out {
    text: String,
    column: usize,
}

impl Out {
    fn newline(&mut self, indent: usize) {
        // No trailing whitespace on the line being ended.
        while self.text.ends_with(' ') || self.text.ends_with('\t') {
            self.text.pop();
        }
        self.text.push('\n');
        for _ in 0..indent {
            self.text.push('\t');
        }
        self.column = indent * TAB;
    }

    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        match s.rfind('\n') {
            // A multi-line token (a string or block comment) ends where its last line ends.
            Some(i) => self.column = s[i + 1..].chars().count(),
            None => self.column += s.chars().count(),
        }
    }
}

fn render(docs: &[Doc], indent: usize, flat: bool, out: &mut Out) {
    for d in docs {
        match d {
            Doc::Text(s) => out.push(s),
            Doc::Line if flat => out.push(" "),
            Doc::Soft if flat => {}
            Doc::Line | Doc::Soft | Doc::Hard => out.newline(indent),
            Doc::Blank => {
                out.newline(0);
                out.newline(indent);
            }
            Doc::IfBroken(s) => {
                if !flat {
                    out.push(s);
                }
            }
            Doc::Indent(inner) => render(inner, indent + 1, flat, out),
            Doc::Group(inner) => {
                let fits = flat || flat_width(inner).is_some_and(|w| out.column + w <= WIDTH);
                render(inner, indent, fits, out);
            }
        }
    }
}

/// Lays `docs` out; the result ends with exactly one line break.
pub fn print(docs: &[Doc]) -> String {
    let mut out = Out {
        text: String::new(),
        column: 0,
    };
    render(docs, 0, false, &mut out);
    let mut text = out.text.trim_end().to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Doc {
        let mut inner = vec![Doc::Soft];
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                inner.push(Doc::text(","));
                inner.push(Doc::Line);
            }
            inner.push(Doc::text(*item));
        }
        inner.push(Doc::IfBroken(","));
        Doc::Group(vec![
            Doc::text("["),
            Doc::Indent(inner),
            Doc::Soft,
            Doc::text("]"),
        ])
    }

    #[test]
    fn a_group_that_fits_stays_flat() {
        assert_eq!(print(&[list(&["1", "2"])]), "[1, 2]\n");
    }

    #[test]
    fn a_group_too_long_breaks_one_item_per_line_with_a_trailing_comma() {
        let long = "x".repeat(60);
        assert_eq!(
            print(&[list(&[&long, &long])]),
            format!("[\n\t{long},\n\t{long},\n]\n")
        );
    }

    #[test]
    fn tabs_count_four_columns() {
        // 24 tabs are 96 columns: a 5-column group no longer fits after them.
        let mut docs = vec![Doc::Indent(vec![]); 0];
        let mut inner = vec![Doc::Hard, list(&["a", "b"])];
        for _ in 0..24 {
            inner = vec![Doc::Indent(inner)];
        }
        docs.push(Doc::Group(inner));
        assert!(print(&docs).contains("[\n"), "{}", print(&docs));
    }
}
