//! Fuel: the metering middleware's cost function and its globals.

use wasmer::wasmparser;
use wasmer::{Instance, Store, Value};

/// Version of the cost function below; part of [`crate::Runtime::cache_key`], so
/// artifacts metered differently are never reused.
pub(crate) const COST_VERSION: &str = "cost-v1";

/// Fuel cost of one wasm operator.
///
/// Every operator costs one point, with calls and memory growth costing
/// more because they do more work per instruction. Bulk memory operations
/// are charged per instruction only; the wall-clock watchdog bounds them.
pub(crate) fn cost(op: &wasmparser::Operator<'_>) -> u64 {
    use wasmparser::Operator as O;
    match op {
        O::Call { .. } | O::CallIndirect { .. } => 5,
        O::MemoryGrow { .. } | O::TableGrow { .. } => 100,
        O::MemoryCopy { .. } | O::MemoryFill { .. } | O::MemoryInit { .. } => 10,
        _ => 1,
    }
}

/// Names of the globals the metering middleware exports.
pub(crate) const FUEL_REMAINING: &str = "wasmer_metering_remaining_points";
pub(crate) const FUEL_EXHAUSTED: &str = "wasmer_metering_points_exhausted";

/// Read the metering globals: (points left, exhausted).
pub(crate) fn fuel_state(store: &mut Store, instance: &Instance) -> Option<(u64, bool)> {
    let remaining = instance.exports.get_global(FUEL_REMAINING).ok()?.get(store);
    let exhausted = instance.exports.get_global(FUEL_EXHAUSTED).ok()?.get(store);
    match (remaining, exhausted) {
        (Value::I64(r), Value::I32(x)) => Some((r as u64, x != 0)),
        _ => None,
    }
}

/// Give the instance `points` of fuel and clear the exhausted flag.
pub(crate) fn set_fuel(store: &mut Store, instance: &Instance, points: u64) -> Result<(), String> {
    let remaining = instance
        .exports
        .get_global(FUEL_REMAINING)
        .map_err(|e| e.to_string())?;
    // The global is an i64 compared unsigned by the middleware.
    remaining
        .set(store, Value::I64(points as i64))
        .map_err(|e| e.to_string())?;
    let exhausted = instance
        .exports
        .get_global(FUEL_EXHAUSTED)
        .map_err(|e| e.to_string())?;
    exhausted
        .set(store, Value::I32(0))
        .map_err(|e| e.to_string())
}
