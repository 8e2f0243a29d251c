// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! PNG files of frames.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error as ThisError;

use crate::frame::{convert, ColorType, FrameError, FrameSpec, Image};

/// Why a frame was not dumped.
#[derive(Debug, ThisError)]
pub enum DumpError {
    /// The frame cannot be read.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// PNG encoding failed (an I/O error while writing included).
    #[error("encoding {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: png::EncodingError,
    },
    /// Creating, writing or renaming the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// Writes `image` as an 8-bit RGB or RGBA PNG.
pub fn write_png<W: Write>(writer: W, image: &Image) -> Result<(), png::EncodingError> {
    let mut encoder = png::Encoder::new(writer, image.width, image.height);
    encoder.set_color(match image.color {
        ColorType::Rgb => png::ColorType::Rgb,
        ColorType::Rgba => png::ColorType::Rgba,
    });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&image.data)?;
    writer.finish()
}

/// `guest` made safe for a file name: every byte out of
/// `[A-Za-z0-9_.-]` becomes `_` (guest names are already out of that set).
fn file_name_part(guest: &str) -> String {
    if guest.is_empty() {
        return "_".to_owned();
    }
    guest
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '.' | '-' => c,
            _ => '_',
        })
        .collect()
}

/// The file [`dump`] writes: `DIR/<guest>-<id>-<seqno>.png`, ids and
/// sequence numbers in decimal.
pub fn dump_path(dir: &Path, guest: &str, id: u64, seqno: u64) -> PathBuf {
    dir.join(format!("{}-{id}-{seqno}.png", file_name_part(guest)))
}

/// Removes a temporary file unless it was renamed.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates a new temporary file in `dir` for `name`.
fn create_temp(dir: &Path, name: &str) -> io::Result<(File, TempFile)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, TempFile { path, keep: false })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes `image` to `path` atomically: into a temporary file in the same
/// directory, then renamed over `path`. Readers see the old file or the
/// whole new one, never a part. (No fsync: a crash may lose the file.)
pub fn write_png_file(path: &Path, image: &Image) -> Result<(), DumpError> {
    let io_err = |source| DumpError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (file, mut temp) = create_temp(dir, &name).map_err(|source| DumpError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = BufWriter::new(file);
    write_png(&mut out, image).map_err(|source| DumpError::Encode {
        path: path.to_owned(),
        source,
    })?;
    out.flush().map_err(io_err)?;
    drop(out);
    fs::rename(&temp.path, path).map_err(io_err)?;
    temp.keep = true;
    Ok(())
}

/// Converts the frame `spec` describes in `buffer` (the whole buffer, from
/// its byte 0) and writes it to `DIR/<guest>-<id>-<seqno>.png` atomically
/// ([`write_png_file`]), replacing a file of that name. Returns the path.
pub fn dump(
    dir: &Path,
    guest: &str,
    id: u64,
    seqno: u64,
    spec: &FrameSpec,
    buffer: &[u8],
) -> Result<PathBuf, DumpError> {
    let image = convert(spec, buffer)?;
    let path = dump_path(dir, guest, id, seqno);
    write_png_file(&path, &image)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use std::io::BufReader;

    /// A new empty directory under the system's temporary directory.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            let path = std::env::temp_dir()
                .join(format!("bufshare-watch-test-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TestDir(path)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn read_png(path: &Path) -> Image {
        let decoder = png::Decoder::new(BufReader::new(File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut data = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut data).unwrap();
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        data.truncate(info.buffer_size());
        Image {
            width: info.width,
            height: info.height,
            color: match info.color_type {
                png::ColorType::Rgb => ColorType::Rgb,
                png::ColorType::Rgba => ColorType::Rgba,
                other => panic!("unexpected color type {other:?}"),
            },
            data,
        }
    }

    fn only_file(dir: &Path) -> PathBuf {
        let files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files.into_iter().next().unwrap()
    }

    #[test]
    fn round_trip_rgb() {
        let dir = TestDir::new("rgb");
        // 3x2 XRGB8888, stride 16 (4 bytes of padding).
        let mut buffer = Vec::new();
        let pixels = [
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 255, 255],
            [0, 0, 0],
            [12, 34, 56],
        ];
        for row in pixels.chunks(3) {
            for [r, g, b] in row {
                buffer.extend([*b, *g, *r, 0x99]);
            }
            buffer.extend([0xab; 4]);
        }
        let spec = FrameSpec {
            width: 3,
            height: 2,
            stride: 16,
            format: Format::Xrgb8888,
            offset: 0,
        };
        let path = dump(&dir.0, "vm1", 7, 42, &spec, &buffer).unwrap();
        assert_eq!(path, dir.0.join("vm1-7-42.png"));
        assert_eq!(only_file(&dir.0), path);
        let image = read_png(&path);
        assert_eq!((image.width, image.height), (3, 2));
        assert_eq!(image.color, ColorType::Rgb);
        assert_eq!(image.data, pixels.concat());
        assert_eq!(image, convert(&spec, &buffer).unwrap());
    }

    #[test]
    fn round_trip_rgba_replaces() {
        let dir = TestDir::new("rgba");
        let spec = FrameSpec {
            width: 2,
            height: 1,
            stride: 8,
            format: Format::Argb8888,
            offset: 0,
        };
        let first = [0, 0, 255, 255, 0, 255, 0, 0x40];
        let path = dump(&dir.0, "g", 1, 1, &spec, &first).unwrap();
        assert_eq!(read_png(&path).data, [255, 0, 0, 255, 0, 255, 0, 0x40]);
        // Same name again: replaced, no temporary file left.
        let second = [1, 2, 3, 4, 5, 6, 7, 8];
        let again = dump(&dir.0, "g", 1, 1, &spec, &second).unwrap();
        assert_eq!(again, path);
        assert_eq!(only_file(&dir.0), path);
        let image = read_png(&path);
        assert_eq!(image.color, ColorType::Rgba);
        assert_eq!(image.data, [3, 2, 1, 4, 7, 6, 5, 8]);
    }

    #[test]
    fn round_trip_nv12_and_rgb565() {
        let dir = TestDir::new("yuv");
        // 2x2 NV12 of flat gray (Y 126, Cb Cr 128): RGB 128.
        let nv12 = FrameSpec {
            width: 2,
            height: 2,
            stride: 2,
            format: Format::Nv12,
            offset: 0,
        };
        let path = dump(&dir.0, "g", 2, 3, &nv12, &[126, 126, 126, 126, 128, 128]).unwrap();
        assert_eq!(read_png(&path).data, [128; 12]);
        let rgb565 = FrameSpec {
            width: 1,
            height: 1,
            stride: 2,
            format: Format::Rgb565,
            offset: 2,
        };
        let path = dump(&dir.0, "g", 4, 5, &rgb565, &[0, 0, 0xe0, 0x07]).unwrap();
        assert_eq!(read_png(&path).data, [0, 255, 0]);
    }

    #[test]
    fn errors_leave_nothing() {
        let dir = TestDir::new("err");
        let spec = FrameSpec {
            width: 2,
            height: 2,
            stride: 8,
            format: Format::Xrgb8888,
            offset: 0,
        };
        let err = dump(&dir.0, "g", 1, 1, &spec, &[0; 15]).unwrap_err();
        assert!(
            matches!(err, DumpError::Frame(FrameError::TooLarge { .. })),
            "{err}"
        );
        // A missing directory.
        let missing = dir.0.join("missing");
        let err = dump(&missing, "g", 1, 1, &spec, &[0; 16]).unwrap_err();
        match &err {
            DumpError::Io { path, source } => {
                assert_eq!(path, &missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(fs::read_dir(&dir.0).unwrap().next().is_none());
    }

    #[test]
    fn names() {
        let dir = Path::new("/d");
        assert_eq!(
            dump_path(dir, "vm-1.a_b", 0, u64::MAX),
            Path::new("/d/vm-1.a_b-0-18446744073709551615.png")
        );
        assert_eq!(
            dump_path(dir, "../x y", 1, 2),
            Path::new("/d/.._x_y-1-2.png")
        );
        assert_eq!(dump_path(dir, "", 1, 2), Path::new("/d/_-1-2.png"));
        assert_eq!(dump_path(dir, "é", 1, 2), Path::new("/d/_-1-2.png"));
    }
}
