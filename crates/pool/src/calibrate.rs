//! How many bytes of bulk memory work (`memory.fill`, `memory.copy`) this
//! machine does per millisecond, measured once, so that a call's time budget
//! becomes the allowance each of its bulk operations is weighed against
//! (`budget.rs`).

use std::time::Instant;

use wasmer::{imports, Instance, Module, Store, TypedFunction};

/// The calibration module: one fill and one copy of `len` bytes in a 64 MiB
/// memory (its text is checked against these bytes in the tests).
#[cfg(test)]
const BULK_WAT: &str = r#"(module
  (type (func (param i32)))
  (memory 1024)
  (func (export "fill") (type 0)
    (memory.fill (i32.const 0) (i32.const 0xa5) (local.get 0)))
  (func (export "copy") (type 0)
    (memory.copy (local.get 0) (i32.const 0) (local.get 0))))"#;

const BULK: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x05, 0x01, 0x60, 0x01, 0x7f, 0x00, // type section: (i32) -> ()
    0x03, 0x03, 0x02, 0x00, 0x00, // function section: two of type 0
    0x05, 0x04, 0x01, 0x00, 0x80, 0x08, // memory section: 1024 pages
    0x07, 0x0f, 0x02, 0x04, b'f', b'i', b'l', b'l', 0x00, 0x00, // export "fill"
    0x04, b'c', b'o', b'p', b'y', 0x00, 0x01, // export "copy"
    0x0a, 0x1b, 0x02, // code section: two bodies
    0x0c, 0x00, 0x41, 0x00, 0x41, 0xa5, 0x01, 0x20, 0x00, 0xfc, 0x0b, 0x00, 0x0b, // fill
    0x0c, 0x00, 0x20, 0x00, 0x41, 0x00, 0x20, 0x00, 0xfc, 0x0a, 0x00, 0x00, 0x0b, // copy
];

/// Bytes moved per run: half the memory, so that a copy fits.
const LEN: i32 = 32 << 20;

/// Measures bulk bytes per millisecond: each of fill and copy on a fresh
/// memory (its pages touched for the first time, the slow case) three times;
/// the fastest run of the slower operation, halved, so that a call's bulk
/// allowance takes at most about its time budget even when the machine is
/// busier than now.
pub fn bulk_bytes_per_ms() -> Result<u64, String> {
    // Plain Cranelift: the instrumented engine would want a budget armed.
    let engine: wasmer::Engine =
        wasmer::sys::EngineBuilder::new(wasmer::sys::Cranelift::default()).into();
    let module = Module::new(&engine, BULK).map_err(|e| e.to_string())?;
    let mut slowest = u64::MAX;
    for op in ["fill", "copy"] {
        let mut fastest = 0u64;
        for _ in 0..3 {
            let mut store = Store::new(engine.clone());
            let instance =
                Instance::new(&mut store, &module, &imports! {}).map_err(|e| e.to_string())?;
            let run: TypedFunction<i32, ()> = instance
                .exports
                .get_typed_function(&store, op)
                .map_err(|e| e.to_string())?;
            let started = Instant::now();
            run.call(&mut store, LEN).map_err(|e| e.to_string())?;
            let per_ms = LEN as f64 / started.elapsed().as_secs_f64().max(1e-9) / 1000.0;
            fastest = fastest.max(per_ms as u64);
        }
        slowest = slowest.min(fastest);
    }
    Ok((slowest / 2).max(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_calibration_module_is_its_text() {
        assert_eq!(super::BULK, wat::parse_str(super::BULK_WAT).unwrap());
    }
}
