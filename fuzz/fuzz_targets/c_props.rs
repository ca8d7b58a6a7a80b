//! Fuzzes the restorer's property functions through the C API (src/restorer.rs) against a model
//! of the property list: arbitrary names (any case, unknown, not UTF-8, over-long, unterminated
//! at the limit, NULL), types, values and lengths (always within buffers this target owns, or
//! NULL), and output buffers of any size. Each call must return exactly a code its doc comment
//! lists for a condition that holds (S_OK when none does), write its outputs only as
//! documented, never past the length it was given, and a get after a set must give the value
//! back. One restorer serves every input; no operation is ever started.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;
use wmlicense::event::wm_event;
use wmlicense::restorer::*;
use wmlicense::result::*;

/// With WMLICENSE_FUZZ_TRACE set, every call and its result go to stderr (to read a crash).
fn trace(function: &str, hr: wm_hresult) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("WMLICENSE_FUZZ_TRACE").is_some()) {
        eprintln!("{function} -> 0x{:08x}", hr as u32);
    }
}

const NAMES: [&str; 4] = ["BackupPath", "RestorePath", "StorePath", "ServiceUrl"];
const NAME_MAX: usize = 256;
const VALUE_MAX: usize = 4096;
const CANARY: u8 = 0xA5;
const UNTOUCHED: u32 = 0xDEAD_BEEF;

unsafe extern "C" fn ignore_events(_: *const wm_event, _: *mut c_void) {}

/// The restorer every input uses (a handle is a token, kept as an integer).
fn restorer() -> *mut wm_backup_restorer {
    static R: OnceLock<usize> = OnceLock::new();
    *R.get_or_init(|| {
        let mut r = std::ptr::null_mut();
        // SAFETY: valid callback and out-pointer.
        let hr =
            unsafe { wm_backup_restorer_create(Some(ignore_events), std::ptr::null_mut(), &mut r) };
        assert_eq!(hr, WM_S_OK);
        r as usize
    }) as *mut wm_backup_restorer
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// The restorer argument of a call: mostly the live one, sometimes NULL or a foreign token.
#[derive(Clone, Copy)]
enum Handle {
    Live,
    Null,
    Foreign,
}

impl Handle {
    fn pick(inp: &mut Input) -> Handle {
        match inp.byte() {
            0..=243 => Handle::Live,
            244..=249 => Handle::Null,
            _ => Handle::Foreign,
        }
    }
    fn ptr(self) -> *mut wm_backup_restorer {
        match self {
            Handle::Live => restorer(),
            Handle::Null => std::ptr::null_mut(),
            // Tokens are multiples of 16 counted up from 16: this one is never issued.
            Handle::Foreign => (usize::MAX & !0xF) as *mut wm_backup_restorer,
        }
    }
    fn error(self) -> Option<wm_hresult> {
        match self {
            Handle::Live => None,
            Handle::Null => Some(WM_E_POINTER),
            Handle::Foreign => Some(WM_E_HANDLE),
        }
    }
}

/// A name argument: NULL, or a buffer that is NUL-terminated or, when `terminated` is false,
/// has more than NAME_MAX bytes (what the contract asks of an unterminated one).
struct Name {
    buf: Option<Vec<u8>>,
}

impl Name {
    fn pick(inp: &mut Input) -> Name {
        fn flip_case(s: &str, inp: &mut Input) -> Vec<u8> {
            let bits = inp.u16();
            s.bytes()
                .enumerate()
                .map(|(i, b)| {
                    if bits >> (i % 16) & 1 == 1 {
                        b ^ 0x20
                    } else {
                        b
                    }
                })
                .collect()
        }
        let mut bytes = match inp.byte() % 10 {
            0..=3 => {
                let n = NAMES[inp.byte() as usize % 4];
                flip_case(n, inp)
            }
            4 => NAMES[inp.byte() as usize % 4].as_bytes().to_vec(),
            5 => {
                let n = inp.byte() as usize % 24;
                inp.bytes(n)
            }
            6 => {
                // Around the length limit, terminated or not.
                let n = NAME_MAX - 2 + inp.byte() as usize % 6;
                let c = inp.byte().max(1);
                let v = vec![c; n];
                if n > NAME_MAX && inp.byte() & 1 == 1 {
                    return Name { buf: Some(v) };
                }
                v
            }
            7 => return Name { buf: None },
            8 => {
                // A known name with a byte added or taken away (maybe not UTF-8).
                let mut v = NAMES[inp.byte() as usize % 4].as_bytes().to_vec();
                match inp.byte() % 3 {
                    0 => {
                        v.pop();
                    }
                    1 => v.push(inp.byte()),
                    _ => v.insert(0, inp.byte()),
                }
                v
            }
            _ => {
                // A known name in non-ASCII look-alike case: not a match.
                let mut v = NAMES[inp.byte() as usize % 4].as_bytes().to_vec();
                let at = inp.byte() as usize % v.len();
                v.splice(at..at + 1, "\u{17F}".bytes());
                v
            }
        };
        bytes.push(0);
        Name { buf: Some(bytes) }
    }

    fn ptr(&self) -> *const c_char {
        self.buf
            .as_ref()
            .map_or(std::ptr::null(), |b| b.as_ptr().cast())
    }

    /// The property it names, or the code a call must fail with.
    fn resolve(&self) -> Result<usize, wm_hresult> {
        let Some(buf) = &self.buf else {
            return Err(WM_E_POINTER);
        };
        let text = match buf.iter().position(|&b| b == 0) {
            Some(n) => &buf[..n],
            None => &buf[..],
        };
        if text.len() > NAME_MAX {
            return Err(WM_E_INVALID_PROPERTY);
        }
        if std::str::from_utf8(text).is_err() {
            return Err(WM_E_INVALID_PROPERTY);
        }
        NAMES
            .iter()
            .position(|n| n.as_bytes().eq_ignore_ascii_case(text))
            .ok_or(WM_E_INVALID_PROPERTY)
    }
}

/// The model: properties in the order first set.
#[derive(Default)]
struct Model {
    props: Vec<(usize, String)>,
}

impl Model {
    fn get(&self, p: usize) -> Option<&str> {
        self.props
            .iter()
            .find(|(n, _)| *n == p)
            .map(|(_, v)| v.as_str())
    }
    fn set(&mut self, p: usize, v: String) {
        match self.props.iter_mut().find(|(n, _)| *n == p) {
            Some(e) => e.1 = v,
            None => self.props.push((p, v)),
        }
    }
}

/// The text a set stores for `bytes`, or why it is refused (WM_E_INVALIDARG).
fn value_text(prop: usize, bytes: &[u8]) -> Option<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() || bytes.len() > VALUE_MAX || bytes.contains(&0) {
        return None;
    }
    let s = std::str::from_utf8(bytes).ok()?;
    if NAMES[prop] == "ServiceUrl" && !(s.starts_with("http://") || s.starts_with("https://")) {
        return None;
    }
    Some(s.to_owned())
}

fn check_code(function: &str, hr: wm_hresult, allowed: &[wm_hresult]) {
    trace(function, hr);
    assert!(
        allowed.contains(&hr),
        "{function} returned 0x{:08x}, allowed: {:x?}",
        hr as u32,
        allowed.iter().map(|c| *c as u32).collect::<Vec<_>>()
    );
    if hr < 0 {
        // SAFETY: wm_last_error_message returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(wmlicense::boundary::wm_last_error_message()) };
        let msg = msg.to_string_lossy();
        assert!(
            msg.starts_with(&format!("{function}: ")) && msg.len() > function.len() + 2,
            "{function} failed with the message {msg:?}"
        );
    }
}

/// Failure codes of which any may be reported; S_OK only when there is none.
fn expect(function: &str, hr: wm_hresult, errors: &[wm_hresult]) {
    if errors.is_empty() {
        check_code(function, hr, &[WM_S_OK]);
    } else {
        check_code(function, hr, errors);
    }
}

/// An output buffer of `len` declared bytes (or NULL) with canary bytes after it.
struct OutBuf {
    buf: Option<Vec<u8>>,
    len: u32,
}

impl OutBuf {
    fn pick(inp: &mut Input, null_len: bool) -> (OutBuf, bool) {
        let len_null = null_len && inp.byte() < 8;
        let out = match inp.byte() % 8 {
            0 => OutBuf {
                buf: None,
                len: inp.u32(),
            },
            1 => {
                let n = 4090 + inp.byte() as usize % 12;
                OutBuf {
                    buf: Some(vec![CANARY; n + 16]),
                    len: n as u32,
                }
            }
            _ => {
                let n = inp.byte() as usize % 48;
                OutBuf {
                    buf: Some(vec![CANARY; n + 16]),
                    len: n as u32,
                }
            }
        };
        (out, len_null)
    }
    fn ptr(&mut self) -> *mut u8 {
        self.buf
            .as_mut()
            .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr())
    }
    fn fits(&self, s: &str) -> bool {
        self.buf.is_none() || self.len as usize > s.len()
    }
    /// Nothing written.
    fn assert_untouched(&self, what: &str) {
        if let Some(b) = &self.buf {
            assert!(b.iter().all(|&x| x == CANARY), "{what}: buffer written");
        }
    }
    /// `s` and its NUL written, nothing else.
    fn assert_holds(&self, s: &str, what: &str) {
        if let Some(b) = &self.buf {
            assert_eq!(&b[..s.len()], s.as_bytes(), "{what}: wrong text");
            assert_eq!(b[s.len()], 0, "{what}: no NUL");
            assert!(
                b[s.len() + 1..].iter().all(|&x| x == CANARY),
                "{what}: written past the text"
            );
        }
    }
}

struct Fuzz {
    model: Model,
}

impl Fuzz {
    fn count(&self) {
        let mut n = UNTOUCHED;
        // SAFETY: valid out-pointer.
        let hr = unsafe { wm_backup_restorer_get_prop_count(restorer(), &mut n) };
        assert_eq!(hr, WM_S_OK);
        assert_eq!(
            n as usize,
            self.model.props.len(),
            "count differs from the model"
        );
    }

    /// Gets `prop` with a big buffer: it must hold `expected`.
    fn get_exact(&self, prop: usize, expected: &str) {
        let name = format!("{}\0", NAMES[prop]);
        let mut buf = vec![CANARY; VALUE_MAX + 2];
        let mut len = buf.len() as u32;
        let mut ty = UNTOUCHED;
        // SAFETY: valid name, buffer of `len` bytes and out-pointers.
        let hr = unsafe {
            wm_backup_restorer_get_prop_by_name(
                restorer(),
                name.as_ptr().cast(),
                &mut ty,
                buf.as_mut_ptr(),
                &mut len,
            )
        };
        assert_eq!(hr, WM_S_OK, "get after set failed");
        assert_eq!(ty, WM_TYPE_STRING);
        assert_eq!(len as usize, expected.len() + 1);
        assert_eq!(
            &buf[..expected.len()],
            expected.as_bytes(),
            "get after set differs"
        );
        assert_eq!(buf[expected.len()], 0);
    }

    fn set(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let name = Name::pick(inp);
        let type_ = if inp.byte() < 220 {
            WM_TYPE_STRING
        } else {
            inp.u32() % 9
        };
        let value: Option<Vec<u8>> = match inp.byte() % 8 {
            0 => {
                let n = inp.byte() as usize % 40;
                Some(inp.bytes(n))
            }
            1 | 2 => {
                let prefix =
                    ["/", "http://", "https://", "ftp://", "", "HTTP://"][inp.byte() as usize % 6];
                let n = inp.byte() as usize % 24;
                let mut v = prefix.as_bytes().to_vec();
                v.extend((0..n).map(|_| b'a' + inp.byte() % 26));
                if inp.byte() & 1 == 1 {
                    v.push(0);
                }
                Some(v)
            }
            3 => {
                // Around the 4096-byte limit, maybe with a counted NUL.
                let n = VALUE_MAX - 2 + inp.byte() as usize % 5;
                let mut v = b"http://".to_vec();
                v.resize(n, b'x');
                if inp.byte() & 1 == 1 {
                    v.push(0);
                }
                Some(v)
            }
            4 => {
                let n = inp.u16() as usize % 9000;
                Some(vec![inp.byte(); n])
            }
            5 => None,
            _ => {
                // Valid UTF-8 paths, with non-ASCII.
                let n = inp.byte() as usize % 12;
                let mut v = "/d\u{e9}j\u{e0}/".as_bytes().to_vec();
                v.extend((0..n).map(|_| b'0' + inp.byte() % 10));
                Some(v)
            }
        };
        let len = match (&value, inp.byte()) {
            (None, b) if b < 128 => 0,
            (None, _) => inp.u32().max(1),
            (Some(v), b) if b < 230 => v.len() as u32,
            (Some(v), _) => inp.u32() % (v.len() as u32 + 1),
        };
        let vptr = value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: every pointer is NULL or owns at least the length given with it.
        let hr = unsafe { wm_backup_restorer_set_prop(h.ptr(), name.ptr(), type_, vptr, len) };

        let mut errors = Vec::new();
        errors.extend(h.error());
        let prop = name.resolve();
        if let Err(e) = prop {
            errors.push(e);
        }
        if type_ != WM_TYPE_STRING {
            errors.push(WM_E_UNSUPPORTED_PROPERTY);
        }
        let text = match &value {
            None if len > 0 => {
                errors.push(WM_E_POINTER);
                None
            }
            None => None,
            Some(v) => match prop {
                Ok(p) => value_text(p, &v[..len as usize]),
                Err(_) => None,
            },
        };
        let value_refused = match (&value, prop) {
            (None, _) => len == 0,
            (Some(_), Ok(_)) => text.is_none(),
            // Refused for any property (ServiceUrl's own rule aside)?
            (Some(v), Err(_)) => value_text(0, &v[..len as usize]).is_none(),
        };
        if value_refused {
            errors.push(WM_E_INVALIDARG);
        }
        expect("wm_backup_restorer_set_prop", hr, &errors);
        if hr == WM_S_OK {
            let (p, t) = (prop.unwrap(), text.unwrap());
            self.model.set(p, t.clone());
            self.get_exact(p, &t);
        }
    }

    fn get_by_name(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let name = Name::pick(inp);
        let type_null = inp.byte() < 8;
        let (mut out, len_null) = OutBuf::pick(inp, true);
        let mut ty = UNTOUCHED;
        let given_len = out.len;
        let mut len = out.len;
        let tptr: *mut u32 = if type_null {
            std::ptr::null_mut()
        } else {
            &mut ty
        };
        let lptr: *mut u32 = if len_null {
            std::ptr::null_mut()
        } else {
            &mut len
        };
        // SAFETY: every pointer is NULL or valid; the buffer holds `len` bytes.
        let hr = unsafe {
            wm_backup_restorer_get_prop_by_name(h.ptr(), name.ptr(), tptr, out.ptr(), lptr)
        };

        let mut errors = Vec::new();
        errors.extend(h.error());
        let prop = name.resolve();
        if let Err(e) = prop {
            errors.push(e);
        }
        if type_null || len_null {
            errors.push(WM_E_POINTER);
        }
        let value = prop.ok().and_then(|p| self.model.get(p));
        if prop.is_ok() && value.is_none() {
            errors.push(WM_E_NOT_FOUND);
        }
        if errors.is_empty() && !out.fits(value.unwrap()) {
            errors.push(WM_E_BUFFER_TOO_SMALL);
        }
        expect("wm_backup_restorer_get_prop_by_name", hr, &errors);
        let what = "get_prop_by_name";
        match hr {
            WM_S_OK => {
                let v = value.unwrap();
                assert_eq!(ty, WM_TYPE_STRING);
                assert_eq!(len as usize, v.len() + 1);
                out.assert_holds(v, what);
            }
            WM_E_BUFFER_TOO_SMALL => {
                assert_eq!(ty, UNTOUCHED, "{what}: type written on failure");
                assert_eq!(len as usize, value.unwrap().len() + 1);
                out.assert_untouched(what);
            }
            _ => {
                assert_eq!(ty, UNTOUCHED, "{what}: type written on failure");
                assert_eq!(len, given_len, "{what}: length written on failure");
                out.assert_untouched(what);
            }
        }
    }

    fn get_by_index(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let index = match inp.byte() {
            0..=239 => inp.byte() as u32 % 6,
            _ => inp.u32(),
        };
        let (mut nbuf, nlen_null) = OutBuf::pick(inp, true);
        let (mut vbuf, vlen_null) = OutBuf::pick(inp, true);
        let type_null = inp.byte() < 8;
        let (given_n, given_v) = (nbuf.len, vbuf.len);
        let (mut nlen, mut vlen, mut ty) = (nbuf.len, vbuf.len, UNTOUCHED);
        let nl: *mut u32 = if nlen_null {
            std::ptr::null_mut()
        } else {
            &mut nlen
        };
        let vl: *mut u32 = if vlen_null {
            std::ptr::null_mut()
        } else {
            &mut vlen
        };
        let tp: *mut u32 = if type_null {
            std::ptr::null_mut()
        } else {
            &mut ty
        };
        // SAFETY: every pointer is NULL or valid; the buffers hold the lengths given.
        let hr = unsafe {
            wm_backup_restorer_get_prop_by_index(
                h.ptr(),
                index,
                nbuf.ptr().cast(),
                nl,
                tp,
                vbuf.ptr(),
                vl,
            )
        };

        let mut errors = Vec::new();
        errors.extend(h.error());
        if nlen_null || vlen_null || type_null {
            errors.push(WM_E_POINTER);
        }
        let entry = self.model.props.get(index as usize);
        if entry.is_none() {
            errors.push(WM_E_INVALIDARG);
        }
        if errors.is_empty() {
            let (p, v) = entry.unwrap();
            if !nbuf.fits(NAMES[*p]) || !vbuf.fits(v) {
                errors.push(WM_E_BUFFER_TOO_SMALL);
            }
        }
        expect("wm_backup_restorer_get_prop_by_index", hr, &errors);
        let what = "get_prop_by_index";
        match hr {
            WM_S_OK => {
                let (p, v) = entry.unwrap();
                assert_eq!(ty, WM_TYPE_STRING);
                assert_eq!(nlen as usize, NAMES[*p].len() + 1);
                assert_eq!(vlen as usize, v.len() + 1);
                nbuf.assert_holds(NAMES[*p], what);
                vbuf.assert_holds(v, what);
            }
            WM_E_BUFFER_TOO_SMALL => {
                let (p, v) = entry.unwrap();
                assert_eq!(ty, UNTOUCHED, "{what}: type written on failure");
                assert_eq!(nlen as usize, NAMES[*p].len() + 1);
                assert_eq!(vlen as usize, v.len() + 1);
                nbuf.assert_untouched(what);
                vbuf.assert_untouched(what);
            }
            _ => {
                assert_eq!(ty, UNTOUCHED, "{what}: type written on failure");
                assert_eq!(nlen, given_n, "{what}: name length written on failure");
                assert_eq!(vlen, given_v, "{what}: value length written on failure");
                nbuf.assert_untouched(what);
                vbuf.assert_untouched(what);
            }
        }
    }

    fn get_count(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let null = inp.byte() < 16;
        let mut n = UNTOUCHED;
        let p: *mut u32 = if null { std::ptr::null_mut() } else { &mut n };
        // SAFETY: NULL or a valid out-pointer.
        let hr = unsafe { wm_backup_restorer_get_prop_count(h.ptr(), p) };
        let mut errors: Vec<wm_hresult> = h.error().into_iter().collect();
        if null {
            errors.push(WM_E_POINTER);
        }
        expect("wm_backup_restorer_get_prop_count", hr, &errors);
        if hr == WM_S_OK {
            assert_eq!(n as usize, self.model.props.len());
        } else {
            assert_eq!(n, UNTOUCHED, "get_prop_count: count written on failure");
        }
    }

    fn remove(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let name = Name::pick(inp);
        // SAFETY: NULL or a valid name.
        let hr = unsafe { wm_backup_restorer_remove_prop(h.ptr(), name.ptr()) };
        let mut errors: Vec<wm_hresult> = h.error().into_iter().collect();
        let prop = name.resolve();
        match prop {
            Err(e) => errors.push(e),
            Ok(p) if self.model.get(p).is_none() => errors.push(WM_E_NOT_FOUND),
            Ok(_) => {}
        }
        expect("wm_backup_restorer_remove_prop", hr, &errors);
        if hr == WM_S_OK {
            let p = prop.unwrap();
            self.model.props.retain(|(n, _)| *n != p);
        }
    }

    fn remove_all(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        // SAFETY: any handle value is allowed.
        let hr = unsafe { wm_backup_restorer_remove_all_props(h.ptr()) };
        let errors: Vec<wm_hresult> = h.error().into_iter().collect();
        expect("wm_backup_restorer_remove_all_props", hr, &errors);
        if hr == WM_S_OK {
            self.model.props.clear();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Every input starts from no properties.
    // SAFETY: a live handle.
    assert_eq!(
        unsafe { wm_backup_restorer_remove_all_props(restorer()) },
        WM_S_OK
    );
    let mut f = Fuzz {
        model: Model::default(),
    };
    let mut inp = Input(data);
    let mut steps = 0;
    while !inp.0.is_empty() && steps < 64 {
        steps += 1;
        match inp.byte() % 8 {
            0..=2 => f.set(&mut inp),
            3 => f.get_by_name(&mut inp),
            4 => f.get_by_index(&mut inp),
            5 => f.get_count(&mut inp),
            6 => f.remove(&mut inp),
            _ => f.remove_all(&mut inp),
        }
        f.count();
    }
});
