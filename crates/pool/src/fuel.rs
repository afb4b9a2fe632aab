//! Fuel: the compile-time instrumentation that bounds how long a guest call runs.
//!
//! Every WebAssembly operator costs one point, but for the markers of structure
//! (`block`, `loop`, `end`, `else`, `nop`), which run nothing. At the end of each basic block
//! (every branch, branch target and call) the block's cost is subtracted from a
//! fuel global the middleware adds to the module; at every loop header and at
//! every function's entry the fuel is checked, and a call whose fuel went below
//! zero stops at once with a trap (`unreachable`). The host sets the fuel before
//! each call (the time budget times the calibrated points per millisecond, see
//! `calibrate.rs`) and, after a trap, tells a spent budget from a guest's own
//! trap by the fuel's sign.
//!
//! Subtracting without comparing keeps the common block cheap; checking only
//! where control can come back (loops) or go deeper (calls) still stops every
//! run-away guest: between two checks a function runs straight-line and
//! forward-branching code only, so the fuel overshoots by at most one pass
//! through one function body. Accounting stays exact: every operator run is
//! charged. (`wasmer-middlewares`' `Metering` compares before every
//! subtraction and keeps a second global for "exhausted": about twice the
//! instructions per block.)

use std::sync::Mutex;

use wasmer::sys::wasmparser::{BlockType, Operator};
use wasmer::sys::{FunctionMiddleware, MiddlewareError, MiddlewareReaderState, ModuleMiddleware};
use wasmer::{
    ExportIndex, GlobalInit, GlobalType, LocalFunctionIndex, ModuleInfo, Mutability, Type,
};

/// The exported `i64` global holding the fuel left for the current call.
pub(crate) const FUEL_GLOBAL: &str = "rmq_etl_fuel";

/// The module half of the middleware. One per compiled module: it remembers the
/// index of the global it added.
#[derive(Debug, Default)]
pub(crate) struct Fuel {
    global: Mutex<Option<u32>>,
}

impl ModuleMiddleware for Fuel {
    fn generate_function_middleware<'a>(
        &self,
        _: LocalFunctionIndex,
    ) -> Box<dyn FunctionMiddleware<'a> + 'a> {
        let global = self
            .global
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expect("wasmer transforms the module info before it compiles functions");
        Box::new(FunctionFuel {
            global,
            cost: 0,
            at_entry: true,
        })
    }

    fn transform_module_info(&self, info: &mut ModuleInfo) -> Result<(), MiddlewareError> {
        let mut global = self.global.lock().unwrap_or_else(|p| p.into_inner());
        if global.is_some() {
            return Err(MiddlewareError::new(
                "fuel",
                "one fuel middleware was used for two modules",
            ));
        }
        if info.exports.contains_key(FUEL_GLOBAL) {
            return Err(MiddlewareError::new(
                "fuel",
                format!("the module already exports {FUEL_GLOBAL:?}, a name the host reserves"),
            ));
        }
        let index = info
            .globals
            .push(GlobalType::new(Type::I64, Mutability::Var));
        info.global_initializers.push(GlobalInit::I64Const(0));
        info.exports
            .insert(FUEL_GLOBAL.to_owned(), ExportIndex::Global(index));
        *global = Some(index.as_u32());
        Ok(())
    }
}

/// The function half: counts operators and instruments one function body.
#[derive(Debug)]
struct FunctionFuel {
    global: u32,
    /// Points of the current block not charged yet.
    cost: u64,
    /// Nothing of the body has been seen yet.
    at_entry: bool,
}

impl FunctionFuel {
    /// `fuel -= cost`
    fn charge<'a>(&mut self, state: &mut MiddlewareReaderState<'a>) {
        if self.cost == 0 {
            return;
        }
        state.extend([
            Operator::GlobalGet {
                global_index: self.global,
            },
            Operator::I64Const {
                value: self.cost as i64,
            },
            Operator::I64Sub,
            Operator::GlobalSet {
                global_index: self.global,
            },
        ]);
        self.cost = 0;
    }

    /// `if fuel < 0 { unreachable }`
    fn check<'a>(&self, state: &mut MiddlewareReaderState<'a>) {
        state.extend([
            Operator::GlobalGet {
                global_index: self.global,
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
}

impl<'a> FunctionMiddleware<'a> for FunctionFuel {
    fn feed(
        &mut self,
        operator: Operator<'a>,
        state: &mut MiddlewareReaderState<'a>,
    ) -> Result<(), MiddlewareError> {
        if self.at_entry {
            // Recursion passes here on every call.
            self.check(state);
            self.at_entry = false;
        }
        // The operator's own cost first, so that a call is paid for before the
        // callee runs. Structure markers do no work and cost nothing, which also
        // spares a charge at each `end` of a run of them.
        if !is_structure(&operator) {
            self.cost += 1;
        }
        let is_loop = matches!(operator, Operator::Loop { .. });
        if ends_block(&operator) {
            self.charge(state);
        }
        state.push_operator(operator);
        if is_loop {
            // Inside the loop: every iteration passes here.
            self.check(state);
        }
        Ok(())
    }
}

/// Operators that only mark structure: they run no instruction of their own.
fn is_structure(operator: &Operator) -> bool {
    matches!(
        operator,
        Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::End
            | Operator::Else
            | Operator::Nop
    )
}

/// Whether control may leave or enter straight-line code at this operator: a
/// branch, a branch target, a call or a return (the same operators as
/// `wasmer-middlewares`' `is_accounting`).
fn ends_block(operator: &Operator) -> bool {
    matches!(
        operator,
        Operator::Loop { .. }
            | Operator::End
            | Operator::If { .. }
            | Operator::Else
            | Operator::Br { .. }
            | Operator::BrTable { .. }
            | Operator::BrIf { .. }
            | Operator::Call { .. }
            | Operator::CallIndirect { .. }
            | Operator::Return
            | Operator::Throw { .. }
            | Operator::ThrowRef
            | Operator::Rethrow { .. }
            | Operator::Delegate { .. }
            | Operator::Catch { .. }
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. }
            | Operator::CallRef { .. }
            | Operator::ReturnCallRef { .. }
            | Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
    )
}

#[cfg(test)]
mod tests {
    use wasmer::{imports, Global, Instance, Module, Store, TypedFunction, Value};

    use super::FUEL_GLOBAL;

    /// The calibration loop, compiled with the fuel middleware.
    fn spin() -> (Store, TypedFunction<i32, ()>, Global) {
        let engine = crate::module::engine(1 << 20);
        let module = Module::new(&engine, crate::calibrate::SPIN).unwrap();
        let mut store = Store::new(engine);
        let instance = Instance::new(&mut store, &module, &imports! {}).unwrap();
        let spin = instance.exports.get_typed_function(&store, "spin").unwrap();
        let fuel = instance.exports.get_global(FUEL_GLOBAL).unwrap().clone();
        (store, spin, fuel)
    }

    fn fuel_left(store: &mut Store, fuel: &Global) -> i64 {
        match fuel.get(store) {
            Value::I64(n) => n,
            other => panic!("the fuel global holds {other:?}"),
        }
    }

    /// Every operator run is charged exactly once: the loop body is 19
    /// operators; `loop` and the two `end`s around it are structure and free.
    #[test]
    fn every_operator_costs_one_point() {
        let (mut store, spin, fuel) = spin();
        for rounds in [1, 10, 1000] {
            fuel.set(&mut store, Value::I64(1_000_000)).unwrap();
            spin.call(&mut store, rounds).unwrap();
            let used = 1_000_000 - fuel_left(&mut store, &fuel);
            assert_eq!(used, 19 * i64::from(rounds), "{rounds} rounds");
        }
    }

    /// A loop that would run far past its fuel stops at the next loop header,
    /// within one round of the budget.
    #[test]
    fn a_loop_stops_within_one_round_of_its_budget() {
        let (mut store, spin, fuel) = spin();
        fuel.set(&mut store, Value::I64(19 * 100)).unwrap();
        let err = spin.call(&mut store, 1_000_000).unwrap_err();
        assert!(err.message().contains("unreachable"), "{err}");
        let left = fuel_left(&mut store, &fuel);
        assert!((-19..0).contains(&left), "fuel left: {left}");
    }

    /// A module may not take the fuel global's name for its own export.
    #[test]
    fn the_fuel_global_name_is_reserved() {
        // (module (global (export "rmq_etl_fuel") i32 (i32.const 0)))
        let mut wasm = vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
        wasm.extend([0x06, 0x06, 0x01, 0x7f, 0x00, 0x41, 0x00, 0x0b]);
        wasm.extend([0x07, 0x10, 0x01, 0x0c]);
        wasm.extend(FUEL_GLOBAL.as_bytes());
        wasm.extend([0x03, 0x00]);
        let engine = crate::module::engine(1 << 20);
        let err = Module::new(&engine, &wasm).unwrap_err();
        assert!(
            err.to_string().contains("a name the host reserves"),
            "{err}"
        );
    }

    /// With no fuel at all, not even the function's first operator runs.
    #[test]
    fn a_call_without_fuel_stops_at_the_entry() {
        let (mut store, spin, fuel) = spin();
        fuel.set(&mut store, Value::I64(-1)).unwrap();
        assert!(spin.call(&mut store, 1).is_err());
        assert_eq!(fuel_left(&mut store, &fuel), -1);
    }
}
