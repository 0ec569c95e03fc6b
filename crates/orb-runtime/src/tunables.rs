//! Per-call memory limits.
//!
//! Wasmer asks the engine's [`Tunables`] to create every memory and table
//! an instance defines. [`CapTunables`] clamps their maxima to the call's
//! limits, so a `memory.grow` past the cap fails inside wasm (returns -1)
//! instead of taking the host's memory, and it wraps each memory so that a
//! refused grow is recorded: a module that then traps or exits with an error
//! is reported as having hit the memory limit rather than as a plain trap.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmer::sys::vm::{
    LinearMemory, MemoryError, MemoryStyle, TableStyle, VMMemory, VMMemoryDefinition,
    VMSharedMemory, VMTable, VMTableDefinition,
};
use wasmer::sys::{BaseTunables, Tunables};
use wasmer::{MemoryType, Pages, TableType};

/// Largest table (in elements) an instance may have. Tables live in host
/// memory outside the linear-memory cap, so they need their own bound; a
/// million entries is far more than real programs use for indirect calls.
const MAX_TABLE_ELEMENTS: u32 = 1 << 20;

/// Tunables that cap memories and tables and record refused grows.
pub(crate) struct CapTunables {
    base: BaseTunables,
    max_pages: Pages,
    grow_refused: Arc<AtomicBool>,
}

impl CapTunables {
    /// Tunables for one call: memories may not exceed `max_bytes`.
    pub(crate) fn new(max_bytes: u64, grow_refused: Arc<AtomicBool>) -> Self {
        let pages = (max_bytes / wasmer::WASM_PAGE_SIZE as u64).min(u64::from(u32::MAX));
        // Never above what a 32-bit memory can index anyway.
        let pages = Pages(u32::try_from(pages).unwrap_or(u32::MAX)).min(Pages::max_value());
        CapTunables {
            base: BaseTunables::new(),
            max_pages: pages,
            grow_refused,
        }
    }

    /// The memory type with its maximum clamped to the cap, or an error
    /// when even the initial size is over it.
    fn clamp_memory(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        if ty.minimum > self.max_pages {
            return Err(MemoryError::MinimumMemoryTooLarge {
                min_requested: ty.minimum,
                max_allowed: self.max_pages,
            });
        }
        let mut clamped = *ty;
        clamped.maximum = Some(ty.maximum.map_or(self.max_pages, |m| m.min(self.max_pages)));
        Ok(clamped)
    }

    fn clamp_table(ty: &TableType) -> Result<TableType, String> {
        if ty.minimum > MAX_TABLE_ELEMENTS {
            return Err(format!(
                "table of {} elements is over the limit of {MAX_TABLE_ELEMENTS}",
                ty.minimum
            ));
        }
        let mut clamped = *ty;
        clamped.maximum = Some(
            ty.maximum
                .map_or(MAX_TABLE_ELEMENTS, |m| m.min(MAX_TABLE_ELEMENTS)),
        );
        Ok(clamped)
    }

    fn wrap(&self, memory: VMMemory) -> VMMemory {
        VMMemory(Box::new(FlaggedMemory {
            inner: memory,
            grow_refused: self.grow_refused.clone(),
        }))
    }
}

// The two `unsafe fn`s are required by the `Tunables` trait; they only
// forward to `BaseTunables` with a clamped type, under the same contract
// their callers already uphold.
#[allow(unsafe_code)]
impl Tunables for CapTunables {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        // Must match the style the module was compiled with (BaseTunables).
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
        let ty = self.clamp_memory(ty)?;
        Ok(self.wrap(self.base.create_host_memory(&ty, style)?))
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let ty = self.clamp_memory(ty)?;
        // SAFETY: forwarded unchanged from our caller, which guarantees that
        // `vm_definition_location` points to a valid, owned definition.
        let memory = unsafe {
            self.base
                .create_vm_memory(&ty, style, vm_definition_location)?
        };
        Ok(self.wrap(memory))
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        let ty = Self::clamp_table(ty)?;
        self.base.create_host_table(&ty, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        let ty = Self::clamp_table(ty)?;
        // SAFETY: forwarded unchanged from our caller, which guarantees that
        // `vm_definition_location` points to a valid, owned definition.
        unsafe {
            self.base
                .create_vm_table(&ty, style, vm_definition_location)
        }
    }
}

/// A linear memory that notes when a grow was refused.
#[derive(Debug)]
struct FlaggedMemory {
    inner: VMMemory,
    grow_refused: Arc<AtomicBool>,
}

impl LinearMemory for FlaggedMemory {
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
        let result = self.inner.grow(delta);
        if result.is_err() {
            self.grow_refused.store(true, Ordering::Relaxed);
        }
        result
    }

    fn grow_at_least(&mut self, min_size: u64) -> Result<(), MemoryError> {
        let result = self.inner.grow_at_least(min_size);
        if result.is_err() {
            self.grow_refused.store(true, Ordering::Relaxed);
        }
        result
    }

    fn reset(&mut self) -> Result<(), MemoryError> {
        self.inner.reset()
    }

    fn vmmemory(&self) -> NonNull<VMMemoryDefinition> {
        self.inner.vmmemory()
    }

    fn try_clone(&self) -> Result<Box<dyn LinearMemory + Send + Sync + 'static>, MemoryError> {
        LinearMemory::try_clone(&self.inner)
    }

    fn copy(&self) -> Result<Box<dyn LinearMemory + Send + Sync + 'static>, MemoryError> {
        LinearMemory::copy(&self.inner)
    }

    fn as_shared(&self) -> Result<VMSharedMemory, MemoryError> {
        self.inner.as_shared()
    }
}
