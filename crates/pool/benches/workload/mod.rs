//! What the pool's benches and the `call_loop` example both run: the identity
//! module through a `LocalPool`, and the floor it is measured against (a bare
//! wasmer typed call of an empty function plus a copy of the same 256 payload
//! bytes into its memory); and a `serde_json` round trip of a 256-byte message
//! (temperature-converter-value's transform) called straight on an instance, compiled
//! with the pool's instrumentation and without it.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustmq_etl_core::{CallRequest, Message, ModuleSpec};
use rustmq_etl_pool::{CompileSettings, LoadedModule, LocalPool};
use wasmer::{imports, Function, Instance, Memory, Module, Store, TypedFunction, Value};

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
    /// The end of the previous call: passed as the next request's clock, as
    /// the orchestrator does along a message's chain.
    clock: Instant,
}

/// Compile settings with the default limits, no cache and a given bulk rate.
pub fn settings(bulk_bytes_per_ms: u64) -> CompileSettings {
    CompileSettings {
        limits: Default::default(),
        bulk_bytes_per_ms,
        cache: None,
    }
}

impl IdentityCall {
    pub fn new(bulk_bytes_per_ms: u64) -> IdentityCall {
        Self::with_spec(ModuleSpec::new("identity"), bulk_bytes_per_ms)
    }

    /// The same call on an instance made for it alone (`enable_caching:
    /// false`), creation not rate-limited: what a call of an uncached module
    /// costs.
    pub fn fresh(bulk_bytes_per_ms: u64) -> IdentityCall {
        let fresh = rustmq_etl_core::ModuleSettings::default()
            .enable_caching(false)
            .max_creations_per_second(u32::MAX);
        Self::with_spec(
            ModuleSpec::new("identity-fresh").with_settings(fresh),
            bulk_bytes_per_ms,
        )
    }

    fn with_spec(spec: ModuleSpec, bulk_bytes_per_ms: u64) -> IdentityCall {
        let wasm = std::fs::read(fixtures().join("identity.wasm")).unwrap();
        let module = LoadedModule::compile(&spec, &wasm, &settings(bulk_bytes_per_ms))
            .unwrap()
            // As a `Pool` loads it for its workers.
            .run_by_threads(1);
        let mut call = IdentityCall {
            module,
            local: LocalPool::new(),
            message: message(),
            clock: Instant::now(),
        };
        call.call();
        call
    }

    pub fn call(&mut self) {
        let request = CallRequest::new(black_box(&self.message)).clock(self.clock);
        let report = self.local.call(&self.module, request).unwrap();
        self.clock = report.ended;
        black_box(report);
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

/// A 256-byte JSON reading in Celsius, encoded as the guest receives it.
pub fn encoded_reading() -> Vec<u8> {
    let mut payload = String::from(
        r#"{"sensor_type":"temperature","unit":"celsius","reading":21.5,"device":"dev-1","note":""#,
    );
    while payload.len() < 254 {
        payload.push('x');
    }
    payload.push_str(r#""}"#);
    let mut m = Message::new("iot.sensors.temperature", payload);
    m.headers.push("content-type", "application/json");
    let parts = rustmq_etl_abi::MessageParts {
        topic: &m.topic,
        key: None,
        headers: m.headers.iter(),
        payload: &m.payload,
        timestamp_ms: None,
    };
    let mut encoded = vec![0; rustmq_etl_abi::encoded_len(&parts)];
    rustmq_etl_abi::encode_message_into(parts, &mut encoded);
    encoded
}

/// temperature-converter-value's transform on a 256-byte reading, called
/// straight on an instance: parse the payload into a `serde_json::Value`, edit
/// two fields, write it back (temperature-converter itself now splices the two
/// fields with the SDK's `json::Object`: not this workload). `metered` compiles it with the pool's instrumentation (the
/// budget set high, no watchdog); otherwise with plain Cranelift.
pub struct RoundTrip {
    store: Store,
    transform: TypedFunction<(i32, i32), i64>,
    input: i32,
    len: i32,
}

impl RoundTrip {
    pub fn new(metered: bool) -> RoundTrip {
        let wasm = std::fs::read(fixtures().join("temperature-converter-value.wasm")).unwrap();
        let engine = if metered {
            rustmq_etl_pool::instrumented_engine(64 << 20)
        } else {
            wasmer::sys::EngineBuilder::new(wasmer::sys::Cranelift::default()).into()
        };
        let mut store = Store::new(engine);
        let module = Module::new(&store, wasm).unwrap();
        let log = Function::new_typed(&mut store, |_: i32, _: i32, _: i32| {});
        let instance = Instance::new(
            &mut store,
            &module,
            &imports! { "rmq_etl" => { "log" => log } },
        )
        .unwrap();
        if metered {
            instance
                .exports
                .get_global("rmq_etl_budget")
                .unwrap()
                .set(&mut store, Value::I64(i64::MAX / 4))
                .unwrap();
        }
        let alloc: TypedFunction<i32, i32> = instance
            .exports
            .get_typed_function(&store, "rmq_alloc")
            .unwrap();
        let init: TypedFunction<(i32, i32), i64> = instance
            .exports
            .get_typed_function(&store, "rmq_init")
            .unwrap();
        let memory = instance.exports.get_memory("memory").unwrap().clone();
        let config = b"null";
        let at = alloc.call(&mut store, config.len() as i32).unwrap();
        memory.view(&store).write(at as u64, config).unwrap();
        assert_eq!(init.call(&mut store, at, config.len() as i32).unwrap(), 0);
        let encoded = encoded_reading();
        let input = alloc.call(&mut store, encoded.len() as i32).unwrap();
        memory.view(&store).write(input as u64, &encoded).unwrap();
        let transform = instance
            .exports
            .get_typed_function(&store, "rmq_transform")
            .unwrap();
        let mut round_trip = RoundTrip {
            store,
            transform,
            input,
            len: encoded.len() as i32,
        };
        // The answer is an edit of the payload (tag 2): the whole path ran.
        let packed = round_trip.call();
        let view = memory.view(&round_trip.store);
        let mut tag = [0u8];
        view.read((packed as u64) >> 32, &mut tag).unwrap();
        assert_eq!(tag[0], 2, "temperature-converter-value answered with edits");
        round_trip
    }

    pub fn call(&mut self) -> i64 {
        black_box(
            self.transform
                .call(&mut self.store, self.input, black_box(self.len))
                .unwrap(),
        )
    }
}
