//! From tokens to layout: the tokens are grouped by their brackets into a tree, statements are
//! split where Rhai ends them, and each bracket group becomes a layout group — a block of
//! statements for `{…}`, a list that stays on one line or puts one item per line for `(…)`,
//! `[…]` and `#{…}`. Within a line, each expression breaks after its loosest binary operators
//! and a method chain before each call when they do not fit. Only whitespace changes (and a
//! trailing comma where a list breaks), so the script's meaning cannot; `lib.rs` checks it
//! anyway.

use crate::doc::Doc;
use crate::lex::{Bracket, Kind, LexError, Token};

#[derive(Debug, Clone)]
pub enum Node<'a> {
    Leaf(Token<'a>),
    Group {
        open: Token<'a>,
        items: Vec<Node<'a>>,
        close: Token<'a>,
    },
}

impl<'a> Node<'a> {
    fn first(&self) -> &Token<'a> {
        match self {
            Node::Leaf(t) => t,
            Node::Group { open, .. } => open,
        }
    }

    fn last(&self) -> &Token<'a> {
        match self {
            Node::Leaf(t) => t,
            Node::Group { close, .. } => close,
        }
    }

    fn leaf(&self) -> Option<&Token<'a>> {
        match self {
            Node::Leaf(t) => Some(t),
            Node::Group { .. } => None,
        }
    }

    fn is_comment(&self) -> bool {
        self.leaf()
            .is_some_and(|t| matches!(t.kind, Kind::LineComment | Kind::BlockComment))
    }

    fn is_text(&self, text: &str) -> bool {
        self.leaf().is_some_and(|t| t.text == text)
    }

    fn bracket(&self) -> Option<Bracket> {
        match self {
            Node::Group { open, .. } => match open.kind {
                Kind::Open(b) => Some(b),
                _ => None,
            },
            Node::Leaf(_) => None,
        }
    }

    /// Whether a comment is anywhere inside.
    fn has_comment(&self) -> bool {
        match self {
            Node::Leaf(_) => self.is_comment(),
            Node::Group { items, .. } => items.iter().any(Node::has_comment),
        }
    }

    /// Whether the source broke a line anywhere inside (or before the closing bracket).
    fn spans_lines(&self) -> bool {
        match self {
            Node::Leaf(t) => t.text.contains('\n'),
            Node::Group { items, close, .. } => {
                close.newlines_before > 0
                    || items
                        .iter()
                        .any(|n| n.first().newlines_before > 0 || n.spans_lines())
            }
        }
    }
}

/// Groups `tokens` by their brackets.
///
/// # Errors
///
/// When brackets do not match (Rhai accepted the script, so this is the formatter's gap).
pub fn tree<'a>(tokens: &[Token<'a>]) -> Result<Vec<Node<'a>>, LexError> {
    let mut stack: Vec<(Token<'a>, Vec<Node<'a>>)> = Vec::new();
    let mut top = Vec::new();
    for t in tokens {
        match t.kind {
            Kind::Open(_) => stack.push((*t, Vec::new())),
            Kind::Close(b) => {
                let Some((open, items)) = stack.pop() else {
                    return Err(unmatched(t));
                };
                let fits = matches!((open.kind, b), (Kind::Open(o), c) if o == c || (o == Bracket::Map && c == Bracket::Brace));
                if !fits {
                    return Err(unmatched(t));
                }
                let node = Node::Group {
                    open,
                    items,
                    close: *t,
                };
                match stack.last_mut() {
                    Some((_, parent)) => parent.push(node),
                    None => top.push(node),
                }
            }
            _ => match stack.last_mut() {
                Some((_, parent)) => parent.push(Node::Leaf(*t)),
                None => top.push(Node::Leaf(*t)),
            },
        }
    }
    match stack.pop() {
        Some((open, _)) => Err(unmatched(&open)),
        None => Ok(top),
    }
}

fn unmatched(t: &Token<'_>) -> LexError {
    LexError {
        message: format!("unmatched {:?}", t.text),
        line: t.line,
        column: t.column,
    }
}

/// Keywords after which an operand follows (so `-`, `!` and `|` there are unary or open a
/// closure) and before whose `(` or `[` a space goes.
const KEYWORDS: &[&str] = &[
    "if", "else", "while", "until", "for", "in", "loop", "do", "switch", "return", "throw", "let",
    "const", "try", "catch", "import", "export", "as", "private", "fn", "break", "continue",
];

fn is_keyword(t: &Token<'_>) -> bool {
    t.kind == Kind::Word && KEYWORDS.contains(&t.text)
}

/// Whether an operand is expected after `prev` (the start of an expression).
fn operand_expected(prev: Option<&Token<'_>>, prev_closes_params: bool) -> bool {
    match prev {
        None => true,
        Some(_) if prev_closes_params => true,
        Some(t) => match t.kind {
            Kind::Op => !matches!(t.text, "." | "?." | "::"),
            Kind::Open(_) | Kind::Comma | Kind::Semi => true,
            Kind::Word => is_keyword(t),
            Kind::LineComment | Kind::BlockComment => true,
            _ => false,
        },
    }
}

/// Reads a sequence of nodes in order, telling for each token whether it is unary, opens or
/// closes a closure's parameters.
#[derive(Default)]
struct Reader<'t, 'a> {
    prev: Option<&'t Token<'a>>,
    prev_unary: bool,
    prev_opens_params: bool,
    prev_closes_params: bool,
    in_params: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Role {
    unary: bool,
    opens_params: bool,
    closes_params: bool,
}

impl<'t, 'a> Reader<'t, 'a> {
    fn role(&self, first: &Token<'a>) -> Role {
        let operand = operand_expected(self.prev, self.prev_closes_params) || self.prev_unary;
        let mut role = Role::default();
        if first.kind == Kind::Op {
            if self.in_params && first.text == "|" {
                role.closes_params = true;
            } else if operand && matches!(first.text, "-" | "+" | "!") {
                role.unary = true;
            } else if operand && first.text == "|" {
                role.opens_params = true;
            } else if operand && first.text == "||" {
                role.closes_params = true;
            }
        }
        role
    }

    fn advance(&mut self, node: &'t Node<'a>, role: Role) {
        if role.opens_params {
            self.in_params = true;
        }
        if role.closes_params {
            self.in_params = false;
        }
        self.prev = Some(node.last());
        self.prev_unary = role.unary;
        self.prev_opens_params = role.opens_params;
        self.prev_closes_params = role.closes_params;
    }
}

/// Whether a space goes between the previous token and `next`.
fn space(reader: &Reader<'_, '_>, next: &Token<'_>, role: Role) -> bool {
    let Some(prev) = reader.prev else {
        return false;
    };
    if matches!(next.kind, Kind::Comma | Kind::Semi) || prev.kind == Kind::LineComment {
        return false;
    }
    if matches!(next.kind, Kind::LineComment | Kind::BlockComment)
        || prev.kind == Kind::BlockComment
    {
        return true;
    }
    // `- -x` and `+ +x` written tight would be Rhai's reserved `--` and `++`; `| |` would
    // be `||`.
    if (reader.prev_unary && matches!((prev.text, next.text), ("-", "-") | ("+", "+")))
        || (prev.text == "|" && next.text == "|")
    {
        return true;
    }
    // Rhai reads `-1` as a negative literal but `- 1` as a minus applied to `1`: they differ
    // for `-1.to_string()`. Keep the source's choice.
    if reader.prev_unary && prev.text == "-" && next.kind == Kind::Number {
        return !(next.newlines_before == 0
            && next.line == prev.line
            && next.column == prev.column + 1);
    }
    if reader.prev_unary || reader.prev_opens_params || role.closes_params && next.text == "|" {
        return false;
    }
    let tight = [".", "?.", "::", "..", "..="];
    if tight.contains(&prev.text) || tight.contains(&next.text) {
        return false;
    }
    if next.text == ":" {
        return false;
    }
    let callee = (prev.kind == Kind::Word && !is_keyword(prev))
        || matches!(prev.kind, Kind::Close(Bracket::Paren | Bracket::Square));
    match next.kind {
        Kind::Open(Bracket::Paren) => !callee,
        Kind::Open(Bracket::Square) if next.text == "?[" => false,
        Kind::Open(Bracket::Square) => !(callee || prev.kind == Kind::Str),
        _ => true,
    }
}

/// One statement (or a comment on lines of its own).
struct Stmt<'t, 'a> {
    nodes: Vec<&'t Node<'a>>,
    /// A comment after it on its last line.
    trailing: Option<&'t Token<'a>>,
    /// The source had an empty line before it.
    blank_before: bool,
}

/// Whether the node after a `}` continues the same statement.
fn continues(next: &Node<'_>) -> bool {
    let t = next.first();
    match t.kind {
        Kind::Semi | Kind::Comma | Kind::Op | Kind::Close(_) => true,
        Kind::Word => matches!(t.text, "else" | "catch" | "while" | "until"),
        Kind::Open(Bracket::Paren | Bracket::Square) => t.newlines_before == 0,
        _ => false,
    }
}

fn statements<'t, 'a>(nodes: &'t [Node<'a>]) -> Vec<Stmt<'t, 'a>> {
    let mut out: Vec<Stmt<'t, 'a>> = Vec::new();
    let mut cur: Vec<&'t Node<'a>> = Vec::new();
    let mut ended = false;
    for (i, node) in nodes.iter().enumerate() {
        if node.is_comment() && cur.is_empty() {
            let t = node.first();
            let last = out.last_mut();
            match last {
                Some(last)
                    if ended
                        && t.newlines_before == 0
                        && last.trailing.is_none()
                        && t.kind == Kind::LineComment =>
                {
                    last.trailing = Some(t);
                }
                _ => out.push(Stmt {
                    nodes: vec![node],
                    trailing: None,
                    blank_before: t.newlines_before >= 2,
                }),
            }
            ended = true;
            continue;
        }
        if cur.is_empty() {
            ended = false;
        }
        cur.push(node);
        let end = node.leaf().is_some_and(|t| t.kind == Kind::Semi)
            || (node.bracket() == Some(Bracket::Brace)
                && nodes.get(i + 1).is_none_or(|next| !continues(next)));
        if end {
            let blank_before = cur[0].first().newlines_before >= 2;
            out.push(Stmt {
                nodes: std::mem::take(&mut cur),
                trailing: None,
                blank_before,
            });
            ended = true;
        }
    }
    if !cur.is_empty() {
        let blank_before = cur[0].first().newlines_before >= 2;
        out.push(Stmt {
            nodes: cur,
            trailing: None,
            blank_before,
        });
    }
    out
}

fn stmt_docs<'a>(stmts: &[Stmt<'_, 'a>]) -> Vec<Doc<'a>> {
    let mut docs = Vec::new();
    for (i, s) in stmts.iter().enumerate() {
        if i > 0 {
            docs.push(if s.blank_before {
                Doc::Blank
            } else {
                Doc::Hard
            });
        }
        docs.extend(inline(&s.nodes));
        if let Some(c) = s.trailing {
            docs.push(Doc::text(" "));
            docs.push(Doc::text(c.text));
        }
    }
    docs
}

/// The whole script.
pub fn program<'a>(nodes: &[Node<'a>]) -> Vec<Doc<'a>> {
    stmt_docs(&statements(nodes))
}

/// A node of a sequence with its role and whether a space goes before it.
struct Placed<'t, 'a> {
    node: &'t Node<'a>,
    role: Role,
    space: bool,
    /// Part of a closure's parameter list (`|a, b|` from bar to bar).
    in_params: bool,
    /// Something precedes it in its sequence.
    after: bool,
}

fn place<'t, 'a>(nodes: &[&'t Node<'a>]) -> Vec<Placed<'t, 'a>> {
    let mut reader = Reader::default();
    nodes
        .iter()
        .map(|&node| {
            let first = node.first();
            let role = reader.role(first);
            let space = space(&reader, first, role);
            let in_params = reader.in_params || role.opens_params || role.closes_params;
            let after = reader.prev.is_some();
            reader.advance(node, role);
            Placed {
                node,
                role,
                space,
                in_params,
                after,
            }
        })
        .collect()
}

/// Assignment operators: what is on either side of one is laid out on its own.
const ASSIGNMENTS: &[&str] = &[
    "=", "+=", "-=", "*=", "/=", "%=", "**=", "<<=", ">>=", "&=", "|=", "^=",
];

/// Where an expression ends and another begins within a line: keywords, assignments, `=>`,
/// a map key's `:`, comments, blocks and a closure's parameters.
fn separates(p: &Placed<'_, '_>) -> bool {
    if p.in_params || p.node.bracket() == Some(Bracket::Brace) {
        return true;
    }
    p.node.leaf().is_some_and(|t| match t.kind {
        Kind::Word => is_keyword(t),
        Kind::Op => ASSIGNMENTS.contains(&t.text) || matches!(t.text, "=>" | ":"),
        Kind::LineComment | Kind::BlockComment | Kind::Comma | Kind::Semi => true,
        _ => false,
    })
}

/// A binary operator's precedence (Rhai's own order; higher binds tighter), or `None` for
/// anything that is not a binary operator a line may break after. Ranges stay tight.
fn precedence(p: &Placed<'_, '_>) -> Option<u8> {
    if p.role.unary || p.role.opens_params || p.role.closes_params || p.in_params {
        return None;
    }
    let t = p.node.leaf().filter(|t| t.kind == Kind::Op)?;
    Some(match t.text {
        "||" | "|" | "^" => 30,
        "&&" | "&" => 60,
        "==" | "!=" => 90,
        "!in" => 110,
        "<" | "<=" | ">" | ">=" => 130,
        "??" => 135,
        "+" | "-" => 150,
        "*" | "/" | "%" => 180,
        "**" => 190,
        "<<" | ">>" => 210,
        _ => return None,
    })
}

/// A sequence of nodes on one logical line, spaced by the rules of [`space`]: each expression
/// in it breaks after its loosest binary operators, and a method chain before each call, when
/// it does not fit.
fn inline<'a>(nodes: &[&Node<'a>]) -> Vec<Doc<'a>> {
    let placed = place(nodes);
    let mut docs = Vec::new();
    let mut start = 0;
    for i in 0..placed.len() {
        if separates(&placed[i]) {
            docs.extend(expression(&placed[start..i], true));
            push_node(&mut docs, &placed[i], true, i + 1 == placed.len());
            start = i + 1;
        }
    }
    docs.extend(expression(&placed[start..], true));
    docs
}

fn push_node<'a>(docs: &mut Vec<Doc<'a>>, p: &Placed<'_, 'a>, lead: bool, last: bool) {
    if lead && p.space {
        docs.push(Doc::text(" "));
    }
    match p.node {
        Node::Leaf(t) => {
            docs.push(Doc::text(t.text));
            // What follows a line comment starts a new line; at the end of the sequence, the
            // caller's own break does it.
            if t.kind == Kind::LineComment && !last {
                docs.push(Doc::Hard);
            }
        }
        Node::Group { open, items, close } if p.after && !p.space && is_index(open) => {
            docs.push(index(open, items, close));
        }
        Node::Group { open, items, close } => docs.push(group(open, items, close)),
    }
}

/// Whether a `[` written against what precedes it opens an index (`a[0]`, `a?[0]`), which
/// takes no trailing comma and is not broken like an array.
fn is_index(open: &Token<'_>) -> bool {
    open.kind == Kind::Open(Bracket::Square)
}

/// `a[i]`: the index on the line of its expression.
fn index<'a>(open: &Token<'a>, items: &[Node<'a>], close: &Token<'a>) -> Doc<'a> {
    let mut docs = vec![Doc::text(open.text)];
    let parts = split_items(items);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            docs.push(Doc::text(", "));
        }
        docs.extend(inline(&part.nodes));
        if let Some(c) = part.trailing {
            docs.push(Doc::text(" "));
            docs.push(Doc::text(c.text));
            docs.push(Doc::Hard);
        }
    }
    docs.push(Doc::text(close.text));
    Doc::Group(docs)
}

/// An expression: `a + b * c` broken after its loosest operators (`a +` / `b * c`), each
/// operand in turn an expression of its own. `lead` says whether the space before the first
/// node is printed (not where a line break takes its place).
fn expression<'a>(placed: &[Placed<'_, 'a>], lead: bool) -> Vec<Doc<'a>> {
    let Some(loosest) = placed.iter().filter_map(precedence).min() else {
        return chains(placed, lead);
    };
    let cuts: Vec<usize> = (0..placed.len())
        .filter(|&i| precedence(&placed[i]) == Some(loosest))
        .collect();
    let mut head = expression(&placed[..cuts[0]], lead);
    let mut tail = Vec::new();
    for (k, &cut) in cuts.iter().enumerate() {
        let target = if k == 0 { &mut head } else { &mut tail };
        push_node(target, &placed[cut], true, false);
        tail.push(Doc::Line);
        let end = cuts.get(k + 1).copied().unwrap_or(placed.len());
        tail.extend(expression(&placed[cut + 1..end], false));
    }
    head.push(Doc::Indent(tail));
    vec![Doc::Group(head)]
}

/// Runs of nodes written together (no space between them); a run with two method calls or
/// more (`a.b(…).c(…)`) breaks before each call's `.` when it does not fit.
fn chains<'a>(placed: &[Placed<'_, 'a>], lead: bool) -> Vec<Doc<'a>> {
    let mut docs = Vec::new();
    let mut start = 0;
    for end in 1..=placed.len() {
        if end == placed.len() || placed[end].space {
            chain(&mut docs, &placed[start..end], lead || start > 0);
            start = end;
        }
    }
    docs
}

fn chain<'a>(docs: &mut Vec<Doc<'a>>, run: &[Placed<'_, 'a>], lead: bool) {
    let calls: Vec<usize> = (1..run.len().saturating_sub(2))
        .filter(|&k| {
            run[k]
                .node
                .leaf()
                .is_some_and(|t| matches!(t.text, "." | "?."))
                && run[k + 1].node.leaf().is_some_and(|t| t.kind == Kind::Word)
                && run[k + 2].node.bracket() == Some(Bracket::Paren)
        })
        .collect();
    let last = |i: usize| i + 1 == run.len();
    if calls.len() < 2 {
        for (i, p) in run.iter().enumerate() {
            push_node(docs, p, lead || i > 0, last(i));
        }
        return;
    }
    let mut head = Vec::new();
    for (i, p) in run[..calls[0]].iter().enumerate() {
        push_node(&mut head, p, lead || i > 0, false);
    }
    let mut tail = Vec::new();
    for (k, &call) in calls.iter().enumerate() {
        tail.push(Doc::Soft);
        let end = calls.get(k + 1).copied().unwrap_or(run.len());
        for (i, node) in run.iter().enumerate().take(end).skip(call) {
            push_node(&mut tail, node, true, last(i));
        }
    }
    head.push(Doc::Indent(tail));
    docs.push(Doc::Group(head));
}

fn group<'a>(open: &Token<'a>, items: &[Node<'a>], close: &Token<'a>) -> Doc<'a> {
    match open.kind {
        Kind::Open(Bracket::Brace) if items.iter().any(|n| n.is_text("=>")) => switch_body(items),
        Kind::Open(Bracket::Brace) => block(items, close),
        Kind::Open(b) => list(b, open, items, close),
        _ => Doc::text(open.text),
    }
}

/// `{ statements }`: one statement that the source wrote on one line stays so if it fits;
/// anything else gets a line per statement.
fn block<'a>(items: &[Node<'a>], close: &Token<'a>) -> Doc<'a> {
    let stmts = statements(items);
    if stmts.is_empty() {
        return Doc::text("{}");
    }
    let one_line = stmts.len() == 1
        && close.newlines_before == 0
        && !items.iter().any(|n| n.has_comment())
        && !items
            .iter()
            .any(|n| n.first().newlines_before > 0 || n.spans_lines());
    let inner = stmt_docs(&stmts);
    if one_line {
        let mut body = vec![Doc::Line];
        body.extend(inner);
        Doc::Group(vec![
            Doc::text("{"),
            Doc::Indent(body),
            Doc::Line,
            Doc::text("}"),
        ])
    } else {
        let mut body = vec![Doc::Hard];
        body.extend(inner);
        Doc::Group(vec![
            Doc::text("{"),
            Doc::Indent(body),
            Doc::Hard,
            Doc::text("}"),
        ])
    }
}

/// The items between the commas at this level (a closure's parameters are not split).
struct Item<'t, 'a> {
    nodes: Vec<&'t Node<'a>>,
    /// A comment after the item's comma, on its line.
    trailing: Option<&'t Token<'a>>,
}

fn split_items<'t, 'a>(items: &'t [Node<'a>]) -> Vec<Item<'t, 'a>> {
    let mut out: Vec<Item<'t, 'a>> = Vec::new();
    let mut cur: Vec<&'t Node<'a>> = Vec::new();
    let mut reader = Reader::default();
    let mut after_comma = false;
    for node in items {
        let role = reader.role(node.first());
        if node.leaf().is_some_and(|t| t.kind == Kind::Comma) && !reader.in_params {
            out.push(Item {
                nodes: std::mem::take(&mut cur),
                trailing: None,
            });
            after_comma = true;
            reader.advance(node, role);
            continue;
        }
        if after_comma
            && cur.is_empty()
            && node
                .leaf()
                .is_some_and(|t| t.kind == Kind::LineComment && t.newlines_before == 0)
            && let Some(prev) = out.last_mut()
            && prev.trailing.is_none()
        {
            prev.trailing = node.leaf();
            reader.advance(node, role);
            continue;
        }
        after_comma = false;
        cur.push(node);
        reader.advance(node, role);
    }
    if !cur.is_empty() {
        out.push(Item {
            nodes: cur,
            trailing: None,
        });
    }
    // A line comment ending an item goes after the item's comma, not before it.
    for item in &mut out {
        if item.trailing.is_none()
            && item.nodes.len() > 1
            && item.nodes.iter().any(|n| !n.is_comment())
            && item
                .nodes
                .last()
                .is_some_and(|n| n.leaf().is_some_and(|t| t.kind == Kind::LineComment))
        {
            item.trailing = item.nodes.pop().and_then(Node::leaf);
        }
    }
    out
}

/// `(…)`, `[…]`, `#{…}`: on one line if it fits, else one item per line (with a trailing
/// comma in arrays and maps).
fn list<'a>(bracket: Bracket, open: &Token<'a>, items: &[Node<'a>], close: &Token<'a>) -> Doc<'a> {
    let parts = split_items(items);
    let (open_text, close_text) = (open.text, close.text);
    if parts.is_empty() {
        return Doc::text(format!("{open_text}{close_text}"));
    }
    let forced = items.iter().any(Node::has_comment);
    let edge = match (forced, bracket) {
        (true, _) => Doc::Hard,
        (false, Bracket::Map) => Doc::Line,
        (false, _) => Doc::Soft,
    };
    let sep = if forced { Doc::Hard } else { Doc::Line };
    let mut inner = vec![edge.clone()];
    let n = parts.len();
    for (i, part) in parts.iter().enumerate() {
        inner.extend(inline(&part.nodes));
        // Comments on their own (after the last item) take no comma: it would be inside them.
        let only_comments = part.nodes.iter().all(|n| n.is_comment());
        if only_comments {
            // The separator or the closing edge below breaks the line after them.
        } else if i + 1 < n {
            inner.push(Doc::text(","));
        } else if matches!(bracket, Bracket::Square | Bracket::Map) {
            inner.push(if forced {
                Doc::text(",")
            } else {
                Doc::IfBroken(",")
            });
        }
        if let Some(c) = part.trailing {
            inner.push(Doc::text(" "));
            inner.push(Doc::text(c.text));
            if i + 1 < n {
                inner.push(Doc::Hard);
            }
        } else if i + 1 < n {
            inner.push(sep.clone());
        }
    }
    // A comment anywhere has made `edge` a hard break, which also ends a last trailing comment.
    let docs = vec![
        Doc::text(open_text),
        Doc::Indent(inner),
        edge,
        Doc::text(close_text),
    ];
    Doc::Group(docs)
}

/// `switch x { a => …, b => … }`: one arm per line, each followed by a comma.
fn switch_body<'a>(items: &[Node<'a>]) -> Doc<'a> {
    // An arm whose body is a block needs no comma: the next arm may follow it directly.
    let mut parts = Vec::new();
    for part in split_items(items) {
        let mut rest = part.nodes;
        loop {
            let cut = (1..rest.len()).find(|&k| {
                rest[k - 1].bracket() == Some(Bracket::Brace) && k >= 2 && rest[k - 2].is_text("=>")
            });
            match cut {
                Some(k) => {
                    let tail = rest.split_off(k);
                    parts.push(Item {
                        nodes: rest,
                        trailing: None,
                    });
                    rest = tail;
                }
                None => break,
            }
        }
        parts.push(Item {
            nodes: rest,
            trailing: part.trailing,
        });
    }
    let mut inner = Vec::new();
    for part in &parts {
        inner.push(Doc::Hard);
        inner.extend(inline(&part.nodes));
        inner.push(Doc::text(","));
        if let Some(c) = part.trailing {
            inner.push(Doc::text(" "));
            inner.push(Doc::text(c.text));
        }
    }
    Doc::Group(vec![
        Doc::text("{"),
        Doc::Indent(inner),
        Doc::Hard,
        Doc::text("}"),
    ])
}
