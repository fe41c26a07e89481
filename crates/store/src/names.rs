//! Names of tenants, functions and tokens: `[a-z0-9][a-z0-9-]{0,62}`, so they fit in a URL
//! path segment, a DNS label and a Prometheus label without escaping.

/// Why a name was refused, in words an API client can show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid name {name:?}: {reason} (use 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit)"
)]
pub struct InvalidName {
    pub name: String,
    pub reason: &'static str,
}

/// Checks `name` against `[a-z0-9][a-z0-9-]{0,62}`.
///
/// # Errors
///
/// [`InvalidName`] saying what is wrong.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    let fail = |reason| {
        Err(InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    let Some(first) = name.bytes().next() else {
        return fail("it is empty");
    };
    if name.len() > 63 {
        return fail("it is longer than 63 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return fail("it must start with a lower-case letter or a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return fail("it may hold only lower-case letters, digits and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn accepts_the_pattern_and_nothing_else() {
        for ok in ["a", "0", "hello-world", "a1-b2", &"x".repeat(63)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "A",
            "héllo",
            "a_b",
            "a/b",
            "a b",
            &"x".repeat(64),
            "a.b",
        ] {
            let err = validate_name(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid name"), "{err}");
        }
    }
}
