//! Describes the payload in headers: `content-kind` (`json`, `text` or
//! `binary`), `content-bytes`, and for UTF-8 `content-words` and `content-lines`.
use rustmq_etl_sdk::{export, Message, Outcome};

fn analyze(message: &Message) -> Outcome {
    let payload = message.payload();
    let edits = Outcome::edit().set_header("content-bytes", payload.len().to_string());
    let Ok(text) = std::str::from_utf8(payload) else {
        return edits.set_header("content-kind", "binary").into();
    };
    let trimmed = text.trim_start();
    let kind = if (trimmed.starts_with('{') || trimmed.starts_with('[')) && looks_balanced(trimmed)
    {
        "json"
    } else {
        "text"
    };
    edits
        .set_header("content-kind", kind)
        .set_header("content-words", text.split_whitespace().count().to_string())
        .set_header("content-lines", text.lines().count().to_string())
        .into()
}

/// Brackets outside strings balance: cheap, and enough to tell JSON documents
/// from prose that starts with a bracket.
fn looks_balanced(text: &str) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
    for c in text.chars() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (true, false, _) => {}
            (false, _, '"') => in_string = true,
            (false, _, '{' | '[') => depth += 1,
            (false, _, '}' | ']') => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0 && !in_string
}

export!(transform = analyze);
