//! A small layout language in the Wadler/Prettier style: text, line breaks that are a space
//! (or nothing) when their group fits on the line, hard breaks, indentation and groups.

use std::borrow::Cow;

/// Columns a line may take.
pub const WIDTH: usize = 100;
/// Columns a tab counts for.
pub const TAB: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doc<'a> {
    /// Mostly a token's own text, borrowed from the source.
    Text(Cow<'a, str>),
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
    Indent(Vec<Doc<'a>>),
    /// Flat if all of it fits on the current line, else broken.
    Group(Vec<Doc<'a>>),
}

impl<'a> Doc<'a> {
    pub fn text(s: impl Into<Cow<'a, str>>) -> Self {
        Self::Text(s.into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flat,
    Break,
}

/// A piece of the document still to print, with its indentation and whether its group is flat.
#[derive(Clone, Copy)]
struct Cmd<'d, 'a> {
    indent: usize,
    mode: Mode,
    doc: &'d Doc<'a>,
}

/// Whether `group` fits flat in `room` columns, counting what follows it (`rest`, the printer's
/// stack, top last) up to the next line break: a list that fits only without its `;` or `)`
/// would otherwise end past the width. Stops as soon as the room is used up, so each check
/// costs at most about a line's worth of work.
fn fits(group: &[Doc<'_>], rest: &[Cmd<'_, '_>], room: usize) -> bool {
    let mut room = room as isize;
    // (part of the group itself, mode, doc): the group is measured flat, and a hard break in
    // it means it cannot be flat; in what follows, the first line break ends the measure.
    let mut stack: Vec<(bool, Mode, &Doc<'_>)> =
        group.iter().rev().map(|d| (true, Mode::Flat, d)).collect();
    let mut rest = rest.iter().rev();
    loop {
        let (own, mode, doc) = match stack.pop() {
            Some(next) => next,
            None => match rest.next() {
                Some(cmd) => (false, cmd.mode, cmd.doc),
                None => return true,
            },
        };
        match doc {
            Doc::Text(s) => match s.find('\n') {
                Some(_) if own => return false,
                Some(i) => return room >= s[..i].chars().count() as isize,
                None => room -= s.chars().count() as isize,
            },
            Doc::Line | Doc::Soft if mode == Mode::Break => return true,
            Doc::Line => room -= 1,
            Doc::Soft => {}
            Doc::Hard | Doc::Blank => return !own,
            Doc::IfBroken(s) => {
                if mode == Mode::Break {
                    room -= s.len() as isize;
                }
            }
            Doc::Indent(inner) => stack.extend(inner.iter().rev().map(|d| (own, mode, d))),
            // A group further on may break at its first line break, as Prettier assumes: it
            // is decided when the printer gets there. (Measuring it flat would break this
            // group for a long block after it, and the next pass would undo that.)
            Doc::Group(inner) => {
                let inner_mode = if own { Mode::Flat } else { mode };
                stack.extend(inner.iter().rev().map(|d| (own, inner_mode, d)));
            }
        }
        if room < 0 {
            return false;
        }
    }
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

/// Lays `docs` out; the result ends with exactly one line break.
pub fn print(docs: &[Doc<'_>]) -> String {
    let mut out = Out {
        text: String::new(),
        column: 0,
    };
    let mut stack: Vec<Cmd<'_, '_>> = docs
        .iter()
        .rev()
        .map(|doc| Cmd {
            indent: 0,
            mode: Mode::Break,
            doc,
        })
        .collect();
    while let Some(Cmd { indent, mode, doc }) = stack.pop() {
        let flat = mode == Mode::Flat;
        match doc {
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
            Doc::Indent(inner) => stack.extend(inner.iter().rev().map(|doc| Cmd {
                indent: indent + 1,
                mode,
                doc,
            })),
            Doc::Group(inner) => {
                let mode = if flat || fits(inner, &stack, WIDTH.saturating_sub(out.column)) {
                    Mode::Flat
                } else {
                    Mode::Break
                };
                stack.extend(inner.iter().rev().map(|doc| Cmd { indent, mode, doc }));
            }
        }
    }
    let mut text = out.text.trim_end().to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list<'a>(items: &[&'a str]) -> Doc<'a> {
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
    fn a_group_counts_what_follows_it_up_to_the_next_break() {
        // 98 columns of list fit; with the `;` and comment after it on the line, they do not.
        let item = "x".repeat(47);
        let docs = [list(&[&item, &item]), Doc::text("); // end")];
        assert!(print(&docs).starts_with("[\n"), "{}", print(&docs));
        let docs = [list(&[&item, &item]), Doc::text(";"), Doc::Hard];
        assert!(print(&docs).starts_with("[x"), "{}", print(&docs));
    }

    #[test]
    fn tabs_count_four_columns() {
        // 24 tabs are 96 columns: a 5-column group no longer fits after them.
        let mut docs = Vec::new();
        let mut inner = vec![Doc::Hard, list(&["a", "b"])];
        for _ in 0..24 {
            inner = vec![Doc::Indent(inner)];
        }
        docs.push(Doc::Group(inner));
        assert!(print(&docs).contains("[\n"), "{}", print(&docs));
    }
}
