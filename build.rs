//! Gives the shared library its SONAME (install name on macOS): `libwmlicense.so.<abi>`, where
//! the ABI version is the major version, or `0.<minor>` before 1.0. CMakeLists.txt installs it
//! under that name with the same rule.
fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_default();
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap_or_default();
    let abi = if major == "0" {
        format!("0.{minor}")
    } else {
        major
    };
    match std::env::var("CARGO_CFG_TARGET_OS").as_deref() {
        Ok("linux") | Ok("android") | Ok("freebsd") | Ok("netbsd") | Ok("openbsd") => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libwmlicense.so.{abi}");
        }
        Ok("macos") | Ok("ios") => {
            println!(
                "cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libwmlicense.{abi}.dylib"
            );
        }
        _ => {}
    }
    println!("cargo:rerun-if-changed=build.rs");
}
