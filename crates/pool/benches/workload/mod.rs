//! What the identity-call bench and the `call_loop` example both run: the
//! identity module through a `LocalPool`, and the floor it is measured against
//! (a bare wasmer typed call of an empty function plus a copy of the same 256
//! payload bytes into its memory).

use std::hint::black_box;
use std::path::{Path, PathBuf};

use rustmq_etl_core::Message;
use rustmq_etl_pool::{LoadedModule, LocalPool, ModuleConfig};
use wasmer::{imports, Instance, Memory, Module, Store, TypedFunction};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/modules")
}

/// `(module (memory (export "memory") 1) (func (export "f") (param i32 i32) (result i64) i64.const 0))`
const EMPTY: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, //
    0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7e, // type: (i32, i32) -> i64
    0x03, 0x02, 0x01, 0x00, // function
    0x05, 0x03, 0x01, 0x00, 0x01, // memory: one page
    0x07, 0x0e, 0x02, 0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, 0x01, b'f', 0x00,
    0x00, // exports
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x42, 0x00, 0x0b, // code: i64.const 0
];

/// A 256-byte payload with a key and one header.
pub fn message() -> Message {
    let mut m = Message::new("iot.sensors.temperature", vec![b'x'; 256]);
    m.key = Some("dev-1".into());
    m.headers.push("content-type", "application/json");
    m
}

/// The identity module through a `LocalPool`: take a warm instance, encode and
/// write the message, call, read and check the answer, give the instance back.
pub struct IdentityCall {
    pub module: LoadedModule,
    pub local: LocalPool,
    pub message: Message,
}

impl IdentityCall {
    pub fn new(fuel_per_ms: u64) -> IdentityCall {
        let wasm = std::fs::read(fixtures().join("identity.wasm")).unwrap();
        let module = LoadedModule::compile(
            "identity",
            &wasm,
            ModuleConfig::default(),
            fuel_per_ms,
            None,
        )
        .unwrap();
        let mut call = IdentityCall {
            module,
            local: LocalPool::new(),
            message: message(),
        };
        call.call();
        call
    }

    pub fn call(&mut self) {
        black_box(
            self.local
                .call(&self.module, black_box(&self.message))
                .unwrap(),
        );
    }
}

/// The floor: copy the payload into an instance's memory and make a typed call
/// of an empty function with the same signature as `rmq_transform`.
pub struct Floor {
    store: Store,
    memory: Memory,
    f: TypedFunction<(i32, i32), i64>,
    payload: Vec<u8>,
}

impl Floor {
    pub fn new() -> Floor {
        let mut store = Store::default();
        let empty = Module::new(&store, EMPTY).unwrap();
        let instance = Instance::new(&mut store, &empty, &imports! {}).unwrap();
        let memory = instance.exports.get_memory("memory").unwrap().clone();
        let f = instance.exports.get_typed_function(&store, "f").unwrap();
        Floor {
            store,
            memory,
            f,
            payload: message().payload.to_vec(),
        }
    }

    pub fn call(&mut self) {
        self.memory
            .view(&self.store)
            .write(1024, black_box(&self.payload))
            .unwrap();
        black_box(
            self.f
                .call(&mut self.store, 1024, self.payload.len() as i32)
                .unwrap(),
        );
    }
}
