//! One warm instance: its own `Store`, the guest's exports, and the call path
//! that trusts nothing the guest returns.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rustmq_etl_abi::{
    decode_outcome, encode_message_into, encoded_len, Edit, MessageParts, OutcomeView,
};
use rustmq_etl_core::{Message, Transformed};
use wasmer::{
    imports, Function, FunctionEnv, FunctionEnvMut, Global, Instance, Memory, RuntimeError, Store,
    TypedFunction, Value, WasmTypeList,
};

use crate::error::{CallError, ErrorKind};
use crate::fuel::FUEL_GLOBAL;
use crate::limits;
use crate::module::{Abi, CompiledModule, LOG_IMPORT};

/// Most bytes of one guest log line; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;
/// Most log lines one instance may write per call; the rest are counted, not written.
const MAX_LOG_LINES_PER_CALL: u32 = 32;
/// Longest init error message read from a guest.
const MAX_INIT_ERROR: usize = 64 << 10;

struct LogEnv {
    module: String,
    memory: Option<Memory>,
    /// Lines written in the current call: shared with the instance, which resets
    /// it per call without going through the store.
    lines_this_call: Arc<AtomicU32>,
}

fn host_log(mut env: FunctionEnvMut<'_, LogEnv>, level: i32, ptr: i32, len: i32) {
    let (data, store) = env.data_and_store_mut();
    if data.lines_this_call.fetch_add(1, Ordering::Relaxed) >= MAX_LOG_LINES_PER_CALL {
        metrics::counter!("rustmq_etl_guest_log_lines_dropped_total", "module" => data.module.clone()).increment(1);
        return;
    }
    let Some(memory) = &data.memory else { return };
    let len = (len as u32 as usize).min(MAX_LOG_LINE);
    let mut buffer = vec![0u8; len];
    if memory
        .view(&store)
        .read(ptr as u32 as u64, &mut buffer)
        .is_err()
    {
        log::warn!(target: "rustmq_etl::guest", "{}: log call with a buffer outside its memory", data.module);
        return;
    }
    let text = String::from_utf8_lossy(&buffer);
    let level = match level {
        0 => log::Level::Debug,
        1 => log::Level::Info,
        2 => log::Level::Warn,
        _ => log::Level::Error,
    };
    log::log!(target: "rustmq_etl::guest", level, "{}: {}", data.module, text);
}

enum Exports {
    V1 {
        alloc: TypedFunction<i32, i32>,
        transform: TypedFunction<(i32, i32), i64>,
    },
    Legacy {
        allocate: TypedFunction<i32, i32>,
        transform: TypedFunction<(i32, i32), i32>,
    },
}

/// An instance ready to take calls on the thread that made it.
pub(crate) struct WarmInstance {
    store: Store,
    lines_this_call: Arc<AtomicU32>,
    memory: Memory,
    exports: Exports,
    /// The fuel left for the current call (see `fuel.rs`).
    fuel: Global,
    /// The guest's input buffer, and how many bytes it holds.
    input: Option<(u32, u32)>,
    pub(crate) calls: u64,
    /// When the instance was last given back (coarse: milliseconds).
    pub(crate) last_used: coarsetime::Instant,
}

/// An exported function with the signature the ABI gives it.
fn typed_export<Args: WasmTypeList, Rets: WasmTypeList>(
    instance: &Instance,
    store: &Store,
    module: &str,
    name: &str,
) -> Result<TypedFunction<Args, Rets>, CallError> {
    instance
        .exports
        .get_typed_function(store, name)
        .map_err(|e| CallError::new(ErrorKind::Init, module, e.to_string()))
}

fn unpack(packed: i64) -> (u64, u64) {
    let packed = packed as u64;
    (packed >> 32, packed & 0xffff_ffff)
}

impl WarmInstance {
    /// Instantiates the module and runs its init function with `custom_config`.
    pub(crate) fn new(module: &CompiledModule) -> Result<WarmInstance, CallError> {
        let id = &module.id;
        let init_error = |message: String| CallError::new(ErrorKind::Init, id, message);
        let mut store = Store::new(module.engine.clone());
        let lines_this_call = Arc::new(AtomicU32::new(0));
        let env = FunctionEnv::new(
            &mut store,
            LogEnv {
                module: id.clone(),
                memory: None,
                lines_this_call: lines_this_call.clone(),
            },
        );
        let imports = imports! {
            LOG_IMPORT.0 => { LOG_IMPORT.1 => Function::new_typed_with_env(&mut store, &env, host_log) }
        };
        limits::reset_limit_hit();
        let instance = Instance::new(&mut store, &module.module, &imports).map_err(|e| {
            let kind = if limits::limit_hit() {
                ErrorKind::MemoryLimit
            } else {
                ErrorKind::Init
            };
            CallError::new(kind, id, format!("cannot instantiate: {e}"))
        })?;
        let get_global = |name: &str| {
            instance
                .exports
                .get_global(name)
                .cloned()
                .map_err(|e| init_error(format!("fuel global {name}: {e}")))
        };
        let fuel = get_global(FUEL_GLOBAL)?;
        let memory = instance
            .exports
            .get_memory("memory")
            .cloned()
            .map_err(|e| init_error(e.to_string()))?;
        env.as_mut(&mut store).memory = Some(memory.clone());
        let exports = match module.abi {
            Abi::V1 => Exports::V1 {
                alloc: typed_export(&instance, &store, id, "rmq_alloc")?,
                transform: typed_export(&instance, &store, id, "rmq_transform")?,
            },
            Abi::Legacy => Exports::Legacy {
                allocate: typed_export(&instance, &store, id, "allocate")?,
                transform: typed_export(&instance, &store, id, "transform")?,
            },
        };
        let mut warm = WarmInstance {
            store,
            lines_this_call,
            memory,
            exports,
            fuel,
            input: None,
            calls: 0,
            last_used: coarsetime::Instant::now_without_cache_update(),
        };
        if module.abi == Abi::V1 {
            let version: TypedFunction<(), i32> =
                typed_export(&instance, &warm.store, id, "rmq_abi_version")?;
            warm.refuel(module.fuel);
            let found = version
                .call(&mut warm.store)
                .map_err(|e| warm.failure(module, e))?;
            if found != i32::from(rustmq_etl_abi::ABI_VERSION) {
                return Err(init_error(format!(
                    "speaks ABI version {found}; this host speaks version {}",
                    rustmq_etl_abi::ABI_VERSION
                )));
            }
            let init: TypedFunction<(i32, i32), i64> =
                typed_export(&instance, &warm.store, id, "rmq_init")?;
            let config = module.config.custom_config.as_bytes();
            let ptr = warm.write_input(module, config)?;
            warm.refuel(module.fuel);
            let packed = init
                .call(&mut warm.store, ptr as i32, config.len() as i32)
                .map_err(|e| warm.failure(module, e))?;
            if packed != 0 {
                let (ptr, len) = unpack(packed);
                let len = len.min(MAX_INIT_ERROR as u64) as usize;
                let mut message = vec![0u8; len];
                warm.memory
                    .view(&warm.store)
                    .read(ptr, &mut message)
                    .map_err(|_| {
                        init_error(
                            "init failed, and its error message lies outside its memory".into(),
                        )
                    })?;
                return Err(init_error(format!(
                    "init rejected its custom_config: {}",
                    String::from_utf8_lossy(&message)
                )));
            }
        }
        Ok(warm)
    }

    fn refuel(&mut self, fuel: u64) {
        // Setting the cached global directly: looking it up by name per call
        // costs more than the call itself.
        let fuel = i64::try_from(fuel).unwrap_or(i64::MAX);
        let _ = self.fuel.set(&mut self.store, Value::I64(fuel));
    }

    /// Classifies a failed guest call.
    fn failure(&mut self, module: &CompiledModule, error: RuntimeError) -> CallError {
        let id = &module.id;
        // Fuel below zero: the budget ran out and a fuel check stopped the call.
        let exhausted = matches!(self.fuel.get(&mut self.store), Value::I64(n) if n < 0);
        if exhausted {
            return CallError::new(
                ErrorKind::Timeout,
                id,
                format!(
                    "ran past its time budget of {} ms",
                    module.config.execution_timeout_ms
                ),
            );
        }
        if limits::limit_hit() {
            return CallError::new(
                ErrorKind::MemoryLimit,
                id,
                format!(
                    "tried to grow its memory past its limit of {} bytes",
                    module.config.memory_limit_bytes
                ),
            );
        }
        let cause = match error.clone().to_trap() {
            Some(wasmer::sys::vm::TrapCode::UnreachableCodeReached) => {
                "hit `unreachable` (a panic or abort in the guest)".to_owned()
            }
            Some(wasmer::sys::vm::TrapCode::StackOverflow) => "overflowed its stack".to_owned(),
            Some(wasmer::sys::vm::TrapCode::HeapAccessOutOfBounds) => {
                "accessed memory out of bounds (in Rust guests often a shadow-stack overflow from deep recursion)"
                    .to_owned()
            }
            Some(code) => format!("trapped: {code}"),
            None => error.message(),
        };
        CallError::new(ErrorKind::Trap, id, cause)
    }

    /// Writes `bytes` into the guest's input buffer; returns its address.
    fn write_input(&mut self, module: &CompiledModule, bytes: &[u8]) -> Result<u32, CallError> {
        self.fill_input(module, bytes.len(), |buffer| buffer.copy_from_slice(bytes))
    }

    /// Lets `fill` write exactly `len` bytes into the guest's input buffer, asking
    /// the guest for a larger buffer when needed; returns its address.
    fn fill_input(
        &mut self,
        module: &CompiledModule,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<u32, CallError> {
        let len = u32::try_from(len).map_err(|_| {
            CallError::new(
                ErrorKind::InvalidOutput,
                &module.id,
                "the message is larger than 4 GiB",
            )
        })?;
        let ptr = match self.input {
            Some((ptr, capacity)) if capacity >= len && module.abi == Abi::V1 => ptr,
            _ => {
                let alloc = match &self.exports {
                    Exports::V1 { alloc, .. } => alloc,
                    Exports::Legacy { allocate, .. } => allocate,
                };
                let alloc = alloc.clone();
                self.refuel(module.fuel);
                limits::reset_limit_hit();
                let ptr = alloc
                    .call(&mut self.store, len as i32)
                    .map_err(|e| self.failure(module, e))? as u32;
                self.input = Some((ptr, len));
                ptr
            }
        };
        let view = self.memory.view(&self.store);
        let size = view.data_size();
        if ptr == 0 || u64::from(ptr) + u64::from(len) > size {
            self.input = None;
            return Err(CallError::new(
                ErrorKind::InvalidOutput,
                &module.id,
                format!("its allocator returned {len} bytes at {ptr:#x}, outside its {size}-byte memory"),
            ));
        }
        // SAFETY: `data_unchecked_mut` requires that nothing else reads, writes
        // or grows this memory while the slice lives. The memory belongs to this
        // instance's `Store`, which `&mut self` holds exclusively on this thread;
        // no guest code runs until `fill` has returned and the slice is gone; and
        // no other instance can reach the memory (modules may import nothing but
        // the logging function). A plain slice lets the host encode the message
        // straight into the guest, with no copy through a host buffer.
        let memory = unsafe { view.data_unchecked_mut() };
        fill(&mut memory[ptr as usize..(ptr + len) as usize]);
        Ok(ptr)
    }

    /// Runs `read` over the `len` guest bytes at `ptr`, after checking them
    /// against the output cap and the memory's bounds.
    fn read_output<R>(
        &self,
        module: &CompiledModule,
        ptr: u64,
        len: u64,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, CallError> {
        let invalid =
            |message: String| CallError::new(ErrorKind::InvalidOutput, &module.id, message);
        if len > module.config.max_output_bytes as u64 {
            return Err(invalid(format!(
                "its answer is {len} bytes, more than the {}-byte output limit",
                module.config.max_output_bytes
            )));
        }
        let view = self.memory.view(&self.store);
        let size = view.data_size();
        if ptr.checked_add(len).is_none_or(|end| end > size) {
            return Err(invalid(format!(
                "its answer ({len} bytes at {ptr:#x}) lies outside its {size}-byte memory"
            )));
        }
        // SAFETY: as in `fill_input`: this thread holds the instance's `Store`
        // (through `&self`, and no guest code runs until `read` has returned),
        // and no other instance can reach the memory. The bounds were checked
        // above; `read` copies what it keeps, so nothing outlives the slice.
        let memory = unsafe { view.data_unchecked() };
        Ok(read(&memory[ptr as usize..(ptr + len) as usize]))
    }

    /// Runs the module on `message`.
    pub(crate) fn call(
        &mut self,
        module: &CompiledModule,
        message: &Message,
    ) -> Result<Transformed, CallError> {
        self.calls += 1;
        self.lines_this_call.store(0, Ordering::Relaxed);
        match module.abi {
            Abi::V1 => self.call_v1(module, message),
            Abi::Legacy => self.call_legacy(module, message),
        }
    }

    fn call_v1(
        &mut self,
        module: &CompiledModule,
        message: &Message,
    ) -> Result<Transformed, CallError> {
        let parts = MessageParts {
            topic: &message.topic,
            key: message.key.as_deref(),
            headers: message.headers.iter(),
            payload: &message.payload,
            timestamp_ms: message.timestamp_ms,
        };
        let len = encoded_len(&parts);
        let ptr = self.fill_input(module, len, |buffer| encode_message_into(parts, buffer))?;
        let Exports::V1 { transform, .. } = &self.exports else {
            unreachable!("call_v1 on a legacy instance")
        };
        let transform = transform.clone();
        self.refuel(module.fuel);
        limits::reset_limit_hit();
        let packed = transform
            .call(&mut self.store, ptr as i32, len as i32)
            .map_err(|e| self.failure(module, e))?;
        let (out_ptr, out_len) = unpack(packed);
        self.read_output(module, out_ptr, out_len, |output| {
            apply(module, message, output)
        })?
    }

    fn call_legacy(
        &mut self,
        module: &CompiledModule,
        message: &Message,
    ) -> Result<Transformed, CallError> {
        let ptr = self.write_input(module, &message.payload)?;
        let Exports::Legacy { transform, .. } = &self.exports else {
            unreachable!("call_legacy on a v1 instance")
        };
        let transform = transform.clone();
        self.refuel(module.fuel);
        limits::reset_limit_hit();
        let result = transform
            .call(&mut self.store, ptr as i32, message.payload.len() as i32)
            .map_err(|e| self.failure(module, e))? as u32 as u64;
        // The earlier ABI: a little-endian i32 length, then that many bytes.
        let len = self.read_output(module, result, 4, |b| {
            i32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })?;
        let len = u64::try_from(len).map_err(|_| {
            CallError::new(
                ErrorKind::InvalidOutput,
                &module.id,
                format!("its result length is negative ({len})"),
            )
        })?;
        let payload = self.read_output(module, result + 4, len, Bytes::copy_from_slice)?;
        let mut out = message.clone();
        out.payload = payload;
        Ok(Transformed::Replaced(out))
    }
}

/// Checks the guest's answer and applies it to (a copy of) the message.
fn apply(
    module: &CompiledModule,
    message: &Message,
    output: &[u8],
) -> Result<Transformed, CallError> {
    let invalid = |message: String| CallError::new(ErrorKind::InvalidOutput, &module.id, message);
    let outcome =
        decode_outcome(output).map_err(|e| invalid(format!("its answer does not decode: {e}")))?;
    match outcome {
        OutcomeView::Unchanged => Ok(Transformed::Unchanged),
        OutcomeView::Drop => Ok(Transformed::Dropped),
        OutcomeView::Error(text) => Err(CallError::new(
            ErrorKind::Guest,
            &module.id,
            text.to_owned(),
        )),
        OutcomeView::Edits(edits) => {
            let mut out = message.clone();
            for edit in edits {
                match edit {
                    Edit::SetPayload(p) => out.payload = Bytes::copy_from_slice(p),
                    Edit::SetKey(k) => out.key = Some(Bytes::copy_from_slice(k)),
                    Edit::ClearKey => out.key = None,
                    Edit::SetTopic("") => return Err(invalid("it set an empty topic".to_owned())),
                    Edit::SetTopic(t) => out.topic = t.to_owned(),
                    Edit::SetHeader("", _) | Edit::RemoveHeader("") => {
                        return Err(invalid(
                            "it named a header with the empty string".to_owned(),
                        ))
                    }
                    Edit::SetHeader(name, value) => out.headers.set(name, value),
                    Edit::RemoveHeader(name) => {
                        out.headers.remove(name);
                    }
                }
            }
            Ok(Transformed::Replaced(out))
        }
    }
}
