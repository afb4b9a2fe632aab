//! Values compared by rules: numbers compared as numbers, JSON equality, and the
//! header-string conversions of selection.md.

use std::cmp::Ordering;

use serde_json::Value;

/// A JSON number, kept exact: integers compare as integers, and an integer and a
/// float compare by their mathematical values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    pub(crate) fn from_json(n: &serde_json::Number) -> Num {
        if let Some(i) = n.as_i64() {
            Num::Int(i.into())
        } else if let Some(u) = n.as_u64() {
            Num::Int(u.into())
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    /// Reads a header string as a JSON number (`12`, `-3.5`, `1e3`; no spaces, no
    /// `+`, no `inf`).
    pub(crate) fn parse_header(text: &str) -> Option<Num> {
        let first = text.bytes().next()?;
        if !(first == b'-' || first.is_ascii_digit()) || !text.bytes().last()?.is_ascii_digit() {
            return None;
        }
        serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .map(|n| Num::from_json(&n))
    }

    pub(crate) fn cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
            (Num::Int(a), Num::Float(b)) => int_float_cmp(a, b),
            (Num::Float(a), Num::Int(b)) => int_float_cmp(b, a).map(Ordering::reverse),
        }
    }

    pub(crate) fn eq(self, other: Num) -> bool {
        self.cmp(other) == Some(Ordering::Equal)
    }
}

/// Compares an integer with a float exactly (no rounding of the integer).
fn int_float_cmp(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // Every f64 at or beyond ±2^127 is outside i128's range.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f >= LIMIT {
        return Some(Ordering::Less);
    }
    if f < -LIMIT {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    match i.cmp(&(whole as i128)) {
        Ordering::Equal if f > whole => Some(Ordering::Less),
        Ordering::Equal if f < whole => Some(Ordering::Greater),
        other => Some(other),
    }
}

/// JSON equality in which numbers compare as numbers, at every depth.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Num::from_json(x).eq(Num::from_json(y)),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// A rule's value, converted once when the rule is made.
#[derive(Debug, Clone)]
pub(crate) enum Expected {
    Null,
    Bool(bool),
    Num(Num),
    Str(String),
    /// An array or object.
    Compound(Value),
}

impl Expected {
    pub(crate) fn new(value: &Value) -> Expected {
        match value {
            Value::Null => Expected::Null,
            Value::Bool(b) => Expected::Bool(*b),
            Value::Number(n) => Expected::Num(Num::from_json(n)),
            Value::String(s) => Expected::Str(s.clone()),
            compound => Expected::Compound(compound.clone()),
        }
    }
}

/// What a rule compares: a header string, a computed number, or a JSON value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    Header(&'a str),
    Num(Num),
    Json(JsonRef<'a>),
}

/// A borrowed JSON value read from a payload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JsonRef<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(&'a str),
    Compound(&'a Value),
}

impl JsonRef<'_> {
    fn eq_expected(self, v: &Expected) -> bool {
        match (self, v) {
            (JsonRef::Null, Expected::Null) => true,
            (JsonRef::Bool(a), Expected::Bool(b)) => a == *b,
            (JsonRef::Num(a), Expected::Num(b)) => a.eq(*b),
            (JsonRef::Str(a), Expected::Str(b)) => a == b,
            (JsonRef::Compound(a), Expected::Compound(b)) => json_eq(a, b),
            _ => false,
        }
    }
}

impl<'a> Subject<'a> {
    pub(crate) fn equals(self, v: &Expected) -> bool {
        match self {
            Subject::Header(h) => match v {
                Expected::Str(s) => h == s,
                Expected::Num(n) => Num::parse_header(h).is_some_and(|m| m.eq(*n)),
                Expected::Bool(true) => h == "true",
                Expected::Bool(false) => h == "false",
                _ => false,
            },
            Subject::Num(n) => matches!(v, Expected::Num(m) if n.eq(*m)),
            Subject::Json(j) => j.eq_expected(v),
        }
    }

    /// The ordering of subject and value, when both are numbers or both strings.
    pub(crate) fn order(self, v: &Expected) -> Option<Ordering> {
        match (self.as_str(), v) {
            (Some(s), Expected::Str(w)) => Some(s.as_bytes().cmp(w.as_bytes())),
            (_, &Expected::Num(w)) => self.as_num()?.cmp(w),
            _ => None,
        }
    }

    pub(crate) fn contains(self, v: &Expected) -> bool {
        match (self, v) {
            (Subject::Json(JsonRef::Compound(Value::Array(items))), v) => items
                .iter()
                .any(|item| JsonRef::from_value(item).eq_expected(v)),
            (s, Expected::Str(w)) => s.as_str().is_some_and(|s| s.contains(w.as_str())),
            _ => false,
        }
    }

    pub(crate) fn as_str(self) -> Option<&'a str> {
        match self {
            Subject::Header(h) => Some(h),
            Subject::Json(JsonRef::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn as_num(self) -> Option<Num> {
        match self {
            Subject::Header(h) => Num::parse_header(h),
            Subject::Num(n) | Subject::Json(JsonRef::Num(n)) => Some(n),
            _ => None,
        }
    }
}

impl<'a> JsonRef<'a> {
    pub(crate) fn from_value(value: &'a Value) -> JsonRef<'a> {
        match value {
            Value::Null => JsonRef::Null,
            Value::Bool(b) => JsonRef::Bool(*b),
            Value::Number(n) => JsonRef::Num(Num::from_json(n)),
            Value::String(s) => JsonRef::Str(s),
            compound => JsonRef::Compound(compound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_exactly() {
        assert!(Num::Int(1).eq(Num::Float(1.0)));
        assert!(!Num::Int(9_007_199_254_740_993).eq(Num::Float(9_007_199_254_740_992.0)));
        assert_eq!(Num::Int(2).cmp(Num::Float(1.5)), Some(Ordering::Greater));
        assert_eq!(Num::Int(-2).cmp(Num::Float(-1.5)), Some(Ordering::Less));
        assert_eq!(Num::Float(-1.5).cmp(Num::Int(-2)), Some(Ordering::Greater));
        assert_eq!(
            Num::Int(i128::from(u64::MAX)).cmp(Num::Float(1e300)),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn header_numbers_use_json_syntax() {
        assert_eq!(Num::parse_header("42"), Some(Num::Int(42)));
        assert_eq!(Num::parse_header("-1.5e1"), Some(Num::Float(-15.0)));
        for text in [
            "", " 1", "1 ", "+1", "1.", ".5", "inf", "NaN", "0x10", "01", "1e400",
        ] {
            assert_eq!(Num::parse_header(text), None, "{text:?}");
        }
    }

    #[test]
    fn json_equality_treats_numbers_as_numbers_at_every_depth() {
        let a: Value = serde_json::from_str(r#"{"x": [1, {"y": 2.0}], "z": "s"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"z": "s", "x": [1.0, {"y": 2}]}"#).unwrap();
        assert!(json_eq(&a, &b));
        let c: Value = serde_json::from_str(r#"{"z": "S", "x": [1, {"y": 2}]}"#).unwrap();
        assert!(!json_eq(&a, &c));
    }
}
