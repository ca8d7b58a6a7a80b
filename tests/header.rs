//! The committed header must be exactly what cbindgen generates from the sources now.
//! Regenerate with: WMLICENSE_BLESS=1 cargo test --test header

use std::path::Path;

#[test]
fn committed_header_matches_generated() {
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(crate_dir).join("cbindgen.toml"))
        .expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_src(Path::new(crate_dir).join("src/lib.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = Path::new(crate_dir).join("include").join("wmlicense.h");
    if std::env::var_os("WMLICENSE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write header");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/wmlicense.h differs from what cbindgen generates; run \
         `WMLICENSE_BLESS=1 cargo test --test header` and commit the result"
    );
}

#[test]
fn every_function_is_documented() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/wmlicense.h"))
            .expect("header exists");
    let lines: Vec<&str> = header.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let is_decl = line.starts_with("wm_hresult wm_")
            || line.starts_with("void wm_")
            || line.starts_with("const char *wm_")
            || line.starts_with("#define WM_")
            || line.starts_with("typedef ");
        if is_decl && i > 0 {
            assert!(
                lines[i - 1].trim_end().ends_with("*/"),
                "declaration without a doc comment: {line}"
            );
        }
    }
}
