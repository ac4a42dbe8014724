//! The tiny generated component that exports `msgplug:adapter/config` with the baked settings.
//!
//! It is built here with `wasm-encoder` and `wit-component`, so composing needs no wasm
//! toolchain. `get` takes no parameters, so the core module needs no allocator: the JSON
//! string sits in a data segment, and `get` returns a pointer to a canonical-ABI return
//! area (`ptr: u32, len: u32`, little endian) that a second data segment fills in.
//!
//! Core memory layout (offsets in bytes):
//!
//! ```text
//! 0..8    unused (keeps address 0 free)
//! 8..16   return area: [ptr = 16, len = N]
//! 16..    the JSON document (N bytes of UTF-8)
//! ```

use wasm_encoder::{
    CodeSection, ComponentSection, ConstExpr, CustomSection, DataSection, ExportKind,
    ExportSection, Function, FunctionSection, Instruction, MemorySection, MemoryType, Module,
    TypeSection, ValType,
};
use wit_component::{ComponentEncoder, StringEncoding};

use crate::wit::names;

/// Name of the custom section, in the composed output, that holds the baked settings JSON.
pub const CUSTOM_SECTION: &str = "msgplug-config";

/// Where the return area starts in the core module's memory.
const RETURN_AREA: u32 = 8;
/// Where the JSON document starts in the core module's memory.
const DATA_START: u32 = 16;
/// The WebAssembly page size.
const PAGE_SIZE: u64 = 65536;

/// An error building the config component.
#[derive(Debug, thiserror::Error)]
pub enum ConfigComponentError {
    /// The settings are larger than a 32-bit memory can hold.
    #[error("the settings document is too large ({len} bytes)")]
    TooLarge {
        /// Its size in bytes.
        len: usize,
    },
    /// `wit-component` rejected the generated module (a bug in msgplug).
    #[error("failed to encode the config component")]
    Encode(#[source] anyhow::Error),
}

/// Builds the config component whose `get` returns `json`.
pub fn generate(json: &str) -> Result<Vec<u8>, ConfigComponentError> {
    let len = u32::try_from(json.len())
        .ok()
        .filter(|len| len.checked_add(DATA_START).is_some())
        .ok_or(ConfigComponentError::TooLarge { len: json.len() })?;
    let mut module = core_module(json.as_bytes(), len);

    let wit = crate::wit::bundled();
    let world = wit
        .resolve
        .select_world(&[wit.adapter], Some("config-provider"))
        .expect("the bundled WIT has world `config-provider`");
    wit_component::embed_component_metadata(&mut module, &wit.resolve, world, StringEncoding::UTF8)
        .map_err(ConfigComponentError::Encode)?;
    ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|encoder| encoder.encode())
        .map_err(ConfigComponentError::Encode)
}

fn core_module(json: &[u8], len: u32) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);

    let mut functions = FunctionSection::new();
    functions.function(0);

    let mut memories = MemorySection::new();
    let needed = u64::from(DATA_START) + u64::from(len);
    memories.memory(MemoryType {
        minimum: needed.div_ceil(PAGE_SIZE).max(1),
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });

    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export(&format!("{}#get", names::CONFIG), ExportKind::Func, 0);

    let mut code = CodeSection::new();
    let mut get = Function::new([]);
    get.instruction(&Instruction::I32Const(RETURN_AREA as i32));
    get.instruction(&Instruction::End);
    code.function(&get);

    let mut return_area = DATA_START.to_le_bytes().to_vec();
    return_area.extend(len.to_le_bytes());
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(RETURN_AREA as i32), return_area);
    data.active(
        0,
        &ConstExpr::i32_const(DATA_START as i32),
        json.iter().copied(),
    );

    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&memories)
        .section(&exports)
        .section(&code)
        .section(&data);
    module.finish()
}

/// Appends the `msgplug-config` custom section holding `json` to an encoded component.
pub fn append_custom_section(component: &mut Vec<u8>, json: &str) {
    CustomSection {
        name: CUSTOM_SECTION.into(),
        data: json.as_bytes().into(),
    }
    .append_to_component(component);
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmparser::{DataKind, Operator, Parser, Payload};

    /// Reads the string `get` would return by following the return area the way a canonical
    /// ABI lift does, straight from the data segments of the embedded core module.
    fn lifted_string(component: &[u8]) -> String {
        let mut memory = vec![0u8; 1 << 16];
        for payload in Parser::new(0).parse_all(component) {
            if let Payload::DataSection(reader) = payload.unwrap() {
                for data in reader {
                    let data = data.unwrap();
                    let DataKind::Active { offset_expr, .. } = data.kind else {
                        panic!("passive segment")
                    };
                    let Operator::I32Const { value } =
                        offset_expr.get_operators_reader().read().unwrap()
                    else {
                        panic!("non-constant offset")
                    };
                    let at = value as usize;
                    if memory.len() < at + data.data.len() {
                        memory.resize(at + data.data.len(), 0);
                    }
                    memory[at..at + data.data.len()].copy_from_slice(data.data);
                }
            }
        }
        let word = |at: usize| u32::from_le_bytes(memory[at..at + 4].try_into().unwrap()) as usize;
        let (ptr, len) = (word(RETURN_AREA as usize), word(RETURN_AREA as usize + 4));
        String::from_utf8(memory[ptr..ptr + len].to_vec()).unwrap()
    }

    #[test]
    fn the_component_exports_config_and_returns_the_json() {
        let json = r#"{"msgplug":1,"backend":"local","broker":"local:","subscribe":["a.>"],"queue_group":null,"options":{}}"#;
        let component = generate(json).unwrap();
        let info = crate::analyze::analyze(&component).unwrap();
        assert_eq!(info.exports, vec![names::CONFIG.to_string()]);
        assert!(info.imports.is_empty(), "{:?}", info.imports);
        assert_eq!(lifted_string(&component), json);
        assert!(
            component.len() < 2048,
            "config component is {} bytes",
            component.len()
        );
    }

    #[test]
    fn large_and_non_ascii_documents_round_trip() {
        let json = format!("\"{}é\"", "x".repeat(70_000));
        let component = generate(&json).unwrap();
        assert_eq!(lifted_string(&component), json);
    }

    #[test]
    fn the_custom_section_is_readable_by_analyze() {
        let mut component = generate("{}").unwrap();
        append_custom_section(&mut component, "{\"a\":1}");
        let info = crate::analyze::analyze(&component).unwrap();
        assert_eq!(info.manifest.as_deref(), Some(&b"{\"a\":1}"[..]));
    }
}
