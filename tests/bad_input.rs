//! The bad-input matrix: every function of `include/conc.h` called with NULL
//! for each pointer argument, and with each enum argument out of range, one
//! case per (function, argument, value), each case in a forked child so
//! that a crash counts as one failure.
//!
//! The list of functions and their parameters is read from the header at
//! test time, and checked against the `conc_*` symbols that libconc.a
//! exports, so a new function cannot be missed: a function or parameter
//! the generator cannot classify fails the test (with what to add here).
//!
//! The other arguments of each case are valid: real objects made by a small
//! fixture per type (a file map, a created segment or list, a spawned
//! thread or process...), so each NULL check is really reached.
//!
//! Expected results, from API.md and the header's doc comments:
//! - a function returning `conc_status` gives `CONC_ERR_INVALID_ARGUMENT`
//!   for a NULL required pointer or an out-of-range enum, names itself and
//!   the argument in `conc_last_error_message()`, sets `*out` to NULL or a
//!   zero handle, and leaves its other outputs unwritten;
//! - the documented exceptions in [`OPTIONAL`] succeed with NULL (and what
//!   they create is released);
//! - an accessor given NULL returns NULL, 0 or `""`, as its doc comment says.
//!
//! Every parameter that takes an opaque object (`conc_mmap *`, `conc_shm *`,
//! `conc_list *`, and `conc_pool *`, `conc_queue *` when the header has
//! them: see [`OPAQUES`]) also gets three stale-object cases:
//! - `CLOSED`: an object that was closed, after a new object of the same
//!   type was made (so it may reuse the freed memory or handle slot); the
//!   new object must be left untouched (its own close still succeeds);
//! - `FORGED`: a non-NULL pointer conc never made;
//! - `OTHER_KIND`: a live object of another type, cast.
//!
//! A status function gives `CONC_ERR_INVALID_STATE` naming itself and the
//! argument, with its outputs unwritten; an accessor gives NULL, 0 or `""`
//! (an enum accessor, the value its doc comment names for NULL).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::Command;

/// The documented NULL exceptions: (function, parameter) pairs where NULL
/// is allowed and the call succeeds. Each one's doc comment must say so
/// (name the parameter and NULL), except `arg`, which the spawns pass
/// through untouched; an entry naming a parameter that its function does
/// not have fails the test as stale.
const OPTIONAL: &[(&str, &str)] = &[
    ("conc_thread_spawn", "arg"),
    ("conc_thread_spawn_with", "options"),
    ("conc_thread_spawn_with", "arg"),
    ("conc_thread_join", "result"),
    ("conc_thread_join_timeout", "result"),
    ("conc_process_spawn", "arg"),
    ("conc_process_join", "exit_code"),
    ("conc_process_join_timeout", "exit_code"),
    ("conc_shm_create", "name"),
    ("conc_list_create", "name"),
    ("conc_mmap_close", "map"),
    ("conc_shm_close", "shm"),
    ("conc_list_close", "list"),
    ("conc_barrier_wait", "is_leader"),
    ("conc_list_add_i64", "previous"),
    ("conc_list_compare_exchange_i64", "actual"),
    ("conc_list_create_bytes", "name"),
    ("conc_queue_create", "name"),
    ("conc_queue_close", "queue"),
    ("conc_pool_close", "pool"),
    ("conc_pool_threads", "pool"),
    ("conc_task_spawn", "pool"),
    ("conc_task_spawn", "arg"),
    ("conc_task_join", "result"),
    ("conc_task_join_timeout", "result"),
    ("conc_parallel_for", "pool"),
    ("conc_parallel_for", "ctx"),
];

/// Parameters that are NULL-able only together with a zero length: the
/// first is the pointer, the second its length. NULL with length 1 is
/// refused (the main case); NULL with length 0 succeeds (an extra case).
const NULL_WITH_ZERO_LEN: &[(&str, &str, &str)] = &[
    ("conc_mmap_find", "needle", "needle_len"),
    ("conc_mmap_rfind", "needle", "needle_len"),
    ("conc_list_set_bytes", "data", "n"),
    ("conc_list_get_bytes", "buf", "buf_size"),
    ("conc_mmap_read", "buf", "count"),
    ("conc_mmap_write", "data", "count"),
    ("conc_queue_push", "message", "len"),
    ("conc_queue_try_push", "message", "len"),
    ("conc_queue_push_timeout", "message", "len"),
];

/// A valid value for each scalar parameter, by name. A scalar parameter
/// whose name is not here fails the test: add a valid value for it.
const SCALARS: &[(&str, &str)] = &[
    ("length", "1"),
    ("size", "1"),
    ("len", "1"),
    ("needle_len", "1"),
    ("offset", "0"),
    ("start", "0"),
    ("index", "0"),
    ("value", "0"),
    ("milliseconds", "0"),
    ("timeout_ms", "60000"), // long enough for the fixture to end
    ("signal", "0"),
    ("count", "1"),
    ("delta", "1"),
    ("expected", "0"),
    ("desired", "1"),
    ("item_size", "8"),
    ("n", "1"),
    ("buf_size", "1"),
    ("capacity", "4"),
    ("message_size", "8"),
    ("threads", "1"),
    ("begin", "0"),
    ("end", "1"),
    ("grain", "1"),
    ("byte", "0"),
    ("dest", "0"),
    ("src", "0"),
    ("new_len", "1"),
];

const SCALAR_TYPES: &[&str] = &[
    "size_t", "uint64_t", "int64_t", "uint32_t", "int32_t", "uint8_t", "int", "double", "bool",
];

/// Opaque object types (used through pointers only), with how the fixture
/// makes one and how it is released. `%` stands for the variable's name.
struct Opaque {
    ty: &'static str,
    make: &'static str,
    release: &'static str,
    /// The function the fixture makes one with: the type is used only when
    /// the header has it.
    maker: &'static str,
}

const OPAQUES: &[Opaque] = &[
    Opaque {
        ty: "conc_mmap",
        make: "conc_mmap *% = fx_map();",
        release: "fx_map_done(%);",
        maker: "conc_mmap_open",
    },
    Opaque {
        ty: "conc_shm",
        make: "conc_shm *% = fx_shm();",
        release: "fx_shm_done(%);",
        maker: "conc_shm_create",
    },
    Opaque {
        ty: "conc_list",
        make: "conc_list *% = fx_list();",
        release: "fx_list_done(%);",
        maker: "conc_list_create",
    },
    Opaque {
        ty: "conc_pool",
        make: "conc_pool *% = fx_pool();",
        release: "fx_pool_done(%);",
        maker: "conc_pool_create",
    },
    Opaque {
        ty: "conc_queue",
        make: "conc_queue *% = fx_queue();",
        release: "fx_queue_done(%);",
        maker: "conc_queue_create",
    },
];

/// Handle types passed by value, with how the fixture makes one and how it
/// is released whatever the call did to it.
const HANDLES: &[Opaque] = &[
    Opaque {
        ty: "conc_thread",
        make: "conc_thread %; CHECK_OK(conc_thread_spawn(&%, fx_thread_fn, NULL));",
        release: "(void)conc_thread_join(%, NULL);",
        maker: "conc_thread_spawn",
    },
    Opaque {
        ty: "conc_process",
        make: "conc_process %; CHECK_OK(conc_process_spawn(&%, fx_process_fn, NULL));",
        release: "(void)conc_process_join(%, NULL);",
        maker: "conc_process_spawn",
    },
    Opaque {
        ty: "conc_task",
        make: "conc_task %; CHECK_OK(conc_task_spawn(&%, NULL, fx_thread_fn, NULL));",
        release: "(void)conc_task_join(%, NULL);",
        maker: "conc_task_spawn",
    },
];

#[derive(Debug, Clone)]
struct Param {
    /// The type as written, e.g. `const struct conc_mmap *`.
    raw: String,
    /// Without `const`, `struct`, `enum` and stars, e.g. `conc_mmap`.
    base: String,
    /// The number of `*`.
    stars: usize,
    /// `const` applies to what the (outermost) pointer points at.
    pointee_const: bool,
    name: String,
}

#[derive(Debug)]
struct Function {
    name: String,
    ret: Param,
    params: Vec<Param>,
    doc: String,
}

#[derive(Debug, Default)]
struct Header {
    functions: Vec<Function>,
    /// Enum name -> its values.
    enums: BTreeMap<String, Vec<i64>>,
    /// Enum name -> the names of its values.
    variants: BTreeMap<String, Vec<String>>,
    /// Function-pointer typedefs.
    fn_types: BTreeSet<String>,
    /// Structs with a body (passed by value).
    structs: BTreeSet<String>,
}

fn strip_line_comment(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Parses `const struct conc_mmap *map` (or a bare type for a return).
fn parse_decl(decl: &str, has_name: bool) -> Result<Param, String> {
    let decl = decl.trim();
    if decl.contains('(') || decl.contains('[') {
        return Err(format!(
            "cannot parse `{decl}` (a function pointer or array parameter: use a typedef)"
        ));
    }
    let spaced = decl.replace('*', " * ");
    let mut words: Vec<&str> = spaced.split_whitespace().collect();
    let name = if has_name {
        match words.pop() {
            Some(w) if w != "*" => w.to_string(),
            _ => return Err(format!("no parameter name in `{decl}`")),
        }
    } else {
        String::new()
    };
    let stars = words.iter().filter(|w| **w == "*").count();
    // `const` before the last star qualifies the pointee.
    let last_star = words.iter().rposition(|w| *w == "*");
    let pointee_const = match last_star {
        Some(i) => words[..i]
            .iter()
            .rev()
            .take_while(|w| **w != "*")
            .any(|w| *w == "const"),
        None => false,
    };
    let base: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| !matches!(*w, "const" | "struct" | "enum" | "*"))
        .collect();
    if base.len() != 1 {
        return Err(format!("cannot parse the type of `{decl}`"));
    }
    let raw = decl[..decl.len() - name.len()].trim().to_string();
    Ok(Param {
        raw,
        base: base[0].to_string(),
        stars,
        pointee_const,
        name,
    })
}

fn parse_header(text: &str) -> Result<Header, Vec<String>> {
    let mut h = Header::default();
    let mut errors = Vec::new();
    let mut doc = String::new();
    let mut in_doc = false;
    let mut stmt = String::new();
    let mut enum_block: Option<Vec<i64>> = None;
    let mut variant_block: Vec<String> = Vec::new();
    let mut next_value = 0i64;
    for line in text.lines() {
        let t = line.trim();
        if in_doc {
            doc.push_str(t.trim_start_matches('*').trim_end_matches("*/"));
            doc.push('\n');
            if t.ends_with("*/") {
                in_doc = false;
            }
            continue;
        }
        if t.starts_with("/*") {
            doc.clear();
            doc.push_str(
                t.trim_start_matches("/**")
                    .trim_start_matches("/*")
                    .trim_end_matches("*/"),
            );
            doc.push('\n');
            in_doc = !t.ends_with("*/") || t == "/*" || t == "/**";
            continue;
        }
        let t = strip_line_comment(t).trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(values) = enum_block.as_mut() {
            if let Some(rest) = t.strip_prefix('}') {
                let name = rest.trim().trim_end_matches(';').trim().to_string();
                h.variants
                    .insert(name.clone(), std::mem::take(&mut variant_block));
                h.enums.insert(name, enum_block.take().unwrap_or_default());
            } else {
                let item = t.trim_end_matches(',');
                variant_block.push(item.split('=').next().unwrap_or("").trim().to_string());
                let value = match item.split_once('=') {
                    Some((_, v)) => match v.trim().parse::<i64>() {
                        Ok(v) => v,
                        Err(_) => {
                            errors.push(format!("cannot read the enum value `{item}`"));
                            next_value
                        }
                    },
                    None => next_value,
                };
                values.push(value);
                next_value = value + 1;
            }
            continue;
        }
        if t.starts_with("typedef enum") && t.ends_with('{') {
            enum_block = Some(Vec::new());
            next_value = 0;
            continue;
        }
        if t.starts_with("typedef enum") {
            // All on one line: `typedef enum NAME { A = 0, B } NAME;`
            let (Some(open), Some(close)) = (t.find('{'), t.rfind('}')) else {
                errors.push(format!("cannot parse `{t}`"));
                continue;
            };
            let mut values = Vec::new();
            let mut names = Vec::new();
            let mut next = 0i64;
            for item in t[open + 1..close].split(',').map(str::trim) {
                if item.is_empty() {
                    continue;
                }
                names.push(item.split('=').next().unwrap_or("").trim().to_string());
                let value = match item.split_once('=') {
                    Some((_, v)) => v.trim().parse::<i64>().unwrap_or_else(|_| {
                        errors.push(format!("cannot read the enum value `{item}`"));
                        next
                    }),
                    None => next,
                };
                values.push(value);
                next = value + 1;
            }
            let name = t[close + 1..].trim().trim_end_matches(';').trim();
            h.enums.insert(name.to_string(), values);
            h.variants.insert(name.to_string(), names);
            continue;
        }
        if t.starts_with("typedef struct") {
            let words: Vec<&str> = t.split_whitespace().collect();
            if t.ends_with('{') && words.len() >= 3 {
                h.structs.insert(words[2].to_string());
            }
            continue;
        }
        if let Some(rest) = t.strip_prefix("typedef") {
            if let Some(i) = rest.find("(*") {
                let name: String = rest[i + 2..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                h.fn_types.insert(name);
            }
            continue;
        }
        // Inside a struct body or the extern "C" braces: fields and braces.
        if !t.contains('(') && stmt.is_empty() {
            continue;
        }
        stmt.push_str(t);
        stmt.push(' ');
        if !t.ends_with(';') {
            continue;
        }
        let s = std::mem::take(&mut stmt);
        let s = s.trim().trim_end_matches(';');
        let Some(open) = s.find('(') else { continue };
        let Some(close) = s.rfind(')') else {
            errors.push(format!("cannot parse `{s}`"));
            continue;
        };
        let head = &s[..open];
        let fn_name = head
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("")
            .to_string();
        if !fn_name.starts_with("conc_") {
            errors.push(format!("`{s}`: not a conc_ function"));
            continue;
        }
        let ret = match parse_decl(&head[..head.len() - fn_name.len()], false) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{fn_name}: {e}"));
                continue;
            }
        };
        let args = s[open + 1..close].trim();
        let mut params = Vec::new();
        if args != "void" && !args.is_empty() {
            for a in args.split(',') {
                match parse_decl(a, true) {
                    Ok(p) => params.push(p),
                    Err(e) => errors.push(format!("{fn_name}: {e}")),
                }
            }
        }
        h.functions.push(Function {
            name: fn_name,
            ret,
            params,
            doc: std::mem::take(&mut doc),
        });
    }
    if errors.is_empty() {
        Ok(h)
    } else {
        Err(errors)
    }
}

/// The `conc_*` functions libconc.a defines, read with `readelf` (which,
/// unlike `nm`, reads the objects of an LTO build without a plugin).
fn exported_symbols() -> Option<BTreeSet<String>> {
    let lib = common::static_lib();
    let out = Command::new("readelf").arg("-Ws").arg(&lib).output().ok()?;
    if !out.status.success() {
        return None;
    }
    // Num: Value Size Type Bind Vis Ndx Name
    let symbols: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 8
                && f[3] == "FUNC"
                && f[4] == "GLOBAL"
                && f[6] != "UND"
                && f[7].starts_with("conc_"))
            .then(|| f[7].to_string())
        })
        .collect();
    (!symbols.is_empty()).then_some(symbols)
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Status(&'static str),
    /// An accessor's return value, checked by a C condition on `r`.
    Value(String),
}

struct Case {
    id: String,
    title: String,
    function: usize,
    /// The parameter made bad.
    param: usize,
    /// `NULL`, the enum value, or the stale object's variable.
    bad: String,
    /// C code that makes the bad argument, and releases what it made.
    bad_setup: String,
    bad_cleanup: String,
    /// Scalar values overridden for this case (parameter name -> value).
    overrides: BTreeMap<String, String>,
    expect: Expect,
    /// A C check on the arguments after a successful call (`%N` stands for
    /// argument N's variable).
    after_ok: String,
}

struct Gen<'a> {
    h: &'a Header,
    errors: Vec<String>,
}

/// The C code one argument needs in one case.
#[derive(Default)]
struct ArgCode {
    setup: String,
    expr: String,
    /// Checks that hold when the call failed (outputs untouched or reset).
    on_fail: String,
    /// Releases what a successful call made.
    on_ok: String,
    /// Releases the fixture's own objects.
    cleanup: String,
}

fn subst(template: &str, var: &str) -> String {
    template.replace('%', var)
}

impl Gen<'_> {
    fn is_pointer(&self, p: &Param) -> bool {
        p.stars > 0 || self.h.fn_types.contains(&p.base)
    }

    fn is_enum(&self, p: &Param) -> bool {
        p.stars == 0 && self.h.enums.contains_key(&p.base)
    }

    /// The valid argument for `p` of `f` (index `i`), or why it cannot be made.
    fn valid_arg(
        &self,
        f: &Function,
        i: usize,
        p: &Param,
        overrides: &BTreeMap<String, String>,
    ) -> Result<ArgCode, String> {
        let v = format!("a{i}");
        let mut c = ArgCode {
            expr: v.clone(),
            ..ArgCode::default()
        };
        let obj_kind = |name: &str| {
            if name.starts_with("conc_list_") {
                "list"
            } else {
                "shm"
            }
        };
        if p.stars == 0 {
            if self.h.fn_types.contains(&p.base) {
                c.expr = match p.base.as_str() {
                    "conc_thread_fn" => "fx_thread_fn".into(),
                    "conc_process_fn" => "fx_process_fn".into(),
                    "conc_for_fn" => "fx_for_fn".into(),
                    _ => return Err(format!("no valid function for the type `{}`", p.base)),
                };
                return Ok(c);
            }
            if let Some(values) = self.h.enums.get(&p.base) {
                c.expr = format!("({}){}", p.raw, values[0]);
                return Ok(c);
            }
            if let Some(hd) = HANDLES.iter().find(|o| o.ty == p.base) {
                c.setup = subst(hd.make, &v);
                c.cleanup = subst(hd.release, &v);
                return Ok(c);
            }
            if SCALAR_TYPES.contains(&p.base.as_str()) {
                let value = overrides
                    .get(&p.name)
                    .map(String::as_str)
                    .or_else(|| SCALARS.iter().find(|(n, _)| *n == p.name).map(|(_, v)| *v));
                let Some(value) = value else {
                    return Err(format!(
                        "no valid value for the scalar `{} {}`: add one to SCALARS",
                        p.base, p.name
                    ));
                };
                c.expr = format!("({}){}", p.raw, value);
                return Ok(c);
            }
            return Err(format!("unknown value type `{}`", p.raw));
        }
        // Handles come back through `out`: pre-filled with garbage, reset
        // to NULL / zero on failure, released on success.
        if i == 0 && p.name == "out" && !p.pointee_const {
            if p.stars == 2 {
                if let Some(o) = OPAQUES.iter().find(|o| o.ty == p.base) {
                    c.setup = format!("{} *{v} = ({} *)&fx_sentinel;", o.ty, o.ty);
                    c.expr = format!("&{v}");
                    c.on_fail = format!("CHECK({v} == NULL);");
                    c.on_ok = format!("if ({v} != (void *)&fx_sentinel) {}", subst(o.release, &v));
                    return Ok(c);
                }
            }
            if p.stars == 1 {
                if let Some(hd) = HANDLES.iter().find(|o| o.ty == p.base) {
                    c.setup = format!("{} {v}; memset(&{v}, 0x5a, sizeof {v});", hd.ty);
                    c.expr = format!("&{v}");
                    c.on_fail = format!("CHECK(fx_all_zero(&{v}, sizeof {v}));");
                    c.on_ok = subst(hd.release, &v);
                    return Ok(c);
                }
            }
            return Err(format!("unknown handle type `{}` for `out`", p.raw));
        }
        if p.stars == 1 {
            // The byte-string list calls need a byte-string list.
            if p.base == "conc_list" && f.name.contains("_bytes") {
                c.setup = format!("conc_list *{v} = fx_bytes_list();");
                c.cleanup = format!("fx_list_done({v});");
                return Ok(c);
            }
            if let Some(o) = OPAQUES.iter().find(|o| o.ty == p.base) {
                c.setup = subst(o.make, &v);
                c.cleanup = subst(o.release, &v);
                return Ok(c);
            }
            match (p.base.as_str(), p.name.as_str(), p.pointee_const) {
                ("conc_thread_options", _, true) => {
                    c.setup = format!("conc_thread_options {v}; memset(&{v}, 0, sizeof {v});");
                    c.expr = format!("&{v}");
                    return Ok(c);
                }
                // The synchronization objects: plain structs, all-zero
                // bytes ready (a barrier needs its count).
                ("conc_mutex" | "conc_cond" | "conc_sem" | "conc_event" | "conc_barrier", _, _) => {
                    c.setup = format!("conc_{0} {v}; memset(&{v}, 0, sizeof {v});", &p.base[5..]);
                    if p.base == "conc_barrier" {
                        c.setup
                            .push_str(&format!(" CHECK_OK(conc_barrier_init(&{v}, 1));"));
                    }
                    c.expr = format!("&{v}");
                    return Ok(c);
                }
                ("void", "arg" | "ctx", false) => {
                    c.expr = "(void *)&fx_sentinel".into();
                    return Ok(c);
                }
                ("void", "needle" | "data" | "message", true) => {
                    c.expr = "\"a\"".into();
                    return Ok(c);
                }
                ("void", "buf", false) => {
                    c.setup = format!("char {v}[8]; memset({v}, 0x5a, sizeof {v});");
                    c.on_fail = format!("CHECK(fx_all_5a({v}, sizeof {v}));");
                    return Ok(c);
                }
                ("char", "path", true) => {
                    c.expr = "fx_path".into();
                    return Ok(c);
                }
                ("char", "name", true) => {
                    let kind = obj_kind(&f.name);
                    if f.name.ends_with("_create") {
                        c.setup = format!("char {v}[64]; fx_fresh_name({v});");
                        c.cleanup = format!("fx_unlink_name({v});");
                    } else {
                        c.setup = format!(
                            "conc_{kind} *{v}_obj = fx_{kind}(); const char *{v} = conc_{kind}_name({v}_obj);"
                        );
                        c.cleanup = format!("fx_{kind}_done({v}_obj);");
                    }
                    return Ok(c);
                }
                _ => {}
            }
        }
        // A plain output: a local of the pointee's type, pre-filled with a
        // pattern that must survive a failed call.
        if !p.pointee_const || p.stars == 2 {
            let pointee = p
                .raw
                .trim_end()
                .strip_suffix('*')
                .unwrap_or(&p.raw)
                .trim()
                .to_string();
            let scalar = SCALAR_TYPES.contains(&p.base.as_str()) || p.base == "void";
            if scalar && !(p.stars == 1 && p.base == "void") {
                c.setup = format!("{pointee} {v}; memset(&{v}, 0x5a, sizeof {v});");
                c.expr = format!("&{v}");
                c.on_fail = format!("CHECK(fx_all_5a(&{v}, sizeof {v}));");
                return Ok(c);
            }
        }
        Err(format!(
            "no fixture for the parameter `{} {}`: add one in bad_input.rs",
            p.raw, p.name
        ))
    }

    /// The cases of one function.
    fn cases(&mut self, fi: usize) -> Vec<Case> {
        let f = &self.h.functions[fi];
        let mut cases = Vec::new();
        let status_fn = f.ret.base == "conc_status" && f.ret.stars == 0;
        for (pi, p) in f.params.iter().enumerate() {
            if self.is_pointer(p) {
                let optional = OPTIONAL.contains(&(f.name.as_str(), p.name.as_str()));
                let expect = if status_fn {
                    Expect::Status(if optional {
                        "CONC_OK"
                    } else {
                        "CONC_ERR_INVALID_ARGUMENT"
                    })
                } else if optional {
                    // An accessor whose NULL means something (the default
                    // pool's size): any value, no crash.
                    Expect::Value("r == r".into())
                } else {
                    match self.null_accessor_result(f) {
                        Ok(e) => e,
                        Err(e) => {
                            self.errors.push(e);
                            continue;
                        }
                    }
                };
                // `void *arg` is passed through untouched, as the spawns say.
                if optional
                    && p.name != "arg"
                    && !(f.doc.contains(&format!("`{}`", p.name)) && f.doc.contains("NULL"))
                {
                    self.errors.push(format!(
                        "{}: `{}` is taken as optional, but its doc comment does not say what NULL does",
                        f.name, p.name
                    ));
                }
                cases.push(Case {
                    id: format!("{}__{}__NULL", f.name, p.name),
                    title: format!("{}({} = NULL)", f.name, p.name),
                    function: fi,
                    param: pi,
                    bad: "NULL".into(),
                    overrides: BTreeMap::new(),
                    expect,
                    after_ok: String::new(),
                    bad_setup: String::new(),
                    bad_cleanup: String::new(),
                });
                if let Some((_, _, len)) = NULL_WITH_ZERO_LEN
                    .iter()
                    .find(|(fname, ptr, _)| *fname == f.name && *ptr == p.name)
                {
                    cases.push(Case {
                        id: format!("{}__{}__NULL_{}_0", f.name, p.name, len),
                        title: format!("{}({} = NULL, {} = 0)", f.name, p.name, len),
                        function: fi,
                        param: pi,
                        bad: "NULL".into(),
                        overrides: BTreeMap::from([(len.to_string(), "0".to_string())]),
                        expect: Expect::Status("CONC_OK"),
                        // An empty needle matches at `start` (0 here).
                        after_ok: match f.params.iter().position(|q| q.name == "position") {
                            Some(i) => format!("CHECK(a{i} == 0);"),
                            None => String::new(),
                        },
                        bad_setup: String::new(),
                        bad_cleanup: String::new(),
                    });
                }
                cases.extend(self.stale_cases(fi, pi));
            } else if self.is_enum(p) {
                let values = &self.h.enums[&p.base];
                let max = values.iter().copied().max().unwrap_or(0);
                let mut bad: Vec<i64> = vec![max + 1, 99, -1];
                bad.dedup();
                for b in bad {
                    let expect = if status_fn {
                        Expect::Status("CONC_ERR_INVALID_ARGUMENT")
                    } else if f.ret.base == "char" && f.ret.stars == 1 {
                        if f.doc.contains("\"unknown status\"") {
                            Expect::Value("r != NULL && strcmp(r, \"unknown status\") == 0".into())
                        } else {
                            Expect::Value("r != NULL && r[0] != '\\0'".into())
                        }
                    } else {
                        self.errors.push(format!(
                            "{}: no rule for an out-of-range `{}` in a function returning `{}`",
                            f.name, p.name, f.ret.raw
                        ));
                        continue;
                    };
                    let tag = if b < 0 {
                        format!("m{}", -b)
                    } else {
                        b.to_string()
                    };
                    cases.push(Case {
                        id: format!("{}__{}__{}", f.name, p.name, tag),
                        title: format!("{}({} = {})", f.name, p.name, b),
                        function: fi,
                        param: pi,
                        bad: format!("({}){}", p.raw, b),
                        overrides: BTreeMap::new(),
                        expect,
                        after_ok: String::new(),
                        bad_setup: String::new(),
                        bad_cleanup: String::new(),
                    });
                }
            }
        }
        cases
    }

    /// The opaque types whose fixture the header supports.
    fn opaques(&self) -> impl Iterator<Item = &'static Opaque> + '_ {
        OPAQUES
            .iter()
            .filter(|o| self.h.functions.iter().any(|f| f.name == o.maker))
    }

    /// The CLOSED, FORGED and OTHER_KIND cases of parameter `pi` of
    /// function `fi`, when it takes an opaque object.
    fn stale_cases(&mut self, fi: usize, pi: usize) -> Vec<Case> {
        let f = &self.h.functions[fi];
        let p = &f.params[pi];
        if p.stars != 1 || (pi == 0 && p.name == "out") {
            return Vec::new();
        }
        let Some(o) = self.opaques().find(|o| o.ty == p.base) else {
            return Vec::new();
        };
        let status_fn = f.ret.base == "conc_status" && f.ret.stars == 0;
        let expect = if status_fn {
            Expect::Status("CONC_ERR_INVALID_STATE")
        } else {
            match self.stale_accessor_result(f) {
                Ok(e) => e,
                Err(e) => {
                    self.errors.push(e);
                    return Vec::new();
                }
            }
        };
        let cast = |expr: &str| format!("({})(void *){expr}", p.raw);
        let case = |tag: &str, what: &str, bad: String, setup: String, cleanup: String| Case {
            id: format!("{}__{}__{tag}", f.name, p.name),
            title: format!("{}({} = {what})", f.name, p.name),
            function: fi,
            param: pi,
            bad,
            overrides: BTreeMap::new(),
            expect: expect.clone(),
            after_ok: String::new(),
            bad_setup: setup,
            bad_cleanup: cleanup,
        };
        let mut cases = vec![
            case(
                "CLOSED",
                "a closed object, its memory possibly reused by a new one",
                "stale".into(),
                format!(
                    "{} {} {}",
                    subst(o.make, "stale"),
                    subst(o.release, "stale"),
                    subst(o.make, "fresh")
                ),
                // The new object is untouched: its close still succeeds.
                subst(o.release, "fresh"),
            ),
            case(
                "FORGED",
                "a pointer conc never made",
                cast("&fx_sentinel"),
                String::new(),
                String::new(),
            ),
        ];
        if let Some(other) = self.opaques().find(|x| x.ty != o.ty) {
            cases.push(case(
                "OTHER_KIND",
                &format!("a live {}", other.ty),
                cast("other"),
                subst(other.make, "other"),
                subst(other.release, "other"),
            ));
        }
        cases
    }

    /// What an accessor returns for a closed or forged object: NULL, 0 or
    /// `""` by its return type; for an enum, the value it gives for NULL.
    fn stale_accessor_result(&self, f: &Function) -> Result<Expect, String> {
        let r = &f.ret;
        if r.stars == 1 && r.base == "char" {
            Ok(Expect::Value("r != NULL && r[0] == '\\0'".into()))
        } else if r.stars >= 1 {
            Ok(Expect::Value("r == NULL".into()))
        } else if SCALAR_TYPES.contains(&r.base.as_str()) {
            Ok(Expect::Value("r == 0".into()))
        } else {
            self.null_accessor_result(f)
        }
    }

    /// What an accessor returns for NULL, from its return type, checked
    /// against its doc comment.
    fn null_accessor_result(&self, f: &Function) -> Result<Expect, String> {
        let r = &f.ret;
        let (cond, doc_says) = if r.stars == 1 && r.base == "char" {
            ("r != NULL && r[0] == '\\0'", "\"\"")
        } else if r.stars >= 1 {
            ("r == NULL", "NULL")
        } else if SCALAR_TYPES.contains(&r.base.as_str()) {
            ("r == 0", "0")
        } else if let Some(names) = self.h.variants.get(&r.base) {
            // The doc names the value NULL gives: exactly one of the enum's.
            let named: Vec<&String> = names
                .iter()
                .filter(|n| f.doc.contains(n.as_str()))
                .collect();
            let [value] = named.as_slice() else {
                return Err(format!(
                    "{}: its doc comment does not name the one `{}` value NULL gives",
                    f.name, r.base
                ));
            };
            return if f.doc.contains("NULL") {
                Ok(Expect::Value(format!("r == {value}")))
            } else {
                Err(format!(
                    "{}: its doc comment does not say what NULL gives",
                    f.name
                ))
            };
        } else {
            return Err(format!(
                "{}: no rule for what `{}` returns when given NULL: add one in bad_input.rs",
                f.name, r.raw
            ));
        };
        if !(f.doc.contains("NULL") && f.doc.contains(doc_says)) {
            return Err(format!(
                "{}: its doc comment does not say that NULL gives {doc_says}",
                f.name
            ));
        }
        Ok(Expect::Value(cond.into()))
    }

    fn case_code(&mut self, case: &Case) -> Option<String> {
        let f = &self.h.functions[case.function];
        let mut args = Vec::new();
        for (i, p) in f.params.iter().enumerate() {
            if i == case.param {
                args.push(ArgCode {
                    expr: case.bad.clone(),
                    ..ArgCode::default()
                });
                continue;
            }
            match self.valid_arg(f, i, p, &case.overrides) {
                Ok(a) => args.push(a),
                Err(e) => {
                    self.errors.push(format!("{}: {e}", f.name));
                    return None;
                }
            }
        }
        let mut s = String::new();
        let _ = writeln!(s, "/* {} */\nTEST({}) {{", case.title, case.id);
        if !case.bad_setup.is_empty() {
            let _ = writeln!(s, "    {}", case.bad_setup);
        }
        for a in &args {
            if !a.setup.is_empty() {
                let _ = writeln!(s, "    {}", a.setup);
            }
        }
        let call = format!(
            "{}({})",
            f.name,
            args.iter()
                .map(|a| a.expr.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        match &case.expect {
            Expect::Status(want) => {
                let _ = writeln!(s, "    conc_status st = {call};");
                let _ = writeln!(s, "    CHECK_STATUS(st, {want});");
                if *want == "CONC_OK" {
                    let _ = writeln!(s, "    if (st == CONC_OK) {{");
                    if !case.after_ok.is_empty() {
                        let _ = writeln!(s, "        {}", case.after_ok);
                    }
                    for a in &args {
                        if !a.on_ok.is_empty() {
                            let _ = writeln!(s, "        {}", a.on_ok);
                        }
                    }
                    let _ = writeln!(s, "    }}");
                } else {
                    let _ = writeln!(s, "    if (st != CONC_OK) {{");
                    let _ = writeln!(s, "        CHECK_MESSAGE_HAS(\"{}\");", f.name);
                    let _ = writeln!(
                        s,
                        "        CHECK_MESSAGE_HAS(\"{}\");",
                        f.params[case.param].name
                    );
                    for a in &args {
                        if !a.on_fail.is_empty() {
                            let _ = writeln!(s, "        {}", a.on_fail);
                        }
                    }
                    let _ = writeln!(s, "    }} else {{");
                    for a in &args {
                        if !a.on_ok.is_empty() {
                            let _ = writeln!(s, "        {}", a.on_ok);
                        }
                    }
                    let _ = writeln!(s, "    }}");
                }
            }
            Expect::Value(cond) => {
                let _ = writeln!(s, "    {} r = {call};", f.ret.raw);
                let _ = writeln!(s, "    CHECK({cond});");
            }
        }
        for a in args.iter().rev() {
            if !a.cleanup.is_empty() {
                let _ = writeln!(s, "    {}", a.cleanup);
            }
        }
        if !case.bad_cleanup.is_empty() {
            let _ = writeln!(s, "    {}", case.bad_cleanup);
        }
        let _ = writeln!(s, "}}\n");
        Some(s)
    }
}

/// The fixtures, each emitted only when the header has what it uses.
fn fixtures(h: &Header) -> String {
    let has = |f: &str| h.functions.iter().any(|x| x.name == f);
    let mut s = String::from(
        r#"#include "check.h"
#include "shm_snapshot.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

static char fx_sentinel;        /* its address: a recognisable non-NULL pointer */
static char fx_dir[64];         /* the temporary directory of this run */
static char fx_path[128];       /* a small text file in it */
static long fx_run;             /* this run's pid, in every segment name */
static int fx_case;             /* the current case's number */
static int fx_names;            /* names made in this case */

__attribute__((unused)) static int fx_all_zero(const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) if (b[i] != 0) return 0;
    return 1;
}

__attribute__((unused)) static int fx_all_5a(const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) if (b[i] != 0x5a) return 0;
    return 1;
}

/* A segment name no one uses, unique to this run and case. */
__attribute__((unused)) static void fx_fresh_name(char *buf) {
    snprintf(buf, 64, "/hbi_%ld_%d_%d", fx_run, fx_case, fx_names++);
}

__attribute__((unused)) static void fx_unlink_name(const char *name) { (void)shm_unlink(name); }

__attribute__((unused)) static void *fx_thread_fn(void *arg) { return arg; }
__attribute__((unused)) static void fx_for_fn(size_t b, size_t e, void *ctx) {
    (void)b;
    (void)e;
    (void)ctx;
}
"#,
    );
    if has("conc_process_spawn") {
        s.push_str("static int fx_process_fn(void *arg) { (void)arg; return 0; }\n");
    }
    if has("conc_mmap_open") {
        s.push_str(
            r#"
static conc_mmap *fx_map(void) {
    conc_mmap *m = NULL;
    CHECK_OK(conc_mmap_open(&m, fx_path, CONC_ACCESS_WRITE));
    return m;
}
static void fx_map_done(conc_mmap *m) { if (m) CHECK_OK(conc_mmap_close(m)); }
"#,
        );
    }
    if has("conc_shm_create") {
        s.push_str(
            r#"
static conc_shm *fx_shm(void) {
    char name[64];
    fx_fresh_name(name);
    conc_shm *m = NULL;
    CHECK_OK(conc_shm_create(&m, name, 4096));
    return m;
}
static void fx_shm_done(conc_shm *m) {
    if (!m) return;
    (void)conc_shm_unlink(m);
    CHECK_OK(conc_shm_close(m));
}
"#,
        );
    }
    if has("conc_pool_create") {
        s.push_str(
            r#"
static conc_pool *fx_pool(void) {
    conc_pool *p = NULL;
    CHECK_OK(conc_pool_create(&p, 1));
    return p;
}
static void fx_pool_done(conc_pool *p) { if (p) CHECK_OK(conc_pool_close(p)); }
"#,
        );
    }
    if has("conc_queue_create") {
        s.push_str(
            r#"
static conc_queue *fx_queue(void) {
    char name[64];
    fx_fresh_name(name);
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_create(&q, name, 4, 8));
    return q;
}
static void fx_queue_done(conc_queue *q) {
    if (!q) return;
    (void)conc_queue_unlink(q);
    CHECK_OK(conc_queue_close(q));
}
"#,
        );
    }
    if has("conc_list_create") {
        s.push_str(
            r#"
static conc_list *fx_list(void) {
    char name[64];
    fx_fresh_name(name);
    conc_list *l = NULL;
    CHECK_OK(conc_list_create(&l, name, CONC_TYPE_I64, 4));
    return l;
}
static conc_list *fx_bytes_list(void) {
    char name[64];
    fx_fresh_name(name);
    conc_list *l = NULL;
    CHECK_OK(conc_list_create_bytes(&l, name, 4, 8));
    return l;
}
static void fx_list_done(conc_list *l) {
    if (!l) return;
    (void)conc_list_unlink(l);
    CHECK_OK(conc_list_close(l));
}
"#,
        );
    }
    s
}

const MAIN_START: &str = r#"
/* Segments this run left behind: each is a failure, and is removed. */
static int fx_sweep(void) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "hbi_%ld_", fx_run);
    int left = 0;
    DIR *d = opendir("/dev/shm");
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            char name[300];
            snprintf(name, sizeof name, "/%s", e->d_name);
            printf("left behind: /dev/shm/%s\n", e->d_name);
            shm_unlink(name);
            left++;
        }
    }
    closedir(d);
    return left;
}

int main(void) {
    shm_snapshot_begin(); /* alone in /dev/shm among the conc tests, and left as found */
    fx_run = (long)getpid();
    snprintf(fx_dir, sizeof fx_dir, "/tmp/conc_bad_input_XXXXXX");
    if (!mkdtemp(fx_dir)) { perror("mkdtemp"); return 1; }
    snprintf(fx_path, sizeof fx_path, "%s/data.txt", fx_dir);
    FILE *f = fopen(fx_path, "w");
    if (!f) { perror(fx_path); return 1; }
    fputs("alpha\nbeta\ngamma\n", f);
    fclose(f);
"#;

/// The cases' C code (fixtures and one TEST per case) and their ids, or
/// everything that could not be classified.
fn generate(h: &Header) -> Result<(String, Vec<String>), Vec<String>> {
    let mut errors = Vec::new();
    // Stale exceptions: a function of the header without that parameter.
    for (fname, pname) in OPTIONAL {
        if h.functions
            .iter()
            .any(|f| f.name == *fname && !f.params.iter().any(|p| p.name == *pname))
        {
            errors.push(format!(
                "OPTIONAL lists {fname}({pname}), which the header does not have"
            ));
        }
    }

    let mut gen = Gen {
        h,
        errors: Vec::new(),
    };
    // Every parameter must be classifiable, even in a function that has no
    // bad-input case.
    for f in &h.functions {
        for (i, p) in f.params.iter().enumerate() {
            if let Err(e) = gen.valid_arg(f, i, p, &BTreeMap::new()) {
                gen.errors.push(format!("{}: {e}", f.name));
            }
        }
        let status_fn = f.ret.base == "conc_status" && f.ret.stars == 0;
        let known_ret = status_fn
            || f.ret.base == "void"
            || f.ret.stars > 0
            || SCALAR_TYPES.contains(&f.ret.base.as_str())
            || h.enums.contains_key(&f.ret.base);
        if !known_ret {
            gen.errors
                .push(format!("{}: unknown return type `{}`", f.name, f.ret.raw));
        }
        if f.ret.base == "void" && f.ret.stars == 0 && f.params.iter().any(|p| gen.is_pointer(p)) {
            gen.errors.push(format!(
                "{}: returns nothing but takes a pointer: no rule for what NULL should do",
                f.name
            ));
        }
    }
    let mut cases = Vec::new();
    for fi in 0..h.functions.len() {
        cases.extend(gen.cases(fi));
    }
    let mut program = fixtures(h);
    let mut ids = Vec::new();
    for case in &cases {
        if let Some(code) = gen.case_code(case) {
            program.push_str(&code);
            ids.push(case.id.clone());
        }
    }
    errors.append(&mut gen.errors);
    if !errors.is_empty() {
        let mut seen = BTreeSet::new();
        errors.retain(|e| seen.insert(e.clone()));
        return Err(errors);
    }

    Ok((program, ids))
}

#[test]
fn bad_input_matrix() {
    let header_path = common::root().join("include").join("conc.h");
    let text = std::fs::read_to_string(&header_path).expect("read include/conc.h");
    let h = match parse_header(&text) {
        Ok(h) => h,
        Err(errors) => panic!("cannot read include/conc.h:\n  {}", errors.join("\n  ")),
    };
    assert!(
        h.functions.len() >= 10,
        "only {} functions read from include/conc.h",
        h.functions.len()
    );
    let mut errors = Vec::new();

    // Every function libconc.a exports is in the header, and the other way.
    match exported_symbols() {
        Some(symbols) => {
            let parsed: BTreeSet<String> = h.functions.iter().map(|f| f.name.clone()).collect();
            for s in symbols.difference(&parsed) {
                errors.push(format!(
                    "{s}: exported by libconc.a but not read from the header"
                ));
            }
            for s in parsed.difference(&symbols) {
                errors.push(format!("{s}: in the header but not exported by libconc.a"));
            }
        }
        None => eprintln!("note: readelf is not available; the header alone lists the functions"),
    }
    let (mut program, ids) = match generate(&h) {
        Ok(g) => g,
        Err(mut e) => {
            errors.append(&mut e);
            (String::new(), Vec::new())
        }
    };
    assert!(
        errors.is_empty(),
        "the bad-input matrix cannot cover include/conc.h:\n  {}",
        errors.join("\n  ")
    );

    program.push_str(MAIN_START);
    let _ = writeln!(program, "    printf(\"{} cases\\n\");", ids.len());
    for (n, id) in ids.iter().enumerate() {
        let _ = writeln!(program, "    fx_case = {n};\n    RUN({id});");
    }
    program.push_str(
        r#"    int left = fx_sweep();
    if (left) {
        printf("FAILED %d segment names left behind\n", left);
        check_failed_++;
    }
    unlink(fx_path);
    rmdir(fx_dir);
    return shm_snapshot_end(CHECK_SUMMARY());
}
"#,
    );

    let dir = common::profile_dir().join("bad-input");
    std::fs::create_dir_all(&dir).expect("create bad-input dir");
    let source = dir.join("bad_input.c");
    std::fs::write(&source, program).expect("write bad_input.c");
    let exe = dir.join("bad_input");
    common::compile_c(&source, &exe);
    let out = common::run_c(&exe, "bad_input");
    let want = format!("{} passed, 0 failed", ids.len());
    assert!(out.contains(&want), "expected `{want}`");
}

/// A function or parameter the generator does not know fails the matrix
/// instead of being skipped.
#[test]
fn unknown_functions_and_parameters_are_refused() {
    let header = r#"
typedef enum conc_status { CONC_OK = 0, CONC_ERR_INVALID_ARGUMENT = 1 } conc_status;
typedef enum conc_mode { CONC_MODE_A = 0, CONC_MODE_B = 1 } conc_mode;
typedef struct conc_widget conc_widget;
/** Frobs. */
enum conc_status conc_widget_frob(struct conc_widget *widget, size_t frob_count);
/** Twiddles. */
struct conc_widget conc_widget_get(const struct conc_widget *widget);
/** Sets a mode. */
void conc_widget_mode(conc_mode mode, struct conc_widget *widget);
/** Is fine. */
enum conc_status conc_fine(conc_mode mode, int64_t *position);
"#;
    let h = parse_header(header).expect("parses");
    assert_eq!(h.functions.len(), 4);
    assert_eq!(h.enums["conc_mode"], vec![0, 1]);
    let errors = generate(&h).expect_err("must refuse");
    let all = errors.join("\n");
    for want in [
        "conc_widget_frob: no fixture for the parameter `struct conc_widget * widget`",
        "conc_widget_frob: no valid value for the scalar `size_t frob_count`",
        "conc_widget_get: unknown return type",
        "conc_widget_mode: returns nothing but takes a pointer",
        "conc_widget_mode: no rule for an out-of-range `mode`",
    ] {
        assert!(all.contains(want), "missing `{want}` in:\n{all}");
    }
    assert!(!all.contains("conc_fine"), "{all}");
}
