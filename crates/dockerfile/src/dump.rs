//! The s-expression dump of a syntax tree, byte for byte BuildKit's
//! `Node.Dump()` as printed by its parser tests (the `result` files of the
//! conformance vectors): one `(name ["--flag" ...] "arg" ...)` per
//! instruction, strings quoted like Go's `strconv.Quote`.

use std::fmt::Write as _;

use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::ast::{Arguments, Dockerfile, Instruction, KeyValueForm};

/// The whole file: one line per instruction, each ending in `\n`.
pub fn dump(dockerfile: &Dockerfile) -> String {
    let mut out = String::with_capacity(dockerfile.instructions.len() * 48);
    for instruction in &dockerfile.instructions {
        out.push('(');
        dump_node(instruction, &mut out);
        out.push_str(")\n");
    }
    out
}

/// One instruction without the surrounding parentheses.
pub fn dump_instruction(instruction: &Instruction) -> String {
    let mut out = String::new();
    dump_node(instruction, &mut out);
    out
}

fn dump_node(instruction: &Instruction, out: &mut String) {
    let start = out.len();
    out.push_str(&instruction.name);
    if !instruction.flags.is_empty() {
        out.push_str(" [");
        for (i, flag) in instruction.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            go_quote_into(&flag.raw, out);
        }
        out.push(']');
    }
    dump_arguments(&instruction.args, out);
    // Go trims the dumped node with strings.TrimSpace; only a leading space
    // (empty instruction name) can occur.
    if instruction.name.is_empty() && out[start..].starts_with(' ') {
        out.remove(start);
    }
}

fn dump_arguments(args: &Arguments, out: &mut String) {
    let quoted = |text: &str, out: &mut String| {
        out.push(' ');
        go_quote_into(text, out);
    };
    match args {
        Arguments::None => {}
        Arguments::Shell(text) => quoted(&text.value, out),
        Arguments::Exec(items) | Arguments::Words(items) => {
            for item in items {
                quoted(&item.value, out);
            }
        }
        Arguments::KeyValues(pairs) => {
            for pair in pairs {
                quoted(&pair.key.value, out);
                quoted(&pair.value.value, out);
                let separator = match pair.form {
                    KeyValueForm::Equals => "=",
                    KeyValueForm::Legacy => "",
                };
                quoted(separator, out);
            }
        }
        Arguments::Healthcheck { kind, command } => {
            quoted(&kind.value, out);
            dump_arguments(command, out);
        }
        Arguments::Onbuild(child) => {
            out.push_str(" (");
            dump_node(child, out);
            out.push(')');
        }
        Arguments::Unknown(_) => quoted("", out),
    }
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols
/// and the ASCII space.
fn is_go_printable(ch: char) -> bool {
    if ch == ' ' {
        return true;
    }
    if ch.is_ascii() {
        return ch.is_ascii_graphic();
    }
    matches!(
        ch.general_category_group(),
        GeneralCategoryGroup::Letter
            | GeneralCategoryGroup::Mark
            | GeneralCategoryGroup::Number
            | GeneralCategoryGroup::Punctuation
            | GeneralCategoryGroup::Symbol
    )
}

/// Go's `strconv.Quote`.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    go_quote_into(text, &mut out);
    out
}

fn go_quote_into(text: &str, out: &mut String) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ if is_go_printable(ch) => out.push(ch),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            _ if (ch as u32) < 0x20 || ch == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", ch as u32);
            }
            _ if (ch as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", ch as u32);
            }
            _ => {
                let _ = write!(out, "\\U{:08x}", ch as u32);
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\u{7}\u{1}\u{7f}"), r#""\t\n\a\x01\x7f""#);
        assert_eq!(go_quote("한국어 é"), "\"한국어 é\"");
        assert_eq!(
            go_quote("\u{a0}\u{200b}\u{e000}"),
            r#""\u00a0\u200b\ue000""#
        );
        assert_eq!(go_quote("\u{e0001}"), r#""\U000e0001""#);
    }

    #[test]
    fn dumps_flags_onbuild_and_env_forms() {
        let file = crate::parse(
            "FROM a\nCOPY --from=b --chown=1 x /y\nONBUILD RUN [\"echo\", \"hi\"]\nENV a=1 b 2\nENV c d e\nHEALTHCHECK\nFOO bar\n",
        );
        // `ENV a=1 b 2` is invalid (b has no =), check the rest separately.
        assert!(file.is_err());
        let file = crate::parse(
            "FROM a\nCOPY --from=b --chown=1 x /y\nONBUILD RUN [\"echo\", \"hi\"]\nENV a=1 b=\"2 3\"\nENV c d e\nHEALTHCHECK\nFOO bar\n",
        )
        .unwrap();
        assert_eq!(
            dump(&file),
            concat!(
                "(from \"a\")\n",
                "(copy [\"--from=b\" \"--chown=1\"] \"x\" \"/y\")\n",
                "(onbuild (run \"echo\" \"hi\"))\n",
                "(env \"a\" \"1\" \"=\" \"b\" \"\\\"2 3\\\"\" \"=\")\n",
                "(env \"c\" \"d e\" \"\")\n",
                "(healthcheck)\n",
                "(foo \"\")\n",
            )
        );
    }
}
