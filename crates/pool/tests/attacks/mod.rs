//! Attacks on the sandbox as small WebAssembly text modules, shared by
//! `tests/sandbox.rs` and the `sandbox_bounds` example (which times them in an
//! optimised build).

#![allow(dead_code)]

/// A version-1 module whose transform runs `attack` when the encoded message
/// is longer than 100 bytes and answers "unchanged" otherwise. `extra` adds
/// module fields; the data at 16 is the encoded "unchanged" answer, the text
/// at 32 an encoded error answer "refused".
pub fn module(attack: &str, extra: &str) -> Vec<u8> {
    module_with_memory(attack, extra, 2)
}

pub fn module_with_memory(attack: &str, extra: &str, pages: u32) -> Vec<u8> {
    module_with_init(attack, extra, pages, "")
}

/// [`module_with_memory`] whose init runs `init` first.
pub fn module_with_init(attack: &str, extra: &str, pages: u32, init: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
          (import "rmq_etl" "log" (func $log (param i32 i32 i32)))
          (memory (export "memory") {pages})
          (func (export "rmq_abi_version") (result i32) (i32.const 1))
          (func (export "rmq_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "rmq_init") (param i32 i32) (result i64) {init} (i64.const 0))
          (func (export "rmq_transform") (param $ptr i32) (param $len i32) (result i64)
            (if (i32.gt_u (local.get $len) (i32.const 100))
              (then {attack}))
            (i64.const 0x0000001000000001))
          (data (i32.const 16) "\00")
          (data (i32.const 32) "\03\07\00\00\00refused")
          {extra})"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// An attack and its module.
pub struct Attack {
    pub id: &'static str,
    pub wasm: Vec<u8>,
}

/// Every attack that must end with `timeout` at the call's budget: one per
/// instruction class that once ran past it.
pub fn time_attacks() -> Vec<Attack> {
    let table = "(table $t 10000 10000 funcref) (elem $e func $f $f $f $f) (func $f)";
    let indirect = "(table $t 1 1 funcref) (elem (table $t) (i32.const 0) func $nop) (func $nop)";
    let segment = format!(r#"(data $seg "{}")"#, "x".repeat(60_000));
    let fills = "(memory.fill (i32.const 0) (i32.const 0xa5) (i32.const 16777216))\n".repeat(3000);
    // Each level calls the next twice: 2^40 calls in all, none in a loop.
    let mut tree = String::from("(func $f0)");
    for level in 1..=40 {
        tree.push_str(&format!(
            "(func $f{level} (call $f{}) (call $f{}))",
            level - 1,
            level - 1
        ));
    }
    let cases: Vec<(&'static str, String, String, u32)> = vec![
        ("bare-loop", "(loop $l (br $l))".into(), String::new(), 2),
        (
            "fill-loop",
            "(loop $l (memory.fill (i32.const 65536) (i32.const 0xa5) (i32.const 262144)) (br $l))".into(),
            String::new(),
            8,
        ),
        (
            "copy-loop",
            "(loop $l (memory.copy (i32.const 65536) (i32.const 0) (i32.const 262144)) (br $l))".into(),
            String::new(),
            8,
        ),
        (
            "init-loop",
            "(loop $l (memory.init $seg (i32.const 4096) (i32.const 0) (i32.const 60000)) (br $l))".into(),
            segment,
            8,
        ),
        (
            "table-fill-loop",
            "(loop $l (table.fill $t (i32.const 0) (ref.null func) (i32.const 10000)) (br $l))".into(),
            table.into(),
            2,
        ),
        (
            "table-copy-loop",
            "(loop $l (table.copy $t $t (i32.const 1) (i32.const 0) (i32.const 9999)) (br $l))".into(),
            table.into(),
            2,
        ),
        (
            "table-init-loop",
            "(loop $l (table.init $t $e (i32.const 0) (i32.const 0) (i32.const 4)) (br $l))".into(),
            table.into(),
            2,
        ),
        (
            "table-grow-loop",
            "(loop $l (drop (table.grow $t (ref.null func) (i32.const 1))) (br $l))".into(),
            table.into(),
            2,
        ),
        (
            "log-loop",
            "(loop $l (call $log (i32.const 0) (i32.const 32) (i32.const 8)) (br $l))".into(),
            String::new(),
            2,
        ),
        // No loop: straight-line calls of the log function, each of an error
        // line of 4,096 bytes (past the call's 32 lines, still read for a
        // trap to quote). The log function itself checks the time.
        (
            "straight-line-logs",
            "(call $log (i32.const 3) (i32.const 0) (i32.const 4096))\n".repeat(60_000),
            String::new(),
            2,
        ),
        (
            "failing-grow-loop",
            "(loop $l (drop (memory.grow (i32.const 100000))) (br $l))".into(),
            String::new(),
            2,
        ),
        (
            "indirect-call-loop",
            "(loop $l (call_indirect $t (i32.const 0)) (br $l))".into(),
            indirect.into(),
            2,
        ),
        (
            "simd-loop",
            "(loop $l (v128.store (i32.const 0) (i32x4.mul (v128.load (i32.const 0)) (v128.load (i32.const 16)))) (br $l))".into(),
            String::new(),
            2,
        ),
        ("straight-line-fills", fills, String::new(), 257),
        ("call-tree", "(call $f40)".into(), tree, 2),
    ];
    cases
        .into_iter()
        .map(|(id, attack, extra, pages)| Attack {
            id,
            wasm: module_with_memory(&attack, &extra, pages),
        })
        .collect()
}
