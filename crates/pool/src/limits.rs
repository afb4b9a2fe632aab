//! Memory limits: a `Tunables` that caps the memory and the tables an instance
//! creates at what admission (`admission.rs`) left them of the module's memory
//! limit, and records on the calling thread when a guest tried to grow its
//! memory past the cap, so that the trap that usually follows (an allocation
//! failure aborts) is reported as a memory-limit error. On Linux an
//! instance's memory reuses the address space of an instance dropped before
//! it (`memory.rs`).

use std::cell::Cell;
use std::ptr::NonNull;
#[cfg(target_os = "linux")]
use std::sync::Arc;

use wasmer::sys::vm::{
    LinearMemory, MemoryError, MemoryStyle, Trap, VMMemory, VMMemoryDefinition, VMSharedMemory,
    VMTable, VMTableDefinition,
};
use wasmer::sys::{BaseTunables, Tunables};
use wasmer::{MemoryType, Pages, TableStyle, TableType};

use crate::admission::Admitted;
#[cfg(target_os = "linux")]
use crate::memory::{ReusedMemory, Spares};

/// A growth refused for the limit: the memory's size, the size asked for
/// and the most it may have, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) most: u64,
}

thread_local! {
    static LIMIT_HIT: Cell<Option<Refused>> = const { Cell::new(None) };
}

/// Clears the note before a call.
pub(crate) fn reset_limit_hit() {
    LIMIT_HIT.with(|hit| hit.set(None));
}

/// The last growth past its limit a guest on this thread tried since the
/// reset, if any.
pub(crate) fn limit_hit() -> Option<Refused> {
    LIMIT_HIT.with(Cell::get)
}

/// Whether growing a memory of `current` pages by `delta` would pass
/// `limit`: if so, it is noted for [`limit_hit`].
pub(crate) fn refuses_growth(current: Pages, delta: Pages, limit: Pages) -> bool {
    let to = current.0 as u64 + delta.0 as u64;
    let past = to > limit.0 as u64;
    if past {
        let page = wasmer::WASM_PAGE_SIZE as u64;
        LIMIT_HIT.with(|hit| {
            hit.set(Some(Refused {
                from: current.0 as u64 * page,
                to: to * page,
                most: limit.0 as u64 * page,
            }))
        });
    }
    past
}

/// Caps the memory of an engine's instances at `limit` and every table at its
/// declared maximum, or its initial size when it declares none.
pub(crate) struct LimitingTunables {
    base: BaseTunables,
    limit: Pages,
    /// The reservations of dropped instances (the process's).
    #[cfg(target_os = "linux")]
    spares: Arc<Spares>,
}

impl LimitingTunables {
    pub(crate) fn new(admitted: &Admitted) -> Self {
        LimitingTunables {
            base: BaseTunables::new(),
            limit: Pages(admitted.memory_pages),
            #[cfg(target_os = "linux")]
            spares: Spares::global(),
        }
    }

    /// Admission counted each table at its maximum against the memory limit;
    /// this holds it there.
    fn capped_table(ty: &TableType) -> TableType {
        let mut capped = *ty;
        capped.maximum = Some(ty.maximum.unwrap_or(ty.minimum));
        capped
    }

    fn capped(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        if ty.minimum > self.limit {
            return Err(MemoryError::Generic(format!(
                "the module needs {} bytes of memory to start, more than its limit of {} bytes",
                ty.minimum.0 as u64 * wasmer::WASM_PAGE_SIZE as u64,
                self.limit.0 as u64 * wasmer::WASM_PAGE_SIZE as u64
            )));
        }
        let mut capped = *ty;
        capped.maximum = Some(ty.maximum.map_or(self.limit, |m| m.min(self.limit)));
        Ok(capped)
    }
}

impl Tunables for LimitingTunables {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(memory)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        let ty = self.capped(ty)?;
        let inner = self.base.create_host_memory(&ty, style)?;
        Ok(VMMemory::from_custom(Box::new(Limited {
            inner,
            limit: self.limit,
        })
            as Box<dyn LinearMemory + Send + Sync>))
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let ty = self.capped(ty)?;
        #[cfg(target_os = "linux")]
        if matches!(style, MemoryStyle::Static) && !ty.shared {
            // SAFETY: the engine guarantees the location, for the memory's
            // instance's life.
            let memory = unsafe {
                ReusedMemory::new(ty, self.limit, vm_definition_location, self.spares.clone())?
            };
            return Ok(VMMemory::from_custom(
                Box::new(memory) as Box<dyn LinearMemory + Send + Sync>
            ));
        }
        // SAFETY: forwarded unchanged from the engine, which guarantees it.
        let inner = unsafe {
            self.base
                .create_vm_memory(&ty, style, vm_definition_location)?
        };
        Ok(VMMemory::from_custom(Box::new(Limited {
            inner,
            limit: self.limit,
        })
            as Box<dyn LinearMemory + Send + Sync>))
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(&Self::capped_table(ty), style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        // SAFETY: forwarded unchanged from the engine, which guarantees it.
        unsafe {
            self.base
                .create_vm_table(&Self::capped_table(ty), style, vm_definition_location)
        }
    }
}

/// A memory that refuses to grow past `limit` and says so.
#[derive(Debug)]
struct Limited {
    inner: VMMemory,
    limit: Pages,
}

impl LinearMemory for Limited {
    fn ty(&self) -> MemoryType {
        self.inner.ty()
    }

    fn size(&self) -> Pages {
        self.inner.size()
    }

    fn style(&self) -> MemoryStyle {
        self.inner.style()
    }

    fn grow(&mut self, delta: Pages) -> Result<Pages, MemoryError> {
        let current = self.inner.size();
        if refuses_growth(current, delta, self.limit) {
            return Err(MemoryError::CouldNotGrow {
                current,
                attempted_delta: delta,
            });
        }
        self.inner.grow(delta)
    }

    fn vmmemory(&self) -> NonNull<VMMemoryDefinition> {
        self.inner.vmmemory()
    }

    fn try_clone(&self) -> Result<Box<dyn LinearMemory + Send + Sync + 'static>, MemoryError> {
        Err(MemoryError::Generic(
            "a limited memory is not cloned".to_owned(),
        ))
    }

    unsafe fn initialize_with_data(&self, start: usize, data: &[u8]) -> Result<(), Trap> {
        // SAFETY: forwarded unchanged from the engine, which guarantees it.
        unsafe { self.inner.initialize_with_data(start, data) }
    }

    fn copy(&self) -> Result<Box<dyn LinearMemory + Send + Sync + 'static>, MemoryError> {
        Err(MemoryError::Generic(
            "a limited memory is not copied".to_owned(),
        ))
    }

    fn as_shared(&self) -> Result<VMSharedMemory, MemoryError> {
        Err(MemoryError::Generic(
            "a limited memory is not shared".to_owned(),
        ))
    }
}
