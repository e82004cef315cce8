//! Wire formats, one module each. Every codec is sans-IO: bytes in, typed values out, and back.

pub mod bencode;
pub mod bt_http;
pub mod bt_udp;
pub mod http;
pub mod ppstp;
