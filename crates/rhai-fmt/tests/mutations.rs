//! A bounded fuzz run on stable Rust: the corpus scripts mutated at random (tokens deleted,
//! duplicated, swapped, random characters inserted), a few thousand inputs, a fixed seed so a
//! failure reproduces. Whatever the input: no panic; a script Rhai refuses is a `Parse` error;
//! a formatted result is formatted again to itself, to the same program (AST); and every script
//! Rhai accepts is formatted.

use std::path::Path;

use picloud_rhai_fmt::{FormatError, format, shape};

/// xorshift64*: a seeded generator with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const PIECES: &[&str] = &[
    " ", "\n", ";", ",", "(", ")", "[", "]", "{", "}", "#{", "|", "||", "-", "!", "..", "?.", "??",
    "=>", "// c\n", "/* c */", "`", "${", "\"", "'", "0", "x", "fn", "let", "if", "else", "switch",
    ":", "::", "=", "+",
];

fn mutate(rng: &mut Rng, src: &str) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 if !chars.is_empty() => {
                let end = (at + rng.below(8)).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            1 => {
                let piece = PIECES[rng.below(PIECES.len())];
                for (i, c) in piece.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
            2 if chars.len() > 2 => {
                let a = rng.below(chars.len());
                let b = rng.below(chars.len());
                chars.swap(a, b);
            }
            _ => {
                let start = rng.below(chars.len() + 1);
                let end = (start + rng.below(16)).min(chars.len());
                let copy: Vec<char> = chars[start..end].to_vec();
                for (i, c) in copy.into_iter().enumerate() {
                    chars.insert(at.min(chars.len()) + i, c);
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// The AST with positions ignored (`shape`); the input was formatted, so it parses.
fn ast(source: &str) -> String {
    shape(&picloud_rhai_fmt::engine().compile(source).expect("parses"))
}

#[test]
fn mutated_scripts_never_panic_and_results_are_stable() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut corpus: Vec<String> = std::fs::read_dir(dir)
        .expect("corpus")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
        .collect();
    corpus.sort();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let (mut formatted, mut refused, mut internal) = (0, 0, 0);
    for round in 0..3000 {
        let base = &corpus[round % corpus.len()];
        let input = mutate(&mut rng, base);
        let result = std::panic::catch_unwind(|| format(&input));
        let Ok(result) = result else {
            panic!("format panicked on:\n{input}");
        };
        match result {
            Ok(out) => {
                formatted += 1;
                assert_eq!(
                    format(&out).as_deref(),
                    Ok(out.as_str()),
                    "not stable:\n{input}"
                );
                assert_eq!(ast(&input), ast(&out), "the program changed:\n{input}");
            }
            Err(FormatError::Parse { .. }) => refused += 1,
            Err(FormatError::Internal(why)) => {
                if std::env::var_os("SHOW_INTERNAL").is_some() {
                    println!("---- {why}\n{input}");
                }
                internal += 1;
            }
        }
    }
    println!("formatted {formatted}, refused {refused}, internal {internal}");
    assert!(
        formatted > 100 && refused > 100,
        "the mutations exercise both paths"
    );
    // Every script Rhai accepts is formatted: none falls back on the guards (SHOW_INTERNAL=1
    // prints any that does).
    assert_eq!(internal, 0, "scripts the formatter refused");
}
