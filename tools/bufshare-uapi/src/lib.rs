// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Rust mirror of the virtio-bufshare UAPI headers.
//!
//! * [`wire`] mirrors `include/uapi/linux/virtio_bufshare.h`: the protocol
//!   between the driver and the device. Every multi-byte field is
//!   little-endian ([`Le32`]/[`Le64`]) whatever the host's byte order, so the
//!   structs can be copied to and from guest memory as they are.
//! * [`ioctl`] mirrors `include/uapi/linux/bufshare.h`: the ioctl interface of
//!   `/dev/bufshare`, in the host's byte order.
//! * [`props`] holds the rules of names and properties, for every crate
//!   that checks them (the guest crate, the backend, the consumer library).
//!
//! Every struct is `#[repr(C)]` with exactly the layout of its C counterpart,
//! and every `#define` is a const of the same name. The crate's tests compile
//! the real headers with the C compiler and compare every size, alignment,
//! field offset, field size and macro value with this mirror (see `build.rs`).
//!
//! C fields whose name is a Rust keyword get a trailing underscore
//! (`type` becomes `type_`), as bindgen does.
//!
//! [`Le32`]: vm_memory::Le32
//! [`Le64`]: vm_memory::Le64

/// Defines a `#[repr(C)]` UAPI struct that is plain old data, and checks at
/// compile time that it has no padding: the sum of its field sizes must be
/// its size. That is what makes the `ByteValued` implementation sound.
macro_rules! uapi_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        // Not derived: `Default` is not implemented for arrays longer than
        // 32, such as the 64-byte application names.
        impl ::core::default::Default for $name {
            /// All zeroes.
            fn default() -> Self {
                // SAFETY: the struct is plain old data (integers, byte
                // arrays and other such structs), for which all zeroes is a
                // valid value.
                unsafe { ::core::mem::zeroed() }
            }
        }

        const _: () = assert!(
            ::core::mem::size_of::<$name>() == 0 $( + ::core::mem::size_of::<$ty>() )*,
            concat!(stringify!($name), " has padding"),
        );

        // SAFETY: the struct is `#[repr(C)]`, made only of integers, byte
        // arrays and other such structs (all valid for any bit pattern), and
        // the assertion above proves it has no padding bytes.
        unsafe impl ::vm_memory::ByteValued for $name {}
    };
}

pub mod ioctl;
pub mod props;
pub mod wire;

pub use ioctl::*;
pub use wire::*;

#[cfg(test)]
mod layout_test;
