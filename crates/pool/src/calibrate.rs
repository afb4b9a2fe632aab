//! How many metering points this machine runs per millisecond, measured once, so
//! that a time budget in milliseconds becomes a point budget.

use std::time::Instant;

use wasmer::{imports, Instance, Module, Store, TypedFunction, Value};

use crate::module;

/// The calibration module (public for the benches). A loop whose body looks like ordinary guest code (a few i64 arithmetic
/// operations between branches) rather than the tightest possible loop:
///
/// ```wat
/// (func (export "spin") (param i32) (local i32 i64)
///   loop
///     local.get 2  i64.const 31  i64.mul  i64.const 1  i64.add  local.set 2
///     local.get 2  local.get 2  i64.const 33  i64.shr_u  i64.xor  local.set 2
///     local.get 1  i32.const 1  i32.add  local.tee 1  local.get 0  i32.lt_u  br_if 0
///   end)
/// ```
#[doc(hidden)]
pub const SPIN: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x05, 0x01, 0x60, 0x01, 0x7f, 0x00, // type section: (i32) -> ()
    0x03, 0x02, 0x01, 0x00, // function section
    0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
    0x0a, 0x2b, 0x01, 0x29, // code section: one body of 41 bytes
    0x02, 0x01, 0x7f, 0x01, 0x7e, // locals: one i32, one i64
    0x03, 0x40, // loop
    0x20, 0x02, 0x42, 0x1f, 0x7e, 0x42, 0x01, 0x7c, 0x21, 0x02, // x = x * 31 + 1
    0x20, 0x02, 0x20, 0x02, 0x42, 0x21, 0x88, 0x85, 0x21, 0x02, // x ^= x >> 33
    0x20, 0x01, 0x41, 0x01, 0x6a, 0x22, 0x01, 0x20, 0x00, 0x49, 0x0d,
    0x00, // i += 1; br_if i < n
    0x0b, 0x0b, // end loop, end function
];

/// The engine the calibration runs on: the pool's compiler and fuel
/// instrumentation (public for the benches).
#[doc(hidden)]
pub fn calibration_engine() -> wasmer::Engine {
    module::engine(1 << 20)
}

/// Measures metering points per millisecond: the fastest of three runs of a
/// tight loop, so that a budget is never shorter in wall time than asked for on
/// a quiet machine.
pub fn fuel_per_ms() -> Result<u64, String> {
    let engine = calibration_engine();
    let module = Module::new(&engine, SPIN).map_err(|e| e.to_string())?;
    let mut store = Store::new(engine);
    let instance = Instance::new(&mut store, &module, &imports! {}).map_err(|e| e.to_string())?;
    let spin: TypedFunction<i32, ()> = instance
        .exports
        .get_typed_function(&store, "spin")
        .map_err(|e| e.to_string())?;
    let remaining = instance
        .exports
        .get_global(crate::fuel::FUEL_GLOBAL)
        .map_err(|e| e.to_string())?
        .clone();
    let mut best = 0u64;
    for rounds in [1_000_000, 10_000_000, 10_000_000, 10_000_000] {
        let start_points = i64::MAX / 2;
        remaining
            .set(&mut store, Value::I64(start_points))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        spin.call(&mut store, rounds).map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        let Value::I64(left) = remaining.get(&mut store) else {
            return Err("the fuel global is not an i64".into());
        };
        let used = (start_points - left) as u64;
        let per_ms = (used as f64 / elapsed.as_secs_f64().max(1e-9) / 1000.0) as u64;
        if rounds > 1_000_000 {
            best = best.max(per_ms);
        }
    }
    Ok(best.max(1))
}
