//! Kubernetes label selectors (`k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`,
//! comma-joined, all must hold), parsed with errors that name the column, matched against a
//! pod's labels, and written back in canonical form for the API's `labelSelector`.

use std::{collections::BTreeMap, fmt};

/// A selector: every requirement must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement on one label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The label's key.
    pub key: String,
    /// What its value must be.
    pub op: Op,
}

/// What a requirement asks of its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `k=v` or `k==v`.
    Equals(String),
    /// `k!=v`: the label is absent or has another value.
    NotEquals(String),
    /// `k in (a,b)`.
    In(Vec<String>),
    /// `k notin (a,b)`: the label is absent or has none of the values.
    NotIn(Vec<String>),
    /// `k`: the label exists.
    Exists,
    /// `!k`: the label does not exist.
    DoesNotExist,
}

/// A selector that does not parse; `column` counts characters from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("label selector {selector:?}, column {column}: {problem}")]
pub struct SelectorError {
    /// The selector given.
    pub selector: String,
    /// Where the problem is (1-based, in characters).
    pub column: usize,
    /// What is wrong.
    pub problem: String,
}

/// The longest label name (after any prefix) and value.
const MAX_NAME: usize = 63;
/// The longest key prefix (a DNS subdomain).
const MAX_PREFIX: usize = 253;

struct Parser<'a> {
    text: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl Selector {
    /// Parses a selector. An empty one (or only spaces) is an error: it would match every pod.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut p = Parser {
            text,
            chars: text.chars().collect(),
            pos: 0,
        };
        let mut requirements = Vec::new();
        loop {
            p.skip_spaces();
            if p.at_end() {
                let problem = if requirements.is_empty() {
                    "an empty selector matches every pod: give at least one requirement, e.g. app.kubernetes.io/name=ollama"
                } else {
                    "a requirement is missing after the comma"
                };
                return Err(p.err(problem));
            }
            requirements.push(p.requirement()?);
            p.skip_spaces();
            match p.peek() {
                None => break,
                Some(',') => p.pos += 1,
                Some(c) => return Err(p.err(format!("expected `,` or the end, found {c:?}"))),
            }
        }
        Ok(Self { requirements })
    }

    /// The requirements, in the order given.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = labels.get(&r.key);
            match &r.op {
                Op::Equals(want) => v == Some(want),
                Op::NotEquals(not) => v != Some(not),
                Op::In(set) => v.is_some_and(|v| set.contains(v)),
                Op::NotIn(set) => !v.is_some_and(|v| set.contains(v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
            }
        })
    }
}

impl fmt::Display for Selector {
    /// The canonical form, as the API server accepts it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let k = &r.key;
            match &r.op {
                Op::Equals(v) => write!(f, "{k}={v}")?,
                Op::NotEquals(v) => write!(f, "{k}!={v}")?,
                Op::In(set) => write!(f, "{k} in ({})", set.join(","))?,
                Op::NotIn(set) => write!(f, "{k} notin ({})", set.join(","))?,
                Op::Exists => write!(f, "{k}")?,
                Op::DoesNotExist => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

impl Parser<'_> {
    fn err(&self, problem: impl Into<String>) -> SelectorError {
        self.err_at(self.pos, problem)
    }

    fn err_at(&self, pos: usize, problem: impl Into<String>) -> SelectorError {
        SelectorError {
            selector: self.text.to_owned(),
            column: pos + 1,
            problem: problem.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(|c| c == ' ' || c == '\t') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        let ok = self
            .chars
            .get(self.pos..self.pos + n)
            .is_some_and(|w| w.iter().copied().eq(s.chars()));
        if ok {
            self.pos += n;
        }
        ok
    }

    /// A run of characters that may be in a key or a value; its start.
    fn word(&mut self) -> (usize, String) {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        {
            self.pos += 1;
        }
        (start, self.chars[start..self.pos].iter().collect())
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.eat("!") {
            self.skip_spaces();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        let key = self.key()?;
        self.skip_spaces();
        let op = if self.eat("!=") {
            Op::NotEquals(self.value()?)
        } else if self.eat("==") || self.eat("=") {
            Op::Equals(self.value()?)
        } else if self.keyword("notin") {
            Op::NotIn(self.set()?)
        } else if self.keyword("in") {
            Op::In(self.set()?)
        } else {
            match self.peek() {
                None | Some(',') => Op::Exists,
                Some(c) => {
                    return Err(self.err(format!(
                        "expected `=`, `==`, `!=`, `in`, `notin`, `,` or the end after key {key:?}, found {c:?}"
                    )));
                }
            }
        };
        Ok(Requirement { key, op })
    }

    /// `in`/`notin` followed by a space or `(`.
    fn keyword(&mut self, word: &str) -> bool {
        let start = self.pos;
        if self.eat(word) && matches!(self.peek(), Some(' ' | '\t' | '(')) {
            return true;
        }
        self.pos = start;
        false
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        let (start, key) = self.word();
        if key.is_empty() {
            return Err(match self.peek() {
                Some(c) => self.err(format!("expected a label key, found {c:?}")),
                None => self.err("expected a label key, found the end"),
            });
        }
        let (prefix, name) = match key.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, key.as_str()),
        };
        if let Some(p) = prefix
            && (p.is_empty() || p.len() > MAX_PREFIX || !valid_prefix(p))
        {
            return Err(self.err_at(
                start,
                format!("key prefix {p:?} is not a DNS subdomain (lower-case letters, digits, `-`, `.`, at most {MAX_PREFIX} characters)"),
            ));
        }
        let name_start = start + prefix.map_or(0, |p| p.chars().count() + 1);
        if !valid_name(name) {
            return Err(self.err_at(
                name_start,
                format!("key name {name:?} is not a label name (1 to {MAX_NAME} letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit)"),
            ));
        }
        Ok(key)
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        self.skip_spaces();
        let (start, v) = self.word();
        if !v.is_empty() && !valid_name(&v) {
            return Err(self.err_at(
                start,
                format!("value {v:?} is not a label value (at most {MAX_NAME} letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit)"),
            ));
        }
        Ok(v)
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        self.skip_spaces();
        if !self.eat("(") {
            return Err(self.err("expected `(` to start the set of values"));
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            self.skip_spaces();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    break;
                }
                Some(c) => {
                    return Err(self.err(format!("expected `,` or `)` in the set, found {c:?}")));
                }
                None => return Err(self.err("the set of values has no closing `)`")),
            }
        }
        values.sort();
        values.dedup();
        Ok(values)
    }
}

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn valid_prefix(s: &str) -> bool {
    s.split('.').all(|part| {
        let b = part.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    })
}

#[cfg(test)]
mod tests;
