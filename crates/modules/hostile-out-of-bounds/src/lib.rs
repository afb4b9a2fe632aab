//! Hostile: implements the ABI by hand and answers with a pointer far outside its
//! memory. The host must refuse the answer without reading it.

fn pack(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

#[no_mangle]
pub extern "C" fn rmq_abi_version() -> i32 {
    1
}

#[no_mangle]
pub extern "C" fn rmq_alloc(len: i32) -> i32 {
    let buffer = vec![0u8; len.max(0) as usize].into_boxed_slice();
    Box::leak(buffer).as_mut_ptr() as i32
}

#[no_mangle]
pub extern "C" fn rmq_init(_ptr: i32, _len: i32) -> i64 {
    0
}

#[no_mangle]
pub extern "C" fn rmq_transform(_ptr: i32, len: i32) -> i64 {
    // A length that also wraps past 4 GiB when added to the pointer.
    pack(0xFFFF_FF00, 0x1000 + len as u32)
}
