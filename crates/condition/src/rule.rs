//! One conditional rule, checked and converted when it is made.

use std::cmp::Ordering;
use std::fmt;

use regex_automata::meta;
use serde_json::Value;

use crate::path::{JsonPath, PathError};
use crate::value::{self, Expected};

/// What a rule reads from the message (selection.md, "Conditional rules").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The value of the last header with this name (names compare case-sensitively).
    HeaderValue(String),
    /// The JSON value at this path of the payload parsed as JSON.
    PayloadField(JsonPath),
    /// Bytes of payload, key and every header name and value.
    MessageSize,
    /// `now_ms − timestamp_ms`.
    MessageAge,
}

impl Subject {
    /// A `PayloadField` subject, parsing the path.
    pub fn payload_field(path: &str) -> Result<Subject, PathError> {
        JsonPath::parse(path).map(Subject::PayloadField)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::HeaderValue(name) => write!(f, "header {name:?}"),
            Subject::PayloadField(path) => write!(f, "payload field {path}"),
            Subject::MessageSize => f.write_str("message size"),
            Subject::MessageAge => f.write_str("message age"),
        }
    }
}

/// How a rule compares its subject with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Operator {
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    GreaterThanOrEqual,
    LessThanOrEqual,
    Contains,
    StartsWith,
    EndsWith,
    /// The regex value finds a match in the subject.
    Matches,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a rule cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The payload field path does not parse.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A `HeaderValue` rule without a header name.
    #[error("a HeaderValue rule needs a header name in `field_path`")]
    EmptyHeaderName,
    /// `Matches` with a value that is not a string.
    #[error("the Matches operator needs a regex string as its value, not {0}")]
    RegexNotString(String),
    /// `Matches` with a regex that does not compile.
    #[error("invalid regex {pattern:?}: {message}")]
    Regex {
        /// The regex as written.
        pattern: String,
        /// What the regex compiler said.
        message: String,
    },
}

/// A conditional rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    subject: Subject,
    operator: Operator,
    value: Value,
    negate: bool,
    expected: Expected,
    regex: Option<meta::Regex>,
}

impl Rule {
    /// Checks and compiles a rule.
    pub fn new(
        subject: Subject,
        operator: Operator,
        value: Value,
        negate: bool,
    ) -> Result<Rule, RuleError> {
        if matches!(&subject, Subject::HeaderValue(name) if name.is_empty()) {
            return Err(RuleError::EmptyHeaderName);
        }
        let regex = match (operator, &value) {
            (Operator::Matches, Value::String(pattern)) => {
                Some(meta::Regex::new(pattern).map_err(|e| {
                    RuleError::Regex {
                        pattern: pattern.clone(),
                        message: match e.syntax_error() {
                            Some(syntax) => syntax
                                .to_string()
                                .lines()
                                .rev()
                                .find_map(|l| l.strip_prefix("error: "))
                                .unwrap_or("syntax error")
                                .to_owned(),
                            None => e.to_string(),
                        },
                    }
                })?)
            }
            (Operator::Matches, other) => return Err(RuleError::RegexNotString(other.to_string())),
            _ => None,
        };
        Ok(Rule {
            expected: Expected::new(&value),
            subject,
            operator,
            value,
            negate,
            regex,
        })
    }

    /// What the rule reads.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// How it compares.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The value compared with.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Whether the rule holds when the comparison is false.
    pub fn negate(&self) -> bool {
        self.negate
    }

    /// Whether the rule holds for this subject (`None`: the message has none).
    pub(crate) fn holds(&self, subject: Option<value::Subject<'_>>) -> bool {
        self.compare(subject) != self.negate
    }

    /// The comparison before `negate`; false without a subject.
    pub(crate) fn compare(&self, subject: Option<value::Subject<'_>>) -> bool {
        let Some(s) = subject else {
            return false;
        };
        let v = &self.expected;
        match self.operator {
            Operator::Equals => s.equals(v),
            Operator::NotEquals => !s.equals(v),
            Operator::GreaterThan => s.order(v) == Some(Ordering::Greater),
            Operator::LessThan => s.order(v) == Some(Ordering::Less),
            Operator::GreaterThanOrEqual => s.order(v).is_some_and(Ordering::is_ge),
            Operator::LessThanOrEqual => s.order(v).is_some_and(Ordering::is_le),
            Operator::Contains => s.contains(v),
            Operator::StartsWith => match (s.as_str(), v) {
                (Some(s), Expected::Str(w)) => s.starts_with(w.as_str()),
                _ => false,
            },
            Operator::EndsWith => match (s.as_str(), v) {
                (Some(s), Expected::Str(w)) => s.ends_with(w.as_str()),
                _ => false,
            },
            Operator::Matches => match (s.as_str(), &self.regex) {
                (Some(s), Some(re)) => re.is_match(s),
                _ => false,
            },
        }
    }

    /// Ways this rule surprises: comparisons that can never be true, or are true
    /// for every message that has the subject.
    pub fn warnings(&self) -> Vec<String> {
        use Operator::*;
        let mut warnings = Vec::new();
        let numeric_subject = matches!(self.subject, Subject::MessageSize | Subject::MessageAge);
        let value_kind = match &self.value {
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        let never = |why: String| format!("can never be true: {why}");
        match self.operator {
            StartsWith | EndsWith | Matches if numeric_subject => warnings.push(never(format!(
                "{} is a number and {} compares strings",
                self.subject, self.operator
            ))),
            Contains if numeric_subject => warnings.push(never(format!(
                "{} is a number, and Contains needs a string or an array",
                self.subject
            ))),
            StartsWith | EndsWith if !self.value.is_string() => warnings.push(never(format!(
                "{} needs a string value, and the value is {value_kind}",
                self.operator
            ))),
            GreaterThan | LessThan | GreaterThanOrEqual | LessThanOrEqual
                if !(self.value.is_number() || self.value.is_string()) =>
            {
                warnings.push(never(format!(
                    "{} compares numbers or strings, and the value is {value_kind}",
                    self.operator
                )))
            }
            GreaterThan | LessThan | GreaterThanOrEqual | LessThanOrEqual | Equals
                if numeric_subject && !self.value.is_number() =>
            {
                warnings.push(never(format!(
                    "{} is a number and the value is {value_kind}",
                    self.subject
                )))
            }
            NotEquals if numeric_subject && !self.value.is_number() => warnings.push(format!(
                "is true for every message: {} is a number and the value is {value_kind}",
                self.subject
            )),
            Contains if matches!(self.subject, Subject::HeaderValue(_)) && !self.value.is_string() => {
                warnings.push(never(format!(
                    "a header is a string, and Contains on a string needs a string value, not {value_kind}"
                )))
            }
            Equals | NotEquals
                if matches!(self.subject, Subject::HeaderValue(_))
                    && (self.value.is_null() || self.value.is_array() || self.value.is_object()) =>
            {
                warnings.push(format!(
                    "a header is a string and never equals {value_kind}, so this rule is {}",
                    if self.operator == Equals { "never true" } else { "true whenever the header is present" }
                ))
            }
            _ => {}
        }
        if self.negate && self.operator == NotEquals {
            warnings.push(
                "negated NotEquals also holds when the subject is absent; Equals may be meant"
                    .to_owned(),
            );
        }
        warnings
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negate {
            f.write_str("not ")?;
        }
        write!(f, "{} {} {}", self.subject, self.operator, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rejects_what_cannot_be_evaluated() {
        let err = Rule::new(
            Subject::HeaderValue(String::new()),
            Operator::Equals,
            json!(1),
            false,
        );
        assert_eq!(err.unwrap_err(), RuleError::EmptyHeaderName);
        let err = Rule::new(Subject::MessageSize, Operator::Matches, json!(1), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the Matches operator needs a regex string as its value, not 1"
        );
        let err =
            Rule::new(Subject::MessageSize, Operator::Matches, json!("a("), false).unwrap_err();
        assert_eq!(err.to_string(), "invalid regex \"a(\": unclosed group");
    }

    #[test]
    fn warns_about_rules_that_cannot_be_true() {
        let rule = |s, op, v| Rule::new(s, op, v, false).unwrap().warnings();
        assert!(rule(Subject::MessageSize, Operator::StartsWith, json!("a"))[0].contains("never"));
        assert!(rule(Subject::MessageAge, Operator::GreaterThan, json!("1"))[0].contains("never"));
        assert!(
            rule(Subject::MessageAge, Operator::NotEquals, json!("1"))[0].contains("every message")
        );
        assert!(rule(
            Subject::HeaderValue("h".into()),
            Operator::LessThan,
            json!(true)
        )[0]
        .contains("never"));
        assert!(rule(
            Subject::HeaderValue("h".into()),
            Operator::Equals,
            json!("x")
        )
        .is_empty());
        assert!(rule(Subject::MessageSize, Operator::GreaterThan, json!(10)).is_empty());
    }

    #[test]
    fn displays_subject_operator_and_value() {
        let rule = Rule::new(
            Subject::payload_field("unit").unwrap(),
            Operator::Equals,
            json!("celsius"),
            true,
        );
        assert_eq!(
            rule.unwrap().to_string(),
            "not payload field $.unit Equals \"celsius\""
        );
    }
}
