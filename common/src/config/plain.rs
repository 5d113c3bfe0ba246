//! serde's and the YAML parser's messages, said in the config's own words: keys instead of
//! fields, "a whole number from 0 to 65535" instead of `u16`, "a mapping" instead of
//! `struct ServerSettings`, with the closest key or value when one was misspelt.

/// `message` from serde (through serde_norway) in plain words; messages it does not recognise
/// are returned as they are.
pub fn plain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (found, expected) = split_expected(rest);
        let keys = names(expected);
        return format!(
            "unknown key {found}{}; {}",
            suggestion(found, &keys),
            if keys.is_empty() {
                "nothing is allowed here".to_owned()
            } else {
                format!("the keys here are {}", keys.join(", "))
            }
        );
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (found, expected) = split_expected(rest);
        let values = names(expected);
        return format!(
            "{found} is not one of {}{}",
            values.join(", "),
            suggestion(found, &values)
        );
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("the key {field} is required here");
    }
    for (prefix, out_of_range) in [("invalid type: ", false), ("invalid value: ", true)] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            let found = describe_found(found);
            let expected = describe_expected(expected);
            return if out_of_range {
                format!("{found} is not allowed here: expected {expected}")
            } else if found == "a mapping" && expected == "a string" {
                // `helmRelease: {api}` is YAML's flow mapping, not the capture it looks like.
                format!(
                    "expected {expected}, found {found}; a value that begins with `{{` is a YAML \
                     mapping: quote it, as in \"{{api}}\""
                )
            } else {
                format!("expected {expected}, found {found}")
            };
        }
    }
    if message.contains("while parsing") || message.contains("while scanning") {
        return format!("not valid YAML: {message}");
    }
    message.to_owned()
}

/// Splits "`x`, expected one of `a`, `b`" (or "expected `a` or `b`", "there are no fields").
fn split_expected(rest: &str) -> (&str, &str) {
    match rest.split_once(", ") {
        Some((found, expected)) => (found, expected),
        None => (rest, ""),
    }
}

/// The backticked names of serde's "expected one of `a`, `b`".
fn names(expected: &str) -> Vec<String> {
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// " (did you mean `x`?)" for the closest candidate within a few edits (one per three
/// letters, at least one, fewer than the word has), or nothing.
fn suggestion(found: &str, candidates: &[String]) -> String {
    let found = found.trim_matches('`').to_ascii_lowercase();
    let length = found.chars().count();
    let most = (length / 3).max(1);
    candidates
        .iter()
        .map(|candidate| {
            (
                edit_distance(&found, &candidate.to_ascii_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= most && *distance < length)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default()
}

/// Edits between `a` and `b` (insert, delete, replace, or swap two neighbours), so that
/// `prot` is one edit from `port`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut table = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in table.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in table[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[i - 1][j] + 1)
                .min(table[i][j - 1] + 1)
                .min(table[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[i - 2][j - 2] + 1);
            }
            table[i][j] = best;
        }
    }
    table[a.len()][b.len()]
}

/// serde's `Unexpected`: "string \"x\"", "integer `5`", "sequence", …
fn describe_found(found: &str) -> String {
    let quoted = |text: &str| text.trim_matches('`').to_owned();
    if let Some(text) = found.strip_prefix("string ") {
        format!("the text {text}")
    } else if let Some(number) = found
        .strip_prefix("integer ")
        .or_else(|| found.strip_prefix("floating point "))
    {
        format!("the number {}", quoted(number))
    } else if let Some(value) = found.strip_prefix("boolean ") {
        quoted(value)
    } else {
        match found {
            "sequence" => "a list".to_owned(),
            "map" => "a mapping".to_owned(),
            "unit value" => "nothing (an empty value)".to_owned(),
            other => other.to_owned(),
        }
    }
}

/// serde's "expected …": Rust type names and struct names in the config's words.
fn describe_expected(expected: &str) -> String {
    match expected {
        "u8" => "a whole number from 0 to 255".to_owned(),
        "u16" => "a whole number from 0 to 65535".to_owned(),
        "u32" => "a whole number from 0 to 4294967295".to_owned(),
        "u64" | "usize" => "a whole number, 0 or more".to_owned(),
        "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping (key: value)".to_owned(),
        "struct Config" => {
            "a mapping of settings (namespace:, providers:, repositories:, …)".to_owned()
        }
        other if other.starts_with("struct ") => "a mapping (key: value)".to_owned(),
        other if other.starts_with("enum ") => "one of the listed values".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn serde_words_become_config_words() {
        let cases = [
            (
                "invalid value: integer `99999`, expected u16",
                "the number 99999 is not allowed here: expected a whole number from 0 to 65535",
            ),
            (
                "invalid type: string \"x\", expected u16",
                "expected a whole number from 0 to 65535, found the text \"x\"",
            ),
            (
                "invalid type: sequence, expected struct Config",
                "expected a mapping of settings (namespace:, providers:, repositories:, …), \
                 found a list",
            ),
            (
                "invalid type: integer `5`, expected struct ServerSettings",
                "expected a mapping (key: value), found the number 5",
            ),
            (
                "unknown field `nmespace`, expected one of `namespace`, `providers`",
                "unknown key `nmespace` (did you mean `namespace`?); the keys here are \
                 namespace, providers",
            ),
            (
                "unknown variant `githb`, expected one of `github`, `gitlab`",
                "`githb` is not one of github, gitlab (did you mean `github`?)",
            ),
            (
                "unknown variant `x`, expected `a` or `b`",
                "`x` is not one of a, b",
            ),
            ("missing field `url`", "the key `url` is required here"),
            (
                "did not find expected key, while parsing a block mapping",
                "not valid YAML: did not find expected key, while parsing a block mapping",
            ),
        ];
        for (serde, expected) in cases {
            assert_eq!(plain(serde), expected);
        }
    }
}
