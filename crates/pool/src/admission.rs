//! What a module may be: checked on its bytes before anything compiles it.
//!
//! - **Features**: the WebAssembly 2.0 feature set (mutable globals, sign
//!   extension, non-trapping float-to-int, multi-value, bulk memory, reference
//!   types, fixed-width SIMD) and extended constant expressions; everything
//!   else (threads, several memories, 64-bit memories, exceptions, tail calls,
//!   relaxed SIMD, garbage collection, …) is refused with the validator's
//!   explanation. The engine is built with the same set ([`features`]).
//! - **Imports**: only a function `rmq_etl.log` (its signature, `(i32,
//!   i32, i32)`, is checked once the module is compiled, with the ABI's
//!   exports: `LoadError::Abi`).
//! - **Size**: the module's bytes, and per function its locals, operators,
//!   block nesting and `br_table` targets ([`CompileLimits`]): what makes
//!   Cranelift's time and memory grow faster than the module's size.
//! - **Memory**: everything an instance holds counts against
//!   `memory_limit_bytes`: its one linear memory and its tables, each table at
//!   its maximum size ([`TABLE_ELEMENT_BYTES`] an element). A table that
//!   declares no maximum cannot grow past its initial size.

use std::time::Duration;

use wasmer::sys::wasmparser::{
    Operator, Parser, Payload, TypeRef, ValType, Validator, WasmFeatures,
};

use crate::module::LOG_IMPORT;

/// Limits on a module's shape, checked before it is compiled, and on the
/// compilation itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileLimits {
    /// Most bytes of a module file.
    pub max_module_bytes: usize,
    /// Most operators in one function body.
    pub max_function_operators: u32,
    /// Most locals (parameters included) in one function.
    pub max_function_locals: u32,
    /// Most blocks, loops and ifs open at once in one function.
    pub max_nesting: u32,
    /// Most targets of one `br_table`.
    pub max_br_table_targets: u32,
    /// Most of one function's locals × the depth of its deepest loop nest.
    /// Every loop header joins every local live around it, and the register
    /// allocator's work grows with the square of the values so joined.
    pub max_locals_times_loop_depth: u64,
    /// Most of one function's estimated SSA joins: for every read of a local,
    /// the control-flow joins since it was last read or written. The
    /// compiler's SSA construction makes about one block parameter per join
    /// a local's value crosses.
    pub max_local_joins: u64,
    /// How long compiling one module may take before the load is refused.
    pub compile_timeout: Duration,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_module_bytes: 32 << 20,
            max_function_operators: 250_000,
            max_function_locals: 5_000,
            max_nesting: 256,
            max_br_table_targets: 65_536,
            max_locals_times_loop_depth: 10_000,
            max_local_joins: 1_000_000,
            compile_timeout: Duration::from_secs(10),
        }
    }
}

/// Bytes one table element counts for against the memory limit: 8 for the
/// element, doubled for the slack a growing vector keeps.
pub const TABLE_ELEMENT_BYTES: u64 = 16;

/// The WebAssembly features modules may use; the engine is built with the same.
pub(crate) fn wasm_features() -> WasmFeatures {
    WasmFeatures::WASM2 | WasmFeatures::EXTENDED_CONST
}

/// [`wasm_features`] in wasmer's terms.
pub(crate) fn features() -> wasmer::sys::Features {
    let mut features = wasmer::sys::Features::none();
    features.bulk_memory = true;
    features.reference_types = true;
    features.multi_value = true;
    features.simd = true;
    features.extended_const = true;
    features
}

/// A module that passed admission, and the limits its engine enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// The most 64 KiB pages its memory may have: what the memory limit leaves
    /// after its tables.
    pub(crate) memory_pages: u32,
}

impl Admitted {
    /// The caps for a module without tables (benches and unit tests of the
    /// engine, which skip admission).
    pub(crate) fn without_tables(memory_limit_bytes: usize) -> Admitted {
        Admitted {
            memory_pages: (memory_limit_bytes / wasmer::WASM_PAGE_SIZE) as u32,
        }
    }
}

/// Why a module was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It is not valid WebAssembly at all.
    Invalid(String),
    /// It breaks a rule of the sandbox (features, imports, shape).
    Rule(String),
    /// It cannot start within its memory limit.
    Memory(String),
}

/// Checks `wasm` against the features, the import policy, `limits` and the
/// memory limit, before anything compiles it.
pub(crate) fn admit(
    wasm: &[u8],
    limits: &CompileLimits,
    memory_limit_bytes: usize,
) -> Result<Admitted, Refusal> {
    let rule = |message: String| Refusal::Rule(message);
    if wasm.len() > limits.max_module_bytes {
        return Err(rule(format!(
            "the module is {} bytes, more than the limit of {} bytes",
            wasm.len(),
            limits.max_module_bytes
        )));
    }
    if wasm.is_empty() {
        return Err(Refusal::Invalid(
            "the file is empty (a module still being written?)".to_owned(),
        ));
    }
    if !wasm.starts_with(b"\0asm") {
        let start: String = wasm
            .iter()
            .take(4)
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect();
        // ELF, PE and Mach-O (either byte order, 32 and 64 bits, universal).
        const NATIVE: [&[u8]; 7] = [
            b"\x7fELF",
            b"MZ",
            b"\xcf\xfa\xed\xfe",
            b"\xce\xfa\xed\xfe",
            b"\xfe\xed\xfa\xcf",
            b"\xfe\xed\xfa\xce",
            b"\xca\xfe\xba\xbe",
        ];
        let text = wasm.trim_ascii_start();
        let hint = if NATIVE.iter().any(|magic| wasm.starts_with(magic)) {
            " (a native program or library: build the module with `--target wasm32-unknown-unknown`)"
        } else if [&b"(module"[..], b";;", b"(;"]
            .iter()
            .any(|start| text.starts_with(start))
        {
            " (a .wat text file must be compiled to .wasm first)"
        } else {
            ""
        };
        return Err(Refusal::Invalid(format!(
            "it does not start with the WebAssembly magic bytes \"\\0asm\" but with \"{start}\"{hint}"
        )));
    }
    if let Err(e) = Validator::new_with_features(wasm_features()).validate_all(wasm) {
        // Valid with every feature on: it uses one this host does not accept.
        return Err(
            if Validator::new_with_features(WasmFeatures::all())
                .validate_all(wasm)
                .is_ok()
            {
                rule(format!(
                    "uses a WebAssembly feature this host does not accept: {e} (the host accepts WebAssembly 2.0 and extended constant expressions; see docs/abi.md, \"What the sandbox guarantees\")"
                ))
            } else {
                // On one line: the validator's messages may hold a
                // pretty-printed list.
                Refusal::Invalid(
                    e.to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            },
        );
    }
    let mut table_bytes = 0u64;
    let mut memory_pages: Option<(u64, Option<u64>)> = None;
    let mut function_index = 0u32;
    let mut imported_functions = 0u32;
    let mut types = Vec::new();
    let mut function_types = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| rule(e.to_string()))?;
        match payload {
            Payload::TypeSection(reader) => {
                for group in reader {
                    let group = group.map_err(|e| rule(e.to_string()))?;
                    for ty in group.into_types() {
                        types.push(ty.unwrap_func().params().len() as u64);
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| rule(e.to_string()))?;
                    let allowed = (import.module, import.name) == LOG_IMPORT
                        && matches!(import.ty, TypeRef::Func(_));
                    if !allowed {
                        let kind = match import.ty {
                            TypeRef::Func(_) | TypeRef::FuncExact(_) => "a function",
                            TypeRef::Memory(_) => "a memory",
                            TypeRef::Table(_) => "a table",
                            TypeRef::Global(_) => "a global",
                            TypeRef::Tag(_) => "an exception tag",
                        };
                        return Err(rule(format!(
                            "imports {kind} `{}.{}`; a guest may import only the function `rmq_etl.log(i32, i32, i32)` — no filesystem, network, clock, randomness or environment",
                            // (The module's names: one line, cut.)
                            rustmq_etl_abi::printable_cut(import.module, 200),
                            rustmq_etl_abi::printable_cut(import.name, 200)
                        )));
                    }
                    imported_functions += 1;
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    function_types.push(ty.map_err(|e| rule(e.to_string()))?);
                }
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    let table = table.map_err(|e| rule(e.to_string()))?;
                    let most = table.ty.maximum.unwrap_or(table.ty.initial);
                    table_bytes =
                        table_bytes.saturating_add(most.saturating_mul(TABLE_ELEMENT_BYTES));
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(|e| rule(e.to_string()))?;
                    memory_pages = Some((memory.initial, memory.maximum));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let params = function_types
                    .get(function_index as usize)
                    .and_then(|&ty| types.get(ty as usize))
                    .copied()
                    .unwrap_or(0);
                check_function(imported_functions + function_index, params, &body, limits)
                    .map_err(rule)?;
                function_index += 1;
            }
            _ => {}
        }
    }
    let limit = memory_limit_bytes as u64;
    if table_bytes > limit {
        return Err(Refusal::Memory(format!(
            "its tables take {table_bytes} bytes at their maximum size ({TABLE_ELEMENT_BYTES} bytes an element), more than its memory limit of {limit} bytes"
        )));
    }
    let page = wasmer::WASM_PAGE_SIZE as u64;
    let pages = ((limit - table_bytes) / page).min(u64::from(u32::MAX)) as u32;
    if let Some((initial, _)) = memory_pages {
        if initial > u64::from(pages) {
            return Err(Refusal::Memory(format!(
                "it needs {} bytes of memory to start{}, more than its memory limit of {limit} bytes",
                initial * page,
                if table_bytes > 0 {
                    format!(" besides {table_bytes} bytes of tables")
                } else {
                    String::new()
                }
            )));
        }
    }
    Ok(Admitted {
        memory_pages: pages,
    })
}

/// Checks one function body against the shape limits, in one pass over it.
fn check_function(
    index: u32,
    params: u64,
    body: &wasmer::sys::wasmparser::FunctionBody<'_>,
    limits: &CompileLimits,
) -> Result<(), String> {
    let too = |what: String| format!("function {index} {what}");
    let mut locals = params;
    for group in body.get_locals_reader().map_err(|e| e.to_string())? {
        let (count, _): (u32, ValType) = group.map_err(|e| e.to_string())?;
        locals += u64::from(count);
        if locals > u64::from(limits.max_function_locals) {
            return Err(too(format!(
                "has more than {} locals",
                limits.max_function_locals
            )));
        }
    }
    let mut operators = 0u32;
    // Open blocks, each remembering whether it is a loop.
    let mut open: Vec<bool> = Vec::new();
    let mut loop_depth = 0u64;
    // Control-flow joins so far (loop headers and block ends), and for every
    // local the joins count when it was last read or written.
    let mut joins = 0u64;
    let mut last_seen = vec![0u64; locals as usize];
    let mut local_joins = 0u64;
    let mut reader = body.get_operators_reader().map_err(|e| e.to_string())?;
    while !reader.eof() {
        let operator = reader.read().map_err(|e| e.to_string())?;
        operators += 1;
        if operators > limits.max_function_operators {
            return Err(too(format!(
                "has more than {} operators",
                limits.max_function_operators
            )));
        }
        match operator {
            Operator::Block { .. } | Operator::If { .. } | Operator::Loop { .. } => {
                let is_loop = matches!(operator, Operator::Loop { .. });
                open.push(is_loop);
                if open.len() > limits.max_nesting as usize {
                    return Err(too(format!(
                        "nests blocks more than {} deep",
                        limits.max_nesting
                    )));
                }
                if is_loop {
                    joins += 1;
                    loop_depth += 1;
                    if loop_depth * locals > limits.max_locals_times_loop_depth {
                        return Err(too(format!(
                            "nests {loop_depth} loops around {locals} locals, more than the limit of {} for locals × loop depth",
                            limits.max_locals_times_loop_depth
                        )));
                    }
                }
            }
            Operator::Else => joins += 1,
            Operator::End => {
                if open.pop() == Some(true) {
                    loop_depth -= 1;
                } else {
                    joins += 1;
                }
            }
            Operator::LocalGet { local_index } => {
                // Validated: the index is in range.
                let seen = &mut last_seen[local_index as usize];
                local_joins += joins - *seen;
                *seen = joins;
                if local_joins > limits.max_local_joins {
                    return Err(too(format!(
                        "reads locals across more than {} control-flow joins (its locals × branches make compiling it slow)",
                        limits.max_local_joins
                    )));
                }
            }
            Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => {
                last_seen[local_index as usize] = joins;
            }
            Operator::BrTable { targets } if targets.len() > limits.max_br_table_targets => {
                return Err(too(format!(
                    "has a br_table of {} targets, more than the limit of {}",
                    targets.len(),
                    limits.max_br_table_targets
                )));
            }
            _ => {}
        }
    }
    Ok(())
}
