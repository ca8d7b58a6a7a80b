//! Handle registries. A C handle is an opaque token, never a pointer we dereference: it names an
//! entry in a registry. A closed, destroyed or foreign handle finds no entry and yields
//! WM_E_HANDLE instead of undefined behaviour. Tokens are never reused, so a stale handle can
//! never reach a newer object.

use crate::boundary::{Fail, FfiResult};
use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// One counter for every registry, so a handle of one type is never valid as another.
static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(1);

/// The live objects behind the handles of one C type `H` (e.g. `wm_backup_restorer`): the
/// handle type is part of the registry's type, so a store handle cannot even be looked up in
/// the restorer registry.
pub(crate) struct Registry<H, T> {
    kind: &'static str,
    live: Lazy<RwLock<HashMap<usize, Arc<T>>>>,
    _handle: PhantomData<fn(*const H)>,
}

impl<H, T> Registry<H, T> {
    pub(crate) const fn new(kind: &'static str) -> Registry<H, T> {
        Registry {
            kind,
            live: Lazy::new(|| RwLock::new(HashMap::new())),
            _handle: PhantomData,
        }
    }

    /// Registers `value` and returns its handle (aligned like a pointer, never NULL).
    pub(crate) fn insert(&self, value: Arc<T>) -> *mut H {
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed) << 4;
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, value);
        token as *mut H
    }

    /// The live object behind `handle`: WM_E_POINTER for NULL, WM_E_HANDLE when not live.
    pub(crate) fn get(&self, handle: *const H, arg: &'static str) -> FfiResult<Arc<T>> {
        if handle.is_null() {
            return Err(Fail::Pointer(arg));
        }
        self.live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(handle as usize))
            .cloned()
            .ok_or(Fail::Handle(self.kind))
    }

    /// Unregisters `handle`; later uses of it yield WM_E_HANDLE.
    pub(crate) fn remove(&self, handle: *const H) -> Option<Arc<T>> {
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(handle as usize))
    }
}
