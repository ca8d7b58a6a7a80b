// The C++17 layer include/wmlicense.hpp (SPEC §7): RAII handles closed by their destructors,
// moved-from objects safe, exceptions carrying the result code (from the call and from END),
// operations waited on with their exact event sequences, a release on the embedded service,
// and the callback's corner cases (a callback that throws, waits, cancels, chains the next
// operation from END, or destroys its own restorer). Built as C++17 (CMakeLists.txt); run under
// valgrind and ASan/UBSan like every C test. Each case works in a temporary directory of its
// own under $WMLICENSE_TEST_TMP, with WMLICENSE_HOME and DataPath pointed there.
#include "wmlicense.hpp"

#include "test_util.h"

#include <dirent.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

using wmlicense::BackupRestorer;
using wmlicense::Bytes;
using wmlicense::bytes;
using wmlicense::Error;
using wmlicense::License;
using wmlicense::Operation;
using wmlicense::Store;

// Checks that the statement throws wmlicense::Error with exactly `code` and a non-empty message.
#define CHECK_THROWS_HR(code, ...)                                                                  \
  do {                                                                                              \
    bool wmt_thrown_ = false;                                                                       \
    try {                                                                                           \
      __VA_ARGS__;                                                                                  \
    } catch (const wmlicense::Error &wmt_e_) {                                                      \
      wmt_thrown_ = true;                                                                           \
      if (wmt_e_.hr() != (code)) {                                                                  \
        std::fprintf(stderr, "%s:%d: %s threw 0x%08x (%s), expected 0x%08x\n", __FILE__, __LINE__, \
                     #__VA_ARGS__, (unsigned)wmt_e_.hr(), wmt_e_.what(), (unsigned)(code));         \
        wmt_failures++;                                                                             \
      } else if (!*wmt_e_.what()) {                                                                 \
        std::fprintf(stderr, "%s:%d: %s threw an empty message\n", __FILE__, __LINE__, #__VA_ARGS__); \
        wmt_failures++;                                                                             \
      }                                                                                             \
    } catch (const std::exception &wmt_e_) {                                                        \
      wmt_thrown_ = true;                                                                           \
      std::fprintf(stderr, "%s:%d: %s threw a non-wmlicense exception: %s\n", __FILE__, __LINE__,   \
                   #__VA_ARGS__, wmt_e_.what());                                                    \
      wmt_failures++;                                                                               \
    }                                                                                               \
    if (!wmt_thrown_) {                                                                             \
      std::fprintf(stderr, "%s:%d: %s did not throw (expected 0x%08x)\n", __FILE__, __LINE__,       \
                   #__VA_ARGS__, (unsigned)(code));                                                 \
      wmt_failures++;                                                                               \
    }                                                                                               \
  } while (0)

namespace {

std::string temp_dir(const char *tag) {
  char buf[512];
  wmt_temp_dir(buf, sizeof buf, tag);
  return buf;
}

bool exists(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// ---- an event recorder: every event copied, on whatever thread it comes ---------------------

struct Ev {
  uint32_t struct_size = 0;
  wm_status status = WM_STATUS_ERROR;
  wm_hresult hr = 0;
  wm_operation operation = WM_OPERATION_BACKUP;
  bool key_id_null = true;
  Bytes key_id;
  std::optional<std::string> title, message;
  uint64_t processed = 0, total = 0, skipped = 0;
  uint32_t devices_used = 0, device_limit = 0;
  bool on_caller_thread = false;
};

class Recorder {
 public:
  // Also runs `extra` (if set) after recording, inside the callback.
  std::function<void(const wm_event &)> extra;

  BackupRestorer::Callback callback() {
    return [this](const wm_event &e) { on_event(e); };
  }

  std::vector<Ev> take() {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<Ev> v = std::move(ev_);
    ev_.clear();
    return v;
  }

  std::size_t count() {
    std::lock_guard<std::mutex> g(mu_);
    return ev_.size();
  }

  int overlaps() {
    std::lock_guard<std::mutex> g(mu_);
    return overlaps_;
  }

 private:
  void on_event(const wm_event &e) {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (in_callback_) overlaps_++;
      in_callback_ = true;
    }
    Ev c;
    c.struct_size = e.struct_size;
    c.status = e.status;
    c.hr = e.hr;
    c.operation = e.operation;
    c.key_id_null = e.key_id == nullptr;
    if (e.key_id) c.key_id.assign(e.key_id, e.key_id + e.key_id_len);
    if (e.title) c.title = e.title;
    if (e.message) c.message = e.message;
    c.processed = e.processed;
    c.total = e.total;
    c.skipped = e.skipped;
    c.devices_used = e.devices_used;
    c.device_limit = e.device_limit;
    c.on_caller_thread = std::this_thread::get_id() == caller_;
    {
      std::lock_guard<std::mutex> g(mu_);
      ev_.push_back(std::move(c));
      in_callback_ = false;
    }
    if (extra) extra(e);
  }

  std::mutex mu_;
  std::vector<Ev> ev_;
  std::thread::id caller_ = std::this_thread::get_id();
  bool in_callback_ = false;
  int overlaps_ = 0;
};

void print_events(const std::vector<Ev> &ev) {
  std::fprintf(stderr, "    events (%zu):", ev.size());
  for (const Ev &e : ev) {
    std::fprintf(stderr, " %s", wmt_status_name(e.status));
    if (e.status == WM_STATUS_BACKUPRESTORE_END || e.status == WM_STATUS_ERROR_WITHURL)
      std::fprintf(stderr, "(hr=0x%08x p=%llu t=%llu s=%llu dev=%u/%u msg=%s)", (unsigned)e.hr,
                   (unsigned long long)e.processed, (unsigned long long)e.total, (unsigned long long)e.skipped,
                   e.devices_used, e.device_limit, e.message ? e.message->c_str() : "(null)");
  }
  std::fprintf(stderr, "\n");
}

// The exact status sequence, and the invariants of every operation's events.
bool check_seq(const std::vector<Ev> &ev, wm_operation op, std::initializer_list<wm_status> want, int line) {
  bool ok = ev.size() == want.size() && std::equal(ev.begin(), ev.end(), want.begin(),
                                                   [](const Ev &e, wm_status s) { return e.status == s; });
  if (!ok) {
    std::fprintf(stderr, "%s:%d: event sequence differs; expected:", __FILE__, line);
    for (wm_status s : want) std::fprintf(stderr, " %s", wmt_status_name(s));
    std::fprintf(stderr, "\n");
  }
  for (std::size_t i = 0; i < ev.size(); i++) {
    const Ev &e = ev[i];
    const bool end = e.status == WM_STATUS_BACKUPRESTORE_END;
    if (e.struct_size != sizeof(wm_event) || e.operation != op || e.on_caller_thread ||
        (!end && e.status != WM_STATUS_ERROR_WITHURL && e.hr != WM_S_OK) ||
        (e.status != WM_STATUS_RESTRICTED_LICENSE && !e.key_id_null) ||
        (end && WM_FAILED(e.hr) && (!e.message || e.message->empty())) ||
        (end && WM_SUCCEEDED(e.hr) && e.message)) {
      std::fprintf(stderr, "%s:%d: event %zu (%s) breaks an invariant\n", __FILE__, line, i,
                   wmt_status_name(e.status));
      ok = false;
    }
  }
  if (!ok) {
    print_events(ev);
    wmt_failures++;
  }
  return ok;
}

#define CHECK_SEQ_IS(ev, op, ...) check_seq((ev), (op), {__VA_ARGS__}, __LINE__)

// The events with each run of PROGRESS kept once (a slow run, e.g. under valgrind, sends one
// every 100 ms).
std::vector<Ev> one_progress(std::vector<Ev> ev) {
  auto same = [](const Ev &a, const Ev &b) {
    return a.status == WM_STATUS_BACKUPRESTORE_PROGRESS && b.status == WM_STATUS_BACKUPRESTORE_PROGRESS;
  };
  ev.erase(std::unique(ev.begin(), ev.end(), same), ev.end());
  return ev;
}

License lic(const char *kid, std::initializer_list<uint8_t> key, std::optional<std::string> title, uint32_t rights,
            int64_t issued) {
  License l;
  l.key_id = bytes(kid);
  l.content_key = Bytes(key);
  l.title = std::move(title);
  l.rights = rights;
  l.issued_at = issued;
  return l;
}

// ---- Store ------------------------------------------------------------------------------------

void test_store() {
  const std::string dir = temp_dir("cpp-store");
  const std::string path = dir + "/store";
  wm_license_store *raw = nullptr;

  License a = lic("kid-a", {1, 2, 3, 4}, "Song A", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 1700000001);
  a.play_count = 5;
  a.begin_date = 1600000000;
  a.expiration_date = 1900000000;
  License b = lic("kid-b", {9, 8, 7}, std::nullopt, WM_RIGHT_PLAYBACK, 1700000002);
  License c;  // a key ID with NUL bytes: bytes, not a string
  c.key_id = Bytes{0, 0, 1};
  c.content_key = Bytes(64, 0xEE);
  c.issued_at = 1700000003;
  CHECK(c.rights == (WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP) && c.play_count == -1);

  {
    Store s = Store::open(path);
    CHECK(s.is_open() && static_cast<bool>(s));
    raw = s.native_handle();
    CHECK(s.count() == 0);
    s.put(a);
    s.put_many(std::vector<License>{b, c});
    CHECK(s.count() == 3);
    CHECK(s.get(a.key_id) == a);
    CHECK(s.get(b.key_id) == b);
    CHECK(!s.get(b.key_id).title.has_value());
    CHECK(s.get(c.key_id) == c);
    CHECK(s.contains(a.key_id) && !s.contains(bytes("nope")));
    CHECK(!s.find(bytes("nope")).has_value());

    // Failures carry the C API's codes.
    CHECK_THROWS_HR(WM_E_NOT_FOUND, s.get(bytes("missing")));
    CHECK_THROWS_HR(WM_E_NOT_FOUND, s.remove(bytes("missing")));
    CHECK_THROWS_HR(WM_E_INVALID_KID, s.get(Bytes()));
    CHECK_THROWS_HR(WM_E_INVALID_KID, s.get(Bytes(65, 1)));
    {
      License bad = a;
      bad.key_id.clear();
      CHECK_THROWS_HR(WM_E_INVALID_KID, s.put(bad));
      bad = a;
      bad.rights = 0x80000000u;
      CHECK_THROWS_HR(WM_E_INVALIDARG, s.put(bad));
      bad = a;
      bad.title = std::string("cut\0here", 8);  // would be cut silently at the NUL in C
      CHECK_THROWS_HR(WM_E_INVALIDARG, s.put(bad));
      bad = a;
      bad.expiration_date = bad.begin_date - 1;
      // All or none: one invalid license in put_many stores nothing.
      License fresh = lic("kid-fresh", {5}, std::nullopt, WM_RIGHT_PLAYBACK, 1);
      CHECK_THROWS_HR(WM_E_INVALIDARG, s.put_many(std::vector<License>{fresh, bad}));
      CHECK(s.count() == 3 && !s.contains(fresh.key_id));
    }
    try {
      s.get(bytes("missing"));
    } catch (const Error &e) {
      // The message is the library's, not only the generic text of the code.
      CHECK(std::string(e.what()).size() > 0);
      CHECK(dynamic_cast<const std::runtime_error *>(&e) != nullptr);
    }

    // for_each: key-ID byte order, early stop, exceptions out of the visitor.
    std::vector<Bytes> order;
    s.for_each([&](const License &l) { order.push_back(l.key_id); });
    CHECK(order == (std::vector<Bytes>{c.key_id, a.key_id, b.key_id}));
    int visited = 0;
    s.for_each([&](const License &) { return ++visited < 2; });
    CHECK(visited == 2);
    bool caught = false;
    try {
      s.for_each([](const License &) { throw std::runtime_error("visitor stops"); });
    } catch (const Error &) {
      CHECK(!"a visitor's exception came back as wmlicense::Error");
    } catch (const std::runtime_error &e) {
      caught = std::string(e.what()) == "visitor stops";
    }
    CHECK(caught);
    // A visitor calling its own store: the library refuses, the code comes through.
    CHECK_THROWS_HR(WM_E_BACKUPRESTORE_BUSY, s.for_each([&](const License &) { (void)s.count(); }));
    CHECK(s.all().size() == 3);  // usable after every early stop

    s.remove(a.key_id);
    CHECK(s.count() == 2 && !s.find(a.key_id));

    // Moves: the moved-from Store is empty and every call says so.
    Store t(std::move(s));
    CHECK(!s.is_open() && t.is_open() && t.native_handle() == raw);
    CHECK_THROWS_HR(WM_E_HANDLE, s.count());
    CHECK_THROWS_HR(WM_E_HANDLE, s.put(a));
    CHECK_THROWS_HR(WM_E_HANDLE, s.for_each([](const License &) {}));
    CHECK(t.count() == 2);
    s = std::move(t);
    CHECK(s.count() == 2 && !t);
    t.close();  // nothing to close: a no-op
    Store other = Store::open(dir + "/other");
    wm_license_store *raw_other = other.native_handle();
    other = std::move(s);  // closes the store `other` held
    uint64_t n = 0;
    CHECK_HR(wm_license_store_count(raw_other, &n), WM_E_HANDLE);
    CHECK(other.count() == 2);
    Store empty;
    CHECK(!empty);
    CHECK_THROWS_HR(WM_E_HANDLE, empty.count());
  }
  {
    // The destructor closed the handle.
    uint64_t n = 0;
    CHECK_HR(wm_license_store_count(raw, &n), WM_E_HANDLE);
  }

  // Store(path) and a second handle on one store.
  {
    Store s1(path), s2 = Store::open(path);
    s1.put(a);
    CHECK(s2.get(a.key_id) == a && s2.count() == 3);
  }

  // The default store is $WMLICENSE_HOME.
  {
    const std::string home = dir + "/home";
    setenv("WMLICENSE_HOME", home.c_str(), 1);
    Store::open().put(b);
    CHECK(Store(home).get(b.key_id) == b);
  }

  CHECK_THROWS_HR(WM_E_INVALIDARG, (void)Store(std::string("/tmp/a\0b", 8)));
  CHECK_THROWS_HR(WM_E_INVALIDARG, (void)Store(std::string()));
  wmt_rm_rf(dir.c_str());
}

// ---- BackupRestorer: properties, call-time failures, moves ------------------------------------

void test_restorer_basics() {
  const std::string dir = temp_dir("cpp-restorer");
  setenv("WMLICENSE_HOME", dir.c_str(), 1);
  Recorder rec;
  wm_backup_restorer *raw = nullptr;
  {
    BackupRestorer r(rec.callback());
    raw = r.native_handle();
    CHECK(raw != nullptr && static_cast<bool>(r));
    CHECK(r.prop_count() == 0);
    CHECK(!r.get_prop(WM_PROP_BACKUP_PATH).has_value());

    // Call-time failures: thrown by the call, nothing starts.
    CHECK_THROWS_HR(WM_E_INVALID_PROPERTY, r.backup());
    CHECK_THROWS_HR(WM_E_INVALID_PROPERTY, r.restore(WM_RESTORE_INDIVIDUALIZE));
    CHECK_THROWS_HR(WM_E_INVALID_PROPERTY, r.release(WM_RELEASE_ALL_DEVICES));
    r.set_backup_path(dir + "/backup");
    CHECK_THROWS_HR(WM_E_INVALIDARG, r.backup(0x4));
    CHECK_THROWS_HR(WM_E_INVALIDARG, r.release(0x2));
    CHECK(!r.cancel());  // nothing runs

    // Properties.
    CHECK(r.get_prop("backuppath") == dir + "/backup");  // names are case-insensitive
    CHECK_THROWS_HR(WM_E_INVALID_PROPERTY, r.set_prop("NoSuchProperty", "x"));
    CHECK_THROWS_HR(WM_E_INVALID_PROPERTY, r.get_prop("NoSuchProperty"));
    CHECK_THROWS_HR(WM_E_INVALIDARG, r.set_service_url("ftp://example.com"));
    CHECK_THROWS_HR(WM_E_INVALIDARG, r.set_store_path(""));
    CHECK_THROWS_HR(WM_E_INVALIDARG, r.set_store_path(std::string_view()));  // NULL data: still "empty"
    CHECK_THROWS_HR(WM_E_INVALIDARG, r.set_store_path(std::string("a\0b", 3)));
    r.set_prop(WM_PROP_STORE_PATH, dir + "/store");
    r.set_data_path(dir + "/data");
    CHECK(r.prop_count() == 3);
    auto props = r.props();
    CHECK(props.size() == 3);
    CHECK(props.size() == 3 && props[0] == std::make_pair(std::string(WM_PROP_BACKUP_PATH), dir + "/backup") &&
          props[1] == std::make_pair(std::string(WM_PROP_STORE_PATH), dir + "/store") &&
          props[2] == std::make_pair(std::string(WM_PROP_DATA_PATH), dir + "/data"));
    CHECK(r.remove_prop(WM_PROP_STORE_PATH));
    CHECK(!r.remove_prop(WM_PROP_STORE_PATH));
    CHECK(!r.get_prop(WM_PROP_STORE_PATH));
    r.clear_props();
    CHECK(r.prop_count() == 0);

    // Moves: the moved-from restorer is empty and every call says so.
    BackupRestorer r2(std::move(r));
    CHECK(!r && r2.native_handle() == raw);
    CHECK_THROWS_HR(WM_E_HANDLE, r.backup());
    CHECK_THROWS_HR(WM_E_HANDLE, r.set_backup_path("x"));
    CHECK_THROWS_HR(WM_E_HANDLE, r.prop_count());
    CHECK_THROWS_HR(WM_E_HANDLE, r.cancel());
    r.reset();  // a no-op
    r2.set_restore_path(dir + "/nothing");
    CHECK(r2.prop_count() == 1);
    r = std::move(r2);
    CHECK(r.prop_count() == 1 && !r2);
    BackupRestorer r3;  // no callback: allowed, END is still captured
    wm_backup_restorer *raw3 = r3.native_handle();
    r3 = std::move(r);  // destroys the restorer r3 held
    uint32_t n = 0;
    CHECK_HR(wm_backup_restorer_get_prop_count(raw3, &n), WM_E_HANDLE);
    CHECK(r3.native_handle() == raw);

    Operation none;
    CHECK(none.done());
    CHECK_THROWS_HR(WM_E_HANDLE, none.wait());
    CHECK_THROWS_HR(WM_E_HANDLE, none.result());
  }
  // The destructor destroyed the restorer.
  uint32_t n = 0;
  CHECK_HR(wm_backup_restorer_get_prop_count(raw, &n), WM_E_HANDLE);
  CHECK(rec.count() == 0);  // nothing ever started
  wmt_rm_rf(dir.c_str());
}

// ---- backup, restore, release waited on, with their exact events ------------------------------

void test_operations() {
  const std::string dir = temp_dir("cpp-ops");
  setenv("WMLICENSE_HOME", dir.c_str(), 1);
  const std::string src = dir + "/source", bdir = dir + "/backup", r1 = dir + "/restored";
  const License l1 = lic("kid-1", {1, 1, 1, 1}, "One", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 1700000001);
  const License l2 = lic("kid-2", {2, 2}, "No backup", WM_RIGHT_PLAYBACK, 1700000002);
  const License l3 = lic("kid-3", {3, 3, 3}, std::nullopt, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 1700000003);
  Store(src).put_many(std::vector<License>{l1, l2, l3});

  Recorder rec;
  BackupRestorer r(rec.callback());
  r.set_data_path(dir + "/data");
  r.set_store_path(src);
  r.set_backup_path(bdir);

  // Backup: BEGIN, RESTRICTED_LICENSE (kid-2), PROGRESS, END.
  Operation op = r.backup();
  CHECK(op.operation() == WM_OPERATION_BACKUP);
  CHECK(op.wait() == WM_S_OK);
  CHECK(op.done());
  CHECK(op.wait() == WM_S_OK);  // again: the same answer at once
  {
    std::vector<Ev> ev = rec.take();
    if (CHECK_SEQ_IS(ev, WM_OPERATION_BACKUP, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_RESTRICTED_LICENSE,
                     WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END)) {
      CHECK(ev[1].key_id == l2.key_id && ev[1].title == l2.title);
      CHECK(ev[2].processed == 2 && ev[2].total == 3);
      CHECK(ev[3].hr == WM_S_OK && ev[3].processed == 2 && ev[3].total == 3 && ev[3].skipped == 1);
    }
    wmlicense::Result res = op.result();
    CHECK(res.ended && res.hr == WM_S_OK && res.message.empty());
    CHECK(res.processed == 2 && res.total == 3 && res.skipped == 1);
    CHECK(res.restricted == std::vector<Bytes>{l2.key_id});
    CHECK(exists(bdir + "/licenses.wmlb"));
  }

  // A second backup without WM_BACKUP_OVERWRITE: refused by the call, nothing starts.
  CHECK_THROWS_HR(WM_E_BACKUP_EXISTS, r.backup());
  CHECK(r.wait_idle());
  CHECK(rec.count() == 0);

  // A restore into a store that does not exist yet, without WM_RESTORE_INDIVIDUALIZE: END fails
  // and wait() throws its code and message.
  r.set_restore_path(bdir);
  r.set_store_path(r1);
  op = r.restore();
  CHECK_THROWS_HR(WM_E_NEEDS_INDIVIDUALIZATION, op.wait());
  try {
    op.wait();
  } catch (const Error &e) {
    wmlicense::Result res = op.result();
    CHECK(res.ended && res.hr == WM_E_NEEDS_INDIVIDUALIZATION && !res.message.empty());
    CHECK(res.message == e.what());  // the END's own message
  }
  {
    std::vector<Ev> ev = rec.take();
    CHECK(!ev.empty() && ev.front().status == WM_STATUS_BACKUPRESTORE_BEGIN &&
          ev.back().status == WM_STATUS_BACKUPRESTORE_END && ev.back().hr == WM_E_NEEDS_INDIVIDUALIZATION);
    CHECK(!exists(r1));
  }

  // A restore of a backup that is not there: END WM_E_FILE_NOT_FOUND.
  r.set_restore_path(dir + "/no-backup-here");
  op = r.restore(WM_RESTORE_INDIVIDUALIZE);
  CHECK_THROWS_HR(WM_E_FILE_NOT_FOUND, op.wait());
  rec.take();

  // Restore into a new store: BEGIN, CONNECTING, DISCONNECTING, PROGRESS, END.
  r.set_restore_path(bdir);
  op = r.restore(WM_RESTORE_INDIVIDUALIZE);
  CHECK(op.operation() == WM_OPERATION_RESTORE);
  CHECK(op.wait() == WM_S_OK);
  {
    std::vector<Ev> ev = rec.take();
    if (CHECK_SEQ_IS(ev, WM_OPERATION_RESTORE, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
                     WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS,
                     WM_STATUS_BACKUPRESTORE_END)) {
      CHECK(ev[3].processed == 2 && ev[3].total == 2);
    }
    wmlicense::Result res = op.result();
    CHECK(res.processed == 2 && res.total == 2 && res.skipped == 0);
    CHECK(res.devices_used == 1 && res.device_limit == 4);
    CHECK(Store(r1).all() == (std::vector<License>{l1, l3}));
  }

  // With WM_BACKUP_OVERWRITE the backup is replaced.
  CHECK(r.backup(WM_BACKUP_OVERWRITE).wait() == WM_S_OK);  // StorePath is r1 now: 2 of 2
  {
    std::vector<Ev> ev = rec.take();
    CHECK_SEQ_IS(ev, WM_OPERATION_BACKUP, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_PROGRESS,
                 WM_STATUS_BACKUPRESTORE_END);
  }

  // Release the restored store's device on the embedded service: END S_OK with the device
  // count after the decision; its licenses go with it.
  r.remove_prop(WM_PROP_RESTORE_PATH);
  op = r.release();
  CHECK(op.operation() == WM_OPERATION_RELEASE);
  CHECK(op.wait() == WM_S_OK);
  {
    std::vector<Ev> ev = rec.take();
    CHECK_SEQ_IS(ev, WM_OPERATION_RELEASE, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
                 WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
    wmlicense::Result res = op.result();
    if (!(res.devices_used == 0 && res.device_limit == 4)) {
      std::fprintf(stderr, "%s:%d: release: devices %u of %u, expected 0 of 4\n", __FILE__, __LINE__,
                   res.devices_used, res.device_limit);
      wmt_failures++;
    }
    CHECK(!ev.empty() && ev.back().devices_used == res.devices_used && ev.back().device_limit == res.device_limit);
    CHECK(Store(r1).count() == 0);
  }
  // Again: the device is not counted any more; END WM_S_FALSE is a success, returned.
  CHECK(r.release().wait() == WM_S_FALSE);
  {
    std::vector<Ev> ev = rec.take();
    CHECK_SEQ_IS(ev, WM_OPERATION_RELEASE, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
                 WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
  }

  // The Operation outlives the restorer, and a moved restorer keeps its operation running.
  {
    Operation kept;
    {
      BackupRestorer a(rec.callback());
      a.set_data_path(dir + "/data");
      a.set_store_path(src);
      a.set_backup_path(dir + "/backup-moved");
      kept = a.backup();
      BackupRestorer b(std::move(a));
      CHECK(kept.wait() == WM_S_OK);
    }
    CHECK(kept.done() && kept.wait() == WM_S_OK && kept.result().processed == 2);
    rec.take();
  }
  CHECK(rec.overlaps() == 0);
  wmt_rm_rf(dir.c_str());
}

// ---- the callback's corner cases --------------------------------------------------------------

// A one-shot gate a callback can block on until the test thread opens it.
class Gate {
 public:
  void open() {
    {
      std::lock_guard<std::mutex> g(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void pass() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

void test_callbacks() {
  const std::string dir = temp_dir("cpp-callbacks");
  setenv("WMLICENSE_HOME", dir.c_str(), 1);
  const std::string src = dir + "/source";
  {
    std::vector<License> v;
    for (int i = 0; i < 40; i++) {
      char kid[32];
      std::snprintf(kid, sizeof kid, "kid-%03d", i);
      v.push_back(lic(kid, {static_cast<uint8_t>(i), 7}, std::nullopt, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 1 + i));
    }
    Store(src).put_many(v);
  }
  auto configure = [&](BackupRestorer &r, const std::string &backup) {
    r.set_data_path(dir + "/data");
    r.set_store_path(src);
    r.set_backup_path(backup);
  };

  // A callback that throws: the operation still ends; wait() rethrows that exception and the
  // END is in result().
  {
    BackupRestorer r([](const wm_event &e) {
      if (e.status == WM_STATUS_BACKUPRESTORE_PROGRESS) throw std::logic_error("callback failed");
    });
    configure(r, dir + "/b-throw");
    Operation op = r.backup();
    bool caught = false;
    try {
      op.wait();
    } catch (const std::logic_error &e) {
      caught = std::string(e.what()) == "callback failed";
    }
    CHECK(caught);
    wmlicense::Result res = op.result();
    CHECK(res.ended && res.hr == WM_S_OK && res.processed == 40);
  }

  // Inside its own callback: wait() before END is refused (it would wait for itself); at END it
  // returns the outcome at once. The operation is cancelled from its own BEGIN.
  {
    std::promise<Operation> started;
    std::shared_future<Operation> op_f = started.get_future().share();
    BackupRestorer *self = nullptr;
    wm_hresult at_begin = WM_S_OK, at_end = WM_S_OK;
    bool cancelled = false;
    BackupRestorer r([&](const wm_event &e) {
      Operation op = op_f.get();
      if (e.status == WM_STATUS_BACKUPRESTORE_BEGIN) {
        try {
          op.wait();
        } catch (const Error &err) {
          at_begin = err.hr();
        }
        cancelled = self->cancel();
      } else if (e.status == WM_STATUS_BACKUPRESTORE_END) {
        try {
          at_end = op.wait();
        } catch (const Error &err) {
          at_end = err.hr();
        }
      }
    });
    self = &r;
    configure(r, dir + "/b-self");
    Operation op = r.backup();
    started.set_value(op);
    CHECK_THROWS_HR(WM_E_OPERATION_CANCELED, op.wait());
    CHECK(at_begin == WM_E_BACKUPRESTORE_BUSY);
    CHECK(cancelled);
    CHECK(at_end == WM_E_OPERATION_CANCELED);
    CHECK(!exists(dir + "/b-self/licenses.wmlb"));
  }

  // Operation::cancel() from the test thread while the callback holds BEGIN.
  {
    Gate gate;
    Recorder rec;
    rec.extra = [&](const wm_event &e) {
      if (e.status == WM_STATUS_BACKUPRESTORE_BEGIN) gate.pass();
    };
    BackupRestorer r(rec.callback());
    configure(r, dir + "/b-cancel");
    Operation op = r.backup();
    CHECK(!op.wait_for(std::chrono::milliseconds(20)).has_value());  // held at BEGIN: times out
    CHECK(!op.done());
    CHECK(!r.wait_idle(std::chrono::milliseconds(0)));
    CHECK(op.cancel());
    gate.open();
    CHECK_THROWS_HR(WM_E_OPERATION_CANCELED, op.wait());
    CHECK(!op.cancel());  // over
    CHECK_THROWS_HR(WM_E_OPERATION_CANCELED, op.wait_for(std::chrono::hours(1)));
    CHECK(r.wait_idle(std::chrono::milliseconds(0)));
    std::vector<Ev> ev = rec.take();
    CHECK(!ev.empty() && ev.front().status == WM_STATUS_BACKUPRESTORE_BEGIN &&
          ev.back().status == WM_STATUS_BACKUPRESTORE_END && ev.back().hr == WM_E_OPERATION_CANCELED);

    // A restore into a new store cancelled once the service has answered: when wait() returns,
    // the library has also removed what the restore had begun: only the new device identity is
    // kept beside the store's place (.store.pending, so that a retry is the same device).
    const std::string parent = dir + "/restore-parent";
    mkdir(parent.c_str(), 0700);
    Gate answered;
    rec.extra = [&](const wm_event &e) {
      if (e.status == WM_STATUS_BACKUPRESTORE_DISCONNECTING) answered.pass();
    };
    r.set_restore_path(dir + "/b-throw");
    r.set_store_path(parent + "/store");
    op = r.restore(WM_RESTORE_INDIVIDUALIZE);
    while (rec.count() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // at DISCONNECTING
    CHECK(op.cancel());
    answered.open();
    CHECK_THROWS_HR(WM_E_OPERATION_CANCELED, op.wait());
    CHECK(r.wait_idle(std::chrono::milliseconds(0)));
    std::vector<std::string> left;
    if (DIR *d = opendir(parent.c_str())) {
      while (struct dirent *de = readdir(d))
        if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0 &&
            std::strcmp(de->d_name, ".store.pending") != 0)
          left.push_back(de->d_name);
      closedir(d);
    }
    for (const std::string &name : left) std::fprintf(stderr, "  left after a cancelled restore: %s\n", name.c_str());
    CHECK(left.empty());
    rec.take();
  }

  // The next operation started from END, and waited on from the test thread.
  {
    std::promise<Operation> next;
    BackupRestorer *self = nullptr;
    Recorder rec;
    rec.extra = [&](const wm_event &e) {
      if (e.status == WM_STATUS_BACKUPRESTORE_END && e.operation == WM_OPERATION_BACKUP) {
        try {
          self->set_restore_path(dir + "/b-chain");
          self->set_store_path(dir + "/chained");
          next.set_value(self->restore(WM_RESTORE_INDIVIDUALIZE));
        } catch (...) {
          next.set_exception(std::current_exception());
        }
      }
    };
    BackupRestorer r(rec.callback());
    self = &r;
    configure(r, dir + "/b-chain");
    Operation first = r.backup();
    CHECK(first.wait() == WM_S_OK);
    Operation second = next.get_future().get();
    CHECK(second.operation() == WM_OPERATION_RESTORE);
    CHECK(second.wait() == WM_S_OK);
    CHECK(first.result().processed == 40 && second.result().processed == 40);
    CHECK(Store(dir + "/chained").count() == 40);
    // The restore's events come after the backup's END, in order.
    std::vector<Ev> ev = one_progress(rec.take());
    std::size_t split = ev.size() >= 3 ? 3 : ev.size();
    CHECK_SEQ_IS(std::vector<Ev>(ev.begin(), ev.begin() + static_cast<std::ptrdiff_t>(split)), WM_OPERATION_BACKUP,
                 WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
    CHECK_SEQ_IS(std::vector<Ev>(ev.begin() + static_cast<std::ptrdiff_t>(split), ev.end()), WM_OPERATION_RESTORE,
                 WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
                 WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS,
                 WM_STATUS_BACKUPRESTORE_END);
  }

  // One restorer's callback waits for another restorer's operation (the library's wait lends
  // the worker pool a thread meanwhile).
  {
    BackupRestorer other;
    configure(other, dir + "/b-other");
    std::promise<wm_hresult> waited;
    BackupRestorer r([&](const wm_event &e) {
      if (e.status != WM_STATUS_BACKUPRESTORE_BEGIN) return;
      try {
        waited.set_value(other.backup().wait());
      } catch (...) {
        waited.set_exception(std::current_exception());
      }
    });
    configure(r, dir + "/b-outer");
    Operation op = r.backup();
    CHECK(op.wait() == WM_S_OK);
    CHECK(waited.get_future().get() == WM_S_OK);
  }

  // The destructor cancels a running operation and waits for its END.
  {
    Operation op;
    {
      BackupRestorer r;
      configure(r, dir + "/b-destroyed");
      op = r.backup();
    }
    CHECK(op.done());
    CHECK(op.result().ended);
    try {
      CHECK(op.wait() == WM_S_OK);  // if it finished before the cancel
    } catch (const Error &e) {
      CHECK(e.hr() == WM_E_OPERATION_CANCELED);
    }
  }

  // A restorer destroyed from inside its own callback: no further events, and its operation's
  // wait() says the restorer is gone instead of waiting forever.
  {
    std::unique_ptr<BackupRestorer> holder;
    Gate stored;
    int events = 0;
    holder = std::make_unique<BackupRestorer>([&](const wm_event &e) {
      events++;
      if (e.status == WM_STATUS_BACKUPRESTORE_BEGIN) {
        stored.pass();
        holder.reset();
      }
    });
    // Its own directory, removed only if empty: the cancelled backup winds down on its own.
    const std::string own = temp_dir("cpp-self-destroyed");
    configure(*holder, own + "/backup");
    Operation op = holder->backup();
    stored.open();
    CHECK_THROWS_HR(WM_E_HANDLE, op.wait());
    CHECK(op.done() && !op.result().ended);
    CHECK(!holder);
    CHECK(events == 1);
    rmdir(own.c_str());
  }
  wmt_rm_rf(dir.c_str());
}

}  // namespace

int main() {
  // Nothing may land in the user's own data directory; the embedded service's default policy.
  const std::string home = temp_dir("cpp-api-home");
  setenv("WMLICENSE_HOME", home.c_str(), 1);
  unsetenv("WMLICENSE_RESTORE_DEVICE_LIMIT");
  unsetenv("WMLICENSE_SERVICE_HELP_URL");

  static_assert(std::is_nothrow_move_constructible_v<Store> && !std::is_copy_constructible_v<Store>);
  static_assert(std::is_nothrow_move_constructible_v<BackupRestorer> && !std::is_copy_constructible_v<BackupRestorer>);
  static_assert(std::is_base_of_v<std::runtime_error, Error>);

  const std::pair<const char *, void (*)()> cases[] = {
      {"store", test_store},
      {"restorer_basics", test_restorer_basics},
      {"operations", test_operations},
      {"callbacks", test_callbacks},
  };
  for (const auto &c : cases) {
    try {
      c.second();
      std::printf("  %s: done\n", c.first);
    } catch (const Error &e) {
      std::fprintf(stderr, "%s: unexpected wmlicense::Error 0x%08x: %s\n", c.first, (unsigned)e.hr(), e.what());
      wmt_failures++;
    } catch (const std::exception &e) {
      std::fprintf(stderr, "%s: unexpected exception: %s\n", c.first, e.what());
      wmt_failures++;
    }
  }
  wmt_rm_rf(home.c_str());
  return wmt_finish("test_cpp_api");
}
