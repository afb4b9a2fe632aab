//! One warm instance: its own `Store`, the guest's exports, and the call path
//! that trusts nothing the guest returns.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustmq_etl_abi::{
    decode_outcome, encode_message_into, encoded_len, DecodeError, Edit, MessageParts, OutcomeView,
};
use rustmq_etl_core::{Edit as MessageEdit, ErrorKind, Message, Outcome};
use wasmer::sys::vm::{LinearMemory, VMMemoryDefinition};
use wasmer::{
    imports, AsStoreMut, Extern, Function, FunctionEnv, FunctionEnvMut, Global, Instance, Memory,
    RuntimeError, Store, TypedFunction, Value, WasmTypeList,
};

use crate::budget::{BUDGET_GLOBAL, EXPIRED, START_EXPORT};
use crate::deadline::Armed;
use crate::error::CallError;
use crate::module::{Abi, CompiledModule, LOG_IMPORT};
use crate::{deadline, limits};

/// Most bytes of one guest log line; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;
/// Most log lines one instance may write per call; the rest are counted, not
/// written. Lines the logger does not take (a level it filters out) are not
/// written and do not count.
pub const MAX_LOG_LINES_PER_CALL: u32 = 32;
/// Longest init error message read from a guest.
const MAX_INIT_ERROR: usize = 64 << 10;
use rustmq_etl_abi::MAX_EDITS;

struct LogEnv {
    module: String,
    /// Lines past the limit, counted for the module version's statistics.
    lines_dropped: Arc<AtomicU64>,
    memory: Option<Memory>,
    budget: Option<Global>,
    /// The current call's log calls (low half) and of them the lines the
    /// logger takes (high half): shared with the instance, which resets it
    /// per call without going through the store.
    lines_this_call: Arc<AtomicU64>,
    /// The last error-level line of the current call (emptied by its first
    /// line): a trap's error quotes it, as the SDK logs a panic's message
    /// there before the guest aborts.
    last_error: Arc<Mutex<Option<String>>>,
}

/// `rmq_etl.log`. A call whose time is up traps here too, so that a guest
/// calling the host in straight-line code is stopped as in a loop.
fn host_log(
    mut env: FunctionEnvMut<'_, LogEnv>,
    level: i32,
    ptr: i32,
    len: i32,
) -> Result<(), RuntimeError> {
    let (data, mut store) = env.data_and_store_mut();
    if let Some(budget) = &data.budget {
        if matches!(budget.get(&mut store), Value::I64(n) if n < 0) {
            return Err(RuntimeError::new("the call's time is up"));
        }
    }
    let level = match level {
        i32::MIN..=0 => log::Level::Debug,
        1 => log::Level::Info,
        2 => log::Level::Warn,
        _ => log::Level::Error,
    };
    // A line the logger filters out is not written and takes nothing of the
    // call's allowance: lines of a hidden level do not crowd out the errors.
    let taken = log::log_enabled!(target: "rustmq_etl::guest", level);
    // Both counts stop at their most rather than wrap (a guest with an hour's
    // budget could make 2^32 calls). Only this thread touches them during a
    // call: a load and a store do.
    let before = data.lines_this_call.load(Ordering::Relaxed);
    let (calls, lines) = (before as u32, (before >> 32) as u32);
    let after = u64::from(lines.saturating_add(u32::from(taken))) << 32
        | u64::from(calls.saturating_add(1));
    data.lines_this_call.store(after, Ordering::Relaxed);
    if before == 0 {
        // A new call's first log call: an error line of an earlier call is
        // not this call's.
        lock(&data.last_error).take();
    }
    let written = taken && lines < MAX_LOG_LINES_PER_CALL;
    // Past the limit (or hidden) an error line is still kept for a trap to quote.
    let error = level == log::Level::Error;
    if !written {
        if taken {
            data.lines_dropped.fetch_add(1, Ordering::Relaxed);
        }
        if !error {
            return Ok(());
        }
    }
    let Some(memory) = &data.memory else {
        return Ok(());
    };
    let len = (len as u32 as usize).min(MAX_LOG_LINE);
    let mut buffer = vec![0u8; len];
    if memory
        .view(&store)
        .read(ptr as u32 as u64, &mut buffer)
        .is_err()
    {
        // A line of the call's allowance like any other: past it, nothing
        // (a loop of such calls wrote a host line each, without end).
        if written {
            log::warn!(target: "rustmq_etl::guest", "{}: log call with a buffer outside its memory", data.module);
        }
        return Ok(());
    }
    let read = String::from_utf8_lossy(&buffer);
    let text = rustmq_etl_abi::printable(&read);
    if error {
        *lock(&data.last_error) = Some(text.clone().into_owned());
    }
    if !written {
        return Ok(());
    }
    log::log!(target: "rustmq_etl::guest", level, "{}: {}", data.module, text);
    Ok(())
}

/// `mutex`, whether or not a thread panicked holding it (it holds a line of
/// text, whole either way).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    lines_this_call: Arc<AtomicU64>,
    /// Shared with the log import (`LogEnv::last_error`).
    last_error: Arc<Mutex<Option<String>>>,
    memory: Memory,
    exports: Exports,
    /// The instance's budget global (`budget.rs`), by address: the host sets
    /// it before each call, and the watchdog writes it from its own thread
    /// when the call's time is up. The `Store` above owns it.
    budget: NonNull<i64>,
    /// The instance's memory as its compiled code sees it, by address: its
    /// base and current length, which a `memory.grow` rewrites in place (so
    /// they are read afresh for every use, see `guest_memory`). The `Store`
    /// above owns it.
    memory_definition: NonNull<VMMemoryDefinition>,
    /// The guest's input buffer, and how many bytes it holds.
    input: Option<(u32, u32)>,
    pub(crate) calls: u64,
    /// When the instance was last given back: the end of its last call.
    pub(crate) last_used: Instant,
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
        .map_err(|e| CallError::new(ErrorKind::Unavailable, module, e.to_string()))
}

fn unpack(packed: i64) -> (u64, u64) {
    let packed = packed as u64;
    (packed >> 32, packed & 0xffff_ffff)
}

/// What a call stopped by `kind`'s deadline (the module's own: `timeout`)
/// fails with.
fn out_of_time(module: &CompiledModule, kind: ErrorKind) -> CallError {
    let message = match kind {
        ErrorKind::StageTimeout => "the stage's time ran out while it ran".to_owned(),
        ErrorKind::PipelineTimeout => "the pipeline's time ran out while it ran".to_owned(),
        _ => format!(
            "ran past its time budget of {} ms",
            module.settings.execution_timeout_ms
        ),
    };
    CallError::new(kind, &module.id, message)
}

/// Fails with `deadline`'s kind once it has passed. Guest code entered after
/// another entry of the same call (or start) ran up to the deadline would
/// otherwise start, with a fresh bulk allowance, before the watchdog's next
/// tick marks it: one bulk operation past the bound for each entry.
fn in_time(
    module: &CompiledModule,
    deadline: Option<(Instant, ErrorKind)>,
    now: Instant,
) -> Result<(), CallError> {
    match deadline {
        Some((at, kind)) if at <= now => Err(out_of_time(module, kind)),
        _ => Ok(()),
    }
}

/// `deadline`, or the end of the module's time budget counted from
/// `started` if that comes first (with its kind, `timeout`): the entries into
/// guest code that make one call (its allocation and its transform), or one
/// instance's start (start function, version, allocation, init), share one
/// budget.
fn within_budget(
    module: &CompiledModule,
    started: Instant,
    deadline: Option<(Instant, ErrorKind)>,
) -> Option<(Instant, ErrorKind)> {
    let own = started.checked_add(Duration::from_millis(module.settings.execution_timeout_ms));
    match (own, deadline) {
        (Some(own), Some((at, kind))) if at <= own => Some((at, kind)),
        (Some(own), _) => Some((own, ErrorKind::Timeout)),
        (None, deadline) => deadline,
    }
}

impl WarmInstance {
    /// Instantiates the module, runs its start function (if any) and its init
    /// function with `custom_config`, together within the module's time
    /// budget (from the instantiation on) and within `deadline` (the call it
    /// is made for: its stage's or pipeline's), which ends them with the
    /// deadline's kind.
    pub(crate) fn new(
        module: &CompiledModule,
        deadline: Option<(Instant, ErrorKind)>,
    ) -> Result<WarmInstance, CallError> {
        let mut deadline = within_budget(module, Instant::now(), deadline);
        let id = &module.id;
        let init_error = |message: String| CallError::new(ErrorKind::Unavailable, id, message);
        let mut store = Store::new(module.engine.clone());
        let lines_this_call = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(Mutex::new(None));
        let env = FunctionEnv::new(
            &mut store,
            LogEnv {
                module: id.clone(),
                lines_dropped: module.log_lines_dropped.clone(),
                memory: None,
                budget: None,
                lines_this_call: lines_this_call.clone(),
                last_error: last_error.clone(),
            },
        );
        let imports = imports! {
            LOG_IMPORT.0 => { LOG_IMPORT.1 => Function::new_typed_with_env(&mut store, &env, host_log) }
        };
        limits::reset_limit_hit();
        // No guest code runs here: the budget middleware took the start
        // function out of the module (run below, armed).
        let instance = Instance::new(&mut store, &module.module, &imports).map_err(|e| {
            let kind = if limits::limit_hit().is_some() {
                ErrorKind::MemoryLimit
            } else {
                ErrorKind::Unavailable
            };
            CallError::new(kind, id, format!("cannot instantiate: {e}"))
        })?;
        let budget = instance
            .exports
            .get_global(BUDGET_GLOBAL)
            .cloned()
            .map_err(|e| init_error(format!("budget global: {e}")))?;
        let memory = instance
            .exports
            .get_memory("memory")
            .cloned()
            .map_err(|e| init_error(e.to_string()))?;
        let data = env.as_mut(&mut store);
        data.memory = Some(memory.clone());
        data.budget = Some(budget.clone());
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
        let budget = global_address(&mut store, &budget);
        let memory_definition = memory_address(&mut store, &memory);
        let mut warm = WarmInstance {
            store,
            lines_this_call,
            last_error,
            memory,
            exports,
            budget,
            memory_definition,
            input: None,
            calls: 0,
            last_used: Instant::now(),
        };
        if instance.exports.get_function(START_EXPORT).is_ok() {
            let start: TypedFunction<(), ()> =
                typed_export(&instance, &warm.store, id, START_EXPORT)?;
            warm.guarded_in_time(module, deadline, |store| start.call(store))?;
        }
        if module.abi == Abi::V1 {
            let version: TypedFunction<(), i32> =
                typed_export(&instance, &warm.store, id, "rmq_abi_version")?;
            let found = warm.guarded_in_time(module, deadline, |store| version.call(store))?;
            if found != i32::from(rustmq_etl_abi::ABI_VERSION) {
                return Err(init_error(format!(
                    "speaks ABI version {found} (what its `rmq_abi_version` answered); this host \
                     speaks version {}",
                    rustmq_etl_abi::ABI_VERSION
                )));
            }
            let init: TypedFunction<(i32, i32), i64> =
                typed_export(&instance, &warm.store, id, "rmq_init")?;
            let config = module.settings.custom_config.as_bytes();
            let ptr = warm.write_input(module, &mut deadline, config)?;
            let packed = warm.guarded_in_time(module, deadline, |store| {
                init.call(store, ptr as i32, config.len() as i32)
            })?;
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
                let read = String::from_utf8_lossy(&message);
                let text = if read.trim().is_empty() {
                    "(its init gave no reason)".into()
                } else {
                    rustmq_etl_abi::printable(&read)
                };
                return Err(init_error(format!(
                    "init rejected its custom_config: {text}"
                )));
            }
        }
        Ok(warm)
    }

    /// Runs guest code as one call: sets the budget to the module's bulk
    /// allowance, arms the watchdog with the module's time budget (or the
    /// caller's deadline, if earlier), and classifies a failure.
    fn guarded<R>(
        &mut self,
        module: &CompiledModule,
        deadline: Option<(Instant, ErrorKind)>,
        call: impl FnOnce(&mut Store) -> Result<R, RuntimeError>,
    ) -> Result<R, CallError> {
        let budget = self.budget.as_ptr();
        // SAFETY: `budget` points into this instance's store (see the field);
        // no guest code runs now and the watchdog only writes while armed.
        unsafe { AtomicI64::from_ptr(budget) }.store(module.bulk_allowance, Ordering::Relaxed);
        limits::reset_limit_hit();
        let store = &mut self.store;
        // SAFETY: the store, which owns the budget global, outlives the call.
        let (result, armed) = unsafe {
            deadline::run_armed(
                budget,
                module.settings.execution_timeout_ms,
                deadline.map(|(at, _)| at),
                || call(store),
            )
        };
        result.map_err(|e| {
            let stopped_by = match (armed, deadline) {
                (Armed::Deadline, Some((_, kind))) => kind,
                _ => ErrorKind::Timeout,
            };
            self.failure(module, e, stopped_by)
        })
    }

    /// [`guarded`](Self::guarded), after checking the deadline has not
    /// passed ([`in_time`]): for entries that follow others of the same call
    /// or start (a clock reading each, off the common path).
    fn guarded_in_time<R>(
        &mut self,
        module: &CompiledModule,
        deadline: Option<(Instant, ErrorKind)>,
        call: impl FnOnce(&mut Store) -> Result<R, RuntimeError>,
    ) -> Result<R, CallError> {
        in_time(module, deadline, Instant::now())?;
        self.guarded(module, deadline, call)
    }

    fn budget_left(&self) -> i64 {
        // SAFETY: as in `guarded`; the watchdog is not armed now.
        unsafe { AtomicI64::from_ptr(self.budget.as_ptr()) }.load(Ordering::Relaxed)
    }

    /// Classifies a failed guest call; `stopped_by` is the kind of the
    /// deadline that was armed (the module's own budget: `timeout`).
    fn failure(
        &mut self,
        module: &CompiledModule,
        error: RuntimeError,
        stopped_by: ErrorKind,
    ) -> CallError {
        let id = &module.id;
        // A budget below zero: the watchdog found the call out of time, or a
        // bulk operation cost more than the allowance, and a check stopped it.
        let left = self.budget_left();
        if left < 0 {
            // Above the watchdog's mark: an operation refused for its size,
            // whatever deadline was armed (it is not the deadline's doing).
            if left > EXPIRED {
                return CallError::new(
                    ErrorKind::Timeout,
                    id,
                    format!(
                        "tried a bulk operation larger than its time budget of {} ms allows \
                         ({} bytes at once)",
                        module.settings.execution_timeout_ms, module.bulk_allowance
                    ),
                );
            }
            return out_of_time(module, stopped_by);
        }
        // What the guest said last before it failed, if it said it in this
        // call at error level (a Rust guest's panic message, by the SDK).
        let said = if self.lines_this_call.load(Ordering::Relaxed) > 0 {
            lock(&self.last_error).take()
        } else {
            None
        };
        let quoting = |cause: String| match &said {
            Some(line) => format!("{cause}; its last error log line: {line}"),
            None => cause,
        };
        if let Some(refused) = limits::limit_hit() {
            // (A guest that handled the refusal and failed otherwise later is
            // still told of it: the error line quoted says what followed.)
            let limit = module.settings.memory_limit_bytes;
            let most = if refused.most == limit as u64 {
                String::new()
            } else {
                format!(
                    " (of which its memory may have {} bytes: whole 64 KiB pages, besides its \
                     tables)",
                    refused.most
                )
            };
            return CallError::new(
                ErrorKind::MemoryLimit,
                id,
                quoting(format!(
                    "tried to grow its memory from {} to {} bytes, past its limit of {limit} \
                     bytes{most}",
                    refused.from, refused.to
                )),
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
            Some(code) => format!("trapped: {}", code.message()),
            None => error.message(),
        };
        CallError::new(ErrorKind::Trap, id, quoting(cause))
    }

    /// Writes `bytes` into the guest's input buffer; returns its address.
    fn write_input(
        &mut self,
        module: &CompiledModule,
        deadline: &mut Option<(Instant, ErrorKind)>,
        bytes: &[u8],
    ) -> Result<u32, CallError> {
        self.fill_input(module, deadline, bytes.len(), |buffer| {
            buffer.copy_from_slice(bytes)
        })
    }

    /// Lets `fill` write exactly `len` bytes into the guest's input buffer, asking
    /// the guest for a larger buffer when needed; returns its address. When
    /// the guest is asked, `deadline` becomes what its budget leaves for the
    /// guest code that follows in the same call (one call, one budget).
    fn fill_input(
        &mut self,
        module: &CompiledModule,
        deadline: &mut Option<(Instant, ErrorKind)>,
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
        let (ptr, allocated) = match self.input {
            Some((ptr, capacity)) if capacity >= len && module.abi == Abi::V1 => (ptr, false),
            _ => {
                let alloc = match &self.exports {
                    Exports::V1 { alloc, .. } => alloc,
                    Exports::Legacy { allocate, .. } => allocate,
                };
                let alloc = alloc.clone();
                let started = Instant::now();
                in_time(module, *deadline, started)?;
                let ptr =
                    self.guarded(module, *deadline, |store| alloc.call(store, len as i32))? as u32;
                *deadline = within_budget(module, started, *deadline);
                self.input = Some((ptr, len));
                (ptr, true)
            }
        };
        let (base, size) = self.guest_memory();
        let end = u64::from(ptr) + u64::from(len);
        // (Nothing is written for an empty input: a null buffer, as C's
        // `malloc(0)` may give, does for it.)
        if (ptr == 0 && len > 0) || end > size {
            self.input = None;
            let message = if ptr == 0 {
                format!("its allocator failed: asked for {len} bytes, it answered 0")
            } else {
                format!("its allocator returned {len} bytes at {ptr:#x}, outside its {size}-byte memory")
            };
            return Err(CallError::new(
                ErrorKind::InvalidOutput,
                &module.id,
                message,
            ));
        }
        // SAFETY: the `len` bytes at `ptr` lie within the memory (checked
        // above), and nothing else reads, writes or grows it while the slice
        // lives: the memory belongs to this instance's `Store`, which `&mut
        // self` holds exclusively on this thread; no guest code runs until
        // `fill` has returned and the slice is gone; and no other instance can
        // reach the memory (modules may import nothing but the logging
        // function). A plain slice lets the host encode the message straight
        // into the guest, with no copy through a host buffer.
        let memory =
            unsafe { std::slice::from_raw_parts_mut(base.add(ptr as usize), len as usize) };
        fill(memory);
        if allocated {
            // The guest code that follows (entered without a check of its
            // own) has what is left, after the allocation and the copy.
            in_time(module, *deadline, Instant::now())?;
        }
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
        if len > module.settings.max_output_bytes as u64 {
            return Err(invalid(format!(
                "its answer is {len} bytes, more than the {}-byte output limit",
                module.settings.max_output_bytes
            )));
        }
        let (base, size) = self.guest_memory();
        if ptr.checked_add(len).is_none_or(|end| end > size) {
            return Err(invalid(format!(
                "its answer ({len} bytes at {ptr:#x}) lies outside its {size}-byte memory"
            )));
        }
        // SAFETY: as in `fill_input`: the bytes lie within the memory
        // (checked above), this thread holds the instance's `Store` (through
        // `&self`, and no guest code runs until `read` has returned), and no
        // other instance can reach the memory. `read` copies what it keeps, so
        // nothing outlives the slice.
        let memory = unsafe { std::slice::from_raw_parts(base.add(ptr as usize), len as usize) };
        Ok(read(memory))
    }

    /// The guest memory's base address and current length in bytes.
    #[inline]
    fn guest_memory(&self) -> (*mut u8, u64) {
        // SAFETY: the definition lives as long as the instance, which the
        // `Store` in `self` keeps; only guest code on this thread (not running
        // now) and this thread's host calls change it.
        let definition = unsafe { self.memory_definition.as_ref() };
        (definition.base, definition.current_length as u64)
    }

    /// The instance's linear memory now, in bytes.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.guest_memory().1
    }

    /// Runs the module on `message`, within its budget and `deadline`.
    pub(crate) fn call(
        &mut self,
        module: &CompiledModule,
        message: &Message,
        deadline: Option<(Instant, ErrorKind)>,
    ) -> Result<Outcome, CallError> {
        self.calls += 1;
        self.lines_this_call.store(0, Ordering::Relaxed);
        match module.abi {
            Abi::V1 => self.call_v1(module, message, deadline),
            Abi::Legacy => self.call_legacy(module, message, deadline),
        }
    }

    fn call_v1(
        &mut self,
        module: &CompiledModule,
        message: &Message,
        deadline: Option<(Instant, ErrorKind)>,
    ) -> Result<Outcome, CallError> {
        let parts = MessageParts {
            topic: &message.topic,
            key: message.key.as_deref(),
            headers: message.headers.iter(),
            payload: &message.payload,
            timestamp_ms: message.timestamp_ms,
        };
        let len = encoded_len(&parts);
        let mut deadline = deadline;
        let ptr = self.fill_input(module, &mut deadline, len, |buffer| {
            encode_message_into(parts, buffer)
        })?;
        let Exports::V1 { transform, .. } = &self.exports else {
            unreachable!("call_v1 on a legacy instance")
        };
        let transform = transform.clone();
        let packed = self.guarded(module, deadline, |store| {
            transform.call(store, ptr as i32, len as i32)
        })?;
        let (out_ptr, out_len) = unpack(packed);
        self.read_output(module, out_ptr, out_len, |output| {
            outcome(&module.id, output)
        })?
    }

    fn call_legacy(
        &mut self,
        module: &CompiledModule,
        message: &Message,
        deadline: Option<(Instant, ErrorKind)>,
    ) -> Result<Outcome, CallError> {
        let mut deadline = deadline;
        let ptr = self.write_input(module, &mut deadline, &message.payload)?;
        let Exports::Legacy { transform, .. } = &self.exports else {
            unreachable!("call_legacy on a v1 instance")
        };
        let transform = transform.clone();
        let len = message.payload.len() as i32;
        let result = self.guarded(module, deadline, |store| {
            transform.call(store, ptr as i32, len)
        })? as u32 as u64;
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
        Ok(Outcome::Edited(vec![MessageEdit::SetPayload(payload)]))
    }
}

/// Checks the guest's answer and copies it out of the guest's memory: the
/// answer is decoded whole (every edit read) before anything is copied, and
/// the number of edits it announces (at most [`MAX_EDITS`]) is checked before
/// any is read; an edit the
/// host refuses (an empty topic or header name) drops the copies of the ones
/// before it, which the output limit bounds.
fn outcome(module: &str, output: &[u8]) -> Result<Outcome, CallError> {
    let invalid = |message: String| CallError::new(ErrorKind::InvalidOutput, module, message);
    let outcome = decode_outcome(output).map_err(|e| match e {
        DecodeError::TooManyEdits { .. } => {
            invalid(format!("its answer holds more than {MAX_EDITS} edits"))
        }
        e => invalid(format!("its answer does not decode: {e}")),
    })?;
    let edits = match outcome {
        OutcomeView::Unchanged => return Ok(Outcome::Unchanged),
        OutcomeView::Drop => return Ok(Outcome::Dropped),
        OutcomeView::Error(text) => {
            // An error with no text still says what it is; a long one is
            // cut and made one line (it becomes a dead letter's header, a log
            // line).
            return Err(CallError::new(
                ErrorKind::GuestError,
                module,
                rustmq_etl_abi::error_text(text),
            ));
        }
        OutcomeView::Edits(edits) => edits,
    };
    let mut copied = Vec::with_capacity(edits.len());
    for edit in edits {
        copied.push(match edit {
            Edit::SetTopic("") => return Err(invalid("it set an empty topic".to_owned())),
            Edit::SetHeader("", _) | Edit::RemoveHeader("") => {
                return Err(invalid(
                    "it named a header with the empty string".to_owned(),
                ))
            }
            Edit::SetPayload(p) => MessageEdit::SetPayload(Bytes::copy_from_slice(p)),
            Edit::SetKey(k) => MessageEdit::SetKey(Bytes::copy_from_slice(k)),
            Edit::ClearKey => MessageEdit::ClearKey,
            Edit::SetTopic(t) => MessageEdit::SetTopic(t.to_owned()),
            Edit::SetHeader(n, v) => MessageEdit::SetHeader(n.to_owned(), v.to_owned()),
            Edit::RemoveHeader(n) => MessageEdit::RemoveHeader(n.to_owned()),
            Edit::SetTimestamp(ms) => MessageEdit::SetTimestamp(ms),
            Edit::ClearTimestamp => MessageEdit::ClearTimestamp,
        });
    }
    Ok(Outcome::Edited(copied))
}

/// Where an instance's memory keeps its base and length for its compiled code
/// (inside the instance's context, which the store keeps in place). The
/// address is stable for the instance's life; what it holds is not: a
/// `memory.grow` may move the memory and rewrite both, so they are read afresh
/// after every guest call, never kept.
fn memory_address(store: &mut Store, memory: &Memory) -> NonNull<VMMemoryDefinition> {
    let handle = match Extern::Memory(memory.clone()).to_vm_extern().unwrap_sys() {
        wasmer::sys::vm::VMExtern::Memory(handle) => handle,
        _ => unreachable!("a memory's extern is a memory"),
    };
    handle.get(store.objects_mut().as_sys()).vmmemory()
}

/// The address of a global's value inside its store.
pub(crate) fn global_address(store: &mut Store, global: &Global) -> NonNull<i64> {
    let handle = match Extern::Global(global.clone()).to_vm_extern().unwrap_sys() {
        wasmer::sys::vm::VMExtern::Global(handle) => handle,
        _ => unreachable!("a global's extern is a global"),
    };
    // `VMGlobalDefinition` is `repr(C, align(16))` around a `repr(C)` union
    // whose `i64` member starts at offset 0.
    handle
        .get(store.objects_mut().as_sys())
        .vmglobal()
        .cast::<i64>()
}

#[cfg(test)]
mod tests {
    use rustmq_etl_abi::{encode_outcome, Outcome as Answer};

    use super::*;

    fn answer(answer: Answer<'_>) -> Result<Outcome, CallError> {
        let mut bytes = Vec::new();
        encode_outcome(&answer, &mut bytes);
        outcome("m", &bytes)
    }

    fn refused(result: Result<Outcome, CallError>) -> (ErrorKind, String) {
        let error = result.expect_err("refused");
        (error.kind(), error.message().to_owned())
    }

    /// A module's text is one line: what would end it or change how it is
    /// shown is written as an escape; anything else, a tab included, as it is.
    #[test]
    fn a_module_s_text_is_made_one_printable_line() {
        use rustmq_etl_abi::{error_text, printable, MAX_ERROR_TEXT};
        assert!(matches!(
            printable("plain \t text, ünïcode"),
            std::borrow::Cow::Borrowed("plain \t text, ünïcode")
        ));
        assert_eq!(
            printable("a\r\nb\u{1b}[2J\u{7f}\u{85}\u{2028}\u{202e}\u{2066}\u{200f}\u{61c}c"),
            r"a\r\nb\u{1b}[2J\u{7f}\u{85}\u{2028}\u{202e}\u{2066}\u{200f}\u{61c}c"
        );
        // An error answer's text, which dead letters and logs quote: cut,
        // then made one line.
        assert_eq!(
            refused(answer(Answer::Error("bad\nline"))),
            (ErrorKind::GuestError, r"bad\nline".to_owned())
        );
        let long = "\n".repeat(MAX_ERROR_TEXT) + &"x".repeat(10);
        assert_eq!(
            error_text(&long),
            r"\n".repeat(MAX_ERROR_TEXT) + "… (10 bytes more)"
        );
        // Blank is blank, whatever its line ends.
        assert_eq!(error_text("\n\r\n"), rustmq_etl_abi::ERROR_WITHOUT_TEXT);
    }

    #[test]
    fn edits_are_copied_out_in_order() {
        let edits = [
            Edit::SetPayload(b"p"),
            Edit::SetHeader("a", "1"),
            Edit::RemoveHeader("b"),
            Edit::SetTopic("t"),
            Edit::SetKey(b"k"),
            Edit::ClearKey,
            Edit::SetTimestamp(-7),
            Edit::ClearTimestamp,
        ];
        assert_eq!(
            answer(Answer::Edits(&edits)).unwrap(),
            Outcome::Edited(vec![
                MessageEdit::SetPayload(Bytes::from_static(b"p")),
                MessageEdit::SetHeader("a".into(), "1".into()),
                MessageEdit::RemoveHeader("b".into()),
                MessageEdit::SetTopic("t".into()),
                MessageEdit::SetKey(Bytes::from_static(b"k")),
                MessageEdit::ClearKey,
                MessageEdit::SetTimestamp(-7),
                MessageEdit::ClearTimestamp,
            ])
        );
        assert_eq!(answer(Answer::Edits(&[])).unwrap(), Outcome::Edited(vec![]));
        assert_eq!(answer(Answer::Unchanged).unwrap(), Outcome::Unchanged);
        assert_eq!(answer(Answer::Drop).unwrap(), Outcome::Dropped);
    }

    #[test]
    fn what_the_host_refuses_is_invalid_output_wherever_it_is() {
        for bad in [
            Edit::SetTopic(""),
            Edit::SetHeader("", "v"),
            Edit::RemoveHeader(""),
        ] {
            for at in 0..3 {
                let mut edits = vec![Edit::SetPayload(b"p"); 2];
                edits.insert(at, bad);
                let (kind, message) = refused(answer(Answer::Edits(&edits)));
                assert_eq!(kind, ErrorKind::InvalidOutput, "{bad:?} at {at}");
                assert!(message.contains("empty"), "{bad:?} at {at}: {message}");
            }
        }
        let too_many = vec![Edit::ClearKey; MAX_EDITS + 1];
        let (kind, message) = refused(answer(Answer::Edits(&too_many)));
        assert_eq!(kind, ErrorKind::InvalidOutput);
        assert!(message.contains("more than 65536 edits"), "{message}");
        assert!(answer(Answer::Edits(&too_many[1..])).is_ok());
        // Refused by its announced count, before any edit is read: 16 million
        // announced, one there.
        let announced = [&[2][..], &16_000_000u32.to_le_bytes(), &[3]].concat();
        let (kind, message) = refused(outcome("m", &announced));
        assert_eq!(kind, ErrorKind::InvalidOutput);
        assert!(message.contains("more than 65536 edits"), "{message}");
        let (kind, message) = refused(outcome("m", &[2, 1, 0, 0, 0, 9]));
        assert_eq!(kind, ErrorKind::InvalidOutput);
        assert!(message.contains("does not decode"), "{message}");
        let (kind, message) = refused(answer(Answer::Error("no")));
        assert_eq!((kind, message.as_str()), (ErrorKind::GuestError, "no"));
        let (_, message) = refused(answer(Answer::Error(" ")));
        assert_eq!(message, "the module answered an error without a text");
        // A long text is cut at a character's boundary, and says so.
        const MAX_ERROR_TEXT: usize = rustmq_etl_abi::MAX_ERROR_TEXT;
        let long = format!("x{}", "é".repeat(MAX_ERROR_TEXT));
        let (kind, message) = refused(answer(Answer::Error(&long)));
        assert_eq!(kind, ErrorKind::GuestError);
        let kept = MAX_ERROR_TEXT - 1;
        assert_eq!(
            message,
            format!(
                "x{}… ({} bytes more)",
                "é".repeat(kept / 2),
                long.len() - kept
            )
        );
    }
}
