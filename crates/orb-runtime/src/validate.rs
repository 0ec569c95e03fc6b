//! Deploy-time checks of a module's structure (imports, `_start`, start
//! section, memories) and of compiled modules and loaded artifacts.

use wasmer::wasmparser::{self, ExternalKind, Parser, Payload, TypeRef};
use wasmer::{ExternType, Module};

use crate::host;
use crate::wasi::{self, Val};
use crate::{FUEL_EXHAUSTED, FUEL_REMAINING, RuntimeError};

fn val_of(v: &wasmparser::ValType) -> Option<Val> {
    match v {
        wasmparser::ValType::I32 => Some(Val::I32),
        wasmparser::ValType::I64 => Some(Val::I64),
        _ => None,
    }
}

fn fmt_sig(params: &[Val], results: &[Val]) -> String {
    let list = |vs: &[Val]| {
        vs.iter()
            .map(|v| match v {
                Val::I32 => "i32",
                Val::I64 => "i64",
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(params), list(results))
}

/// Structural checks on a valid module: imports, `_start`, start section,
/// memories.
pub(crate) fn check_structure(wasm: &[u8], max_memory_bytes: u64) -> Result<(), RuntimeError> {
    let invalid = |e: wasmparser::BinaryReaderError| RuntimeError::InvalidModule(e.to_string());
    // Function types by type index (None: not a plain i32/i64 function).
    let mut types: Vec<Option<(Vec<Val>, Vec<Val>)>> = Vec::new();
    // Type index of every function, imported ones first.
    let mut funcs: Vec<u32> = Vec::new();
    let mut start_export: Option<u32> = None;

    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.map_err(invalid)?.into_types() {
                        let sig = match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => {
                                let p: Option<Vec<Val>> = f.params().iter().map(val_of).collect();
                                let r: Option<Vec<Val>> = f.results().iter().map(val_of).collect();
                                p.zip(r)
                            }
                            _ => None,
                        };
                        types.push(sig);
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    check_import(&import, &types)?;
                    if let TypeRef::Func(t) | TypeRef::FuncExact(t) = import.ty {
                        funcs.push(t);
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for t in reader {
                    funcs.push(t.map_err(invalid)?);
                }
            }
            Payload::MemorySection(reader) => {
                for m in reader {
                    let m = m.map_err(invalid)?;
                    if m.memory64 || m.shared || m.page_size_log2.is_some() {
                        return Err(RuntimeError::InvalidModule(
                            "only plain 32-bit, unshared memories with 64 KiB pages are supported"
                                .to_string(),
                        ));
                    }
                    let bytes = m.initial.saturating_mul(wasmer::WASM_PAGE_SIZE as u64);
                    if bytes > max_memory_bytes {
                        return Err(RuntimeError::InvalidModule(format!(
                            "module needs {} MiB of memory at start, over this node's limit of {} MiB",
                            bytes / (1024 * 1024),
                            max_memory_bytes / (1024 * 1024)
                        )));
                    }
                }
            }
            Payload::StartSection { .. } => {
                return Err(RuntimeError::InvalidModule(
                    "module has a start section; Orb runs WASI commands through their exported _start function"
                        .to_string(),
                ));
            }
            Payload::ExportSection(reader) => {
                for e in reader {
                    let e = e.map_err(invalid)?;
                    if e.name == "_start" && e.kind == ExternalKind::Func {
                        start_export = Some(e.index);
                    }
                }
            }
            _ => {}
        }
    }

    let Some(start) = start_export else {
        return Err(RuntimeError::MissingStart);
    };
    let sig = funcs
        .get(start as usize)
        .and_then(|t| types.get(*t as usize))
        .and_then(|s| s.as_ref());
    match sig {
        Some((p, r)) if p.is_empty() && r.is_empty() => Ok(()),
        _ => Err(RuntimeError::InvalidModule(
            "_start must take no parameters and return nothing".to_string(),
        )),
    }
}

fn check_import(
    import: &wasmparser::Import<'_>,
    types: &[Option<(Vec<Val>, Vec<Val>)>],
) -> Result<(), RuntimeError> {
    let unknown = || RuntimeError::UnknownImport {
        module: import.module.to_string(),
        name: import.name.to_string(),
    };
    let type_index = match import.ty {
        TypeRef::Func(t) | TypeRef::FuncExact(t) => t,
        TypeRef::Memory(_) => {
            return Err(RuntimeError::InvalidModule(format!(
                "module imports memory {}.{}; Orb modules must define their own memory",
                import.module, import.name
            )));
        }
        TypeRef::Table(_) => {
            return Err(RuntimeError::InvalidModule(format!(
                "module imports table {}.{}; Orb modules must define their own tables",
                import.module, import.name
            )));
        }
        _ => return Err(unknown()),
    };
    if import.module == host::NAMESPACE {
        // A wrong signature means the module was built against another
        // version of the ABI: refuse it as unknown, naming the import.
        return match (host::signature(import.name), types.get(type_index as usize)) {
            (Some((p, r)), Some(Some((tp, tr)))) if tp.as_slice() == p && tr.as_slice() == r => {
                Ok(())
            }
            _ => Err(unknown()),
        };
    }
    if import.module != wasi::NAMESPACE {
        return Err(unknown());
    }
    let Some((want_p, want_r)) = wasi::signature(import.name) else {
        return Err(unknown());
    };
    match types.get(type_index as usize).and_then(|t| t.as_ref()) {
        Some((p, r)) if p.as_slice() == want_p && r.as_slice() == want_r => Ok(()),
        _ => Err(RuntimeError::InvalidModule(format!(
            "module imports {}.{} with the wrong signature; WASI preview 1 defines it as {}",
            import.module,
            import.name,
            fmt_sig(want_p, want_r)
        ))),
    }
}

/// Checks on a compiled module (also guards loaded artifacts).
pub(crate) fn check_compiled(module: &Module) -> Result<(), String> {
    for import in module.imports() {
        let ExternType::Function(ty) = import.ty() else {
            return Err(format!(
                "imports non-function {}.{}",
                import.module(),
                import.name()
            ));
        };
        let sig = match import.module() {
            wasi::NAMESPACE => wasi::signature(import.name()),
            host::NAMESPACE => host::signature(import.name()),
            _ => None,
        };
        let known = sig.is_some_and(|(p, r)| wasi::function_type(p, r) == *ty);
        if !known {
            return Err(format!(
                "unexpected import {}.{}",
                import.module(),
                import.name()
            ));
        }
    }
    let mut start = false;
    let mut fuel = 0;
    for export in module.exports() {
        match (export.name(), export.ty()) {
            ("_start", ExternType::Function(f))
                if f.params().is_empty() && f.results().is_empty() =>
            {
                start = true
            }
            (FUEL_REMAINING | FUEL_EXHAUSTED, ExternType::Global(_)) => fuel += 1,
            _ => {}
        }
    }
    if !start {
        return Err("no _start function".to_string());
    }
    if fuel != 2 {
        return Err("module is not metered".to_string());
    }
    Ok(())
}
