//! The runtime behind [`export!`](crate::export): buffers shared with the host
//! and the glue from raw pointers to the author's functions. Not public API.

use std::cell::RefCell;

use crate::{Message, Outcome};

pub const ABI_VERSION: i32 = rustmq_etl_abi::ABI_VERSION as i32;

thread_local! {
    /// Where the host writes the input of the next call (see `alloc`).
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where the last answer is encoded; valid until the next call.
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The author's transform with the state its init returned, bound together
    /// (a closure, not `dyn Any`: type ids would tie the built module's bytes to
    /// the path it was built in).
    static TRANSFORM: RefCell<Option<Transform>> = const { RefCell::new(None) };
}

/// Returns a buffer of at least `len` bytes for the host's next input. The same
/// buffer is reused while it is large enough, so the host may cache the pointer
/// for inputs no longer than the last `len` it asked for.
pub fn alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    INPUT.with(|input| {
        let mut input = input.borrow_mut();
        if input.len() < len {
            input.resize(len, 0);
        }
        input.as_mut_ptr() as usize as i32
    })
}

/// Packs a pointer and a length into the `i64` the ABI returns.
fn pack(ptr: usize, len: usize) -> i64 {
    (((ptr as u64 & 0xffff_ffff) << 32) | (len as u64 & 0xffff_ffff)) as i64
}

fn answer(write: impl FnOnce(&mut Vec<u8>)) -> i64 {
    OUTPUT.with(|output| {
        let mut output = output.borrow_mut();
        output.clear();
        write(&mut output);
        pack(output.as_ptr() as usize, output.len())
    })
}

/// Runs `f` over the first `len` bytes of the input buffer.
fn with_input<R>(len: i32, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let len = usize::try_from(len).ok()?;
    INPUT.with(|input| {
        let input = input.borrow();
        input.get(..len).map(f)
    })
}

type Transform = Box<dyn Fn(&Message<'_>) -> Outcome>;

/// `rmq_init`: 0 on success, or a packed pointer and length of an error message.
pub fn init<S: 'static>(
    _ptr: i32,
    len: i32,
    f: impl FnOnce(&str) -> Result<S, String>,
    transform: fn(&S, &Message<'_>) -> Outcome,
) -> i64 {
    report_panics();
    match with_config(len, f) {
        Ok(state) => {
            let bound: Transform = Box::new(move |message| transform(&state, message));
            TRANSFORM.with(|t| *t.borrow_mut() = Some(bound));
            0
        }
        Err(message) => answer(|out| out.extend_from_slice(message.as_bytes())),
    }
}

/// `rmq_init` of a module without state: checks only that `custom_config` is
/// UTF-8, as `init` does, and says (in the engine's log, at debug level) that
/// one given is ignored.
pub fn init_stateless(_ptr: i32, len: i32) -> i64 {
    report_panics();
    // At debug level: each instance's start says it (with caching off, one
    // for every message), which `test-module` shows and `run` hides.
    let ignored = |config: &str| {
        if config.trim() != "null" {
            crate::log::debug(
                "its custom_config is ignored: the module has no init function to read it \
                 (export!(init = …, transform = …))",
            );
        }
        Ok(())
    };
    match with_config(len, ignored) {
        Ok(()) => 0,
        Err(message) => answer(|out| out.extend_from_slice(message.as_bytes())),
    }
}

/// Installs the panic hook, at init. In WebAssembly, a panic's message and
/// place are logged at error level before the module aborts, and the
/// engine's `trap` error quotes that line (the standard hook writes to a
/// standard error that goes nowhere there). Natively, tests keep the
/// standard hook.
fn report_panics() {
    #[cfg(target_arch = "wasm32")]
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload_as_str()
            .unwrap_or("(a panic without a message)");
        let text = match info.location() {
            Some(at) => format!("panicked at {}:{}: {message}", at.file(), at.line()),
            None => format!("panicked: {message}"),
        };
        crate::log::error(&text);
    }));
}

fn with_config<S>(len: i32, f: impl FnOnce(&str) -> Result<S, String>) -> Result<S, String> {
    with_input(len, |bytes| match std::str::from_utf8(bytes) {
        Ok(config) => f(config),
        Err(_) => Err("not UTF-8".to_owned()),
    })
    .unwrap_or_else(|| Err("rmq_init called without input".to_owned()))
}

/// `rmq_transform` of a module without state: `transform` is called directly.
pub fn transform_stateless(_ptr: i32, len: i32, transform: fn(&Message<'_>) -> Outcome) -> i64 {
    with_input(len, |bytes| decode_and(bytes, transform)).unwrap_or_else(past_the_input)
}

/// Decodes the message and answers with what `transform` makes of it.
#[inline]
fn decode_and(bytes: &[u8], transform: impl FnOnce(&Message<'_>) -> Outcome) -> i64 {
    match rustmq_etl_abi::decode_message(bytes) {
        Ok(message) => respond(transform(&message)),
        Err(e) => respond(Outcome::error(format!(
            "the host sent a message this module cannot decode: {e}"
        ))),
    }
}

#[cold]
fn past_the_input() -> i64 {
    respond(Outcome::error(
        "rmq_transform called with a length past the input buffer",
    ))
}

/// `rmq_transform`: decodes the input, calls the transform, returns the encoded
/// outcome. Each outcome is answered where it is made: an `Outcome` is large,
/// and moving it out through the closures costs more than the decoding.
pub fn transform(_ptr: i32, len: i32) -> i64 {
    TRANSFORM.with(|t| {
        let t = t.borrow();
        let Some(transform) = t.as_ref() else {
            return respond(Outcome::error(
                "the module was called before rmq_init succeeded",
            ));
        };
        with_input(len, |bytes| decode_and(bytes, transform)).unwrap_or_else(past_the_input)
    })
}

#[inline]
fn respond(outcome: Outcome) -> i64 {
    match outcome {
        // Fixed answers need no buffer: point the host at the constant.
        Outcome::Unchanged => fixed(rustmq_etl_abi::ENCODED_UNCHANGED),
        Outcome::Drop => fixed(rustmq_etl_abi::ENCODED_DROP),
        outcome => answer(|out| outcome.encode(out)),
    }
}

fn fixed(encoded: &'static [u8]) -> i64 {
    pack(encoded.as_ptr() as usize, encoded.len())
}
