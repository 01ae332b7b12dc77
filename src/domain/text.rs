//! What text wagate stores for customers and operators may hold.

/// Refuses control characters other than newline and tab, which WhatsApp
/// renders. A NUL, an escape sequence or a carriage return is never meant
/// for a customer, and in a stored body or reason it would reach logs and
/// terminals verbatim.
pub fn refuse_controls(text: &str) -> Result<(), String> {
    match text
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        None => Ok(()),
        Some((at, c)) => Err(format!(
            "may not hold control characters other than newline and tab \
             (U+{:04X} at character {})",
            c as u32,
            at + 1
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_and_tab_pass_other_controls_do_not() {
        assert!(refuse_controls("Hi!\n\tYour order ships today. ✓").is_ok());
        for bad in ["a\0b", "\u{1b}[31mred", "line\rover", "\u{7f}", "\u{85}"] {
            let err = refuse_controls(bad).unwrap_err();
            assert!(err.contains("U+"), "{bad:?}: {err}");
        }
        assert!(
            refuse_controls("ab\0")
                .unwrap_err()
                .contains("at character 3")
        );
    }
}
