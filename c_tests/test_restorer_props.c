/* The restorer's property API (all six functions): case-insensitive names reported in their
   canonical spelling and in the order first set, two-call sizing, every documented error code,
   NULL pointers, destroyed and foreign handles; restorer creation errors; and a ServiceUrl that
   cannot be reached. */
#include "restorer_util.h"

#define SENT 0x5A

static int all_bytes(const uint8_t *p, size_t n, uint8_t v) {
  size_t i;
  for (i = 0; i < n; i++)
    if (p[i] != v) return 0;
  return 1;
}

/* get_prop_by_name of `name` must be `want`, with every sizing case. */
static void check_get(wm_backup_restorer *r, const char *name, const char *want) {
  uint8_t buf[5000];
  uint32_t len, type;
  uint32_t need = (uint32_t)strlen(want) + 1;

  /* Size query. */
  len = 0;
  type = 99;
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, name, &type, NULL, &len), WM_S_OK);
  CHECK(len == need);
  CHECK(type == WM_TYPE_STRING);

  /* One byte short: BUFFER_TOO_SMALL, needed size written back, buffer and type untouched. */
  memset(buf, SENT, sizeof buf);
  len = need - 1;
  type = 99;
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, name, &type, buf, &len), WM_E_BUFFER_TOO_SMALL);
  CHECK(len == need);
  CHECK(all_bytes(buf, sizeof buf, SENT));
  CHECK(type == 99);

  /* A zero-length buffer. */
  len = 0;
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, name, &type, buf, &len), WM_E_BUFFER_TOO_SMALL);
  CHECK(len == need);
  CHECK(all_bytes(buf, sizeof buf, SENT));

  /* Exact fit: the value and its NUL, nothing beyond. */
  len = need;
  type = 99;
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, name, &type, buf, &len), WM_S_OK);
  CHECK(len == need);
  CHECK(memcmp(buf, want, need - 1) == 0 && buf[need - 1] == 0);
  CHECK(all_bytes(buf + need, sizeof buf - need, SENT));
  CHECK(type == WM_TYPE_STRING);

  /* A larger buffer: *value_len becomes the size used. */
  memset(buf, SENT, sizeof buf);
  len = (uint32_t)sizeof buf;
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, name, &type, buf, &len), WM_S_OK);
  CHECK(len == need);
  CHECK(strcmp((const char *)buf, want) == 0);
}

/* get_prop_by_index of `index` must be (`want_name`, `want_value`), with every sizing case. */
static void check_index(wm_backup_restorer *r, uint32_t index, const char *want_name, const char *want_value) {
  char name[64];
  uint8_t value[5000];
  uint32_t name_len, value_len, type;
  uint32_t nneed = (uint32_t)strlen(want_name) + 1, vneed = (uint32_t)strlen(want_value) + 1;

  /* Both sizes. */
  name_len = value_len = 0;
  type = 99;
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, index, NULL, &name_len, &type, NULL, &value_len), WM_S_OK);
  CHECK(name_len == nneed);
  CHECK(value_len == vneed);
  CHECK(type == WM_TYPE_STRING);

  /* Name buffer one byte short: both sizes written, nothing copied, type untouched. */
  memset(name, SENT, sizeof name);
  memset(value, SENT, sizeof value);
  name_len = nneed - 1;
  value_len = (uint32_t)sizeof value;
  type = 99;
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, index, name, &name_len, &type, value, &value_len),
           WM_E_BUFFER_TOO_SMALL);
  CHECK(name_len == nneed);
  CHECK(value_len == vneed);
  CHECK(all_bytes((const uint8_t *)name, sizeof name, SENT));
  CHECK(all_bytes(value, sizeof value, SENT));
  CHECK(type == 99);

  /* Value buffer one byte short. */
  name_len = (uint32_t)sizeof name;
  value_len = vneed - 1;
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, index, name, &name_len, &type, value, &value_len),
           WM_E_BUFFER_TOO_SMALL);
  CHECK(name_len == nneed);
  CHECK(value_len == vneed);
  CHECK(all_bytes((const uint8_t *)name, sizeof name, SENT));
  CHECK(all_bytes(value, sizeof value, SENT));

  /* Exact fit for both. */
  name_len = nneed;
  value_len = vneed;
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, index, name, &name_len, &type, value, &value_len), WM_S_OK);
  CHECK(name_len == nneed && value_len == vneed);
  CHECK(memcmp(name, want_name, nneed) == 0);
  CHECK(memcmp(value, want_value, vneed) == 0);
  CHECK(all_bytes((const uint8_t *)name + nneed, sizeof name - nneed, SENT));
  CHECK(all_bytes(value + vneed, sizeof value - vneed, SENT));
  CHECK(type == WM_TYPE_STRING);

  /* Name only (value size query) and value only (name size query). */
  memset(name, SENT, sizeof name);
  name_len = (uint32_t)sizeof name;
  value_len = 0;
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, index, name, &name_len, &type, NULL, &value_len), WM_S_OK);
  CHECK(name_len == nneed && value_len == vneed && strcmp(name, want_name) == 0);
  memset(value, SENT, sizeof value);
  name_len = 0;
  value_len = (uint32_t)sizeof value;
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, index, NULL, &name_len, &type, value, &value_len), WM_S_OK);
  CHECK(name_len == nneed && value_len == vneed && strcmp((const char *)value, want_value) == 0);
}

static void check_count(wm_backup_restorer *r, uint32_t want) {
  uint32_t n = 999;
  CHECK_HR(wm_backup_restorer_get_prop_count(r, &n), WM_S_OK);
  CHECK(n == want);
}

/* Every function on `r` returns `hr` (WM_E_HANDLE or WM_E_POINTER). */
static void check_all_calls(wm_backup_restorer *r, wm_hresult hr) {
  uint32_t n = 7, len = 16, nlen = 16, type = 99;
  uint8_t buf[16];
  char name[16];
  CHECK_HR(wmr_set_str(r, WM_PROP_BACKUP_PATH, "/tmp/x"), hr);
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, WM_PROP_BACKUP_PATH, &type, buf, &len), hr);
  CHECK_HR(wm_backup_restorer_get_prop_count(r, &n), hr);
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, 0, name, &nlen, &type, buf, &len), hr);
  CHECK_HR(wm_backup_restorer_remove_prop(r, WM_PROP_BACKUP_PATH), hr);
  CHECK_HR(wm_backup_restorer_remove_all_props(r), hr);
  CHECK_HR(wm_backup_restorer_backup(r, 0), hr);
  CHECK_HR(wm_backup_restorer_restore(r, 0), hr);
  CHECK_HR(wm_backup_restorer_cancel_backup(r), hr);
  CHECK_HR(wm_backup_restorer_cancel_restore(r), hr);
  CHECK_HR(wm_backup_restorer_release(r, 0), hr);
  CHECK_HR(wm_backup_restorer_release(r, WM_RELEASE_ALL_DEVICES), hr);
  CHECK_HR(wm_backup_restorer_cancel_release(r), hr);
  CHECK_HR(wm_backup_restorer_wait(r, 0), hr);
  CHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), hr);
  CHECK(n == 7 && type == 99 && len == 16 && nlen == 16); /* outputs untouched */
}

int main(void) {
  char home[512], src[600], bdir[600], fresh[600], wmlb[700];
  static char longv[4200];
  wmr_recorder rec;
  wm_backup_restorer *r = NULL, *out;
  wm_license l;
  char kid[32];
  uint8_t key[16];
  uint32_t len, type, n;
  uint8_t buf[64];
  char nbuf[64];

  /* The unreachable ServiceUrl below is retried until this runs out (default 30 s). */
  setenv("WMLICENSE_SERVICE_TIMEOUT_MS", "1500", 1);
  wmr_fresh_home(home, sizeof home, "props");
  snprintf(src, sizeof src, "%s/store", home);
  snprintf(bdir, sizeof bdir, "%s/backup", home);
  snprintf(fresh, sizeof fresh, "%s/new-store", home);
  snprintf(wmlb, sizeof wmlb, "%s/licenses.wmlb", bdir);
  wmr_init(&rec);

  /* Creation errors; the out-pointer is written only on success. */
  out = (wm_backup_restorer *)(void *)&rec;
  CHECK_HR(wm_backup_restorer_create(NULL, &rec, &out), WM_E_INVALIDARG);
  CHECK(out == (wm_backup_restorer *)(void *)&rec);
  CHECK_HR(wm_backup_restorer_create(wmr_callback, &rec, NULL), WM_E_POINTER);
  CHECK_HR(wm_backup_restorer_create(wmr_callback, NULL, &out), WM_S_OK); /* NULL context is fine */
  CHECK(out != NULL && out != (wm_backup_restorer *)(void *)&rec);
  wm_backup_restorer_destroy(out);

  r = wmr_create(&rec);
  check_count(r, 0);
  CHECK_HR(wm_backup_restorer_remove_prop(r, WM_PROP_STORE_PATH), WM_E_NOT_FOUND); /* never set */
  len = 64;
  type = 99;
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, WM_PROP_STORE_PATH, &type, buf, &len), WM_E_NOT_FOUND);
  CHECK(len == 64 && type == 99);
  n = 64;
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, 0, nbuf, &n, &type, buf, &len), WM_E_INVALIDARG);

  /* Set all four, in an order of our own and in several spellings. */
  CHECK_HR(wmr_set_str(r, "BACKUPPATH", "/backups/first"), WM_S_OK);
  CHECK_HR(wmr_set_str(r, "restorepath", "/backups/first/licenses.wmlb"), WM_S_OK);
  CHECK_HR(wmr_set_str(r, WM_PROP_SERVICE_URL, "https://license.example/svc"), WM_S_OK);
  CHECK_HR(wmr_set_str(r, "sToRePaTh", "/stores/\xC3\xA9t\xC3\xA9"), WM_S_OK);
  check_count(r, 4);
  check_get(r, WM_PROP_BACKUP_PATH, "/backups/first");
  check_get(r, "backuppath", "/backups/first");
  check_get(r, "BACKUPPATH", "/backups/first");
  check_get(r, WM_PROP_RESTORE_PATH, "/backups/first/licenses.wmlb");
  check_get(r, "SERVICEURL", "https://license.example/svc");
  check_get(r, "storepath", "/stores/\xC3\xA9t\xC3\xA9");

  /* Replacing a value keeps its place; a trailing NUL counted in value_len is not stored. */
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_BACKUP_PATH, WM_TYPE_STRING, (const uint8_t *)"/b\0", 3), WM_S_OK);
  check_get(r, WM_PROP_BACKUP_PATH, "/b");
  check_count(r, 4);
  check_index(r, 0, "BackupPath", "/b");
  check_index(r, 1, "RestorePath", "/backups/first/licenses.wmlb");
  check_index(r, 2, "ServiceUrl", "https://license.example/svc");
  check_index(r, 3, "StorePath", "/stores/\xC3\xA9t\xC3\xA9");
  n = 64;
  len = 64;
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, 4, nbuf, &n, &type, buf, &len), WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, 0xFFFFFFFFu, nbuf, &n, &type, buf, &len), WM_E_INVALIDARG);
  CHECK(n == 64 && len == 64);

  /* Values: the longest allowed, one more, and each invalid kind; a failed set changes nothing. */
  memset(longv, 'v', sizeof longv);
  longv[0] = '/';
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, (const uint8_t *)longv, 4096), WM_S_OK);
  longv[4096] = '\0';
  check_get(r, WM_PROP_STORE_PATH, longv);
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, (const uint8_t *)longv, 4097), WM_S_OK);
  longv[4096] = 'v';
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, (const uint8_t *)longv, 4097),
           WM_E_INVALIDARG);
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, "/s"), WM_S_OK);
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, (const uint8_t *)"\xff\xfe", 2),
           WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, (const uint8_t *)"ab\0cd", 5),
           WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, (const uint8_t *)"ab\0\0", 4),
           WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, (const uint8_t *)"", 0),
           WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, (const uint8_t *)"\0", 1),
           WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, NULL, 0), WM_E_INVALIDARG);
  CHECK_HR(wmr_set_str(r, WM_PROP_SERVICE_URL, "ftp://x"), WM_E_INVALIDARG);
  CHECK_HR(wmr_set_str(r, WM_PROP_SERVICE_URL, "license.example"), WM_E_INVALIDARG);
  check_get(r, WM_PROP_STORE_PATH, "/s");
  check_get(r, WM_PROP_SERVICE_URL, "https://license.example/svc");
  CHECK_HR(wmr_set_str(r, WM_PROP_SERVICE_URL, "http://license.example:8080/"), WM_S_OK);
  check_get(r, WM_PROP_SERVICE_URL, "http://license.example:8080/");

  /* Types: every type but WM_TYPE_STRING is unsupported (SPEC), the SDK's others and non-types alike. */
  {
    static const uint32_t other[] = {WM_TYPE_DWORD, WM_TYPE_BINARY, WM_TYPE_BOOL, WM_TYPE_QWORD, WM_TYPE_WORD,
                                     WM_TYPE_GUID};
    size_t i;
    for (i = 0; i < sizeof other / sizeof other[0]; i++) {
      CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, other[i], (const uint8_t *)"/t", 2),
               WM_E_UNSUPPORTED_PROPERTY);
      CHECK_HR(wm_backup_restorer_set_prop(r, "backuppath", other[i], (const uint8_t *)"/t", 2),
               WM_E_UNSUPPORTED_PROPERTY);
    }
    CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, 99, (const uint8_t *)"/t", 2), WM_E_UNSUPPORTED_PROPERTY);
    CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, 7, (const uint8_t *)"/t", 2), WM_E_UNSUPPORTED_PROPERTY);
    CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, 0xFFFFFFFFu, (const uint8_t *)"/t", 2),
             WM_E_UNSUPPORTED_PROPERTY);
    check_get(r, WM_PROP_STORE_PATH, "/s");
  }

  /* Unknown names. */
  CHECK_HR(wmr_set_str(r, "BackupPathX", "/x"), WM_E_INVALID_PROPERTY);
  len = 64;
  type = 99;
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, "BackupPathX", &type, buf, &len), WM_E_INVALID_PROPERTY);
  CHECK(len == 64 && type == 99);
  CHECK_HR(wm_backup_restorer_remove_prop(r, "BackupPathX"), WM_E_INVALID_PROPERTY);
  CHECK_HR(wmr_set_str(r, "Backup", "/x"), WM_E_INVALID_PROPERTY);
  CHECK_HR(wmr_set_str(r, "BackupPath ", "/x"), WM_E_INVALID_PROPERTY);
  check_count(r, 4);

  /* NULL pointers. */
  check_all_calls(NULL, WM_E_POINTER);
  CHECK_HR(wm_backup_restorer_set_prop(r, NULL, WM_TYPE_STRING, (const uint8_t *)"/x", 2), WM_E_POINTER);
  CHECK_HR(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, NULL, 2), WM_E_POINTER);
  len = 64;
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, NULL, &type, buf, &len), WM_E_POINTER);
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, WM_PROP_STORE_PATH, &type, buf, NULL), WM_E_POINTER);
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, WM_PROP_STORE_PATH, &type, NULL, NULL), WM_E_POINTER);
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, WM_PROP_STORE_PATH, NULL, buf, &len), WM_E_POINTER);
  CHECK(len == 64);
  CHECK_HR(wm_backup_restorer_get_prop_count(r, NULL), WM_E_POINTER);
  n = 64;
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, 0, nbuf, NULL, &type, buf, &len), WM_E_POINTER);
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, 0, nbuf, &n, NULL, buf, &len), WM_E_POINTER);
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, 0, nbuf, &n, &type, buf, NULL), WM_E_POINTER);
  CHECK(n == 64 && len == 64);
  CHECK_HR(wm_backup_restorer_remove_prop(r, NULL), WM_E_POINTER);
  check_count(r, 4);

  /* Remove one, remove it again, remove all. */
  CHECK_HR(wm_backup_restorer_remove_prop(r, "STOREPATH"), WM_S_OK);
  check_count(r, 3);
  len = 64;
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, WM_PROP_STORE_PATH, &type, buf, &len), WM_E_NOT_FOUND);
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, WM_PROP_STORE_PATH, &type, NULL, &len), WM_E_NOT_FOUND);
  CHECK_HR(wm_backup_restorer_remove_prop(r, WM_PROP_STORE_PATH), WM_E_NOT_FOUND);
  check_index(r, 0, "BackupPath", "/b");
  check_index(r, 1, "RestorePath", "/backups/first/licenses.wmlb");
  check_index(r, 2, "ServiceUrl", "http://license.example:8080/");
  n = 64;
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, 3, nbuf, &n, &type, buf, &len), WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_remove_all_props(r), WM_S_OK);
  check_count(r, 0);
  CHECK_HR(wm_backup_restorer_get_prop_by_name(r, WM_PROP_BACKUP_PATH, &type, NULL, &len), WM_E_NOT_FOUND);
  CHECK_HR(wm_backup_restorer_get_prop_by_index(r, 0, nbuf, &n, &type, buf, &len), WM_E_INVALIDARG);
  CHECK_HR(wm_backup_restorer_remove_all_props(r), WM_S_OK); /* nothing set: still fine */
  check_count(r, 0);
  CHECK(wmr_count(&rec) == 0); /* no property call produced an event */

  /* A ServiceUrl nobody answers: backup and restore end with WM_E_RESTORE_SERVICE_UNAVAILABLE. */
  wmt_make_license(&l, 1, kid, key, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
  l.title = "props";
  REQUIRE_OK(wmr_put(src, &l, 1));
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, src), WM_S_OK);
  CHECK_HR(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir), WM_S_OK);
  CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, bdir), WM_S_OK);
  CHECK_HR(wmr_run_backup(r, &rec, 0), WM_S_OK); /* with the embedded service */
  CHECK_EVENTS(&rec, WM_OPERATION_BACKUP);
  CHECK_END(&rec, WM_S_OK, 1, 1, 0);
  CHECK_HR(wmr_set_str(r, WM_PROP_SERVICE_URL, "http://127.0.0.1:1/"), WM_S_OK);
  {
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    wmr_dump_t before, after;
    CHECK(wmr_read_file(wmlb, &b1, &n1) == 0);
    CHECK_HR(wmr_run_backup(r, &rec, WM_BACKUP_OVERWRITE), WM_S_OK);
    CHECK_EVENTS(&rec, WM_OPERATION_BACKUP);
    CHECK_HR(wmr_end(&rec).hr, WM_E_RESTORE_SERVICE_UNAVAILABLE);
    CHECK(wmr_read_file(wmlb, &b2, &n2) == 0);
    CHECK(n1 == n2 && b1 && b2 && memcmp(b1, b2, n1) == 0); /* the previous backup is untouched */
    free(b1);
    free(b2);

    CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, fresh), WM_S_OK);
    CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
    CHECK_EVENTS(&rec, WM_OPERATION_RESTORE);
    CHECK_HR(wmr_end(&rec).hr, WM_E_RESTORE_SERVICE_UNAVAILABLE);
    CHECK(wmr_count_status(&rec, WM_STATUS_BACKUPRESTORE_PROGRESS) == 0);
    CHECK(!wmr_exists(fresh));
    /* Only the pending device identity that a retry presents again; no staging directory. */
    CHECK(wmr_dir_count_prefix(home, ".new-store.") == 1);

    CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, src), WM_S_OK);
    CHECK_HR(wmr_dump(src, &before), WM_S_OK);
    CHECK_HR(wmr_run_restore(r, &rec, 0), WM_S_OK);
    CHECK_EVENTS(&rec, WM_OPERATION_RESTORE);
    CHECK_HR(wmr_end(&rec).hr, WM_E_RESTORE_SERVICE_UNAVAILABLE);
    CHECK_HR(wmr_dump(src, &after), WM_S_OK);
    CHECK(wmr_dumps_equal(&before, &after));
    wmr_dump_free(&before);
    wmr_dump_free(&after);
  }

  /* Destroyed, foreign and made-up handles. */
  wm_backup_restorer_destroy(r);
  check_all_calls(r, WM_E_HANDLE);
  wm_backup_restorer_destroy(r); /* again: nothing */
  wm_backup_restorer_destroy(NULL);
  check_all_calls((wm_backup_restorer *)(uintptr_t)0xDEADBEE0u, WM_E_HANDLE);
  check_all_calls((wm_backup_restorer *)(void *)&rec, WM_E_HANDLE);
  {
    wm_license_store *s = NULL;
    REQUIRE_OK(wm_license_store_open(src, &s));
    check_all_calls((wm_backup_restorer *)(void *)s, WM_E_HANDLE); /* a store is not a restorer */
    wm_license_store_close(s);
  }

  wmr_free(&rec);
  wmt_rm_rf(home);
  return wmt_finish("test_restorer_props");
}
