//! The syntax of ssh config lines, as OpenSSH reads them: a keyword and its arguments, quoting,
//! comments, and `%` tokens.

/// Splits a line into its keyword and the rest, as OpenSSH does: the keyword ends at a space, a
/// tab or `=`, and one `=` with spaces around it may separate it from the value. `None` for blank
/// lines and comments.
pub fn split_keyword(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find([' ', '\t', '=']).unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    Some((keyword, rest.trim_start_matches([' ', '\t'])))
}

/// Splits a value into arguments as OpenSSH's `argv_split` does: separated by spaces or tabs,
/// quoted with `"` or `'` (quotes may sit inside an argument), `\` escaping a quote, a backslash
/// or a space, and a `#` that starts an argument beginning a comment.
pub fn arguments(text: &str) -> Result<Vec<String>, String> {
    let mut arguments = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
        if matches!(chars.peek(), None | Some('#')) {
            return Ok(arguments);
        }
        let mut argument = String::new();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&next @ ('\'' | '"' | '\\')) => {
                        argument.push(next);
                        chars.next();
                    }
                    Some(' ') if quote.is_none() => {
                        argument.push(' ');
                        chars.next();
                    }
                    _ => argument.push('\\'),
                },
                ' ' | '\t' if quote.is_none() => break,
                '"' | '\'' if quote.is_none() => quote = Some(c),
                _ if quote == Some(c) => quote = None,
                _ => argument.push(c),
            }
        }
        if quote.is_some() {
            return Err("unterminated quote".to_string());
        }
        arguments.push(argument);
    }
}

/// The one value of a keyword that takes exactly one.
pub fn single_value(keyword: &str, rest: &str) -> Result<String, String> {
    let mut values = arguments(rest)?;
    match values.len() {
        1 if !values[0].is_empty() => Ok(values.remove(0)),
        0 | 1 => Err(format!("{keyword} needs a value")),
        _ => Err(format!("{keyword} takes one value")),
    }
}

/// Rejects `%` tokens outside `allowed` (and `%%`), as OpenSSH refuses unknown tokens, rather
/// than connecting with a name or key path that was never meant.
pub fn check_tokens(keyword: &str, value: &str, allowed: &str) -> Result<(), String> {
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some(token) if token == '%' || allowed.contains(token) => {}
                Some(token) => {
                    return Err(format!(
                        "{keyword} '{value}': token %{token} is not supported"
                    ));
                }
                None => return Err(format!("{keyword} '{value}': lone % at the end")),
            }
        }
    }
    Ok(())
}

/// Replaces `%%` and the tokens `value_of` knows; any other token is left as written (parsing
/// has already refused them).
pub fn expand_tokens(value: &str, value_of: impl Fn(char) -> Option<String>) -> String {
    let mut expanded = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            expanded.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => expanded.push('%'),
            Some(token) => match value_of(token) {
                Some(value) => expanded.push_str(&value),
                None => {
                    expanded.push('%');
                    expanded.push(token);
                }
            },
            None => expanded.push('%'),
        }
    }
    expanded
}

/// Replaces each `${NAME}` with the environment variable NAME, as OpenSSH does in paths; one
/// that is not set (or not text), or a `${` without its `}`, is an error.
pub fn expand_variables(value: &str) -> Result<String, String> {
    let mut expanded = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        expanded.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "'${' without its '}'".to_string())?;
        let name = &after[..end];
        let variable =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        expanded.push_str(&variable);
        rest = &after[end + 1..];
    }
    expanded.push_str(rest);
    Ok(expanded)
}
