//! Hostile (unless the payload is `ok`, which passes unchanged): implements the
//! ABI by hand and answers with a pointer far outside its memory. The host must
//! refuse the answer without reading it.

use std::cell::RefCell;

thread_local! {
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static UNCHANGED: [u8; 1] = const { [0] };
}

fn pack(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

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
    // The encoded message ends with the payload: `ok` is its last two bytes.
    let ok = INPUT.with(|b| b.borrow()[..len.max(0) as usize].ends_with(&[2, 0, 0, 0, b'o', b'k']));
    if ok {
        return UNCHANGED.with(|u| pack(u.as_ptr() as u32, 1));
    }
    // A length that also wraps past 4 GiB when added to the pointer.
    pack(0xFFFF_FF00, 0x1000 + len as u32)
}
