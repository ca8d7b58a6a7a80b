/*
 * wmlicense.hpp: header-only C++17 layer over the C API of wmlicense (wmlicense.h).
 *
 *   wmlicense::Error           a std::runtime_error carrying the wm_hresult (hr())
 *   wmlicense::License         an owning copy of a wm_license
 *   wmlicense::Store           move-only RAII handle of a license store
 *   wmlicense::BackupRestorer  move-only RAII handle of a backup restorer; its events go to a
 *                              std::function<void(const wm_event &)> on a library thread
 *   wmlicense::Operation       a started backup / restore / release: wait() for its END
 *
 * Every call that fails throws wmlicense::Error with the C call's result code and message (the
 * library's wm_last_error_message(), else wm_hresult_message()). A moved-from or closed object
 * throws Error(WM_E_HANDLE) from every call except close(), destruction and assignment.
 *
 * Link with the wmlicense library (CMake: wmlicense::wmlicense). Compiles clean with
 * -std=c++17 -Wall -Wextra -Wpedantic -Werror.
 */
#ifndef WMLICENSE_HPP
#define WMLICENSE_HPP

#include "wmlicense.h"

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if !defined(__cplusplus) || __cplusplus < 201703L
#if !defined(_MSVC_LANG) || _MSVC_LANG < 201703L
#error "wmlicense.hpp needs C++17 (use wmlicense.h from C or older C++)"
#endif
#endif

namespace wmlicense {

/** Key IDs and content keys: raw bytes. */
using Bytes = std::vector<uint8_t>;

/** The bytes of `s` (for key IDs written as text, e.g. bytes("kid-1")). */
inline Bytes bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

/** The version of the linked library, "MAJOR.MINOR.PATCH". */
inline std::string version() { return wm_version(); }

/** The library's static English description of a result code. */
inline std::string hresult_message(wm_hresult hr) { return wm_hresult_message(hr); }

// ---------------------------------------------------------------------------------------------
// Error

/** A failed wm_* call or a failed operation (its END): hr() is the result code. */
class Error : public std::runtime_error {
 public:
  Error(wm_hresult hr, const std::string &message) : std::runtime_error(message), hr_(hr) {}

  /** The result code (one of the WM_E_* values). */
  wm_hresult hr() const noexcept { return hr_; }

  /** The Error of a wm_* call on this thread that just returned `hr`: its message is the
      library's wm_last_error_message(), or wm_hresult_message(hr) when that is empty. */
  static Error last(wm_hresult hr) {
    const char *m = wm_last_error_message();
    return Error(hr, (m && *m) ? std::string(m) : std::string(wm_hresult_message(hr)));
  }

  /** Error(hr) with the library's description of the code as the message. */
  static Error of(wm_hresult hr) { return Error(hr, wm_hresult_message(hr)); }

 private:
  wm_hresult hr_;
};

namespace detail {

/** Throws Error::last(hr) when hr is a failure; returns hr (WM_S_OK or WM_S_FALSE) otherwise. */
inline wm_hresult check(wm_hresult hr) {
  if (WM_FAILED(hr)) throw Error::last(hr);
  return hr;
}

[[noreturn]] inline void throw_closed(const char *what) {
  throw Error(WM_E_HANDLE, std::string(what) + " holds no handle (moved from or closed)");
}

/** A C string argument: no embedded NUL (the C API would silently cut it there). */
inline const std::string &c_str_arg(const std::string &s, const char *what) {
  if (s.find('\0') != std::string::npos)
    throw Error(WM_E_INVALIDARG, std::string(what) + " contains a NUL character");
  return s;
}

inline uint32_t len32(std::size_t n, const char *what) {
  if (n > std::numeric_limits<uint32_t>::max())
    throw Error(WM_E_INVALIDARG, std::string(what) + " is too long");
  return static_cast<uint32_t>(n);
}

inline constexpr uint32_t kInfinite = WM_INFINITE;

/** A finite timeout for wm_backup_restorer_wait: clamped to 0 .. WM_INFINITE - 1 ms. */
inline uint32_t timeout_ms(std::chrono::milliseconds d) {
  const long long c = d.count();
  if (c <= 0) return 0;
  if (c >= static_cast<long long>(kInfinite)) return kInfinite - 1;
  return static_cast<uint32_t>(c);
}

inline Bytes copy_bytes(const uint8_t *p, std::size_t n) {
  return (p && n) ? Bytes(p, p + n) : Bytes();
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// License

/** A content license: an owning copy of a wm_license. */
struct License {
  /** Key ID: 1 to 64 bytes. */
  Bytes key_id;
  /** Content key: 1 to 64 bytes (secret). */
  Bytes content_key;
  /** UTF-8 title of at most 1024 bytes, or none. */
  std::optional<std::string> title;
  /** WM_RIGHT_* bits. */
  uint32_t rights = WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP;
  /** Remaining plays; -1 = unlimited. */
  int32_t play_count = -1;
  /** Unix seconds before which the license is not valid; 0 = no start. */
  int64_t begin_date = 0;
  /** Unix seconds at which the license expires; 0 = never. */
  int64_t expiration_date = 0;
  /** Unix seconds the license was issued (on restore, the newer copy wins). */
  int64_t issued_at = 0;

  /** A copy of a C license (e.g. one handed to a visitor). */
  static License from_c(const wm_license &l) {
    License out;
    out.key_id = detail::copy_bytes(l.key_id, l.key_id_len);
    out.content_key = detail::copy_bytes(l.content_key, l.content_key_len);
    if (l.title) out.title = std::string(l.title);
    out.rights = l.rights;
    out.play_count = l.play_count;
    out.begin_date = l.begin_date;
    out.expiration_date = l.expiration_date;
    out.issued_at = l.issued_at;
    return out;
  }

  /** A C view of this license; its pointers are valid while *this lives unchanged. Throws
      Error(WM_E_INVALIDARG) when the title holds a NUL character. */
  wm_license view() const {
    wm_license l;
    std::memset(&l, 0, sizeof l);
    l.key_id = key_id.data();
    l.key_id_len = key_id.size();
    l.content_key = content_key.data();
    l.content_key_len = content_key.size();
    l.title = title ? detail::c_str_arg(*title, "the title").c_str() : nullptr;
    l.rights = rights;
    l.play_count = play_count;
    l.begin_date = begin_date;
    l.expiration_date = expiration_date;
    l.issued_at = issued_at;
    return l;
  }

  friend bool operator==(const License &a, const License &b) {
    return a.key_id == b.key_id && a.content_key == b.content_key && a.title == b.title &&
           a.rights == b.rights && a.play_count == b.play_count && a.begin_date == b.begin_date &&
           a.expiration_date == b.expiration_date && a.issued_at == b.issued_at;
  }
  friend bool operator!=(const License &a, const License &b) { return !(a == b); }
};

// ---------------------------------------------------------------------------------------------
// Store

/**
 * An open license store (move-only; the destructor closes it). One Store may be used from
 * several threads (the library serializes calls on it). A visitor of for_each must not call
 * the store it visits (Error WM_E_BACKUPRESTORE_BUSY).
 */
class Store {
 public:
  /** No store: open one with Store::open. */
  Store() noexcept = default;

  /** Opens (creating if needed) the store in directory `path`. */
  explicit Store(const std::string &path) { open_at(detail::c_str_arg(path, "the store path").c_str()); }

  /** Opens the default store: $WMLICENSE_HOME, else the per-user data directory. */
  static Store open() {
    Store s;
    s.open_at(nullptr);
    return s;
  }

  /** Opens (creating if needed) the store in directory `path`. */
  static Store open(const std::string &path) { return Store(path); }

  Store(const Store &) = delete;
  Store &operator=(const Store &) = delete;
  Store(Store &&other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  Store &operator=(Store &&other) noexcept {
    if (this != &other) {
      close();
      h_ = std::exchange(other.h_, nullptr);
    }
    return *this;
  }
  ~Store() { close(); }

  /** Closes the store now (a no-op when there is none). */
  void close() noexcept { wm_license_store_close(std::exchange(h_, nullptr)); }

  bool is_open() const noexcept { return h_ != nullptr; }
  explicit operator bool() const noexcept { return is_open(); }

  /** The C handle (still owned by this Store). */
  wm_license_store *native_handle() const noexcept { return h_; }

  /** Inserts the license, or replaces the one with the same key ID. */
  void put(const License &license) {
    wm_license l = license.view();
    detail::check(wm_license_store_put(handle(), &l));
  }

  /** Inserts or replaces every license of [first, last) in one transaction: all or none. */
  template <class It>
  void put_many(It first, It last) {
    std::vector<wm_license> v;
    for (; first != last; ++first) {
      const License &lic = *first;
      v.push_back(lic.view());
    }
    detail::check(wm_license_store_put_many(handle(), v.empty() ? nullptr : v.data(), v.size()));
  }

  /** Inserts or replaces every license of `licenses` in one transaction: all or none. */
  void put_many(const std::vector<License> &licenses) { put_many(licenses.begin(), licenses.end()); }

  /** The license with this key ID; Error(WM_E_NOT_FOUND) when there is none. */
  License get(const uint8_t *key_id, std::size_t key_id_len) const {
    std::optional<License> found = lookup(key_id, key_id_len, true);
    return std::move(*found);
  }
  License get(const Bytes &key_id) const { return get(key_id.data(), key_id.size()); }

  /** The license with this key ID, or nothing (other failures throw). */
  std::optional<License> find(const uint8_t *key_id, std::size_t key_id_len) const {
    return lookup(key_id, key_id_len, false);
  }
  std::optional<License> find(const Bytes &key_id) const { return find(key_id.data(), key_id.size()); }

  /** Whether a license with this key ID is stored. */
  bool contains(const Bytes &key_id) const { return find(key_id).has_value(); }

  /** Removes the license with this key ID; Error(WM_E_NOT_FOUND) when there is none. */
  void remove(const uint8_t *key_id, std::size_t key_id_len) {
    detail::check(wm_license_store_remove(handle(), key_id, key_id_len));
  }
  void remove(const Bytes &key_id) { remove(key_id.data(), key_id.size()); }

  /** The number of licenses stored. */
  uint64_t count() const {
    uint64_t n = 0;
    detail::check(wm_license_store_count(handle(), &n));
    return n;
  }

  /**
   * Calls `f(const License &)` for every license, in key-ID byte order, from one consistent
   * snapshot, on this thread. `f` returns void (visit all) or something convertible to bool
   * (false stops the walk). An exception thrown by `f` stops the walk and is rethrown here.
   */
  template <class F>
  void for_each(F &&f) const {
    using Fn = std::remove_reference_t<F>;
    struct Ctx {
      Fn *fn;
      std::exception_ptr error;
    } ctx{&f, nullptr};
    wm_license_visitor visit = [](const wm_license *l, void *c) -> int32_t {
      Ctx *x = static_cast<Ctx *>(c);
      try {
        License lic = License::from_c(*l);
        if constexpr (std::is_void_v<std::invoke_result_t<Fn &, const License &>>) {
          (*x->fn)(static_cast<const License &>(lic));
          return 0;
        } else {
          return static_cast<bool>((*x->fn)(static_cast<const License &>(lic))) ? 0 : 1;
        }
      } catch (...) {
        x->error = std::current_exception();
        return 1;
      }
    };
    wm_hresult hr = wm_license_store_for_each(handle(), visit, &ctx);
    if (ctx.error) std::rethrow_exception(ctx.error);
    detail::check(hr);
  }

  /** Every license (a copy of the whole store: for_each streams instead). */
  std::vector<License> all() const {
    std::vector<License> v;
    for_each([&v](const License &l) { v.push_back(l); });
    return v;
  }

 private:
  void open_at(const char *path) {
    wm_license_store *s = nullptr;
    detail::check(wm_license_store_open(path, &s));
    h_ = s;
  }

  wm_license_store *handle() const {
    if (!h_) detail::throw_closed("wmlicense::Store");
    return h_;
  }

  std::optional<License> lookup(const uint8_t *key_id, std::size_t key_id_len, bool required) const {
    struct Ctx {
      std::optional<License> found;
      std::exception_ptr error;
    } ctx;
    wm_license_visitor visit = [](const wm_license *l, void *c) -> int32_t {
      Ctx *x = static_cast<Ctx *>(c);
      try {
        x->found = License::from_c(*l);
      } catch (...) {
        x->error = std::current_exception();
      }
      return 1;
    };
    wm_hresult hr = wm_license_store_get(handle(), key_id, key_id_len, visit, &ctx);
    if (ctx.error) std::rethrow_exception(ctx.error);
    if (hr == WM_E_NOT_FOUND && !required) return std::nullopt;
    detail::check(hr);
    if (!ctx.found) throw Error(WM_E_UNEXPECTED, "wm_license_store_get succeeded without a license");
    return ctx.found;
  }

  wm_license_store *h_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Backup restorer

/** What an operation's events reported, complete once its END has arrived. */
struct Result {
  /** WM_OPERATION_BACKUP, _RESTORE or _RELEASE. */
  wm_operation operation = WM_OPERATION_BACKUP;
  /** Whether END has arrived (the fields below are final). */
  bool ended = false;
  /** END's outcome (WM_S_OK, WM_S_FALSE or a failure). */
  wm_hresult hr = WM_S_OK;
  /** END's message on failure (empty otherwise). */
  std::string message;
  /** Licenses written (backup) or imported (restore); total in the operation; left out. */
  uint64_t processed = 0, total = 0, skipped = 0;
  /** Restore and release: the service's device count of the lineage and its limit (0: unknown). */
  uint32_t devices_used = 0, device_limit = 0;
  /** Backup: key IDs of the licenses left out (RESTRICTED_LICENSE), in event order. */
  std::vector<Bytes> restricted;
  /** ERROR_WITHURL: the help URL the service gave (empty when none). */
  std::string help_url;
};

namespace detail {

/** One started operation; filled from the restorer's callback. */
struct OpState {
  explicit OpState(wm_operation op) { result.operation = op; }
  Result result;
  bool done = false;       // the callback returned from END
  bool abandoned = false;  // the restorer was destroyed and END will never come
  std::exception_ptr callback_error;  // the first exception the user's callback threw
};

/** Everything the C callback reaches: lives as long as the restorer or an Operation of it. */
struct RestorerState : std::enable_shared_from_this<RestorerState> {
  explicit RestorerState(std::function<void(const wm_event &)> f) : on_event(std::move(f)) {}

  const std::function<void(const wm_event &)> on_event;
  std::mutex mu;  // guards everything below
  std::condition_variable cv;
  wm_backup_restorer *handle = nullptr;  // nullptr once destroy began (tokens are never reused)
  std::deque<std::shared_ptr<OpState>> pending;  // started, END not yet seen; in start order
  bool close_after_callback = false;
  // Callbacks of this restorer running now (0 or 1). Not a copy of the library's state: it says
  // whether the state may be closed now or only when the running callback returns.
  int callbacks_running = 0;
  // Held across a start call and its bookkeeping, so that `pending` is in the order the
  // library runs the operations.
  std::mutex start_mu;

  /** Marks every operation still waiting for END as abandoned (the restorer is gone). */
  void close() {
    {
      std::lock_guard<std::mutex> g(mu);
      handle = nullptr;
      for (auto &op : pending) op->abandoned = true;
      pending.clear();
    }
    cv.notify_all();
  }

  static void record(Result &r, const wm_event &e) {
    switch (e.status) {
      case WM_STATUS_BACKUPRESTORE_PROGRESS:
        r.processed = e.processed;
        r.total = e.total;
        break;
      case WM_STATUS_RESTRICTED_LICENSE:
        r.restricted.push_back(copy_bytes(e.key_id, e.key_id_len));
        break;
      case WM_STATUS_ERROR_WITHURL:
        if (e.message) r.help_url = e.message;
        r.devices_used = e.devices_used;
        r.device_limit = e.device_limit;
        break;
      case WM_STATUS_BACKUPRESTORE_END:
        r.hr = e.hr;
        r.processed = e.processed;
        r.total = e.total;
        r.skipped = e.skipped;
        r.devices_used = e.devices_used;
        r.device_limit = e.device_limit;
        if (WM_FAILED(e.hr)) r.message = (e.message && *e.message) ? e.message : wm_hresult_message(e.hr);
        break;
      default:
        break;
    }
  }

  /** The wm_status_callback; `ctx` is the RestorerState. Never lets an exception out. */
  static void callback(const wm_event *e, void *ctx) {
    if (!e || !ctx) return;
    // A destroy from inside the user's callback must not free what this frame still uses.
    std::shared_ptr<RestorerState> self = static_cast<RestorerState *>(ctx)->weak_from_this().lock();
    if (!self) return;
    const bool is_end = e->status == WM_STATUS_BACKUPRESTORE_END;
    std::shared_ptr<OpState> op;
    {
      std::lock_guard<std::mutex> g(self->mu);
      ++self->callbacks_running;
      if (!self->pending.empty()) {
        op = self->pending.front();
        if (is_end) {
          self->pending.pop_front();
          op->result.ended = true;
        }
        try {
          record(op->result, *e);
        } catch (...) {
          if (!op->callback_error) op->callback_error = std::current_exception();
        }
      }
    }
    if (self->on_event) {
      try {
        self->on_event(*e);
      } catch (...) {
        // It must not unwind into the library: kept, and rethrown by Operation::wait().
        std::lock_guard<std::mutex> g(self->mu);
        if (op && !op->callback_error) op->callback_error = std::current_exception();
      }
    }
    bool close_now;
    {
      std::lock_guard<std::mutex> g(self->mu);
      if (op && is_end) op->done = true;
      --self->callbacks_running;
      close_now = self->close_after_callback;
    }
    self->cv.notify_all();
    if (close_now) self->close();
  }
};

}  // namespace detail

/**
 * A started backup, restore or release (copyable; every copy names the same operation). Its
 * outcome comes from the END event, which is captured whatever the restorer's callback does.
 */
class Operation {
 public:
  /** No operation (wait() throws Error(WM_E_HANDLE)). */
  Operation() noexcept = default;

  /**
   * Waits until END has arrived, the restorer's callback has returned from it and the library
   * has finished what the operation leaves for after END (as wm_backup_restorer_wait does;
   * unless the next operation has started already). Returns END's
   * result (WM_S_OK, or WM_S_FALSE: nothing to do) or throws Error(END's hr, END's message)
   * when the operation failed. If the user's callback threw during this operation, that first
   * exception is rethrown instead (result() still has END). Error(WM_E_HANDLE) when the
   * restorer was destroyed before END could arrive; Error(WM_E_BACKUPRESTORE_BUSY) when called
   * from the restorer's own callback before this operation's END (it would wait for itself).
   * It waits through wm_backup_restorer_wait (which lends the library's worker pool a thread
   * when called from another restorer's callback and refuses, with WM_E_BACKUPRESTORE_BUSY, a
   * wait that would close a cycle of callbacks), so it also waits for operations started from
   * this one's END.
   */
  wm_hresult wait() { return *wait_until(std::nullopt); }

  /** wait() for at most `timeout`: std::nullopt when the operation is still running. */
  template <class Rep, class Period>
  std::optional<wm_hresult> wait_for(const std::chrono::duration<Rep, Period> &timeout) {
    return wait_until(std::chrono::steady_clock::now() +
                      std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout));
  }

  /** Whether the operation is over (END delivered, or the restorer destroyed without it). */
  bool done() const {
    if (!op_) return true;
    std::lock_guard<std::mutex> g(state_->mu);
    return op_->done || op_->abandoned;
  }

  /** What the events reported so far (final once wait() returned or threw). */
  Result result() const {
    if (!op_) detail::throw_closed("wmlicense::Operation");
    std::lock_guard<std::mutex> g(state_->mu);
    return op_->result;
  }

  /** The operation kind. */
  wm_operation operation() const {
    if (!op_) detail::throw_closed("wmlicense::Operation");
    return op_->result.operation;
  }

  /**
   * Cancels this operation if it is still running (its END then carries
   * WM_E_OPERATION_CANCELED). Returns whether it was cancelled; false once it has ended.
   */
  bool cancel() {
    if (!op_) detail::throw_closed("wmlicense::Operation");
    // No operation can start meanwhile, so the running one of this kind is this one.
    std::lock_guard<std::mutex> start(state_->start_mu);
    wm_backup_restorer *h;
    {
      std::lock_guard<std::mutex> g(state_->mu);
      if (op_->result.ended || op_->abandoned || !state_->handle) return false;
      h = state_->handle;
    }
    wm_hresult hr;
    switch (op_->result.operation) {
      case WM_OPERATION_BACKUP: hr = wm_backup_restorer_cancel_backup(h); break;
      case WM_OPERATION_RESTORE: hr = wm_backup_restorer_cancel_restore(h); break;
      default: hr = wm_backup_restorer_cancel_release(h); break;
    }
    if (hr == WM_E_HANDLE) return false;  // destroyed meanwhile: destroy cancels it
    return detail::check(hr) == WM_S_OK;
  }

 private:
  friend class BackupRestorer;
  Operation(std::shared_ptr<detail::RestorerState> s, std::shared_ptr<detail::OpState> op)
      : state_(std::move(s)), op_(std::move(op)) {}

  using Deadline = std::optional<std::chrono::steady_clock::time_point>;

  std::optional<wm_hresult> wait_until(Deadline deadline) {
    if (!op_) detail::throw_closed("wmlicense::Operation");
    detail::RestorerState &st = *state_;
    std::unique_lock<std::mutex> lk(st.mu);
    bool waited = false;
    if (!op_->done && !op_->abandoned && st.handle) {
      // The library says whether this thread may wait (the wrapper keeps no copy of its state):
      // from the restorer's own callback it answers at once, idle inside END and
      // WM_E_BACKUPRESTORE_BUSY while an operation runs (it would wait for itself); elsewhere
      // it waits, lending the worker pool a thread when called from another restorer's
      // callback, and refuses a wait that would close a cycle of callbacks.
      wm_backup_restorer *h = st.handle;
      lk.unlock();
      wm_hresult hr = wm_backup_restorer_wait(h, 0);
      if (hr == WM_S_FALSE)
        hr = wm_backup_restorer_wait(h, deadline ? detail::timeout_ms(remaining(*deadline)) : detail::kInfinite);
      else
        waited = true;  // answered at once: this is the restorer's own callback, or it is idle
      lk.lock();
      if (hr == WM_E_BACKUPRESTORE_BUSY) {
        // In the restorer's own callback before this operation's END (it would wait for
        // itself), or where the wait would close a cycle of callbacks: the library's message.
        if (!op_->result.ended && !op_->abandoned) {
          lk.unlock();
          throw Error::last(hr);
        }
        return outcome(lk);  // inside its own END, which started the next operation
      }
      if (WM_FAILED(hr) && hr != WM_E_HANDLE) throw Error::last(hr);
      if (hr == WM_S_FALSE) return std::nullopt;
      // Idle at once with END seen and the callback not back: inside that END's callback.
      if (waited && op_->result.ended && !op_->done) return outcome(lk);
    }
    auto over = [this] { return op_->done || op_->abandoned; };
    if (deadline) {
      if (!st.cv.wait_until(lk, *deadline, over)) return std::nullopt;
    } else {
      st.cv.wait(lk, over);
    }
    if (!waited && op_->done && st.pending.empty() && st.handle) {
      // What the library does after END (deleting a store a cancelled restore discarded, say)
      // is part of the operation: its own wait returns after it. Skipped when the next
      // operation has started already (it runs only after that work).
      wm_backup_restorer *h = st.handle;
      lk.unlock();
      wm_hresult hr = wm_backup_restorer_wait(h, deadline ? detail::timeout_ms(remaining(*deadline)) : detail::kInfinite);
      if (hr == WM_S_FALSE) return std::nullopt;
      lk.lock();
    }
    return outcome(lk);
  }

  static std::chrono::milliseconds remaining(std::chrono::steady_clock::time_point deadline) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  }

  wm_hresult outcome(std::unique_lock<std::mutex> &lk) {
    std::exception_ptr err = op_->callback_error;
    bool abandoned = op_->abandoned && !op_->result.ended;
    wm_hresult hr = op_->result.hr;
    std::string msg = op_->result.message;
    lk.unlock();
    if (err) std::rethrow_exception(err);
    if (abandoned)
      throw Error(WM_E_HANDLE, "the backup restorer was destroyed before the operation's END");
    if (WM_FAILED(hr)) throw Error(hr, msg.empty() ? std::string(wm_hresult_message(hr)) : msg);
    return hr;
  }

  std::shared_ptr<detail::RestorerState> state_;
  std::shared_ptr<detail::OpState> op_;
};

/**
 * A backup restorer (move-only; the destructor cancels a running operation, waits for its END
 * and destroys the restorer; from inside its own callback it does not wait). Events go to the
 * callback given to the constructor, on a library worker thread, one at a time, in order; it
 * may call into the library, start the next operation from END, or destroy its restorer.
 * Start operations through this class only (not through native_handle()), so that each
 * Operation gets its own END.
 */
class BackupRestorer {
 public:
  using Callback = std::function<void(const wm_event &)>;

  /** Creates a restorer; `on_event` (may be empty) receives every event. */
  explicit BackupRestorer(Callback on_event = nullptr)
      : state_(std::make_shared<detail::RestorerState>(std::move(on_event))) {
    wm_backup_restorer *h = nullptr;
    detail::check(wm_backup_restorer_create(&detail::RestorerState::callback, state_.get(), &h));
    state_->handle = h;
  }

  BackupRestorer(const BackupRestorer &) = delete;
  BackupRestorer &operator=(const BackupRestorer &) = delete;
  BackupRestorer(BackupRestorer &&other) noexcept : state_(std::move(other.state_)) {}
  BackupRestorer &operator=(BackupRestorer &&other) noexcept {
    if (this != &other) {
      reset();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ~BackupRestorer() { reset(); }

  /** Destroys the restorer now (see the class comment); a no-op when there is none. */
  void reset() noexcept {
    std::shared_ptr<detail::RestorerState> st = std::move(state_);
    if (!st) return;
    wm_backup_restorer *h;
    {
      std::lock_guard<std::mutex> g(st->mu);
      h = st->handle;
    }
    wm_backup_restorer_destroy(h);
    {
      // A callback still running after destroy returned is this restorer's own (destroy waits
      // for every other one, except where waiting would close a cycle of callbacks): no further
      // events, and the callback's frame closes the state when it returns.
      std::lock_guard<std::mutex> g(st->mu);
      if (st->callbacks_running > 0) {
        st->handle = nullptr;
        st->close_after_callback = true;
        return;
      }
    }
    st->close();
  }

  explicit operator bool() const noexcept { return state_ != nullptr; }

  /** The C handle (still owned by this object). */
  wm_backup_restorer *native_handle() const noexcept { return state_ ? state_->handle : nullptr; }

  // ---- properties ----

  /** Sets a property (WM_PROP_* name, case-insensitive) to a UTF-8 string. */
  void set_prop(const std::string &name, std::string_view value) {
    detail::check(wm_backup_restorer_set_prop(handle(), detail::c_str_arg(name, "the property name").c_str(),
                                              WM_TYPE_STRING,
                                              reinterpret_cast<const uint8_t *>(value.data() ? value.data() : ""),
                                              detail::len32(value.size(), "the property value")));
  }

  /** A property's value, or std::nullopt when it is not set. */
  std::optional<std::string> get_prop(const std::string &name) const {
    const char *n = detail::c_str_arg(name, "the property name").c_str();
    for (;;) {
      uint32_t type = 0, size = 0;
      wm_hresult hr = wm_backup_restorer_get_prop_by_name(handle(), n, &type, nullptr, &size);
      if (hr == WM_E_NOT_FOUND) return std::nullopt;
      detail::check(hr);
      std::vector<uint8_t> buf(size ? size : 1);
      size = static_cast<uint32_t>(buf.size());
      hr = wm_backup_restorer_get_prop_by_name(handle(), n, &type, buf.data(), &size);
      if (hr == WM_E_BUFFER_TOO_SMALL) continue;  // changed by another thread meanwhile
      if (hr == WM_E_NOT_FOUND) return std::nullopt;
      detail::check(hr);
      return std::string(reinterpret_cast<const char *>(buf.data()), strnlen_(buf, size));
    }
  }

  /** Every property set, as (canonical name, value), in the order first set. */
  std::vector<std::pair<std::string, std::string>> props() const {
    std::vector<std::pair<std::string, std::string>> out;
    uint32_t count = prop_count();
    for (uint32_t i = 0; i < count; i++) {
      for (;;) {
        uint32_t type = 0, name_len = 0, value_len = 0;
        wm_hresult hr = wm_backup_restorer_get_prop_by_index(handle(), i, nullptr, &name_len, &type, nullptr, &value_len);
        if (hr == WM_E_INVALIDARG) return out;  // removed by another thread meanwhile
        detail::check(hr);
        std::vector<uint8_t> name(name_len ? name_len : 1), value(value_len ? value_len : 1);
        name_len = static_cast<uint32_t>(name.size());
        value_len = static_cast<uint32_t>(value.size());
        hr = wm_backup_restorer_get_prop_by_index(handle(), i, reinterpret_cast<char *>(name.data()), &name_len, &type,
                                                  value.data(), &value_len);
        if (hr == WM_E_BUFFER_TOO_SMALL) continue;
        if (hr == WM_E_INVALIDARG) return out;
        detail::check(hr);
        out.emplace_back(std::string(reinterpret_cast<const char *>(name.data()), strnlen_(name, name_len)),
                         std::string(reinterpret_cast<const char *>(value.data()), strnlen_(value, value_len)));
        break;
      }
    }
    return out;
  }

  /** The number of properties set. */
  uint32_t prop_count() const {
    uint32_t n = 0;
    detail::check(wm_backup_restorer_get_prop_count(handle(), &n));
    return n;
  }

  /** Removes a property; false when it was not set. */
  bool remove_prop(const std::string &name) {
    wm_hresult hr = wm_backup_restorer_remove_prop(handle(), detail::c_str_arg(name, "the property name").c_str());
    if (hr == WM_E_NOT_FOUND) return false;
    detail::check(hr);
    return true;
  }

  /** Removes every property. */
  void clear_props() { detail::check(wm_backup_restorer_remove_all_props(handle())); }

  /** Directory the backup is written to (WM_PROP_BACKUP_PATH). */
  void set_backup_path(std::string_view v) { set_prop(WM_PROP_BACKUP_PATH, v); }
  /** Directory holding a backup, or the backup file (WM_PROP_RESTORE_PATH). */
  void set_restore_path(std::string_view v) { set_prop(WM_PROP_RESTORE_PATH, v); }
  /** The store to back up from / restore into / release (WM_PROP_STORE_PATH). */
  void set_store_path(std::string_view v) { set_prop(WM_PROP_STORE_PATH, v); }
  /** Base URL of a network License Management Service (WM_PROP_SERVICE_URL). */
  void set_service_url(std::string_view v) { set_prop(WM_PROP_SERVICE_URL, v); }
  /** The network service's pinned public key, 64 hex digits (WM_PROP_SERVICE_KEY). */
  void set_service_key(std::string_view v) { set_prop(WM_PROP_SERVICE_KEY, v); }
  /** Data directory of the embedded service and the default store (WM_PROP_DATA_PATH). */
  void set_data_path(std::string_view v) { set_prop(WM_PROP_DATA_PATH, v); }

  // ---- operations ----

  /** Starts a backup (flags: WM_BACKUP_OVERWRITE). Throws when it cannot start. */
  Operation backup(uint32_t flags = 0) { return start(WM_OPERATION_BACKUP, flags); }
  /** Starts a restore (flags: WM_RESTORE_INDIVIDUALIZE, WM_RESTORE_VERIFY_ONLY). */
  Operation restore(uint32_t flags = 0) { return start(WM_OPERATION_RESTORE, flags); }
  /** Starts a release (flags: WM_RELEASE_ALL_DEVICES). */
  Operation release(uint32_t flags = 0) { return start(WM_OPERATION_RELEASE, flags); }

  /** Cancels whatever operation runs; returns whether one was running. */
  bool cancel() {
    wm_backup_restorer *h = handle();
    bool any = detail::check(wm_backup_restorer_cancel_backup(h)) == WM_S_OK;
    any = detail::check(wm_backup_restorer_cancel_restore(h)) == WM_S_OK || any;
    any = detail::check(wm_backup_restorer_cancel_release(h)) == WM_S_OK || any;
    return any;
  }

  /**
   * Waits until no operation runs and the callback has returned from the last END
   * (wm_backup_restorer_wait). Returns false on timeout. Error(WM_E_BACKUPRESTORE_BUSY) from the
   * restorer's own callback while an operation runs.
   */
  bool wait_idle(std::optional<std::chrono::milliseconds> timeout = std::nullopt) {
    uint32_t ms = timeout ? detail::timeout_ms(*timeout) : detail::kInfinite;
    return detail::check(wm_backup_restorer_wait(handle(), ms)) == WM_S_OK;
  }

 private:
  static std::size_t strnlen_(const std::vector<uint8_t> &buf, uint32_t size) {
    std::size_t n = size < buf.size() ? size : buf.size();
    std::size_t i = 0;
    while (i < n && buf[i] != 0) i++;
    return i;
  }

  wm_backup_restorer *handle() const {
    if (!state_ || !state_->handle) detail::throw_closed("wmlicense::BackupRestorer");
    return state_->handle;
  }

  Operation start(wm_operation kind, uint32_t flags) {
    wm_backup_restorer *h = handle();
    detail::RestorerState &st = *state_;
    auto op = std::make_shared<detail::OpState>(kind);
    std::lock_guard<std::mutex> start_guard(st.start_mu);
    {
      std::lock_guard<std::mutex> g(st.mu);
      st.pending.push_back(op);  // before the call: its first event may come before it returns
    }
    wm_hresult hr;
    switch (kind) {
      case WM_OPERATION_BACKUP: hr = wm_backup_restorer_backup(h, flags); break;
      case WM_OPERATION_RESTORE: hr = wm_backup_restorer_restore(h, flags); break;
      default: hr = wm_backup_restorer_release(h, flags); break;
    }
    if (WM_FAILED(hr)) {
      Error err = Error::last(hr);
      {
        std::lock_guard<std::mutex> g(st.mu);
        for (auto it = st.pending.begin(); it != st.pending.end(); ++it) {
          if (*it == op) {
            st.pending.erase(it);
            break;
          }
        }
      }
      throw err;
    }
    return Operation(state_, std::move(op));
  }

  std::shared_ptr<detail::RestorerState> state_;
};

}  // namespace wmlicense

#endif  // WMLICENSE_HPP
