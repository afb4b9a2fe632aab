//! Linear memories whose address space is reused from one instance to the
//! next (Linux).
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
//! Here, when an instance's store is dropped, its memory's reservation is
//! emptied instead and kept for the next instance (of any module):
//! `madvise(MADV_DONTNEED)` over everything the instance could reach (every
//! page of a private anonymous mapping reads as zero afterwards, as in a new
//! mapping), and the pages past the module's initial size made inaccessible
//! again. The next instance gets a reservation like a new one: zero bytes,
//! accessible up to its module's minimum, faulting past it. A reservation the
//! kernel refuses to empty, or whose protection it ever failed to change (a
//! failed `mprotect` may have changed part of its range), is unmapped, never
//! reused. The reservation is mapped as wasmer maps its own (no
//! `MAP_NORESERVE`), so commit accounting charges a guest's memory as it
//! grows, as before; but the kernel does not give the charge back when pages
//! are made inaccessible again, so a spare holds the charge of every page it
//! ever had accessible (it matters under `vm.overcommit_memory=2`). A
//! reservation that grew past [`KEPT_BYTES`] is therefore unmapped rather
//! than kept: the spares hold at most [`KEPT`] × [`KEPT_BYTES`] of charge.
//!
//! The memory is dropped with the store's other objects, before the
//! instance's own `Drop`s have run: nothing may read or write guest memory
//! from a `Drop` (the host's log function's environment does not), since the
//! reservation may already serve another thread's instance.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock};

use wasmer::sys::vm::{LinearMemory, MemoryError, MemoryStyle, VMMemoryDefinition};
use wasmer::{MemoryType, Pages};

use crate::limits::refuses_growth;

/// Emptied reservations the process keeps for its next instances, at most
/// (8 GiB of address space each, of the 128 TiB a process has): an instance
/// per call needs one at a time per worker thread; more cover instances
/// dropped together (eviction, a swap).
const KEPT: usize = 32;

/// A reservation that had more than this accessible is unmapped rather than
/// kept: emptying it would cost more, and a spare holds the commit charge of
/// all it had accessible.
const KEPT_BYTES: usize = 16 << 20;

/// Address space from `mmap`: `len` bytes at `base`, the first `accessible`
/// readable and writable, the rest not accessible at all — unless `sound` is
/// false: a change of protection failed, and the kernel may have made it for
/// part of the range.
#[derive(Debug)]
struct Reservation {
    base: NonNull<u8>,
    len: usize,
    accessible: usize,
    sound: bool,
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
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
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
            sound: true,
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
        if !self.protect(self.accessible, bytes, libc::PROT_READ | libc::PROT_WRITE) {
            return Err(os_error(format!(
                "cannot make {bytes} bytes of memory accessible"
            )));
        }
        self.accessible = bytes;
        Ok(())
    }

    /// Leaves only the first `bytes` accessible (fewer than are). False if
    /// the kernel refuses.
    fn make_inaccessible_from(&mut self, bytes: usize) -> bool {
        if bytes >= self.accessible {
            return true;
        }
        let made = self.protect(bytes, self.accessible, libc::PROT_NONE);
        if made {
            self.accessible = bytes;
        }
        made
    }

    /// Gives bytes `from..to` the protection `prot`. A failure leaves the
    /// reservation unsound: the kernel may have changed part of the range.
    fn protect(&mut self, from: usize, to: usize, prot: libc::c_int) -> bool {
        debug_assert!(from < to && to <= self.len);
        // SAFETY: the range lies within this reservation, which only its
        // owner changes.
        let made =
            unsafe { libc::mprotect(self.base.as_ptr().add(from).cast(), to - from, prot) } == 0;
        self.sound &= made;
        made
    }

    /// The reservation emptied for another instance: every page zero, the
    /// first `keep` bytes accessible (no more than were), the rest not. None
    /// if the kernel refuses, or ever refused it a change of protection, or
    /// if more than [`KEPT_BYTES`] are accessible (it is then unmapped).
    fn emptied(mut self, keep: usize) -> Option<Reservation> {
        if !self.sound || self.accessible > KEPT_BYTES {
            return None;
        }
        // SAFETY: the range lies within this reservation, which no instance
        // uses any more (its memory was dropped).
        let emptied = self.accessible == 0
            || unsafe {
                libc::madvise(
                    self.base.as_ptr().cast(),
                    self.accessible,
                    libc::MADV_DONTNEED,
                )
            } == 0;
        (emptied && self.make_inaccessible_from(keep)).then_some(self)
    }

    /// Fits an emptied reservation to a memory starting at `bytes`: those
    /// accessible, the rest not. False if the kernel refuses.
    fn fit(&mut self, bytes: usize) -> bool {
        if bytes > self.accessible {
            self.make_accessible(bytes).is_ok()
        } else {
            self.make_inaccessible_from(bytes)
        }
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

/// Emptied reservations, for the next instances.
#[derive(Debug, Default)]
pub(crate) struct Spares(Mutex<Vec<Reservation>>);

impl Spares {
    /// The process's, which every engine's memories share.
    pub(crate) fn global() -> Arc<Spares> {
        static GLOBAL: OnceLock<Arc<Spares>> = OnceLock::new();
        GLOBAL.get_or_init(Arc::default).clone()
    }

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

/// An instance's memory in a reservation that goes back to the spares,
/// emptied, when the instance's store is dropped.
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
// SAFETY: `&ReusedMemory` changes nothing of its own. Guest memory written
// through the definition (`initialize_with_data` takes `&self`) is ordered
// by the engine, as for wasmer's own memories.
unsafe impl Sync for ReusedMemory {}

impl ReusedMemory {
    /// A memory of type `ty` (already capped) in the static style, its
    /// definition written at `definition`, in a spare reservation if there
    /// is one.
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
        let spare = spares
            .take()
            .filter(|spare| spare.len == len)
            .and_then(|mut spare| spare.fit(minimum).then_some(spare));
        let reservation = match spare {
            Some(spare) => spare,
            None => Reservation::new(len, minimum)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = wasmer::WASM_PAGE_SIZE;

    /// A memory of `minimum` pages (at most 16) on `spares`, its definition
    /// in a box of its own, as an instance's would be in its `VMContext`.
    fn memory(minimum: u32, spares: &Arc<Spares>) -> (ReusedMemory, Box<VMMemoryDefinition>) {
        let mut definition = Box::new(VMMemoryDefinition {
            base: std::ptr::null_mut(),
            current_length: 0,
        });
        let ty = MemoryType::new(minimum, Some(16), false);
        // SAFETY: the box outlives the memory in every test below.
        let memory = unsafe {
            ReusedMemory::new(
                ty,
                Pages(16),
                NonNull::from(&mut *definition),
                spares.clone(),
            )
        }
        .unwrap();
        (memory, definition)
    }

    /// The protection of the mappings of this process overlapping `len`
    /// bytes at `base`, with their ranges relative to `base` (neighbours of
    /// one protection together: the kernel keeps a range that was writable
    /// apart from one never written, for its commit accounting).
    fn mappings(base: *const u8, len: usize) -> Vec<(usize, usize, String)> {
        let (base, end) = (base as usize, base as usize + len);
        let mut ranges: Vec<(usize, usize, String)> = Vec::new();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let overlapping = maps.lines().filter_map(|line| {
            let (range, rest) = line.split_once(' ')?;
            let (from, to) = range.split_once('-')?;
            let from = usize::from_str_radix(from, 16).ok()?;
            let to = usize::from_str_radix(to, 16).ok()?;
            (from < end && to > base).then(|| {
                (
                    from.max(base) - base,
                    to.min(end) - base,
                    rest[..4].to_owned(),
                )
            })
        });
        for (from, to, perms) in overlapping {
            match ranges.last_mut() {
                Some(last) if last.1 == from && last.2 == perms => last.1 = to,
                _ => ranges.push((from, to, perms)),
            }
        }
        ranges
    }

    /// Whether `bytes` bytes at `base` are all zero.
    fn zeros(base: *const u8, bytes: usize) -> bool {
        // SAFETY: the tests read only what their memory has accessible.
        unsafe { std::slice::from_raw_parts(base, bytes) }
            .iter()
            .all(|&b| b == 0)
    }

    #[test]
    fn a_dropped_memory_serves_the_next_emptied_with_its_growth_inaccessible() {
        let spares = Arc::new(Spares::default());
        let (mut first, definition) = memory(2, &spares);
        let base = definition.base;
        assert_eq!(definition.current_length, 2 * PAGE);
        assert_eq!(first.grow(Pages(3)).unwrap(), Pages(2));
        assert_eq!(definition.current_length, 5 * PAGE);
        // SAFETY: five pages are accessible now.
        unsafe { std::ptr::write_bytes(base, 0xa5, 5 * PAGE) };
        let len = first.reservation().len;
        drop(first);
        drop(definition);

        let (mut second, definition) = memory(2, &spares);
        assert_eq!(definition.base, base, "the reservation is reused");
        assert_eq!(definition.current_length, 2 * PAGE);
        assert_eq!(second.size(), Pages(2));
        assert!(zeros(base, 2 * PAGE), "the pages left accessible are zero");
        assert_eq!(
            mappings(base, len),
            vec![
                (0, 2 * PAGE, "rw-p".to_owned()),
                (2 * PAGE, len, "---p".to_owned())
            ],
            "accessible up to the minimum, not past it"
        );
        assert_eq!(second.grow(Pages(3)).unwrap(), Pages(2));
        assert!(zeros(base, 5 * PAGE), "the pages grown into again are zero");
    }

    #[test]
    fn a_spare_fits_a_memory_of_another_minimum() {
        let spares = Arc::new(Spares::default());
        let len = {
            let (larger, definition) = memory(4, &spares);
            // SAFETY: four pages are accessible.
            unsafe { std::ptr::write_bytes(definition.base, 0xa5, 4 * PAGE) };
            larger.reservation().len
        };
        for minimum in [1, 6, 0, 3] {
            let (memory, definition) = memory(minimum, &spares);
            let base = definition.base;
            let bytes = minimum as usize * PAGE;
            assert_eq!(definition.current_length, bytes);
            assert!(zeros(base, bytes), "minimum {minimum}: zero");
            let expected: Vec<_> = [(0, bytes, "rw-p"), (bytes, len, "---p")]
                .into_iter()
                .filter(|(from, to, _)| from < to)
                .map(|(from, to, perms)| (from, to, perms.to_owned()))
                .collect();
            assert_eq!(mappings(base, len), expected, "minimum {minimum}");
            // SAFETY: `bytes` are accessible.
            unsafe { std::ptr::write_bytes(base, 0xa5, bytes) };
            drop(memory);
            assert_eq!(spares.0.lock().unwrap().len(), 1, "minimum {minimum}: kept");
        }
    }

    #[test]
    fn growth_is_refused_past_the_maximum_and_the_limit() {
        let spares = Arc::new(Spares::default());
        let (mut memory, definition) = memory(2, &spares);
        crate::limits::reset_limit_hit();
        assert!(memory.grow(Pages(15)).is_err(), "past the limit of 16");
        assert_eq!(
            crate::limits::limit_hit(),
            Some(crate::limits::Refused {
                from: 2 * PAGE as u64,
                to: 17 * PAGE as u64,
                most: 16 * PAGE as u64,
            })
        );
        assert_eq!(memory.grow(Pages(0)).unwrap(), Pages(2));
        assert_eq!(memory.grow(Pages(14)).unwrap(), Pages(2));
        assert_eq!(definition.current_length, 16 * PAGE);
        assert_eq!(memory.ty().minimum, Pages(16));
    }

    #[test]
    fn at_most_kept_spares_and_never_an_unsound_one() {
        let spares = Arc::new(Spares::default());
        let memories: Vec<_> = (0..KEPT + 3).map(|_| memory(1, &spares)).collect();
        drop(memories);
        assert_eq!(spares.0.lock().unwrap().len(), KEPT);

        let spares = Arc::new(Spares::default());
        let (mut memory, _definition) = memory(1, &spares);
        // As after a failed `mprotect`.
        memory.reservation.as_mut().unwrap().sound = false;
        drop(memory);
        assert!(
            spares.0.lock().unwrap().is_empty(),
            "an unsound reservation is unmapped"
        );

        let ty = MemoryType::new(1, Some(1024), false);
        let mut definition = VMMemoryDefinition {
            base: std::ptr::null_mut(),
            current_length: 0,
        };
        // SAFETY: `definition` outlives the memory.
        let mut large = unsafe {
            ReusedMemory::new(
                ty,
                Pages(1024),
                NonNull::from(&mut definition),
                spares.clone(),
            )
        }
        .unwrap();
        large.grow(Pages((KEPT_BYTES / PAGE) as u32)).unwrap();
        drop(large);
        assert!(
            spares.0.lock().unwrap().is_empty(),
            "a reservation that grew past KEPT_BYTES is unmapped"
        );
    }
}
