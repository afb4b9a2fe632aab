//! What a dead letter carries (execution.md, "Dead letters"): its headers'
//! names, and its cause read back from them.

use std::fmt;

use rustmq_etl_core::{ErrorKind, Headers, Message};

/// The dead-letter headers (execution.md, "Dead letters").
pub mod headers {
    /// The topic the message had as it entered the failed pipeline.
    pub const ORIGINAL_TOPIC: &str = "etl-dlq-original-topic";
    /// The failed pipeline's `pipeline_id`.
    pub const PIPELINE: &str = "etl-dlq-pipeline";
    /// The failed stage's `priority`.
    pub const STAGE: &str = "etl-dlq-stage";
    /// The failed module's `module_id`.
    pub const MODULE: &str = "etl-dlq-module";
    /// The error's kind.
    pub const ERROR_KIND: &str = "etl-dlq-error-kind";
    /// The error's text, for people.
    pub const ERROR: &str = "etl-dlq-error";
    /// How many times the module was called for the message.
    pub const ATTEMPTS: &str = "etl-dlq-attempts";
}

/// Why a message became a dead letter, read back from the `etl-dlq-*`
/// headers the engine appended to it: by the program that got the dead letter
/// from [`Disposition::DeadLettered`](crate::Disposition::DeadLettered), or by
/// one that consumes the dead-letter topic later.
///
/// The engine appends its headers after those the message already had, the
/// original topic first ([`DeadLetterCause::append_to`]); the cause is read
/// from the last `etl-dlq-original-topic` on, so headers of the same names
/// the message carried before (a dead letter sent through the engine again,
/// or a module's own) are not taken for its cause.
///
/// Reading checks the headers' form, not who wrote them: nothing reserves
/// the `etl-dlq-*` names or the dead-letter topic, so a module may deliver a
/// message that looks like a dead letter (its topic set to the dead-letter
/// topic, the headers set), and a dead letter sent through the engine again
/// that now succeeds is delivered with its old headers. A consumer of the
/// topic can trust a cause as far as it trusts what the topic's producers
/// send there; [`Disposition::DeadLettered`](crate::Disposition::DeadLettered)
/// is the engine's own word.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterCause {
    /// The topic the message had as it entered the failed pipeline.
    pub original_topic: String,
    /// The failed pipeline's id; none when the host failed between pipelines.
    pub pipeline: Option<String>,
    /// The failed stage's priority; none when the host failed outside a stage.
    pub stage: Option<u32>,
    /// The failed module's id; none when the host failed between modules.
    pub module: Option<String>,
    /// The failure's kind.
    pub kind: ErrorKind,
    /// The failure, for people.
    pub error: String,
    /// How many times the module was called for the message; none with no
    /// module.
    pub attempts: Option<u32>,
}

/// Headers that do not make a dead letter's cause: the header named is
/// missing or its value is not what the engine writes there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotADeadLetter {
    /// No `etl-dlq-original-topic`, or after the last one no header the
    /// engine always writes (the kind, the error).
    #[error("no `{0}` header: not a dead letter the engine made")]
    Missing(&'static str),
    /// A header whose value does not read as the engine writes it.
    #[error("the `{header}` header's value {value:?} is not {expected}")]
    Invalid {
        /// The header.
        header: &'static str,
        /// Its value.
        value: String,
        /// What the engine writes there.
        expected: &'static str,
    },
}

impl DeadLetterCause {
    /// A failure of `module` (called `attempts` times for the message) in
    /// stage `stage` of `pipeline`, of a message that entered it on
    /// `original_topic`.
    pub(crate) fn module_failed(
        original_topic: String,
        pipeline: &str,
        stage: u32,
        module: &str,
        kind: ErrorKind,
        error: &str,
        attempts: u32,
    ) -> Self {
        DeadLetterCause {
            original_topic,
            pipeline: Some(pipeline.to_owned()),
            stage: Some(stage),
            module: Some(module.to_owned()),
            kind,
            error: error.to_owned(),
            attempts: Some(attempts),
        }
    }

    /// A failure of the host itself, at the places it was (none between
    /// pipelines, no module between modules).
    pub(crate) fn host_failed(
        original_topic: String,
        pipeline: Option<&str>,
        stage: Option<u32>,
        error: &str,
    ) -> Self {
        DeadLetterCause {
            original_topic,
            pipeline: pipeline.map(str::to_owned),
            stage,
            module: None,
            kind: ErrorKind::Trap,
            error: error.to_owned(),
            attempts: None,
        }
    }

    /// Appends the cause to a dead letter's `headers`, as execution.md
    /// lists them, the original topic first; the parts it lacks are left
    /// out. [`DeadLetterCause::from_headers`] reads them back.
    pub fn append_to(&self, headers: &mut Headers) {
        headers.push(headers::ORIGINAL_TOPIC, self.original_topic.as_str());
        if let Some(pipeline) = &self.pipeline {
            headers.push(headers::PIPELINE, pipeline.as_str());
        }
        if let Some(stage) = self.stage {
            headers.push(headers::STAGE, stage.to_string());
        }
        if let Some(module) = &self.module {
            headers.push(headers::MODULE, module.as_str());
        }
        headers.push(headers::ERROR_KIND, self.kind.as_str());
        headers.push(headers::ERROR, self.error.as_str());
        if let Some(attempts) = self.attempts {
            headers.push(headers::ATTEMPTS, attempts.to_string());
        }
    }

    /// The cause of `message`, a dead letter the engine made.
    pub fn of(message: &Message) -> Result<Self, NotADeadLetter> {
        Self::from_headers(&message.headers)
    }

    /// The message as it entered the failed pipeline (execution.md's
    /// *entry*), out of `letter`: its topic set back to the original, the
    /// headers the engine appended taken off. Sent through the engine again,
    /// it runs every pipeline from the first (docs/execution.md, "Dead
    /// letters").
    pub fn entry(letter: &Message) -> Result<Message, NotADeadLetter> {
        let cause = Self::of(letter)?;
        let mut entry = letter.clone();
        entry.topic = cause.original_topic;
        entry.headers.truncate(engine_s_own(&letter.headers)?);
        Ok(entry)
    }

    /// The cause in a dead letter's headers, `all`.
    pub fn from_headers(all: &Headers) -> Result<Self, NotADeadLetter> {
        let start = engine_s_own(all)?;
        // The engine's own, in the order it wrote them: the last of a name wins.
        let get = |wanted: &str| {
            all.iter()
                .skip(start)
                .rfind(|(name, _)| *name == wanted)
                .map(|(_, value)| value)
        };
        let required = |name: &'static str| get(name).ok_or(NotADeadLetter::Missing(name));
        let number = |name: &'static str| {
            get(name)
                .map(|value| {
                    value.parse().map_err(|_| NotADeadLetter::Invalid {
                        header: name,
                        value: value.to_owned(),
                        expected: "a whole number",
                    })
                })
                .transpose()
        };
        let kind = required(headers::ERROR_KIND)?;
        Ok(DeadLetterCause {
            original_topic: required(headers::ORIGINAL_TOPIC)?.to_owned(),
            pipeline: get(headers::PIPELINE).map(str::to_owned),
            stage: number(headers::STAGE)?,
            module: get(headers::MODULE).map(str::to_owned),
            kind: kind.parse().map_err(|_| NotADeadLetter::Invalid {
                header: headers::ERROR_KIND,
                value: kind.to_owned(),
                expected: "an error kind",
            })?,
            error: required(headers::ERROR)?.to_owned(),
            attempts: number(headers::ATTEMPTS)?,
        })
    }
}

/// Where the headers the engine appended begin: at the last
/// `etl-dlq-original-topic`.
fn engine_s_own(all: &Headers) -> Result<usize, NotADeadLetter> {
    all.iter()
        .rposition(|(name, _)| name == headers::ORIGINAL_TOPIC)
        .ok_or(NotADeadLetter::Missing(headers::ORIGINAL_TOPIC))
}

impl fmt::Display for DeadLetterCause {
    /// `pipeline "p", stage 10, module "m" failed (trap, 3 attempts): …`, the
    /// parts the cause has.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut place = Vec::new();
        if let Some(pipeline) = &self.pipeline {
            place.push(format!("pipeline {pipeline:?}"));
        }
        if let Some(stage) = self.stage {
            place.push(format!("stage {stage}"));
        }
        if let Some(module) = &self.module {
            place.push(format!("module {module:?}"));
        }
        if place.is_empty() {
            // (A host failure's text says so.)
            return write!(f, "{}: {}", self.kind, self.error);
        }
        write!(f, "{} failed ({}", place.join(", "), self.kind)?;
        match self.attempts {
            Some(1) => f.write_str(", 1 attempt")?,
            Some(n) => write!(f, ", {n} attempts")?,
            None => {}
        }
        write!(f, "): {}", self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(extra: &[(&str, &str)]) -> Headers {
        let mut headers: Headers = [("trace-id", "7")].into_iter().collect();
        for (name, value) in extra {
            headers.push(*name, *value);
        }
        headers
    }

    const FULL: [(&str, &str); 7] = [
        (headers::ORIGINAL_TOPIC, "orders"),
        (headers::PIPELINE, "p"),
        (headers::STAGE, "10"),
        (headers::MODULE, "m"),
        (headers::ERROR_KIND, "guest_error"),
        (headers::ERROR, "no price"),
        (headers::ATTEMPTS, "3"),
    ];

    #[test]
    fn a_cause_reads_back_whole() {
        let cause = DeadLetterCause::from_headers(&letter(&FULL)).unwrap();
        let written = DeadLetterCause::module_failed(
            "orders".into(),
            "p",
            10,
            "m",
            ErrorKind::GuestError,
            "no price",
            3,
        );
        assert_eq!(cause, written);
        let mut appended = letter(&[]);
        written.append_to(&mut appended);
        assert_eq!(
            appended,
            letter(&FULL),
            "written as execution.md lists them"
        );
        assert_eq!(
            cause.to_string(),
            "pipeline \"p\", stage 10, module \"m\" failed (guest_error, 3 attempts): no price"
        );
    }

    #[test]
    fn headers_before_the_engine_s_own_are_not_its_cause() {
        // A dead letter sent through again, failing where the host did: the
        // first letter's module and attempts are not this one's.
        let mut headers = letter(&FULL);
        for (name, value) in [
            (headers::ORIGINAL_TOPIC, "etl.dead-letter"),
            (headers::ERROR_KIND, "trap"),
            (headers::ERROR, "the host failed"),
        ] {
            headers.push(name, value);
        }
        let cause = DeadLetterCause::from_headers(&headers).unwrap();
        let written =
            DeadLetterCause::host_failed("etl.dead-letter".into(), None, None, "the host failed");
        assert_eq!(cause, written);
        let mut appended = letter(&FULL);
        written.append_to(&mut appended);
        assert_eq!(appended, headers);
        assert_eq!(
            (&cause.pipeline, cause.stage, &cause.module, cause.attempts),
            (&None, None, &None, None)
        );
        assert_eq!(cause.to_string(), "trap: the host failed");
    }

    #[test]
    fn headers_that_are_no_dead_letter_s_say_what_is_wrong() {
        assert_eq!(
            DeadLetterCause::from_headers(&letter(&[])),
            Err(NotADeadLetter::Missing(headers::ORIGINAL_TOPIC))
        );
        let without = |skipped: &str| {
            let kept: Vec<_> = FULL.into_iter().filter(|(n, _)| *n != skipped).collect();
            DeadLetterCause::from_headers(&letter(&kept))
        };
        assert_eq!(
            without(headers::ERROR_KIND),
            Err(NotADeadLetter::Missing(headers::ERROR_KIND))
        );
        assert_eq!(
            without(headers::ERROR),
            Err(NotADeadLetter::Missing(headers::ERROR))
        );
        let with = |name: &str, value: &str| {
            let mut headers = letter(&FULL);
            headers.push(name, value);
            DeadLetterCause::from_headers(&headers)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            with(headers::ERROR_KIND, "oops"),
            "the `etl-dlq-error-kind` header's value \"oops\" is not an error kind"
        );
        assert_eq!(
            with(headers::STAGE, "-1"),
            "the `etl-dlq-stage` header's value \"-1\" is not a whole number"
        );
        assert_eq!(
            with(headers::ATTEMPTS, "many"),
            "the `etl-dlq-attempts` header's value \"many\" is not a whole number"
        );
    }
}
