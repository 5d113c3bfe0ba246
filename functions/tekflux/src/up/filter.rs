//! Trigger filters as Knative's Broker applies them: the legacy `filter.attributes` (exact
//! match of each attribute) and the `filters` dialects `exact`, `prefix`, `suffix`, `all`,
//! `any`, `not` and `cesql`.
//!
//! CESQL is the subset the shipped Triggers and everyday filters use: attribute names, string,
//! integer and boolean literals, `=`, `!=`/`<>`, `LIKE` (`%`, `_`, `\` escapes), `NOT LIKE`,
//! `IN (…)`, `EXISTS`, `AND`, `OR`, `XOR`, `NOT` and parentheses. Anything else (functions,
//! arithmetic) is refused when the Triggers load, so no filter is silently evaluated wrongly.
//! As in CESQL, an expression that reads a missing attribute is false as a whole.

use std::collections::BTreeMap;

use serde_json::Value;

/// The attributes of an event (context attributes and extensions) as strings.
pub type Attributes = BTreeMap<String, String>;

/// A Trigger's filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every one holds (an empty list: everything passes).
    All(Vec<Filter>),
    /// At least one holds.
    Any(Vec<Filter>),
    /// The inner filter does not hold.
    Not(Box<Filter>),
    /// Each named attribute equals its value.
    Exact(Attributes),
    /// Each named attribute starts with its value.
    Prefix(Attributes),
    /// Each named attribute ends with its value.
    Suffix(Attributes),
    /// A CESQL expression.
    Sql(Expr),
}

impl Filter {
    /// `spec.filter.attributes`: exact match of each.
    pub fn from_attributes(value: &Value) -> Result<Self, String> {
        Ok(Filter::Exact(string_map(value)?))
    }

    /// `spec.filters`: a list of dialect objects, all of which must hold.
    pub fn from_filters(value: &Value) -> Result<Self, String> {
        let list = value.as_array().ok_or("must be a list of filters")?;
        list.iter()
            .map(Self::from_dialect)
            .collect::<Result<_, _>>()
            .map(Filter::All)
    }

    fn from_dialect(value: &Value) -> Result<Self, String> {
        let object = value.as_object().ok_or("each filter must be a mapping")?;
        let [(dialect, body)] = object.iter().collect::<Vec<_>>()[..] else {
            return Err(format!(
                "each filter must have exactly one dialect, found {:?}",
                object.keys().collect::<Vec<_>>()
            ));
        };
        Ok(match dialect.as_str() {
            "exact" => Filter::Exact(string_map(body)?),
            "prefix" => Filter::Prefix(string_map(body)?),
            "suffix" => Filter::Suffix(string_map(body)?),
            "all" => Filter::from_filters(body)?,
            "any" => match Filter::from_filters(body)? {
                Filter::All(filters) => Filter::Any(filters),
                other => other,
            },
            "not" => Filter::Not(Box::new(Filter::from_dialect(body)?)),
            "cesql" => {
                let text = body.as_str().ok_or("cesql must be a string")?;
                Filter::Sql(parse(text).map_err(|error| format!("cesql {text:?}: {error}"))?)
            }
            other => {
                return Err(format!(
                    "dialect {other:?} is not one `tekflux up` applies (exact, prefix, suffix, \
                     all, any, not, cesql)"
                ));
            }
        })
    }

    /// Whether an event with `attributes` passes.
    pub fn matches(&self, attributes: &Attributes) -> bool {
        let each = |map: &Attributes, test: fn(&str, &str) -> bool| {
            map.iter().all(|(name, wanted)| {
                attributes
                    .get(name)
                    .is_some_and(|value| test(value, wanted))
            })
        };
        match self {
            Filter::All(filters) => filters.iter().all(|f| f.matches(attributes)),
            Filter::Any(filters) => filters.iter().any(|f| f.matches(attributes)),
            Filter::Not(filter) => !filter.matches(attributes),
            Filter::Exact(map) => each(map, |value, wanted| value == wanted),
            Filter::Prefix(map) => each(map, |value, wanted| value.starts_with(wanted)),
            Filter::Suffix(map) => each(map, |value, wanted| value.ends_with(wanted)),
            Filter::Sql(expr) => matches!(expr.eval(attributes), Some(Literal::Bool(true))),
        }
    }
}

fn string_map(value: &Value) -> Result<Attributes, String> {
    let object = value
        .as_object()
        .ok_or("must map attribute names to values")?;
    object
        .iter()
        .map(|(name, value)| {
            value
                .as_str()
                .map(|text| (name.clone(), text.to_owned()))
                .ok_or_else(|| format!("the value of {name} must be a string"))
        })
        .collect()
}

/// A CESQL expression of the supported subset.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Literal(Literal),
    /// An attribute's value.
    Attribute(String),
    /// `EXISTS name`.
    Exists(String),
    /// `NOT e`.
    Not(Box<Expr>),
    /// `a AND b`, `a OR b`, `a XOR b`, `a = b`, `a != b`.
    Binary(Box<Expr>, Op, Box<Expr>),
    /// `e [NOT] LIKE 'pattern'`.
    Like(Box<Expr>, String, bool),
    /// `e [NOT] IN (a, b, …)`.
    In(Box<Expr>, Vec<Expr>, bool),
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Bool(bool),
}

impl Literal {
    fn as_text(&self) -> String {
        match self {
            Literal::String(text) => text.clone(),
            Literal::Integer(n) => n.to_string(),
            Literal::Bool(b) => b.to_string(),
        }
    }

    fn truth(&self) -> Option<bool> {
        match self {
            Literal::Bool(b) => Some(*b),
            Literal::String(text) if text.eq_ignore_ascii_case("true") => Some(true),
            Literal::String(text) if text.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `AND`.
    And,
    /// `OR`.
    Or,
    /// `XOR`.
    Xor,
    /// `=`.
    Eq,
    /// `!=` or `<>`.
    NotEq,
}

impl Expr {
    /// The value, or `None` for an evaluation error (a missing attribute, a type mismatch),
    /// which makes the whole filter false, as CESQL says.
    fn eval(&self, attributes: &Attributes) -> Option<Literal> {
        Some(match self {
            Expr::Literal(literal) => literal.clone(),
            Expr::Attribute(name) => Literal::String(attributes.get(name)?.clone()),
            Expr::Exists(name) => Literal::Bool(attributes.contains_key(name)),
            Expr::Not(inner) => Literal::Bool(!inner.eval(attributes)?.truth()?),
            Expr::Binary(left, op, right) => {
                let left = left.eval(attributes)?;
                let right = right.eval(attributes)?;
                Literal::Bool(match op {
                    Op::And => left.truth()? && right.truth()?,
                    Op::Or => left.truth()? || right.truth()?,
                    Op::Xor => left.truth()? != right.truth()?,
                    Op::Eq => equal(&left, &right),
                    Op::NotEq => !equal(&left, &right),
                })
            }
            Expr::Like(value, pattern, negated) => {
                let text = value.eval(attributes)?.as_text();
                let chars: Vec<char> = text.chars().collect();
                let pattern: Vec<char> = pattern.chars().collect();
                Literal::Bool(like(&chars, &pattern) != *negated)
            }
            Expr::In(value, set, negated) => {
                let value = value.eval(attributes)?;
                let mut found = false;
                for candidate in set {
                    found |= equal(&value, &candidate.eval(attributes)?);
                }
                Literal::Bool(found != *negated)
            }
        })
    }
}

/// CESQL compares across types by casting to the left operand's type; for the values a Trigger
/// sees (attributes are strings) comparing the text forms is the same.
fn equal(left: &Literal, right: &Literal) -> bool {
    left.as_text() == right.as_text()
}

/// `LIKE`: `%` any run of characters, `_` one character, `\` escapes the next.
fn like(text: &[char], pattern: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('%', rest)) => (0..=text.len()).any(|skip| like(&text[skip..], rest)),
        Some(('_', rest)) => !text.is_empty() && like(&text[1..], rest),
        Some(('\\', rest)) if !rest.is_empty() => {
            text.first() == rest.first() && like(&text[1..], &rest[1..])
        }
        Some((c, rest)) => text.first() == Some(c) && like(&text[1..], rest),
    }
}

/// Parses a CESQL expression of the supported subset.
pub fn parse(text: &str) -> Result<Expr, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.or()?;
    match parser.tokens.get(parser.at) {
        None => Ok(expr),
        Some(token) => Err(format!("unexpected {token:?} after a complete expression")),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    String(String),
    Integer(i64),
    Symbol(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '\'' | '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err("a string literal is not closed".into()),
                        // `\'` inside a string; other escapes are kept for LIKE to read.
                        Some('\\') if chars.peek() == Some(&c) => {
                            value.push(c);
                            chars.next();
                        }
                        Some(end) if end == c => break,
                        Some(other) => value.push(other),
                    }
                }
                tokens.push(Token::String(value));
            }
            '(' | ')' | ',' | '=' => {
                chars.next();
                tokens.push(Token::Symbol(match c {
                    '(' => "(",
                    ')' => ")",
                    ',' => ",",
                    _ => "=",
                }));
            }
            '!' | '<' => {
                chars.next();
                let next = chars.next();
                match (c, next) {
                    ('!', Some('=')) | ('<', Some('>')) => tokens.push(Token::Symbol("!=")),
                    _ => return Err(format!("operator {c} is not supported (only =, !=, <>)")),
                }
            }
            c if c.is_ascii_digit() => {
                let mut digits = String::new();
                while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(d);
                    chars.next();
                }
                tokens.push(Token::Integer(
                    digits
                        .parse()
                        .map_err(|_| format!("{digits} is too large"))?,
                ));
            }
            c if c.is_ascii_alphabetic() => {
                let mut word = String::new();
                while let Some(&d) = chars.peek().filter(|d| d.is_ascii_alphanumeric()) {
                    word.push(d);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(format!("{other:?} is not supported in the CESQL subset")),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword))
    }

    fn keyword(&mut self, keyword: &str) -> bool {
        let found = self.peek_keyword(keyword);
        if found {
            self.at += 1;
        }
        found
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.tokens.get(self.at), Some(Token::Symbol(s)) if *s == symbol);
        if found {
            self.at += 1;
        }
        found
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        loop {
            let op = if self.keyword("OR") {
                Op::Or
            } else if self.keyword("XOR") {
                Op::Xor
            } else {
                return Ok(left);
            };
            left = Expr::Binary(Box::new(left), op, Box::new(self.and()?));
        }
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.keyword("AND") {
            left = Expr::Binary(Box::new(left), Op::And, Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let left = self.primary()?;
        if self.symbol("=") {
            return Ok(Expr::Binary(
                Box::new(left),
                Op::Eq,
                Box::new(self.primary()?),
            ));
        }
        if self.symbol("!=") {
            return Ok(Expr::Binary(
                Box::new(left),
                Op::NotEq,
                Box::new(self.primary()?),
            ));
        }
        let negated = self.peek_keyword("NOT")
            && matches!(self.tokens.get(self.at + 1), Some(Token::Word(w)) if w.eq_ignore_ascii_case("LIKE") || w.eq_ignore_ascii_case("IN"));
        if negated {
            self.at += 1;
        }
        if self.keyword("LIKE") {
            return match self.tokens.get(self.at) {
                Some(Token::String(pattern)) => {
                    let pattern = pattern.clone();
                    self.at += 1;
                    Ok(Expr::Like(Box::new(left), pattern, negated))
                }
                _ => Err("LIKE must be followed by a string pattern".into()),
            };
        }
        if self.keyword("IN") {
            if !self.symbol("(") {
                return Err("IN must be followed by a parenthesised list".into());
            }
            let mut set = vec![self.primary()?];
            while self.symbol(",") {
                set.push(self.primary()?);
            }
            if !self.symbol(")") {
                return Err("the IN list is not closed".into());
            }
            return Ok(Expr::In(Box::new(left), set, negated));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let token = self
            .tokens
            .get(self.at)
            .cloned()
            .ok_or("the expression ends too early")?;
        self.at += 1;
        match token {
            Token::Symbol("(") => {
                let inner = self.or()?;
                if self.symbol(")") {
                    Ok(inner)
                } else {
                    Err("a parenthesis is not closed".into())
                }
            }
            Token::String(text) => Ok(Expr::Literal(Literal::String(text))),
            Token::Integer(n) => Ok(Expr::Literal(Literal::Integer(n))),
            Token::Word(word) if word.eq_ignore_ascii_case("TRUE") => {
                Ok(Expr::Literal(Literal::Bool(true)))
            }
            Token::Word(word) if word.eq_ignore_ascii_case("FALSE") => {
                Ok(Expr::Literal(Literal::Bool(false)))
            }
            Token::Word(word) if word.eq_ignore_ascii_case("EXISTS") => {
                match self.tokens.get(self.at).cloned() {
                    Some(Token::Word(name)) => {
                        self.at += 1;
                        Ok(Expr::Exists(name.to_ascii_lowercase()))
                    }
                    _ => Err("EXISTS must be followed by an attribute name".into()),
                }
            }
            Token::Word(word) if self.tokens.get(self.at) == Some(&Token::Symbol("(")) => Err(
                format!("function {word}() is not in the CESQL subset `tekflux up` applies"),
            ),
            Token::Word(word) => Ok(Expr::Attribute(word.to_ascii_lowercase())),
            Token::Symbol(symbol) => Err(format!("unexpected {symbol}")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    fn attributes(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sql(text: &str, pairs: &[(&str, &str)]) -> bool {
        Filter::Sql(parse(text).unwrap()).matches(&attributes(pairs))
    }

    #[test]
    fn the_shipped_namespace_filter() {
        let filter = "source LIKE '%/namespaces/cicd/%' OR source LIKE '%/namespaces/team-a/%'";
        let source = |s: &str| sql(filter, &[("source", s)]);
        assert!(source("/apis/tekton.dev/v1/namespaces/cicd/pipelineruns/x"));
        assert!(source("/apis/tekton.dev/v1/namespaces/team-a/taskruns/y"));
        assert!(!source("/apis/tekton.dev/v1/namespaces/other/taskruns/y"));
        assert!(!source("/apis/tekton.dev/v1/namespaces/cicdx/taskruns/y"));
        assert!(!sql(filter, &[]), "a missing attribute is false");
    }

    #[test]
    fn operators_of_the_subset() {
        let event = [("type", "a.b"), ("source", "s"), ("n", "3")];
        assert!(sql("type = 'a.b' AND source <> 'x'", &event));
        assert!(sql("NOT (type = 'x') AND EXISTS source", &event));
        assert!(!sql("EXISTS subject", &event));
        assert!(sql("type IN ('x', 'a.b')", &event));
        assert!(sql("type NOT IN ('x')", &event));
        assert!(sql("type NOT LIKE 'x%'", &event));
        assert!(sql("type LIKE 'a_b'", &event));
        assert!(!sql("type LIKE 'a\\_b'", &event));
        assert!(sql("n = 3", &event));
        assert!(sql("TRUE XOR FALSE", &event));
        assert!(sql("type = 'x' OR TRUE", &event));
        assert!(
            !sql("subject = 'x' OR TRUE", &event),
            "errors make it false"
        );
    }

    #[test]
    fn outside_the_subset_is_refused() {
        for text in [
            "UPPER(type) = 'A'",
            "n + 1 = 2",
            "n > 1",
            "type = ",
            "(type = 'a'",
            "type = 'a",
            "type LIKE source",
            "type = 'a' type",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn dialects() {
        let filters = serde_json::json!([
            {"exact": {"type": "t"}},
            {"any": [{"prefix": {"source": "/a"}}, {"suffix": {"source": "/z"}}]},
            {"not": {"exact": {"subject": "s"}}},
        ]);
        let filter = Filter::from_filters(&filters).unwrap();
        assert!(filter.matches(&attributes(&[("type", "t"), ("source", "/a/b")])));
        assert!(filter.matches(&attributes(&[("type", "t"), ("source", "/b/z")])));
        assert!(!filter.matches(&attributes(&[("type", "t"), ("source", "/b/y")])));
        assert!(!filter.matches(&attributes(&[
            ("type", "t"),
            ("source", "/a"),
            ("subject", "s")
        ])));
        assert!(
            Filter::from_filters(&serde_json::json!([{"exact": {"a": "b"}, "prefix": {}}]))
                .is_err()
        );
    }
}
