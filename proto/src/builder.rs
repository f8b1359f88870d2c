//! The `build.rs` entry point: protox parses, prost-build generates.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::generator::ServiceGenerator;

/// The folder of the `.proto` files shipped with this crate:
/// `ferropoll/rpc.proto`, `echo.proto` and `kv.proto`.
///
/// ```
/// let dir = ferropoll_proto::protos_dir();
/// assert!(dir.join("kv.proto").is_file());
/// ```
#[must_use = "the path is only useful when passed to Builder::compile"]
pub fn protos_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("protos")
}

/// Why code generation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A `.proto` file could not be read, parsed or resolved.
    Parse(protox::Error),
    /// prost-build failed, or writing the generated files failed.
    Generate(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse(e) => write!(f, "cannot compile .proto files: {e}"),
            Error::Generate(e) => write!(f, "cannot generate Rust code: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Parse(e) => Some(e),
            Error::Generate(e) => Some(e),
        }
    }
}

/// Generates Rust messages, server traits, server wrappers and client stubs
/// from `.proto` files. Meant for `build.rs`.
///
/// Defaults: output to `$OUT_DIR` (one file per proto package, named
/// `package.rs`), server and client code both generated, generated code
/// refers to the RPC runtime as `::ferropoll_rpc`, every `bytes` field is a
/// `bytes::Bytes`.
///
/// ```no_run
/// # fn main() -> Result<(), ferropoll_proto::Error> {
/// ferropoll_proto::Builder::new()
///     .build_client(false) // a server-only crate
///     .compile(&["protos/kv.proto"], &["protos"])?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Builder does nothing until compile() is called"]
pub struct Builder {
    out_dir: Option<PathBuf>,
    rpc_path: String,
    server: bool,
    client: bool,
    emit_rerun: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder with the defaults above.
    pub fn new() -> Self {
        Builder {
            out_dir: None,
            rpc_path: "::ferropoll_rpc".to_owned(),
            server: true,
            client: true,
            emit_rerun: true,
        }
    }

    /// Writes the generated files into `dir` instead of `$OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The path by which generated code names the RPC runtime crate
    /// (default `::ferropoll_rpc`; use `crate` inside ferropoll-rpc itself or
    /// the re-export path of a crate that wraps it).
    pub fn rpc_path(mut self, path: impl Into<String>) -> Self {
        self.rpc_path = path.into();
        self
    }

    /// Whether to generate server traits and wrappers (default true).
    pub fn build_server(mut self, yes: bool) -> Self {
        self.server = yes;
        self
    }

    /// Whether to generate client stubs (default true).
    pub fn build_client(mut self, yes: bool) -> Self {
        self.client = yes;
        self
    }

    /// Whether to print `cargo:rerun-if-changed` lines for every `.proto`
    /// file read (default true; turn off outside `build.rs`).
    pub fn emit_rerun_if_changed(mut self, yes: bool) -> Self {
        self.emit_rerun = yes;
        self
    }

    /// Parses `protos` (paths of `.proto` files, each inside one of
    /// `includes`) and writes one Rust file per proto package.
    ///
    /// # Errors
    ///
    /// [`Error::Parse`] for a file that cannot be read or is not valid
    /// protobuf, [`Error::Generate`] when prost-build or the file system fails.
    pub fn compile(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let mut compiler = protox::Compiler::new(includes).map_err(Error::Parse)?;
        compiler.include_source_info(true).include_imports(true);
        compiler.open_files(protos).map_err(Error::Parse)?;
        if self.emit_rerun {
            for file in compiler.files() {
                if let Some(path) = file.path() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
        let fds = compiler.file_descriptor_set();

        let mut config = prost_build::Config::new();
        config.bytes(["."]);
        if let Some(dir) = &self.out_dir {
            config.out_dir(dir);
        }
        config.service_generator(Box::new(ServiceGenerator::new(
            self.rpc_path.clone(),
            self.server,
            self.client,
        )));
        config.compile_fds(fds).map_err(Error::Generate)
    }
}
