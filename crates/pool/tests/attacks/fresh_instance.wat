;; A module that checks, at every call, that its instance's memory is as a
;; new instance's, then writes over all it can (tests/sandbox.rs, and the
;; wasm_module fuzz target's canary): two pages, zero from 2048 on (below:
;; its data, and the message the host writes at 1024), the data segment at
;; 20 as written, and three pages it grows into zero too. It answers
;; "unchanged", or an error saying what it found (size, data, dirty). A
;; message of more than 100 bytes first reads a byte past the two pages
;; (which one depends on the message's length): that must trap.
(module
  (memory (export "memory") 2)
  (func (export "rmq_abi_version") (result i32) (i32.const 1))
  (func (export "rmq_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "rmq_init") (param i32 i32) (result i64) (i64.const 0))
  ;; Whether every byte from $at to $end is zero.
  (func $zero (param $at i32) (param $end i32) (result i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (if (i64.ne (i64.load (local.get $at)) (i64.const 0))
          (then (return (i32.const 0))))
        (local.set $at (i32.add (local.get $at) (i32.const 8)))
        (br $next)))
    (i32.const 1))
  (func (export "rmq_transform") (param $ptr i32) (param $len i32) (result i64)
    (if (i32.gt_u (local.get $len) (i32.const 100))
      (then (drop (i32.load8_u
        (i32.add (i32.const 131072)
          (i32.mul (i32.and (local.get $len) (i32.const 3)) (i32.const 65535)))))))
    (if (i32.ne (memory.size) (i32.const 2))
      (then (return (i64.const 0x0000002000000009))))
    (if (i32.ne (i32.load (i32.const 20)) (i32.const 0x07070707))
      (then (return (i64.const 0x0000003000000009))))
    (if (i32.eqz (call $zero (i32.const 2048) (i32.const 131072)))
      (then (return (i64.const 0x000000400000000a))))
    (i32.store (i32.const 20) (i32.const 0x41414141))
    (memory.fill (i32.const 2048) (i32.const 0xa5) (i32.const 129024))
    (if (i32.ne (memory.grow (i32.const 3)) (i32.const 2))
      (then unreachable))
    (if (i32.eqz (call $zero (i32.const 131072) (i32.const 327680)))
      (then (return (i64.const 0x000000400000000a))))
    (memory.fill (i32.const 131072) (i32.const 0xa5) (i32.const 196608))
    (i64.const 0x0000001000000001))
  (data (i32.const 16) "\00")
  (data (i32.const 20) "\07\07\07\07")
  (data (i32.const 32) "\03\04\00\00\00size")
  (data (i32.const 48) "\03\04\00\00\00data")
  (data (i32.const 64) "\03\05\00\00\00dirty"))
