//! NATS-style subject matching for subscriptions.

/// Returns true when `subject` matches `pattern`.
///
/// Both are split into tokens on `.`. In the pattern, `*` matches exactly one token
/// and `>` as the last token matches one or more remaining tokens; any other token
/// (including a `>` that is not last) must equal the subject's token.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern_tokens = pattern.split('.').peekable();
    let mut subject_tokens = subject.split('.');
    while let Some(p) = pattern_tokens.next() {
        if p == ">" && pattern_tokens.peek().is_none() {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(s) if p == "*" || p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Returns true when `subject` matches one of `patterns`, or `patterns` is empty
/// (no subscription list means every topic).
pub fn matches_any(patterns: &[String], subject: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| subject_matches(p, subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal() {
        assert!(subject_matches("orders", "orders"));
        assert!(subject_matches("orders.new", "orders.new"));
        assert!(!subject_matches("orders.new", "orders"));
        assert!(!subject_matches("orders", "orders.new"));
        assert!(!subject_matches("orders.new", "orders.old"));
    }

    #[test]
    fn star_is_one_token() {
        assert!(subject_matches("orders.*", "orders.new"));
        assert!(!subject_matches("orders.*", "orders"));
        assert!(!subject_matches("orders.*", "orders.new.eu"));
        assert!(subject_matches("*.new", "orders.new"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d"));
    }

    #[test]
    fn gt_is_one_or_more_trailing_tokens() {
        assert!(subject_matches("orders.>", "orders.new"));
        assert!(subject_matches("orders.>", "orders.new.eu"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(!subject_matches("orders.>", "invoices.new"));
        assert!(subject_matches(">", "anything"));
        assert!(subject_matches(">", "any.thing"));
        assert!(!subject_matches("a.>.c", "a.b.c"));
        assert!(subject_matches("a.>.c", "a.>.c"));
    }

    #[test]
    fn empty_list_matches_everything() {
        assert!(matches_any(&[], "x.y"));
        let patterns = vec!["a.*".to_string(), "b.>".to_string()];
        assert!(matches_any(&patterns, "a.1"));
        assert!(matches_any(&patterns, "b.1.2"));
        assert!(!matches_any(&patterns, "c.1"));
    }
}
