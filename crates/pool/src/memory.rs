//! Linear memories whose address space is reused across a module's
//! instances (Linux).
//!
//! Under wasmer's static memory style an instance's memory is a reservation
//! of 8 GiB of address space (4 GiB a 32-bit index reaches, then a 4 GiB
//! guard), of which only the memory's current size is accessible: compiled
//! code checks no bounds, an access past the size faults and traps. wasmer
//! maps a reservation for every instance and unmaps it when the instance is
//! dropped; for a module without caching (`enable_caching: false`, an
//! instance per call) that is most of a call's cost, in the kernel (mapping,
//! unmapping and freeing page tables: `docs/performance.md`).
//!
//! Here a dropped instance's reservation is emptied instead and kept for the
//! module's next instance: `madvise(MADV_DONTNEED)` over everything the
//! instance could reach (every page of a private anonymous mapping reads as
//! zero afterwards, as in a new mapping), and the pages it grew into made
//! inaccessible again. The next instance gets a reservation exactly like a
//! new one: zero bytes, accessible up to the module's minimum, faulting past
//! it. A reservation the kernel refuses to empty is unmapped, never reused.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use wasmer::sys::vm::{LinearMemory, MemoryError, MemoryStyle, VMMemoryDefinition};
use wasmer::{MemoryType, Pages};

use crate::limits::refuses_growth;

/// Emptied reservations a module keeps for its next instances, at most: an
/// instance per call needs one at a time per thread; a few more cover
/// instances dropped together (eviction, a swap).
const KEPT: usize = 8;

/// Address space from `mmap`: `len` bytes at `base`, the first `accessible`
/// readable and writable, the rest not accessible at all.
#[derive(Debug)]
struct Reservation {
    base: NonNull<u8>,
    len: usize,
    accessible: usize,
}

// SAFETY: a range of this process's address space, owned by one memory (or
// one module's spares) at a time; nothing in it is tied to a thread.
unsafe impl Send for Reservation {}
// SAFETY: as above; `&Reservation` gives access to nothing in it.
unsafe impl Sync for Reservation {}

fn os_error(what: String) -> MemoryError {
    MemoryError::Region(format!("{what}: {}", std::io::Error::last_os_error()))
}

impl Reservation {
    /// `len` bytes of address space, the first `accessible` made accessible.
    fn new(len: usize, accessible: usize) -> Result<Reservation, MemoryError> {
        // SAFETY: a new private anonymous mapping where the kernel chooses:
        // it overlaps nothing.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error(format!(
                "cannot reserve {len} bytes of address space for a memory"
            )));
        }
        let mut reservation = Reservation {
            base: NonNull::new(base.cast()).expect("mmap does not answer null"),
            len,
            accessible: 0,
        };
        reservation.make_accessible(accessible)?;
        Ok(reservation)
    }

    /// Makes the first `bytes` accessible (more than already are).
    fn make_accessible(&mut self, bytes: usize) -> Result<(), MemoryError> {
        if bytes <= self.accessible {
            return Ok(());
        }
        if bytes > self.len {
            return Err(MemoryError::Region(format!(
                "{bytes} bytes of memory do not fit a reservation of {}",
                self.len
            )));
        }
        // SAFETY: the range lies within this reservation, which only its
        // owner changes.
        let made = unsafe {
            libc::mprotect(
                self.base.as_ptr().add(self.accessible).cast(),
                bytes - self.accessible,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if made != 0 {
            return Err(os_error(format!(
                "cannot make {bytes} bytes of memory accessible"
            )));
        }
        self.accessible = bytes;
        Ok(())
    }

    /// The reservation emptied for another instance: every page zero, the
    /// first `keep` bytes accessible (no more than were), the rest not. None
    /// if the kernel refuses (it is then unmapped).
    fn emptied(mut self, keep: usize) -> Option<Reservation> {
        let base = self.base.as_ptr();
        // SAFETY: the ranges lie within this reservation, which no instance
        // uses any more (its memory was dropped).
        unsafe {
            if self.accessible > 0
                && libc::madvise(base.cast(), self.accessible, libc::MADV_DONTNEED) != 0
            {
                return None;
            }
            if self.accessible > keep {
                if libc::mprotect(
                    base.add(keep).cast(),
                    self.accessible - keep,
                    libc::PROT_NONE,
                ) != 0
                {
                    return None;
                }
                self.accessible = keep;
            }
        }
        Some(self)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: the whole mapping made in `new`, used by nothing any more.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// One module's emptied reservations, for its next instances.
#[derive(Debug, Default)]
pub(crate) struct Spares(Mutex<Vec<Reservation>>);

impl Spares {
    fn take(&self) -> Option<Reservation> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn keep(&self, reservation: Reservation) {
        let mut spares = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if spares.len() < KEPT {
            spares.push(reservation);
        }
    }
}

/// An instance's memory in a reservation that goes back to the module's
/// spares, emptied, when the instance is dropped.
#[derive(Debug)]
pub(crate) struct ReusedMemory {
    reservation: Option<Reservation>,
    /// The memory's type as capped: its minimum is what every instance of
    /// the module starts with, its maximum the most it may grow to.
    ty: MemoryType,
    /// The module's memory limit, for [`refuses_growth`].
    limit: Pages,
    size: Pages,
    /// Where the instance's compiled code reads the memory's base and size.
    definition: NonNull<VMMemoryDefinition>,
    spares: Arc<Spares>,
}

// SAFETY: the reservation is `Send`; `definition` points into the instance
// that owns this memory and is written only through `&mut self` (growing),
// as wasmer's own memories write theirs.
unsafe impl Send for ReusedMemory {}
// SAFETY: `&ReusedMemory` writes nothing.
unsafe impl Sync for ReusedMemory {}

impl ReusedMemory {
    /// A memory of type `ty` (already capped) in the static style, its
    /// definition written at `definition`, in a spare reservation of the
    /// module's if it has one.
    ///
    /// # Safety
    /// `definition` must point to the instance's `VMMemoryDefinition` for
    /// this memory, valid for as long as the memory is.
    pub(crate) unsafe fn new(
        ty: MemoryType,
        limit: Pages,
        definition: NonNull<VMMemoryDefinition>,
        spares: Arc<Spares>,
    ) -> Result<ReusedMemory, MemoryError> {
        let len = usize::try_from(
            MemoryStyle::static_bound().bytes().0 as u64 + MemoryStyle::static_offset_guard_size(),
        )
        .map_err(|_| MemoryError::Region("no room for a memory's reservation".to_owned()))?;
        let minimum = ty.minimum.bytes().0;
        if ty.minimum > MemoryStyle::static_bound() {
            return Err(MemoryError::MinimumMemoryTooLarge {
                min_requested: ty.minimum,
                max_allowed: MemoryStyle::static_bound(),
            });
        }
        let reservation = match spares.take() {
            Some(mut spare) if spare.len == len && spare.accessible <= minimum => {
                spare.make_accessible(minimum)?;
                spare
            }
            _ => Reservation::new(len, minimum)?,
        };
        let mut memory = ReusedMemory {
            reservation: Some(reservation),
            ty,
            limit,
            size: ty.minimum,
            definition,
            spares,
        };
        memory.define();
        Ok(memory)
    }

    fn reservation(&self) -> &Reservation {
        self.reservation
            .as_ref()
            .expect("a memory has its reservation until dropped")
    }

    /// Writes the base and size where compiled code reads them.
    fn define(&mut self) {
        let base = self.reservation().base.as_ptr();
        let current_length = self.size.bytes().0;
        // SAFETY: `definition` is valid for as long as this memory (`new`'s
        // contract), and only this memory writes it.
        unsafe {
            let definition = self.definition.as_mut();
            definition.base = base;
            definition.current_length = current_length;
        }
    }
}

impl LinearMemory for ReusedMemory {
    fn ty(&self) -> MemoryType {
        MemoryType {
            minimum: self.size,
            ..self.ty
        }
    }

    fn size(&self) -> Pages {
        self.size
    }

    fn style(&self) -> MemoryStyle {
        MemoryStyle::Static
    }

    fn grow(&mut self, delta: Pages) -> Result<Pages, MemoryError> {
        let current = self.size;
        if delta.0 == 0 {
            return Ok(current);
        }
        let refused = MemoryError::CouldNotGrow {
            current,
            attempted_delta: delta,
        };
        if refuses_growth(current, delta, self.limit) {
            return Err(refused);
        }
        let Some(new) = current.checked_add(delta) else {
            return Err(refused);
        };
        if self.ty.maximum.is_some_and(|max| new > max) || new > MemoryStyle::static_bound() {
            return Err(refused);
        }
        let bytes = new.bytes().0;
        self.reservation
            .as_mut()
            .expect("a memory has its reservation until dropped")
            .make_accessible(bytes)?;
        self.size = new;
        self.define();
        Ok(current)
    }

    fn vmmemory(&self) -> NonNull<VMMemoryDefinition> {
        self.definition
    }

    fn try_clone(&self) -> Result<Box<dyn LinearMemory + Send + Sync + 'static>, MemoryError> {
        Err(MemoryError::Generic(
            "an instance's memory is not cloned".to_owned(),
        ))
    }

    fn copy(&self) -> Result<Box<dyn LinearMemory + Send + Sync + 'static>, MemoryError> {
        Err(MemoryError::Generic(
            "an instance's memory is not copied".to_owned(),
        ))
    }
}

impl Drop for ReusedMemory {
    fn drop(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            if let Some(emptied) = reservation.emptied(self.ty.minimum.bytes().0) {
                self.spares.keep(emptied);
            }
        }
    }
}
