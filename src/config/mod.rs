//! Reading and checking Tributary's files. Never touches the network or the store.

pub mod spec;
