//! Fuzzes the license store's C API (src/store.rs) against a model (the licenses put and not
//! removed): put, put_many, get, remove, count and for_each with arbitrary license fields
//! (lengths within buffers this target owns, NULLs, over-long keys and titles, titles not
//! UTF-8 or unterminated at the limit, unknown rights bits, bad dates), NULL and foreign
//! handles. Each call must return exactly a code documented for a condition that holds (S_OK
//! when none does); get and for_each must hand back exactly the modelled licenses, in key-ID
//! order, stopping when the visitor says so; a visitor re-entering its store must get
//! WM_E_BACKUPRESTORE_BUSY; the count must match the model after every call.
//!
//! One store serves every input (in $WMLICENSE_FUZZ_TMP, else /dev/shm, else the temp dir); each
//! input starts by emptying it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr};
use std::path::PathBuf;
use std::sync::OnceLock;
use wmlicense::result::*;
use wmlicense::store::*;

/// With WMLICENSE_FUZZ_TRACE set, every call and its result go to stderr (to read a crash).
fn trace(function: &str, hr: wm_hresult) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("WMLICENSE_FUZZ_TRACE").is_some()) {
        eprintln!("{function} -> 0x{:08x}", hr as u32);
    }
}

const KEY_ID_MAX: usize = 64;
const CONTENT_KEY_MAX: usize = 64;
const TITLE_MAX: usize = 1024;
const ALL_RIGHTS: u32 = 0x3FB;

/// A license as the model holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Lic {
    key_id: Vec<u8>,
    content_key: Vec<u8>,
    title: Option<Vec<u8>>,
    rights: u32,
    play_count: i32,
    begin_date: i64,
    expiration_date: i64,
    issued_at: i64,
}

fn store() -> *mut wm_license_store {
    static S: OnceLock<usize> = OnceLock::new();
    *S.get_or_init(|| {
        let base = std::env::var_os("WMLICENSE_FUZZ_TMP")
            .map(PathBuf::from)
            .or_else(|| {
                let shm = PathBuf::from("/dev/shm");
                shm.is_dir().then_some(shm)
            })
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("wmlicense-fuzz-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = format!("{}\0", dir.display());
        let mut s = std::ptr::null_mut();
        // SAFETY: a NUL-terminated path and a valid out-pointer.
        let hr = unsafe { wm_license_store_open(path.as_ptr().cast(), &mut s) };
        assert_eq!(hr, WM_S_OK, "cannot open the store in {}", dir.display());
        s as usize
    }) as *mut wm_license_store
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
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn u64(&mut self) -> u64 {
        (self.u32() as u64) << 32 | self.u32() as u64
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

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
    fn ptr(self) -> *mut wm_license_store {
        match self {
            Handle::Live => store(),
            Handle::Null => std::ptr::null_mut(),
            // Tokens are multiples of 16 counted up from 16: this one is never issued.
            Handle::Foreign => (usize::MAX & !0xF) as *mut wm_license_store,
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

/// A (pointer, length) byte argument: NULL or an owned buffer at least `len` long.
struct Bytes {
    buf: Option<Vec<u8>>,
    len: usize,
}

impl Bytes {
    /// Key IDs come mostly from a small pool, so puts replace and removes find.
    fn key(inp: &mut Input) -> Bytes {
        match inp.byte() % 10 {
            0..=5 => {
                let v = vec![b'k', inp.byte() % 6];
                Bytes {
                    len: v.len(),
                    buf: Some(v),
                }
            }
            6 => {
                let n = inp.byte() as usize % (KEY_ID_MAX + 1);
                Bytes::owned(inp.bytes(n))
            }
            7 => {
                // Over the limit.
                let n = KEY_ID_MAX + 1 + inp.byte() as usize % 8;
                Bytes::owned(vec![inp.byte(); n])
            }
            8 => Bytes::null(inp),
            _ => {
                // Declared shorter than the buffer.
                let v = inp.bytes(8);
                Bytes {
                    len: inp.byte() as usize % 9,
                    buf: Some(v),
                }
            }
        }
    }

    fn content_key(inp: &mut Input) -> Bytes {
        match inp.byte() % 8 {
            0..=4 => {
                let n = 1 + inp.byte() as usize % CONTENT_KEY_MAX;
                Bytes::owned(vec![inp.byte(); n])
            }
            5 => Bytes::owned(Vec::new()),
            6 => {
                let n = CONTENT_KEY_MAX + 1 + inp.byte() as usize % 8;
                Bytes::owned(vec![inp.byte(); n])
            }
            _ => Bytes::null(inp),
        }
    }

    fn owned(v: Vec<u8>) -> Bytes {
        Bytes {
            len: v.len(),
            buf: Some(v),
        }
    }

    fn null(inp: &mut Input) -> Bytes {
        Bytes {
            buf: None,
            len: if inp.byte() & 1 == 0 {
                0
            } else {
                inp.u32() as usize + 1
            },
        }
    }

    fn ptr(&self) -> *const u8 {
        self.buf.as_ref().map_or(std::ptr::null(), |b| b.as_ptr())
    }

    /// The bytes, or the failure: NULL with a length is POINTER, a bad length `bad_len`.
    fn check(&self, max: usize, bad_len: wm_hresult, errors: &mut Vec<wm_hresult>) -> Vec<u8> {
        if self.buf.is_none() && self.len > 0 {
            errors.push(WM_E_POINTER);
        }
        if self.len == 0 || self.len > max {
            errors.push(bad_len);
        }
        match &self.buf {
            Some(b) if self.len <= max => b[..self.len].to_vec(),
            _ => Vec::new(),
        }
    }
}

/// A title argument: NULL, NUL-terminated bytes, or an unterminated buffer over the limit.
fn title(inp: &mut Input) -> Option<Vec<u8>> {
    let mut v = match inp.byte() % 8 {
        0 | 1 => return None,
        2 | 3 => {
            let n = inp.byte() as usize % 16;
            (0..n).map(|_| b' ' + inp.byte() % 95).collect()
        }
        4 => {
            let n = inp.byte() as usize % 24;
            inp.bytes(n)
        }
        5 => "Caf\u{e9} \u{1F3B5}".as_bytes().to_vec(),
        6 => {
            let n = TITLE_MAX - 2 + inp.byte() as usize % 5;
            vec![b't'; n]
        }
        _ => return Some(vec![b'u'; TITLE_MAX + 1 + inp.byte() as usize % 4]),
    };
    v.push(0);
    Some(v)
}

/// A license argument with its owned buffers.
struct CLicense {
    key_id: Bytes,
    content_key: Bytes,
    title: Option<Vec<u8>>,
    rights: u32,
    play_count: i32,
    begin_date: i64,
    expiration_date: i64,
    issued_at: i64,
}

impl CLicense {
    fn pick(inp: &mut Input) -> CLicense {
        let key_id = Bytes::key(inp);
        let content_key = Bytes::content_key(inp);
        let title = title(inp);
        let rights = match inp.byte() % 8 {
            0 => inp.u32(),
            1 => ALL_RIGHTS | 1 << (10 + inp.byte() % 22),
            _ => inp.u32() & ALL_RIGHTS,
        };
        let play_count = match inp.byte() % 6 {
            0 => inp.u32() as i32,
            1 => -2,
            2 | 3 => -1,
            _ => inp.byte() as i32,
        };
        let date = |inp: &mut Input| -> i64 {
            match inp.byte() % 6 {
                0 => 0,
                1 => inp.u64() as i64,
                2 => -(inp.byte() as i64) - 1,
                _ => 1_600_000_000 + inp.u32() as i64 % 400_000_000,
            }
        };
        CLicense {
            key_id,
            content_key,
            title,
            rights,
            play_count,
            begin_date: date(inp),
            expiration_date: date(inp),
            issued_at: date(inp),
        }
    }

    fn c(&self) -> wm_license {
        wm_license {
            key_id: self.key_id.ptr(),
            key_id_len: self.key_id.len,
            content_key: self.content_key.ptr(),
            content_key_len: self.content_key.len,
            title: self
                .title
                .as_ref()
                .map_or(std::ptr::null(), |t| t.as_ptr().cast::<c_char>()),
            rights: self.rights,
            play_count: self.play_count,
            begin_date: self.begin_date,
            expiration_date: self.expiration_date,
            issued_at: self.issued_at,
        }
    }

    /// What the store keeps, or the codes of which any may report the refusal.
    fn expected(&self) -> Result<Lic, Vec<wm_hresult>> {
        let mut errors = Vec::new();
        let key_id = self.key_id.check(KEY_ID_MAX, WM_E_INVALID_KID, &mut errors);
        let content_key = self
            .content_key
            .check(CONTENT_KEY_MAX, WM_E_INVALIDARG, &mut errors);
        let title = self
            .title
            .as_ref()
            .map(|t| match t.iter().position(|&b| b == 0) {
                Some(n) => t[..n].to_vec(),
                None => t.clone(),
            });
        if let Some(t) = &title {
            if t.len() > TITLE_MAX || std::str::from_utf8(t).is_err() {
                errors.push(WM_E_INVALIDARG);
            }
        }
        if self.rights & !ALL_RIGHTS != 0
            || self.play_count < -1
            || self.begin_date < 0
            || self.expiration_date < 0
            || self.issued_at < 0
            || (self.expiration_date != 0 && self.expiration_date < self.begin_date)
        {
            errors.push(WM_E_INVALIDARG);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Lic {
            key_id,
            content_key,
            title,
            rights: self.rights,
            play_count: self.play_count,
            begin_date: self.begin_date,
            expiration_date: self.expiration_date,
            issued_at: self.issued_at,
        })
    }
}

/// What a visitor saw.
struct Visit {
    seen: Vec<Lic>,
    /// Return non-zero after this many licenses (0: never).
    stop_after: usize,
    /// Call wm_license_store_count on this store from inside the visitor.
    reenter: Option<*mut wm_license_store>,
    reentry_codes: Vec<wm_hresult>,
}

unsafe extern "C" fn visitor(l: *const wm_license, ctx: *mut c_void) -> i32 {
    // SAFETY: ctx is the &mut Visit passed with this visitor; l is valid during the call.
    let (v, l) = unsafe { (&mut *(ctx as *mut Visit), &*l) };
    // SAFETY: the license's pointers are valid during the call, with the lengths given.
    let lic = unsafe {
        Lic {
            key_id: std::slice::from_raw_parts(l.key_id, l.key_id_len).to_vec(),
            content_key: std::slice::from_raw_parts(l.content_key, l.content_key_len).to_vec(),
            title: (!l.title.is_null()).then(|| CStr::from_ptr(l.title).to_bytes().to_vec()),
            rights: l.rights,
            play_count: l.play_count,
            begin_date: l.begin_date,
            expiration_date: l.expiration_date,
            issued_at: l.issued_at,
        }
    };
    v.seen.push(lic);
    if let Some(s) = v.reenter {
        let mut n = 0u64;
        // SAFETY: a valid out-pointer.
        v.reentry_codes
            .push(unsafe { wm_license_store_count(s, &mut n) });
    }
    (v.stop_after != 0 && v.seen.len() >= v.stop_after) as i32
}

fn check_code(function: &str, hr: wm_hresult, errors: &[wm_hresult]) {
    trace(function, hr);
    let allowed: &[wm_hresult] = if errors.is_empty() {
        &[WM_S_OK]
    } else {
        errors
    };
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

struct Fuzz {
    model: BTreeMap<Vec<u8>, Lic>,
}

impl Fuzz {
    fn visit_context(&self, inp: &mut Input) -> Visit {
        Visit {
            seen: Vec::new(),
            stop_after: inp.byte() as usize % 8,
            reenter: (inp.byte() < 32).then(store),
            reentry_codes: Vec::new(),
        }
    }

    fn check_reentry(v: &Visit) {
        if v.reenter.is_some() {
            assert_eq!(v.reentry_codes.len(), v.seen.len());
            for hr in &v.reentry_codes {
                assert_eq!(*hr, WM_E_BACKUPRESTORE_BUSY, "re-entry from a visitor");
            }
        }
    }

    fn put(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let null = inp.byte() < 8;
        let l = CLicense::pick(inp);
        let c = l.c();
        let p: *const wm_license = if null { std::ptr::null() } else { &c };
        // SAFETY: NULL or a license whose pointers own the lengths given.
        let hr = unsafe { wm_license_store_put(h.ptr(), p) };
        let mut errors: Vec<wm_hresult> = h.error().into_iter().collect();
        let expected = if null {
            errors.push(WM_E_POINTER);
            None
        } else {
            match l.expected() {
                Ok(lic) => Some(lic),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            }
        };
        check_code("wm_license_store_put", hr, &errors);
        if hr == WM_S_OK {
            let lic = expected.unwrap();
            self.model.insert(lic.key_id.clone(), lic);
        }
    }

    fn put_many(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let n = inp.byte() as usize % 5;
        let ls: Vec<CLicense> = (0..n).map(|_| CLicense::pick(inp)).collect();
        let cs: Vec<wm_license> = ls.iter().map(CLicense::c).collect();
        let (ptr, count) = match inp.byte() {
            0..=7 => (std::ptr::null(), 0),
            8..=15 => (std::ptr::null(), n.max(1)),
            _ => (cs.as_ptr(), n),
        };
        // SAFETY: NULL or `count` licenses whose pointers own the lengths given.
        let hr = unsafe { wm_license_store_put_many(h.ptr(), ptr, count) };
        let mut errors: Vec<wm_hresult> = h.error().into_iter().collect();
        let mut good = Vec::new();
        if ptr.is_null() && count > 0 {
            errors.push(WM_E_POINTER);
        } else if !ptr.is_null() {
            for l in &ls {
                match l.expected() {
                    Ok(lic) => good.push(lic),
                    Err(e) => errors.extend(e),
                }
            }
        }
        check_code("wm_license_store_put_many", hr, &errors);
        if hr == WM_S_OK {
            for lic in good {
                self.model.insert(lic.key_id.clone(), lic);
            }
        }
    }

    fn get(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let key = Bytes::key(inp);
        let no_visitor = inp.byte() < 8;
        let mut v = self.visit_context(inp);
        let cb: wm_license_visitor = if no_visitor { None } else { Some(visitor) };
        // SAFETY: key owns its length or is NULL; the context is a live Visit.
        let hr = unsafe {
            wm_license_store_get(
                h.ptr(),
                key.ptr(),
                key.len,
                cb,
                (&mut v as *mut Visit).cast(),
            )
        };
        let mut errors: Vec<wm_hresult> = h.error().into_iter().collect();
        let k = key.check(KEY_ID_MAX, WM_E_INVALID_KID, &mut errors);
        if no_visitor {
            errors.push(WM_E_POINTER);
        }
        let found = self.model.get(&k);
        if errors.is_empty() && found.is_none() {
            errors.push(WM_E_NOT_FOUND);
        }
        check_code("wm_license_store_get", hr, &errors);
        if hr == WM_S_OK {
            assert_eq!(v.seen.len(), 1, "get visits once");
            assert_eq!(Some(&v.seen[0]), found, "get hands back another license");
        } else {
            assert!(v.seen.is_empty(), "a failed get visited");
        }
        Self::check_reentry(&v);
    }

    fn remove(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let key = Bytes::key(inp);
        // SAFETY: key owns its length or is NULL.
        let hr = unsafe { wm_license_store_remove(h.ptr(), key.ptr(), key.len) };
        let mut errors: Vec<wm_hresult> = h.error().into_iter().collect();
        let k = key.check(KEY_ID_MAX, WM_E_INVALID_KID, &mut errors);
        if errors.is_empty() && !self.model.contains_key(&k) {
            errors.push(WM_E_NOT_FOUND);
        }
        check_code("wm_license_store_remove", hr, &errors);
        if hr == WM_S_OK {
            self.model.remove(&k);
        }
    }

    fn count(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let null = inp.byte() < 16;
        let mut n = u64::MAX;
        let p: *mut u64 = if null { std::ptr::null_mut() } else { &mut n };
        // SAFETY: NULL or a valid out-pointer.
        let hr = unsafe { wm_license_store_count(h.ptr(), p) };
        let mut errors: Vec<wm_hresult> = h.error().into_iter().collect();
        if null {
            errors.push(WM_E_POINTER);
        }
        check_code("wm_license_store_count", hr, &errors);
        if hr == WM_S_OK {
            assert_eq!(n, self.model.len() as u64, "count differs from the model");
        } else {
            assert_eq!(n, u64::MAX, "count written on failure");
        }
    }

    fn for_each(&mut self, inp: &mut Input) {
        let h = Handle::pick(inp);
        let no_visitor = inp.byte() < 8;
        let mut v = self.visit_context(inp);
        let cb: wm_license_visitor = if no_visitor { None } else { Some(visitor) };
        // SAFETY: the context is a live Visit.
        let hr = unsafe { wm_license_store_for_each(h.ptr(), cb, (&mut v as *mut Visit).cast()) };
        let mut errors: Vec<wm_hresult> = h.error().into_iter().collect();
        if no_visitor {
            errors.push(WM_E_POINTER);
        }
        check_code("wm_license_store_for_each", hr, &errors);
        if hr == WM_S_OK {
            let want: Vec<&Lic> = match v.stop_after {
                0 => self.model.values().collect(),
                n => self.model.values().take(n).collect(),
            };
            let got: Vec<&Lic> = v.seen.iter().collect();
            assert_eq!(
                got, want,
                "for_each visits other licenses or in another order"
            );
        } else {
            assert!(v.seen.is_empty(), "a failed for_each visited");
        }
        Self::check_reentry(&v);
    }

    /// The store holds what the model says.
    fn check_count(&self) {
        let mut n = u64::MAX;
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { wm_license_store_count(store(), &mut n) }, WM_S_OK);
        assert_eq!(
            n,
            self.model.len() as u64,
            "the store's count differs from the model"
        );
    }
}

/// Empties the store (the previous input's licenses).
fn empty_store() {
    let mut v = Visit {
        seen: Vec::new(),
        stop_after: 0,
        reenter: None,
        reentry_codes: Vec::new(),
    };
    // SAFETY: the context is a live Visit.
    let hr =
        unsafe { wm_license_store_for_each(store(), Some(visitor), (&mut v as *mut Visit).cast()) };
    assert_eq!(hr, WM_S_OK);
    for l in v.seen {
        // SAFETY: a valid key.
        let hr = unsafe { wm_license_store_remove(store(), l.key_id.as_ptr(), l.key_id.len()) };
        assert_eq!(hr, WM_S_OK);
    }
}

fuzz_target!(|data: &[u8]| {
    empty_store();
    let mut f = Fuzz {
        model: BTreeMap::new(),
    };
    f.check_count();
    let mut inp = Input(data);
    let mut steps = 0;
    while !inp.0.is_empty() && steps < 32 {
        steps += 1;
        match inp.byte() % 8 {
            0 | 1 => f.put(&mut inp),
            2 => f.put_many(&mut inp),
            3 => f.get(&mut inp),
            4 => f.remove(&mut inp),
            5 => f.count(&mut inp),
            _ => f.for_each(&mut inp),
        }
        f.check_count();
    }
});
