//! The compile-time instrumentation that lets the host stop a guest call.
//!
//! The middleware adds one `i64` global to every module, the **budget**, which
//! the host sets before each call to the bytes one bulk operation may move (its
//! time budget times a measured rate, see `calibrate.rs`), and which the
//! watchdog (`deadline.rs`) sets below zero once the call's time is up. The
//! compiled code checks that the budget is not negative
//!
//! - at the entry of every function (so recursion and call chains are checked),
//! - at the header of every loop (so every loop iteration is checked),
//! - before every bulk operation (`memory.fill`, `memory.copy`, `memory.init`,
//!   `table.fill`, `table.copy`, `table.init`, and `table.grow`, which copies
//!   the table and fills its new elements at once), against the operation's
//!   length: one that costs more than the budget holds is refused,
//! - and before `memory.grow`,
//!
//! and traps (`unreachable`) when it is. Between two checks a function runs
//! loop-free code without calls or bulk operations, whose length the admission
//! limits bound (`admission.rs`), so a call stops soon after its deadline; and
//! one bulk operation admitted before the deadline is at most the budget's
//! bytes, which the calibrated rate makes about one time budget's worth.
//! Nothing is charged for ordinary operators: the checks are a load, a compare
//! and a branch.
//!
//! A module's start function would run inside instantiation, where no call is
//! armed; the middleware removes it from the module and exports it as
//! [`START_EXPORT`], so the host runs it as an ordinary, bounded call. Both
//! export names are reserved: a module that exports one of them is refused.

use std::sync::{Arc, Mutex};

use wasmer::sys::wasmparser::{BlockType, Operator};
use wasmer::sys::{FunctionMiddleware, MiddlewareError, MiddlewareReaderState, ModuleMiddleware};
use wasmer::{
    ExportIndex, GlobalInit, GlobalType, LocalFunctionIndex, ModuleInfo, Mutability, Type,
};

/// The exported `i64` global holding the call's budget (negative: stop).
pub(crate) const BUDGET_GLOBAL: &str = "rmq_etl_budget";
/// The export under which the host finds the module's start function.
pub(crate) const START_EXPORT: &str = "rmq_etl_start";
/// The budget a fresh instance holds: negative, so that guest code entered
/// without the host arming a call stops at its first check.
pub(crate) const DISARMED: i64 = -1;
/// What the watchdog writes when a call's time is up: far below zero, so that
/// charges after it cannot bring the budget back above zero.
pub(crate) const EXPIRED: i64 = i64::MIN / 2;
/// One table element costs as much budget as this many bytes of memory
/// (a power of two: charged with a shift). Table operations move 8-byte
/// elements one at a time through a host function.
pub(crate) const TABLE_ELEMENT_COST_SHIFT: i64 = 5;

/// The module half of the middleware. One per compiled module: it remembers the
/// indices of the globals it added.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    module: Mutex<Option<Instrumented>>,
}

/// What the module half learnt of the module, for every function's half.
#[derive(Debug, Clone)]
struct Instrumented {
    globals: Globals,
    /// The most each table (by index) can ever grow: its maximum, as the
    /// host caps it (`limits.rs`: its initial size if it declares none),
    /// less its initial size.
    table_growth: Arc<[u32]>,
}

#[derive(Debug, Clone, Copy)]
struct Globals {
    budget: u32,
    /// An `i32` the instrumentation parks a bulk operation's length in.
    scratch: u32,
}

impl ModuleMiddleware for Budget {
    fn generate_function_middleware<'a>(
        &self,
        _: LocalFunctionIndex,
    ) -> Box<dyn FunctionMiddleware<'a> + 'a> {
        let Instrumented {
            globals,
            table_growth,
        } = self
            .module
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .expect("wasmer transforms the module info before it compiles functions");
        Box::new(FunctionBudget {
            globals,
            table_growth,
            at_entry: true,
        })
    }

    fn transform_module_info(&self, info: &mut ModuleInfo) -> Result<(), MiddlewareError> {
        let mut module = self.module.lock().unwrap_or_else(|p| p.into_inner());
        if module.is_some() {
            return Err(MiddlewareError::new(
                "budget",
                "one budget middleware was used for two modules",
            ));
        }
        for name in [BUDGET_GLOBAL, START_EXPORT] {
            if info.exports.contains_key(name) {
                return Err(MiddlewareError::new(
                    "budget",
                    format!("the module already exports {name:?}, a name the host reserves"),
                ));
            }
        }
        let budget = info
            .globals
            .push(GlobalType::new(Type::I64, Mutability::Var));
        info.global_initializers
            .push(GlobalInit::I64Const(DISARMED));
        let scratch = info
            .globals
            .push(GlobalType::new(Type::I32, Mutability::Var));
        info.global_initializers.push(GlobalInit::I32Const(0));
        info.exports
            .insert(BUDGET_GLOBAL.to_owned(), ExportIndex::Global(budget));
        if let Some(start) = info.start_function.take() {
            info.exports
                .insert(START_EXPORT.to_owned(), ExportIndex::Function(start));
        }
        *module = Some(Instrumented {
            globals: Globals {
                budget: budget.as_u32(),
                scratch: scratch.as_u32(),
            },
            table_growth: info
                .tables
                .values()
                .map(|t| t.maximum.unwrap_or(t.minimum).saturating_sub(t.minimum))
                .collect(),
        });
        Ok(())
    }
}

/// A `table.grow` to charge: its table, and the most it can ever add.
#[derive(Debug, Clone, Copy)]
struct Growth {
    table: u32,
    at_most: u32,
}

/// The function half: instruments one function body.
///
/// A check loads the budget from its global. Cranelift may reuse a value it
/// loaded earlier instead of loading again, unless a store to a global (or a
/// call) may have come between; loop headers store to the scratch global for
/// that reason (see `feed`), and a test below runs a loop that only the
/// watchdog's write can stop.
#[derive(Debug)]
struct FunctionBudget {
    globals: Globals,
    /// See [`Instrumented::table_growth`].
    table_growth: Arc<[u32]>,
    /// Nothing of the body has been seen yet.
    at_entry: bool,
}

impl FunctionBudget {
    /// `if budget < 0 { unreachable }`
    fn check<'a>(&self, state: &mut MiddlewareReaderState<'a>) {
        state.extend([
            Operator::GlobalGet {
                global_index: self.globals.budget,
            },
            Operator::I64Const { value: 0 },
            Operator::I64LtS,
            Operator::If {
                blockty: BlockType::Empty,
            },
            Operator::Unreachable,
            Operator::End,
        ]);
    }

    /// With a length on top of the stack: `if budget < len << shift { budget
    /// -= len << shift; unreachable }`, leaving the length where it was.
    ///
    /// An operation is refused when it alone costs more than the budget
    /// holds (or the budget is negative: the call's time is up); one that
    /// fits costs nothing afterwards, so that a guest's bulk work is bounded
    /// by the call's time, which the watchdog measures, and each operation by
    /// one allowance — not the call's whole bulk work by one allowance at a
    /// rate measured on memory touched for the first time, which refused
    /// copies in warm memory at a fiftieth of the time budget. A refusal
    /// leaves the budget negative, so that the host tells it from a trap.
    ///
    /// With `growth`, a `table.grow` of that table: the length is counted as
    /// at most the most it can ever add (what it cannot add fails at once,
    /// the guest seeing -1), plus the table's size now (growing copies the
    /// table into a larger vector).
    fn charge_length<'a>(
        &self,
        shift: i64,
        growth: Option<Growth>,
        state: &mut MiddlewareReaderState<'a>,
    ) {
        let Globals { budget, scratch } = self.globals;
        let cost = |state: &mut MiddlewareReaderState<'a>| {
            let length = [
                Operator::GlobalGet {
                    global_index: scratch,
                },
                Operator::I64ExtendI32U,
            ];
            state.extend(length.clone());
            if let Some(Growth { table, at_most }) = growth {
                // select(length, at_most, length < at_most) + table.size
                let at_most = Operator::I64Const {
                    value: i64::from(at_most),
                };
                state.push_operator(at_most.clone());
                state.extend(length);
                state.extend([
                    at_most,
                    Operator::I64LtU,
                    Operator::Select,
                    Operator::TableSize { table },
                    Operator::I64ExtendI32U,
                    Operator::I64Add,
                ]);
            }
            if shift != 0 {
                state.extend([Operator::I64Const { value: shift }, Operator::I64Shl]);
            }
        };
        state.extend([
            Operator::GlobalSet {
                global_index: scratch,
            },
            Operator::GlobalGet {
                global_index: budget,
            },
        ]);
        cost(state);
        state.extend([
            Operator::I64LtS,
            Operator::If {
                blockty: BlockType::Empty,
            },
            Operator::GlobalGet {
                global_index: budget,
            },
        ]);
        cost(state);
        state.extend([
            Operator::I64Sub,
            Operator::GlobalSet {
                global_index: budget,
            },
            Operator::Unreachable,
            Operator::End,
            Operator::GlobalGet {
                global_index: scratch,
            },
        ]);
    }
}

impl<'a> FunctionMiddleware<'a> for FunctionBudget {
    fn feed(
        &mut self,
        operator: Operator<'a>,
        state: &mut MiddlewareReaderState<'a>,
    ) -> Result<(), MiddlewareError> {
        if self.at_entry {
            // Recursion and every call chain pass here.
            self.check(state);
            self.at_entry = false;
        }
        match operator {
            Operator::Loop { .. } => {
                state.push_operator(operator);
                // Inside the loop: every iteration passes here. Cranelift
                // forwards a global's value from an earlier load as long as
                // no store to a global may have come between (its alias
                // analysis); a loop without such a store would check the
                // value read before the loop for ever, never seeing the
                // watchdog's write. A store to the scratch global at the
                // header makes every iteration read the budget afresh.
                state.extend([
                    Operator::I32Const { value: 0 },
                    Operator::GlobalSet {
                        global_index: self.globals.scratch,
                    },
                ]);
                self.check(state);
            }
            Operator::MemoryFill { .. }
            | Operator::MemoryCopy { .. }
            | Operator::MemoryInit { .. } => {
                self.charge_length(0, None, state);
                state.push_operator(operator);
            }
            Operator::TableFill { .. }
            | Operator::TableCopy { .. }
            | Operator::TableInit { .. } => {
                self.charge_length(TABLE_ELEMENT_COST_SHIFT, None, state);
                state.push_operator(operator);
            }
            // A table grows at once, element by element (wasmer's tables are
            // vectors, copied into a larger one): charged as a fill of the
            // new elements it can have and of those it has.
            Operator::TableGrow { table } => {
                match self.table_growth.get(table as usize).copied().unwrap_or(0) {
                    // It cannot grow (no maximum: it keeps its size): the
                    // guest sees -1 and nothing is copied.
                    0 => self.check(state),
                    at_most => {
                        let growth = Growth { table, at_most };
                        self.charge_length(TABLE_ELEMENT_COST_SHIFT, Some(growth), state);
                    }
                }
                state.push_operator(operator);
            }
            // Memory growth is not charged: its pages are reserved already
            // and touched only when used; a request beyond the cap fails at
            // once (the guest sees -1).
            Operator::MemoryGrow { .. } => {
                self.check(state);
                state.push_operator(operator);
            }
            _ => state.push_operator(operator),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wasmer::{imports, Global, Instance, Module, Store, TypedFunction, Value};

    use super::{BUDGET_GLOBAL, DISARMED, START_EXPORT};

    fn instantiate(wat: &str) -> (Store, Instance, Global) {
        let engine = crate::module::engine(&crate::admission::Admitted::without_tables(1 << 20));
        let module = Module::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
        let mut store = Store::new(engine);
        let instance = Instance::new(&mut store, &module, &imports! {}).unwrap();
        let budget = instance.exports.get_global(BUDGET_GLOBAL).unwrap().clone();
        (store, instance, budget)
    }

    fn budget_left(store: &mut Store, budget: &Global) -> i64 {
        match budget.get(store) {
            Value::I64(n) => n,
            other => panic!("the budget global holds {other:?}"),
        }
    }

    const SPIN: &str = r#"(module
        (func (export "spin") (param $n i32)
          (loop $l
            (local.set $n (i32.sub (local.get $n) (i32.const 1)))
            (br_if $l (local.get $n)))))"#;

    /// Ordinary operators cost nothing: a loop runs without touching the budget.
    #[test]
    fn ordinary_code_is_not_charged() {
        let (mut store, instance, budget) = instantiate(SPIN);
        let spin: TypedFunction<i32, ()> =
            instance.exports.get_typed_function(&store, "spin").unwrap();
        budget.set(&mut store, Value::I64(7)).unwrap();
        spin.call(&mut store, 1000).unwrap();
        assert_eq!(budget_left(&mut store, &budget), 7);
    }

    /// A loop with no store of its own stops when the budget is written from
    /// outside while it runs (as the watchdog does): the check reads the
    /// global afresh on every iteration.
    #[test]
    fn a_loop_sees_a_write_from_another_thread() {
        let (mut store, instance, budget) =
            instantiate(r#"(module (func (export "forever") (loop $l (br $l))))"#);
        let forever: TypedFunction<(), ()> = instance
            .exports
            .get_typed_function(&store, "forever")
            .unwrap();
        budget.set(&mut store, Value::I64(1)).unwrap();
        let address = crate::instance::global_address(&mut store, &budget).as_ptr() as usize;
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            // SAFETY: the instance outlives the loop, which only ends after this write.
            unsafe { std::sync::atomic::AtomicI64::from_ptr(address as *mut i64) }
                .store(super::EXPIRED, std::sync::atomic::Ordering::SeqCst);
        });
        let err = forever.call(&mut store).unwrap_err();
        assert!(err.message().contains("unreachable"), "{err}");
        writer.join().unwrap();
    }

    /// A fresh instance is disarmed: its first function entry stops.
    #[test]
    fn a_call_without_a_budget_stops_at_the_entry() {
        let (mut store, instance, budget) = instantiate(SPIN);
        assert_eq!(budget_left(&mut store, &budget), DISARMED);
        let spin: TypedFunction<i32, ()> =
            instance.exports.get_typed_function(&store, "spin").unwrap();
        let err = spin.call(&mut store, 1).unwrap_err();
        assert!(err.message().contains("unreachable"), "{err}");
    }

    /// A bulk operation that costs more than the budget holds is refused
    /// before it runs, and the budget is left negative for every later check;
    /// one that fits costs nothing afterwards (the call's time bounds the
    /// rest). A table element costs 32 bytes, and so does each new one of a
    /// `table.grow` and each the table has when it grows.
    #[test]
    fn bulk_operations_beyond_the_budget_are_refused_before_they_run() {
        let wat = r#"(module
            (memory 1)
            (table $t 31 1000 funcref)
            (table $fixed 100 funcref)
            (func (export "fill") (param i32)
              (memory.fill (i32.const 0) (i32.const 7) (local.get 0)))
            (func (export "tfill") (param i32)
              (table.fill $t (i32.const 0) (ref.null func) (local.get 0)))
            (func (export "tgrow") (param i32) (result i32)
              (table.grow $t (ref.null func) (local.get 0)))
            (func (export "tgrow_fixed") (param i32) (result i32)
              (table.grow $fixed (ref.null func) (local.get 0)))
            (func (export "peek") (result i32) (i32.load8_u (i32.const 0))))"#;
        let (mut store, instance, budget) = instantiate(wat);
        let fill: TypedFunction<i32, ()> =
            instance.exports.get_typed_function(&store, "fill").unwrap();
        let tfill: TypedFunction<i32, ()> = instance
            .exports
            .get_typed_function(&store, "tfill")
            .unwrap();
        let tgrow: TypedFunction<i32, i32> = instance
            .exports
            .get_typed_function(&store, "tgrow")
            .unwrap();
        let peek: TypedFunction<(), i32> =
            instance.exports.get_typed_function(&store, "peek").unwrap();
        budget.set(&mut store, Value::I64(1000)).unwrap();
        for _ in 0..5 {
            fill.call(&mut store, 1000).unwrap();
            tfill.call(&mut store, 1000 >> 5).unwrap();
            assert_eq!(budget_left(&mut store, &budget), 1000);
        }
        assert_eq!(peek.call(&mut store).unwrap(), 7);
        // A growth costs its new elements and the table's own (a growth
        // copies the table): 31 + 0 elements fit, 31 + 1 do not.
        assert_eq!(tgrow.call(&mut store, 0).unwrap(), 31, "grown by nothing");
        // A table that cannot grow (no maximum: it keeps its size) is not
        // charged, however large (100 elements would cost 3,200): the guest
        // sees the growth fail, as in any engine.
        let tgrow_fixed: TypedFunction<i32, i32> = instance
            .exports
            .get_typed_function(&store, "tgrow_fixed")
            .unwrap();
        assert_eq!(tgrow_fixed.call(&mut store, -1).unwrap(), -1);
        assert_eq!(budget_left(&mut store, &budget), 1000);
        let err = tgrow.call(&mut store, 1).unwrap_err();
        assert!(err.message().contains("unreachable"), "{err}");
        assert_eq!(budget_left(&mut store, &budget), 1000 - (32 << 5));
        // 600 bytes against a budget of 80: refused before anything is written.
        budget.set(&mut store, Value::I64(80)).unwrap();
        fill.call(&mut store, 0).unwrap();
        let err = fill.call(&mut store, 600).unwrap_err();
        assert!(err.message().contains("unreachable"), "{err}");
        assert_eq!(budget_left(&mut store, &budget), 80 - 600);
        assert_eq!(peek.call(&mut store).unwrap_err().message(), "unreachable");
        // The watchdog's mark: every operation refused, even an empty one.
        budget.set(&mut store, Value::I64(super::EXPIRED)).unwrap();
        assert!(fill.call(&mut store, 0).is_err());
        assert!(tgrow.call(&mut store, 0).is_err());
    }

    /// Every bulk operation is weighed before it runs, not only `fill` and
    /// `table.grow`: a copy or an init of memory past the budget (a byte
    /// each), and a fill, copy or init of a table past it (32 bytes an
    /// element), is refused (`unreachable`) before it runs — not by the
    /// bounds check the operation itself would fail.
    #[test]
    fn every_bulk_operation_is_weighed() {
        let wat = r#"(module
            (memory 1)
            (table $t 31 funcref)
            (data $d "0123456789abcdef")
            (elem $e funcref (ref.null func))
            (func (export "copy") (param i32)
              (memory.copy (i32.const 0) (i32.const 100) (local.get 0)))
            (func (export "init") (param i32)
              (memory.init $d (i32.const 0) (i32.const 0) (local.get 0)))
            (func (export "tfill") (param i32)
              (table.fill $t (i32.const 0) (ref.null func) (local.get 0)))
            (func (export "tcopy") (param i32)
              (table.copy $t $t (i32.const 0) (i32.const 0) (local.get 0)))
            (func (export "tinit") (param i32)
              (table.init $t $e (i32.const 0) (i32.const 0) (local.get 0))))"#;
        let (mut store, instance, budget) = instantiate(wat);
        for (name, fits, past) in [
            ("copy", 1000, 1001),
            ("init", 16, 1001),
            ("tfill", 31, 32),
            ("tcopy", 31, 32),
            ("tinit", 1, 32),
        ] {
            let op: TypedFunction<i32, ()> =
                instance.exports.get_typed_function(&store, name).unwrap();
            budget.set(&mut store, Value::I64(1000)).unwrap();
            op.call(&mut store, fits).unwrap();
            assert_eq!(budget_left(&mut store, &budget), 1000, "{name}");
            let err = op.call(&mut store, past).unwrap_err();
            assert_eq!(err.message(), "unreachable", "{name}");
            let cost = if name.starts_with('t') {
                past << 5
            } else {
                past
            };
            assert_eq!(
                budget_left(&mut store, &budget),
                1000 - i64::from(cost),
                "{name}"
            );
        }
    }

    /// A start function does not run at instantiation: it is exported for the
    /// host to run as a bounded call.
    #[test]
    fn the_start_function_is_run_by_the_host() {
        let wat = r#"(module
            (memory 1)
            (func $start (i32.store8 (i32.const 0) (i32.const 42)))
            (start $start)
            (func (export "peek") (result i32) (i32.load8_u (i32.const 0))))"#;
        let (mut store, instance, budget) = instantiate(wat);
        let peek: TypedFunction<(), i32> =
            instance.exports.get_typed_function(&store, "peek").unwrap();
        let start: TypedFunction<(), ()> = instance
            .exports
            .get_typed_function(&store, START_EXPORT)
            .unwrap();
        budget.set(&mut store, Value::I64(0)).unwrap();
        assert_eq!(peek.call(&mut store).unwrap(), 0, "start has not run");
        start.call(&mut store).unwrap();
        assert_eq!(peek.call(&mut store).unwrap(), 42);
    }

    /// A module may not take the reserved names for its own exports.
    #[test]
    fn the_reserved_names_are_refused() {
        for name in [BUDGET_GLOBAL, START_EXPORT] {
            let wat = format!(r#"(module (global (export "{name}") i32 (i32.const 0)))"#);
            let engine =
                crate::module::engine(&crate::admission::Admitted::without_tables(1 << 20));
            let err = Module::new(&engine, wat::parse_str(&wat).unwrap()).unwrap_err();
            assert!(
                err.to_string().contains("a name the host reserves"),
                "{err}"
            );
        }
    }
}
