// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! What the fuzz targets and the seed corpus generator share: the input
//! format of the `device_commands` target.
//!
//! Its input is a byte for the consumers' queue limit, then steps, each a
//! tag byte and its arguments:
//!
//! | tag | step | arguments |
//! |-----|------|-----------|
//! | 0 | a command | room for the answer (1 byte), length (2, little-endian), its bytes |
//! | 1 | device reset | |
//! | 2 | buffers lost (fault injection's `lose-buffers`) | |
//! | 3 | driver features | 1 byte: bit 0 BUFFERS, bit 1 GENERATION |
//! | 4 | a consumer subscribes | 1 byte: 0 every application, 1 `a`, 2 `a` and `b`, 3 `a`, `b` and `c` (mod 4) |
//! | 5 | a consumer goes | 1 byte: which (mod the number of consumers) |
//! | 6 | a consumer takes events | 1 byte: which; 1 byte: how many at most |
//! | 7 | every consumer takes everything, then the holdings are checked | |
//! | 8 to 255 | a command made from fuzzed fields with the `bufshare_uapi` encoders | `arbitrary` bytes |
//!
//! Tags 0 to 7 are what [`Step::encode`] writes, so that seeds are made of
//! commands from the encoders; tags 8 and up let the fuzzer build commands
//! field by field.

/// Tag of a command of raw bytes.
pub const TAG_COMMAND: u8 = 0;
/// Tag of a device reset.
pub const TAG_RESET: u8 = 1;
/// Tag of buffers lost.
pub const TAG_LOSE_BUFFERS: u8 = 2;
/// Tag of driver features.
pub const TAG_FEATURES: u8 = 3;
/// Tag of a subscription.
pub const TAG_SUBSCRIBE: u8 = 4;
/// Tag of a consumer going.
pub const TAG_UNSUBSCRIBE: u8 = 5;
/// Tag of a consumer taking events.
pub const TAG_TAKE: u8 = 6;
/// Tag of every consumer taking everything.
pub const TAG_DRAIN: u8 = 7;
/// First tag of a command built from fuzzed fields.
pub const TAG_FIELDS: u8 = 8;

/// One step of a `device_commands` input, as seeds write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A command, with `room` bytes for the answer.
    Command {
        /// Room for the answer.
        room: u8,
        /// The command's bytes (at most 65535).
        bytes: Vec<u8>,
    },
    /// A device reset.
    Reset,
    /// Buffers lost.
    LoseBuffers,
    /// Driver features.
    Features(u8),
    /// A consumer subscribes.
    Subscribe(u8),
    /// A consumer goes.
    Unsubscribe(u8),
    /// A consumer takes up to `count` events.
    Take {
        /// Which consumer.
        consumer: u8,
        /// How many events at most.
        count: u8,
    },
    /// Every consumer takes everything.
    Drain,
}

impl Step {
    /// Appends the step's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Step::Command { room, bytes } => {
                let len = u16::try_from(bytes.len()).expect("command of at most 65535 bytes");
                out.extend_from_slice(&[TAG_COMMAND, *room]);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Step::Reset => out.push(TAG_RESET),
            Step::LoseBuffers => out.push(TAG_LOSE_BUFFERS),
            Step::Features(f) => out.extend_from_slice(&[TAG_FEATURES, *f]),
            Step::Subscribe(a) => out.extend_from_slice(&[TAG_SUBSCRIBE, *a]),
            Step::Unsubscribe(c) => out.extend_from_slice(&[TAG_UNSUBSCRIBE, *c]),
            Step::Take { consumer, count } => {
                out.extend_from_slice(&[TAG_TAKE, *consumer, *count]);
            }
            Step::Drain => out.push(TAG_DRAIN),
        }
    }
}

/// A `device_commands` input: the queue limit byte, then `steps`.
pub fn device_input(queue_limit: u8, steps: &[Step]) -> Vec<u8> {
    let mut out = vec![queue_limit];
    for step in steps {
        step.encode(&mut out);
    }
    out
}
