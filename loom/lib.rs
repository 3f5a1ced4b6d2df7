//! Empty: the model lives in ../tests/loom_protocol.rs (see Cargo.toml).
