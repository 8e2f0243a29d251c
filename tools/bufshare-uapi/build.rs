// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Generates the layout test of the crate from the real UAPI headers.
//!
//! The headers are read and every `#define` and every struct (with each of
//! its fields) is listed. From that list this script writes:
//!
//! * a C file that includes the headers and puts, in one array, the value of
//!   every macro and the size, alignment, and every field's offset and size of
//!   every struct, as the C compiler sees them; it is compiled with `cc`;
//! * a Rust file (`include!`d by `src/layout_test.rs`) that reads that array
//!   and pairs each entry with the same quantity computed on the Rust mirror
//!   (`crate::NAME`, `size_of`, `align_of`, `offset_of!`, ...).
//!
//! Since the test is generated from the headers, a macro, struct or field
//! that the mirror lacks makes the test fail to compile, a changed value or
//! layout makes it fail at run time, and anything in the headers that this
//! script cannot read (an enum, a union, a function-like macro, ...) is
//! reported by a failing test. Plain `cargo build` is not affected.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The headers mirrored by the crate, relative to `include/uapi`.
const HEADERS: &[&str] = &["linux/virtio_bufshare.h", "linux/bufshare.h"];

/// Rust keywords that C field names may collide with; the mirror appends `_`.
const RUST_KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

struct Struct {
    c_name: String,
    fields: Vec<String>,
}

#[derive(Default)]
struct Header {
    macros: Vec<String>,
    structs: Vec<Struct>,
    /// Constructs this script does not understand, described for a human.
    unsupported: Vec<String>,
}

/// One compared quantity: a C expression and the Rust expression that must
/// have the same value.
struct Check {
    label: String,
    c_expr: String,
    rust_expr: String,
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    // The headers of this checkout; BUFSHARE_UAPI_INCLUDE points elsewhere,
    // e.g. to check the mirror against an edited copy.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BUFSHARE_UAPI_INCLUDE");
    let uapi_dir = match env::var_os("BUFSHARE_UAPI_INCLUDE") {
        Some(dir) => PathBuf::from(dir),
        None => manifest_dir.join("../../include/uapi"),
    };
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());

    let mut header = Header::default();
    let mut paths = Vec::new();
    for rel in HEADERS {
        let path = uapi_dir.join(rel);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read UAPI header {}: {e}", path.display()));
        parse_header(rel, &text, &mut header);
        paths.push(path.canonicalize().unwrap());
    }

    let checks = checks(&header);
    let c_file = out_dir.join("bufshare_uapi_layout.c");
    fs::write(&c_file, c_source(&paths, &checks)).unwrap();

    // Compile with try_compile so that a header the C compiler refuses makes
    // the layout test fail rather than every build of the workspace.
    let compile_error = cc::Build::new()
        .file(&c_file)
        .warnings(true)
        .extra_warnings(true)
        .try_compile("bufshare_uapi_layout")
        .err()
        .map(|e| e.to_string());
    if let Some(e) = &compile_error {
        println!("cargo:warning=the UAPI layout check does not compile: {e}");
    }

    let rust = rust_source(&header, &checks, compile_error.as_deref());
    fs::write(out_dir.join("layout_generated.rs"), rust).unwrap();
}

/// Removes `/* */` and `//` comments and joins continued lines.
fn strip_comments(text: &str) -> String {
    let text = text.replace("\\\n", " ");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        match (block, line) {
            (Some(b), l) if l.is_none_or(|l| b < l) => {
                out.push_str(&rest[..b]);
                out.push(' ');
                match rest[b + 2..].find("*/") {
                    Some(end) => rest = &rest[b + 2 + end + 2..],
                    None => return out,
                }
            }
            (_, Some(l)) => {
                out.push_str(&rest[..l]);
                match rest[l..].find('\n') {
                    Some(end) => rest = &rest[l + end..],
                    None => return out,
                }
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_header(rel: &str, text: &str, header: &mut Header) {
    let text = strip_comments(text);
    // Names tested by `#ifndef`: an empty `#define` of one is a guard.
    let mut ifndefs: Vec<String> = Vec::new();

    // Preprocessor lines first; everything else is C declarations.
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let Some(directive) = trimmed.strip_prefix('#') else {
            code.push_str(line);
            code.push('\n');
            continue;
        };
        let mut words = directive.trim_start().splitn(2, char::is_whitespace);
        let keyword = words.next().unwrap_or("");
        let rest = words.next().unwrap_or("").trim();
        match keyword {
            "define" => {
                let (name, value) = match rest.find(|c: char| c.is_whitespace() || c == '(') {
                    Some(i) => (&rest[..i], rest[i..].trim()),
                    None => (rest, ""),
                };
                if rest[name.len()..].starts_with('(') {
                    header
                        .unsupported
                        .push(format!("{rel}: function-like macro {name}"));
                } else if value.is_empty() && ifndefs.iter().any(|g| g == name) {
                    // An include guard.
                } else if value.is_empty() {
                    header
                        .unsupported
                        .push(format!("{rel}: macro {name} has no value"));
                } else {
                    header.macros.push(name.to_string());
                }
            }
            // Guards and includes; conditionals that hide a definition from
            // userspace make the C side fail to compile, which is reported.
            "ifndef" => ifndefs.push(rest.to_string()),
            "ifdef" | "if" | "else" | "elif" | "endif" | "include" => {}
            _ => header
                .unsupported
                .push(format!("{rel}: preprocessor directive #{keyword}")),
        }
    }

    // Top-level declarations: only `struct NAME { members };` is understood.
    for decl in split_top_level(&code) {
        let decl = decl.trim();
        if decl.is_empty() {
            continue;
        }
        match parse_struct(decl) {
            Ok(s) => header.structs.push(s),
            Err(why) => header
                .unsupported
                .push(format!("{rel}: {why}: `{}`", squash(decl))),
        }
    }
}

/// Splits C code at the semicolons that are outside braces.
fn split_top_level(code: &str) -> Vec<String> {
    let mut decls = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in code.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ';' if depth == 0 => {
                decls.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        decls.push(cur);
    }
    decls
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_struct(decl: &str) -> Result<Struct, String> {
    let (head, body) = decl
        .split_once('{')
        .ok_or("declaration that is not a struct definition")?;
    let head: Vec<&str> = head.split_whitespace().collect();
    let [kind, name] = head[..] else {
        return Err("unexpected declaration".into());
    };
    if kind != "struct" || !is_ident(name) {
        return Err(format!("`{kind}` definition (only structs are understood)"));
    }
    let body = body
        .trim_end()
        .strip_suffix('}')
        .ok_or("struct definition followed by a declarator")?;
    if body.contains('{') {
        return Err("struct with a nested struct or union".into());
    }
    let mut fields = Vec::new();
    for member in body.split(';') {
        let member = member.trim();
        if member.is_empty() {
            continue;
        }
        if member.contains(':') || member.contains(',') || member.contains('(') {
            return Err(format!("member `{}` not understood", squash(member)));
        }
        // `type name` or `type name[LEN]`: the name is the last identifier
        // before the array brackets, if any.
        let declarator = match member.find('[') {
            Some(i) => {
                if member[i + 1..].contains('[') {
                    return Err(format!("multi-dimensional array `{}`", squash(member)));
                }
                &member[..i]
            }
            None => member,
        };
        let words: Vec<&str> = declarator.split_whitespace().collect();
        match words.last() {
            Some(field) if words.len() >= 2 && is_ident(field) => {
                fields.push(field.to_string());
            }
            _ => return Err(format!("member `{}` not understood", squash(member))),
        }
    }
    if fields.is_empty() {
        return Err(format!("struct {name} without members"));
    }
    Ok(Struct {
        c_name: name.to_string(),
        fields,
    })
}

/// `virtio_bufshare_config` -> `VirtioBufshareConfig`.
fn rust_type_name(c_name: &str) -> String {
    c_name
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            let first = chars.next().unwrap().to_ascii_uppercase();
            std::iter::once(first).chain(chars).collect::<String>()
        })
        .collect()
}

fn rust_field_name(c_name: &str) -> String {
    if RUST_KEYWORDS.contains(&c_name) {
        format!("{c_name}_")
    } else {
        c_name.to_string()
    }
}

fn checks(header: &Header) -> Vec<Check> {
    let mut checks = Vec::new();
    for name in &header.macros {
        checks.push(Check {
            label: format!("macro {name}"),
            c_expr: format!("(unsigned long long)({name})"),
            rust_expr: format!("crate::{name} as u64"),
        });
    }
    for s in &header.structs {
        let c = &s.c_name;
        let r = format!("crate::{}", rust_type_name(c));
        checks.push(Check {
            label: format!("sizeof(struct {c})"),
            c_expr: format!("sizeof(struct {c})"),
            rust_expr: format!("::core::mem::size_of::<{r}>() as u64"),
        });
        checks.push(Check {
            label: format!("_Alignof(struct {c})"),
            c_expr: format!("_Alignof(struct {c})"),
            rust_expr: format!("::core::mem::align_of::<{r}>() as u64"),
        });
        for f in &s.fields {
            let rf = rust_field_name(f);
            checks.push(Check {
                label: format!("offsetof(struct {c}, {f})"),
                c_expr: format!("offsetof(struct {c}, {f})"),
                rust_expr: format!("::core::mem::offset_of!({r}, {rf}) as u64"),
            });
            checks.push(Check {
                label: format!("sizeof(struct {c}.{f})"),
                c_expr: format!("sizeof(((struct {c} *)0)->{f})"),
                rust_expr: format!(
                    "::core::mem::size_of_val(&<{r} as ::core::default::Default>::default().{rf}) as u64"
                ),
            });
        }
    }
    // The generic ioctl encoders, against the kernel's macros.
    let info = "crate::BufshareInfo";
    for (c_expr, rust_expr) in [
        (
            "_IO(0xB5, 0x7f)",
            "crate::ioctl::io(0xB5, 0x7f)".to_string(),
        ),
        (
            "_IOR(0xB5, 0x01, struct bufshare_info)",
            format!("crate::ioctl::ior(0xB5, 0x01, ::core::mem::size_of::<{info}>())"),
        ),
        (
            "_IOW(0xB5, 0x02, struct bufshare_info)",
            format!("crate::ioctl::iow(0xB5, 0x02, ::core::mem::size_of::<{info}>())"),
        ),
        (
            "_IOWR(0xB5, 0xff, struct bufshare_info)",
            format!("crate::ioctl::iowr(0xB5, 0xff, ::core::mem::size_of::<{info}>())"),
        ),
    ] {
        checks.push(Check {
            label: c_expr.to_string(),
            c_expr: c_expr.to_string(),
            rust_expr: format!("{rust_expr} as u64"),
        });
    }
    checks
}

fn c_source(headers: &[PathBuf], checks: &[Check]) -> String {
    let mut c = String::from("/* Generated by bufshare-uapi's build.rs: do not edit. */\n");
    c.push_str("#include <stddef.h>\n#include <linux/ioctl.h>\n");
    for h in headers {
        // Included by path, so that <linux/types.h> in them is the system's.
        writeln!(c, "#include \"{}\"", c_string(h)).unwrap();
    }
    writeln!(
        c,
        "\nconst unsigned long long bufshare_uapi_layout[{}] = {{",
        checks.len()
    )
    .unwrap();
    for check in checks {
        writeln!(c, "\t{}, /* {} */", check.c_expr, check.label).unwrap();
    }
    c.push_str("};\n");
    c
}

fn c_string(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

fn rust_source(header: &Header, checks: &[Check], compile_error: Option<&str>) -> String {
    let mut r = String::from("// Generated by bufshare-uapi's build.rs: do not edit.\n\n");
    writeln!(r, "/// Macros found in the headers.").unwrap();
    writeln!(
        r,
        "pub(crate) const MACROS: &[&str] = &{:?};",
        header.macros
    )
    .unwrap();
    let structs: Vec<&str> = header.structs.iter().map(|s| s.c_name.as_str()).collect();
    writeln!(r, "/// Structs found in the headers.").unwrap();
    writeln!(r, "pub(crate) const STRUCTS: &[&str] = &{structs:?};").unwrap();
    writeln!(r, "/// What the header parser did not understand.").unwrap();
    writeln!(
        r,
        "pub(crate) const UNSUPPORTED: &[&str] = &{:?};",
        header.unsupported
    )
    .unwrap();
    writeln!(r, "/// Why the C side did not compile, if it did not.").unwrap();
    writeln!(
        r,
        "pub(crate) const C_COMPILE_ERROR: Option<&str> = {compile_error:?};"
    )
    .unwrap();
    writeln!(
        r,
        "\n/// `(what, value in C, value in the Rust mirror)` for every checked quantity."
    )
    .unwrap();
    // `X as u64` is a no-op for the u64 consts, and needed for the others.
    writeln!(r, "#[allow(clippy::unnecessary_cast)]").unwrap();
    writeln!(
        r,
        "pub(crate) fn layout() -> Vec<(&'static str, u64, u64)> {{"
    )
    .unwrap();
    if compile_error.is_some() {
        r.push_str("    Vec::new()\n}\n");
        return r;
    }
    writeln!(
        r,
        "    // SAFETY: the C file generated next to this one defines\n    \
         // `const unsigned long long bufshare_uapi_layout[{n}]`, an initialised\n    \
         // read-only array of exactly this type, linked into this crate.\n    \
         unsafe extern \"C\" {{\n        \
         safe static bufshare_uapi_layout: [u64; {n}];\n    }}",
        n = checks.len()
    )
    .unwrap();
    r.push_str("    vec![\n");
    for (i, check) in checks.iter().enumerate() {
        writeln!(
            r,
            "        ({:?}, bufshare_uapi_layout[{i}], {}),",
            check.label, check.rust_expr
        )
        .unwrap();
    }
    r.push_str("    ]\n}\n");
    r
}
