// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause
//! bufshare-view: shows, in one guest, the frames another guest draws
//! (samples/bufshare/bufshare-animate), read in place through an import of
//! its framebuffer: no copy of a frame is made, in the guests or on the
//! host.
//!
//! It attaches to the application of the source guest, maps each buffer
//! imported, and at each update asks the device for the buffer's
//! properties (the frame's offset, stride, height and crc32), checks the
//! frame's bytes against the crc32 where they are, then releases the update
//! so that the other guest may draw into that frame again. It ends when the
//! source's buffer is gone and no update came for a while, or after the
//! time it was given, and prints what it checked.
//!
//!   bufshare-view [-s SECONDS] [-q QUIET_SECONDS] SOURCE [APPLICATION]

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bufshare::{Device, Event, Import, ImportMapping};

/// zlib's crc32(0, bytes).
fn crc32(bytes: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// What was seen.
#[derive(Default)]
struct Tally {
    checked: u64,
    mismatched: u64,
    skipped: u64,
    released: u64,
}

/// Checks the frame the properties of import `id` describe now; releases
/// the update they belong to.
fn check_frame(
    dev: &Device,
    id: u64,
    map: &ImportMapping,
    tally: &mut Tally,
) -> bufshare::Result<()> {
    let info = dev.import_info(id)?;
    let p = &info.properties;
    let (Some(offset), Some(stride), Some(height), Some(crc)) = (
        p.get_u64("offset"),
        p.get_u64("stride"),
        p.get_u64("height"),
        p.get("crc32").and_then(|c| u32::from_str_radix(c, 16).ok()),
    ) else {
        tally.skipped += 1;
        return Ok(());
    };
    let bytes = map.as_slice();
    let end = stride
        .checked_mul(height)
        .and_then(|len| offset.checked_add(len))
        .filter(|&end| end <= bytes.len() as u64);
    match end {
        Some(end) => {
            tally.checked += 1;
            if crc32(&bytes[offset as usize..end as usize]) != crc {
                tally.mismatched += 1;
                eprintln!("bufshare-view: update {}: crc32 mismatch", info.seqno);
            }
        }
        None => tally.skipped += 1,
    }
    if info.seqno != 0 {
        dev.import_release(id, info.seqno)?;
        tally.released += 1;
    }
    Ok(())
}

fn run(seconds: u64, quiet: u64, source: &str, application: &str) -> bufshare::Result<Tally> {
    let dev = Device::open()?;
    let attachment = dev.attach(source, application)?;
    println!("bufshare-view: attached to {application} of {source} (attachment {attachment})");
    let mut imports: HashMap<u64, (Import, ImportMapping)> = HashMap::new();
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut last = Instant::now();
    let mut seen_any = false;
    while start.elapsed() < Duration::from_secs(seconds) {
        if seen_any && imports.is_empty() && last.elapsed() > Duration::from_secs(quiet) {
            break;
        }
        let mut pfd = libc::pollfd {
            fd: dev.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if n <= 0 {
            continue;
        }
        for event in dev.read_events(64)? {
            match event {
                Event::ImportAdded {
                    import_id, size, ..
                } => {
                    let import = dev.import(import_id)?;
                    let map = import.map()?;
                    println!("bufshare-view: import {import_id}: {size} bytes, mapped");
                    imports.insert(import_id, (import, map));
                    seen_any = true;
                    last = Instant::now();
                }
                Event::ImportUpdated { import_id, .. } => {
                    if let Some((_, map)) = imports.get(&import_id) {
                        check_frame(&dev, import_id, map, &mut tally)?;
                        last = Instant::now();
                    }
                }
                Event::ImportRemoved { import_id, .. } => {
                    // Dropping the mapping and the dma-buf gives it back.
                    imports.remove(&import_id);
                    last = Instant::now();
                }
                Event::ImportNoSpace {
                    buffer_id, size, ..
                } => {
                    eprintln!("bufshare-view: buffer {buffer_id} ({size} bytes): no room");
                }
                Event::ImportDetached { .. } => return Ok(tally),
                _ => {}
            }
        }
    }
    Ok(tally)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut seconds, mut quiet) = (60u64, 3u64);
    let mut names = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-s" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            "-q" => quiet = args.next().and_then(|v| v.parse().ok()).unwrap_or(quiet),
            _ => names.push(a),
        }
    }
    let Some(source) = names.first() else {
        eprintln!("usage: bufshare-view [-s SECONDS] [-q QUIET_SECONDS] SOURCE [APPLICATION]");
        return ExitCode::from(2);
    };
    let application = names.get(1).map_or("framebuffer", String::as_str);
    match run(seconds, quiet, source, application) {
        Ok(t) => {
            println!(
                "bufshare-view: {} frames checked: {} ok, {} mismatched, {} without a frame; {} updates released; 0 bytes copied (read in place)",
                t.checked,
                t.checked - t.mismatched,
                t.mismatched,
                t.skipped,
                t.released
            );
            if t.mismatched == 0 && t.checked > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("bufshare-view: {e}");
            ExitCode::FAILURE
        }
    }
}
