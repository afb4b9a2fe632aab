//! A module in the earlier single-function ABI (design.md, "Backward
//! Compatibility"): exports `memory`, `allocate(len) -> ptr` and
//! `transform(ptr, len) -> ptr`, where the result is a little-endian `i32` length
//! followed by that many bytes. Payload in, payload out: this one upper-cases
//! ASCII letters.

#[no_mangle]
pub extern "C" fn allocate(len: i32) -> i32 {
    let buffer = vec![0u8; len.max(0) as usize].into_boxed_slice();
    Box::leak(buffer).as_mut_ptr() as i32
}

/// # Safety
///
/// The host passes a pointer it got from `allocate` and at most that many bytes.
#[no_mangle]
pub unsafe extern "C" fn transform(ptr: i32, len: i32) -> i32 {
    // SAFETY: see above: the host wrote `len` bytes at `ptr`, which `allocate`
    // returned for at least `len` bytes.
    let input = unsafe { std::slice::from_raw_parts(ptr as *const u8, len.max(0) as usize) };
    let mut result = Vec::with_capacity(4 + input.len());
    result.extend_from_slice(&(input.len() as i32).to_le_bytes());
    result.extend(input.iter().map(u8::to_ascii_uppercase));
    // Freed by nothing: the earlier ABI had no way to give memory back, which is
    // one reason the host recycles legacy instances after a number of calls.
    Box::leak(result.into_boxed_slice()).as_ptr() as i32
}
