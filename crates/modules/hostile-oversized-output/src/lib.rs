//! Hostile (unless the payload is `ok`, which passes unchanged): answers with a
//! well-formed but huge outcome (a 2 MiB payload edit), inside its own memory.
//! An output cap below that (tests: 1 MiB; default 16 MiB) refuses it uncopied.

use std::cell::RefCell;

thread_local! {
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

const PAYLOAD: usize = 2 << 20;

#[no_mangle]
pub extern "C" fn rmq_abi_version() -> i32 {
    1
}

#[no_mangle]
pub extern "C" fn rmq_alloc(len: i32) -> i32 {
    INPUT.with(|b| {
        let mut b = b.borrow_mut();
        b.resize(len.max(0) as usize, 0);
        b.as_mut_ptr() as i32
    })
}

#[no_mangle]
pub extern "C" fn rmq_init(_ptr: i32, _len: i32) -> i64 {
    0
}

#[no_mangle]
pub extern "C" fn rmq_transform(_ptr: i32, len: i32) -> i64 {
    let ok = INPUT.with(|b| b.borrow()[..len.max(0) as usize].ends_with(&[2, 0, 0, 0, b'o', b'k']));
    OUTPUT.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        if ok {
            out.push(0); // unchanged
        } else {
            // tag 2 (edits), one edit: 1 = set payload, u32 length, bytes.
            out.push(2);
            out.extend_from_slice(&1u32.to_le_bytes());
            out.push(1);
            out.extend_from_slice(&(PAYLOAD as u32).to_le_bytes());
            let len = out.len() + PAYLOAD;
            out.resize(len, b'x');
        }
        ((out.as_ptr() as u64) << 32 | out.len() as u64) as i64
    })
}
